"""multipart/related (RFC 2046 5.1, RFC 2387) in and out.

Writer: `multipart_stream` yields a body part by part, each with its own Content-Type (PS3.18
requires it per part: a frame without `transfer-syntax` is decoded as implicit little endian by
some clients), never joining large bodies into one buffer.

Reader: `read_parts` parses a request body incrementally from the chunks the server hands over,
whatever their size: a delimiter may be split across chunks at any byte. Small parts stay in
memory; a part over `memory_part_limit` is spooled to a temporary file in `spool_dir`, so a 2 GB
STOW-RS upload never sits in memory. Body bytes are located with `bytes.find` over the buffer (no
per-byte Python loop), which keeps parsing well above 1 GB/s.

Framing rules applied (RFC 2046 5.1.1): a delimiter is CRLF "--" boundary; the first may start
the body without the CRLF; the boundary line may carry transport padding (spaces/tabs) before its
CRLF; "--" right after the boundary closes the body; preamble and epilogue are ignored. A body
that ends before the closing delimiter is malformed (a truncated upload must not look complete).
"""

from __future__ import annotations

import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import BinaryIO

from ...errors import PayloadTooLargeError, RequestError, UnsupportedMediaTypeError
from .media import MULTIPART_RELATED, format_media_type, parse_content_type

CRLF = b"\r\n"
MAX_HEADER_BYTES = 16 << 10  # one part's header block; DICOMweb parts carry a handful of headers
MAX_PADDING = 1024  # transport padding after a boundary line; more is not padding but garbage
SPOOL_WRITE_BYTES = 4 << 20  # spooled data is written in slices of this size, off the event loop
_BCHARS = frozenset(b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ'()+_,-./:=? ")


# -- writer --------------------------------------------------------------------------------------


def new_boundary() -> str:
    """A boundary that cannot occur in the parts by chance (128 random bits)."""
    return "dicomvault-" + secrets.token_hex(16)


def _check_header_value(name: str, value: str) -> None:
    if "\r" in value or "\n" in value:
        raise ValueError(f"header {name} contains a line break: {value!r}")


def part_header(content_type: str, extra: dict[str, str] | None = None) -> bytes:
    """The header block of one part (`Content-Type`, then `extra`), with its closing blank line."""
    lines = [("Content-Type", content_type), *(extra or {}).items()]
    out = []
    for name, value in lines:
        _check_header_value(name, value)
        out.append(f"{name}: {value}\r\n")
    out.append("\r\n")
    return "".join(out).encode("latin-1")


def multipart_content_type(root_type: str, boundary: str, **params: str) -> str:
    """Content-Type of a multipart/related response: `type`, extra parameters, `boundary`."""
    return format_media_type(MULTIPART_RELATED, {"type": root_type, **params, "boundary": boundary})


PartSpec = tuple[str, bytes | Iterable[bytes]] | tuple[str, bytes | Iterable[bytes], dict[str, str]]


def _opening(boundary: str, first: bool, spec: PartSpec) -> bytes:
    """The delimiter and header block that start one part."""
    extra = spec[2] if len(spec) > 2 else None  # type: ignore[misc]
    delim = f"--{boundary}\r\n".encode("latin-1")
    return (delim if first else CRLF + delim) + part_header(spec[0], extra)


def stream_length(boundary: str, parts: Iterable[tuple[str, int]]) -> int:
    """The exact byte length of multipart_stream's output for parts of these (content type,
    body length), so a response can carry Content-Length instead of chunked framing."""
    total, first = 0, True
    for content_type, size in parts:
        total += len(_opening(boundary, first, (content_type, b""))) + size
        first = False
    return total + len(_closing(boundary, first))


def _closing(boundary: str, first: bool) -> bytes:
    return ("" if first else "\r\n").encode() + f"--{boundary}--\r\n".encode("latin-1")


def _body_chunks(body: bytes | bytearray | memoryview | Iterable[bytes]) -> Iterator[bytes]:
    if isinstance(body, bytes | bytearray | memoryview):
        if body:
            yield bytes(body) if not isinstance(body, bytes) else body
    else:
        yield from (chunk for chunk in body if chunk)


def multipart_stream(parts: Iterable[PartSpec], boundary: str) -> Iterator[bytes]:
    """The body of a multipart/related message, as chunks.

    Each part is `(content_type, body)` or `(content_type, body, extra_headers)`; a body is bytes
    or an iterable of byte chunks (streamed from the store as it is read). Parts are generated
    lazily, so a study is never held in memory. An empty `parts` gives a body with the closing
    delimiter only (RFC 2046 wants one part at least: callers answer 204/404 instead).
    """
    first = True
    for spec in parts:
        yield _opening(boundary, first, spec)
        first = False
        yield from _body_chunks(spec[1])
    yield _closing(boundary, first)


async def multipart_stream_async(parts: AsyncIterable[PartSpec], boundary: str) -> AsyncIterator[bytes]:
    """multipart_stream for parts that arrive asynchronously (bodies read by a thread pool while
    the event loop sends), so a retrieve never hops threads per chunk."""
    first = True
    async for spec in parts:
        yield _opening(boundary, first, spec)
        first = False
        for chunk in _body_chunks(spec[1]):
            yield chunk
    yield _closing(boundary, first)


# -- reader --------------------------------------------------------------------------------------


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


@dataclass
class Part:
    """One body part: its headers (names in lower case), content type, and its body either in
    memory (`data`) or in a spool file (`path`, removed by `discard`)."""

    headers: dict[str, str]
    content_type: str
    size: int
    data: bytes | None = None
    path: str | None = None
    index: int = 0  # position in the message, from 0

    def read(self) -> bytes:
        """The body as bytes (reads the spool file: only for small parts or tests)."""
        if self.data is not None:
            return self.data
        assert self.path is not None
        with open(self.path, "rb") as f:
            return f.read()

    def discard(self) -> None:
        """Releases the body: the spool file is removed (idempotent)."""
        self.data = None
        if self.path is not None:
            _unlink_quietly(self.path)
            self.path = None


@dataclass
class _Event:
    kind: str  # "headers", "data", "end" (of a part), "close" (of the body)
    headers: dict[str, str] = field(default_factory=dict)
    data: bytes | memoryview = b""  # a view only ever points into an immutable chunk


class MultipartParser:
    """Incremental multipart framing: `feed(chunk)` returns the events the new bytes complete.

    Sync and I/O-free so it can be tested byte by byte; `read_parts` drives it.
    """

    def __init__(self, boundary: str) -> None:
        self.boundary = boundary
        # Every delimiter, the first included, is searched as CRLF--boundary: the body is
        # treated as if it began with CRLF, so a first boundary line at offset 0 matches too.
        self._delim = b"\r\n--" + boundary.encode("latin-1")
        self._buf = bytearray(CRLF)
        self._state = "preamble"
        self._consumed = -2  # body offset of _buf[0] (the virtual CRLF is at -2), for messages
        self._scan_from = 0
        self.closed = False

    def _drop(self, n: int) -> None:
        del self._buf[:n]
        self._consumed += n
        self._scan_from = 0

    def _take(self, n: int) -> bytes:
        # One copy out of the buffer; the temporary view is released before the buffer shrinks.
        return bytes(memoryview(self._buf)[:n])

    def feed(self, chunk: bytes) -> list[_Event]:
        if self.closed:
            return []  # epilogue: ignored
        events: list[_Event] = []
        if self._state == "body" and len(self._buf) < len(self._delim) <= len(chunk):
            chunk = bytes(chunk) if not isinstance(chunk, bytes) else chunk
            if self._feed_body_fast(chunk, events):
                return events
        else:
            self._buf += chunk
        while True:
            if self._state in ("preamble", "body"):
                if not self._scan_delimiter(events):
                    return events
            elif self._state == "boundary":
                if not self._scan_boundary_line(events):
                    return events
                if self.closed:
                    self._buf.clear()
                    return events
            elif self._state == "headers":
                if not self._scan_headers(events):
                    return events

    def _feed_body_fast(self, chunk: bytes, events: list[_Event]) -> bool:
        """Body bytes of a large chunk without copying it into the buffer: the delimiter is
        searched in the chunk itself and body data leaves as views of it. Returns True when the
        chunk is fully handled, False after putting what is left in the buffer for the generic
        loop (a delimiter found, or one that may start in the carried-over tail)."""
        delim, dlen = self._delim, len(self._delim)
        tail = self._buf
        t = len(tail)
        if t:
            probe = bytes(tail) + chunk[: dlen - 1]
            at = probe.find(delim)
            if 0 <= at < t:  # a delimiter straddles the chunk boundary: rare, take the slow path
                self._buf += chunk
                return False
        at = chunk.find(delim)
        view = memoryview(chunk)
        if t:
            events.append(_Event("data", data=bytes(tail)))
        base = self._consumed + t
        if at < 0:
            keep = dlen - 1
            cut = len(chunk) - keep
            events.append(_Event("data", data=view[:cut]))
            self._buf = bytearray(view[cut:])
            self._consumed = base + cut
            self._scan_from = 0
            return True
        if at:
            events.append(_Event("data", data=view[:at]))
        events.append(_Event("end"))
        self._buf = bytearray(view[at + dlen :])
        self._consumed = base + at + dlen
        self._scan_from = 0
        self._state = "boundary"
        return False

    def _scan_delimiter(self, events: list[_Event]) -> bool:
        dlen = len(self._delim)
        at = self._buf.find(self._delim, self._scan_from)
        if at < 0:
            # Everything but a possible partial delimiter at the end is body (or preamble).
            keep = dlen - 1
            safe = len(self._buf) - keep
            if safe > 0:
                if self._state == "body":
                    events.append(_Event("data", data=self._take(safe)))
                self._drop(safe)
            self._scan_from = max(0, len(self._buf) - keep)
            return False
        if self._state == "body":
            if at:
                events.append(_Event("data", data=self._take(at)))
            events.append(_Event("end"))
        self._drop(at + dlen)
        self._state = "boundary"
        return True

    def _scan_boundary_line(self, events: list[_Event]) -> bool:
        buf = self._buf
        if len(buf) < 2:
            return False
        if buf[:2] == b"--":
            self.closed = True
            events.append(_Event("close"))
            return True
        i = 0
        while i < len(buf) and buf[i] in (0x20, 0x09):
            i += 1
        if i >= len(buf) or (buf[i] == 0x0D and i + 1 >= len(buf)):
            if i > MAX_PADDING:
                raise RequestError(f"boundary line at body offset {self._consumed} is not followed by CRLF")
            return False
        if buf[i : i + 2] != CRLF:
            raise RequestError(
                f"multipart boundary {self.boundary!r} at body offset {self._consumed - len(self._delim)} "
                f"is followed by {bytes(buf[i : i + 16])!r} instead of CRLF or '--'"
            )
        self._drop(i + 2)
        self._state = "headers"
        return True

    def _scan_headers(self, events: list[_Event]) -> bool:
        buf = self._buf
        if buf[:2] == CRLF:
            end, block = 2, b""
        else:
            at = buf.find(b"\r\n\r\n")
            if at < 0:
                if len(buf) > MAX_HEADER_BYTES:
                    raise RequestError(
                        f"part header at body offset {self._consumed} exceeds {MAX_HEADER_BYTES} bytes"
                    )
                return False
            end, block = at + 4, bytes(buf[:at])
        if len(block) > MAX_HEADER_BYTES:
            raise RequestError(
                f"part header at body offset {self._consumed} exceeds {MAX_HEADER_BYTES} bytes"
            )
        headers = _parse_headers(block, self._consumed)
        self._drop(end)
        events.append(_Event("headers", headers=headers))
        self._state = "body"
        return True

    def finish(self) -> None:
        """The body ended: RequestError unless the closing delimiter was seen."""
        if self.closed:
            return
        if self._state == "preamble":
            raise RequestError(f"multipart body holds no boundary line --{self.boundary}")
        raise RequestError(
            f"multipart body ended at offset {self._consumed + len(self._buf)} before its closing "
            f"delimiter --{self.boundary}-- (truncated upload?)"
        )


def _parse_headers(block: bytes, offset: int) -> dict[str, str]:
    headers: dict[str, str] = {}
    if not block:
        return headers
    last: str | None = None
    for raw in block.split(CRLF):
        line = raw.decode("latin-1")
        if line[:1] in (" ", "\t") and last is not None:  # obsolete folding: continues the last header
            headers[last] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not name:
            raise RequestError(f"malformed part header line {line[:80]!r} at body offset {offset}")
        headers[name] = value.strip()
        last = name
    return headers


def multipart_boundary(content_type: str | None) -> tuple[str, str | None]:
    """(boundary, `type` parameter) of a multipart/related Content-Type.

    UnsupportedMediaTypeError if it is not multipart/related (or missing), RequestError if the
    boundary parameter is missing or not a valid RFC 2046 boundary.
    """
    if content_type is None or not content_type.strip():
        raise UnsupportedMediaTypeError("missing Content-Type: expected multipart/related")
    mt = parse_content_type(content_type)
    if mt.type != MULTIPART_RELATED:
        raise UnsupportedMediaTypeError(
            f"Content-Type {mt.type} is not supported here: expected multipart/related"
        )
    boundary = mt.params.get("boundary")
    if not boundary:
        raise RequestError(f"Content-Type {content_type!r} has no boundary parameter")
    raw = boundary.encode("latin-1", "replace")
    if len(raw) > 200 or raw.endswith(b" ") or not set(raw) <= _BCHARS:
        raise RequestError(f"invalid multipart boundary {boundary!r} (RFC 2046: 1-70 characters of bchars)")
    return boundary, mt.params.get("type")


class _Sink:
    """Collects one part's body: in memory up to the limit, then in a spool file."""

    def __init__(self, spool_dir: str, limit: int) -> None:
        self.spool_dir = spool_dir
        self.limit = limit
        self.mem: list[bytes | memoryview] = []
        self.size = 0
        self.file: BinaryIO | None = None
        self.path: str | None = None
        self.pending: list[bytes | memoryview] = []
        self.pending_bytes = 0
        self.writing: asyncio.Future[None] | None = None

    async def add(self, data: bytes | memoryview) -> None:
        self.size += len(data)
        if self.file is None:
            if self.size <= self.limit:
                self.mem.append(data)
                return
            fd, self.path = tempfile.mkstemp(prefix="stow-", suffix=".part", dir=self.spool_dir)
            self.file = os.fdopen(fd, "wb")
            self.pending, self.mem = self.mem, []
            self.pending_bytes = self.size - len(data)
        self.pending.append(data)
        self.pending_bytes += len(data)
        if self.pending_bytes >= SPOOL_WRITE_BYTES:
            await self._flush()

    async def _flush(self) -> None:
        """Hands the pending slices to a thread; one write stays in flight while parsing goes on
        (page-cache writes can stall under dirty-page throttling: never on the event loop)."""
        await self._wait()
        if self.pending and self.file is not None:
            batch, self.pending, self.pending_bytes = self.pending, [], 0
            self.writing = asyncio.ensure_future(asyncio.to_thread(self.file.writelines, batch))

    async def _wait(self) -> None:
        if self.writing is not None:
            writing, self.writing = self.writing, None
            await writing

    async def finish(self) -> tuple[bytes | None, str | None]:
        if self.file is None:
            data = (
                self.mem[0] if len(self.mem) == 1 and isinstance(self.mem[0], bytes) else b"".join(self.mem)
            )
            self.mem = []
            return data, None
        await self._flush()
        await self._wait()
        await asyncio.to_thread(self.file.close)
        path, self.path, self.file = self.path, None, None
        return None, path

    def abort(self) -> None:
        if self.writing is not None:
            # The thread may still be writing: close the file only after it is done.
            writing, self.writing, file, path = self.writing, None, self.file, self.path
            self.file = self.path = None
            writing.add_done_callback(lambda _f: _close_and_remove(file, path))
            return
        if self.file is not None:
            self.file.close()
            self.file = None
        if self.path is not None:
            _unlink_quietly(self.path)
            self.path = None


def _close_and_remove(file: BinaryIO | None, path: str | None) -> None:
    if file is not None:
        file.close()
    if path is not None:
        _unlink_quietly(path)


async def read_parts(
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    *,
    spool_dir: str,
    max_body: int,
    memory_part_limit: int = 8 << 20,
) -> AsyncIterator[Part]:
    """Parses a multipart/related request body as it arrives, yielding each complete Part.

    A part larger than `memory_part_limit` is written to a temporary file in `spool_dir` (the
    caller owns yielded parts and calls `Part.discard()`, or uses `collect_parts`). On any error
    the part being received is removed. Errors: UnsupportedMediaTypeError (not
    multipart/related), RequestError (bad boundary, malformed framing, truncated body),
    PayloadTooLargeError (more than `max_body` bytes).

    Parts without a Content-Type get the message's `type` parameter (the root type, RFC 2387),
    else text/plain (RFC 2046 5.1).
    """
    boundary, root_type = multipart_boundary(content_type)
    default_type = root_type or "text/plain"
    parser = MultipartParser(boundary)
    total = 0
    index = 0
    sink: _Sink | None = None
    headers: dict[str, str] = {}
    try:
        async for chunk in chunks:
            if not chunk:
                continue
            total += len(chunk)
            if total > max_body:
                raise PayloadTooLargeError(f"request body exceeds the limit of {max_body} bytes")
            for ev in parser.feed(chunk):
                if ev.kind == "headers":
                    headers = ev.headers
                    sink = _Sink(spool_dir, memory_part_limit)
                elif ev.kind == "data":
                    assert sink is not None
                    await sink.add(ev.data)
                elif ev.kind == "end":
                    assert sink is not None
                    data, path = await sink.finish()
                    ctype = headers.get("content-type") or default_type
                    part = Part(headers, ctype, sink.size, data=data, path=path, index=index)
                    sink = None
                    index += 1
                    yield part
            if parser.closed:
                break
        parser.finish()
    finally:
        if sink is not None:
            sink.abort()


class collect_parts:  # noqa: N801 — used like a function: `async with collect_parts(...) as parts`
    """Reads every part of a body into a list and removes all spool files on exit (error or not).

    For bodies whose parts are all needed at once; STOW-RS uses `stow.store_stream` instead, which
    stores and releases parts in batches as they arrive.
    """

    def __init__(self, chunks: AsyncIterator[bytes], content_type: str | None, **kwargs: object) -> None:
        self._gen = read_parts(chunks, content_type, **kwargs)  # type: ignore[arg-type]
        self.parts: list[Part] = []

    async def __aenter__(self) -> list[Part]:
        try:
            async for part in self._gen:
                self.parts.append(part)
        except BaseException:
            self._discard()
            raise
        return self.parts

    async def __aexit__(self, *exc: object) -> None:
        self._discard()

    def _discard(self) -> None:
        for part in self.parts:
            part.discard()
