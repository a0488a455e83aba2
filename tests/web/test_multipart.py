"""multipart/related framing: the streaming reader against the stdlib `email` parser and against
hand-built bodies (RFC 2046 5.1.1 edge cases), chunk splits at every byte of a boundary line,
spooling of large parts, cleanup on errors, and the writer re-read by both parsers."""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import os
import tracemalloc
from collections.abc import AsyncIterator, Iterable, Iterator
from pathlib import Path

import pytest

from dicomvault.errors import PayloadTooLargeError, RequestError, UnsupportedMediaTypeError
from dicomvault.web.dicomweb.multipart import (
    MultipartParser,
    Part,
    collect_parts,
    multipart_content_type,
    multipart_stream,
    new_boundary,
    part_header,
    read_parts,
)
from dv_corpus import corpus_files

BOUNDARY = "XbOuNdArY-42"
CT = f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"'


async def _aiter(chunks: Iterable[bytes]) -> AsyncIterator[bytes]:
    for c in chunks:
        yield c


def _read(
    chunks: Iterable[bytes], content_type: str = CT, spool_dir: str = "/tmp", **kw: int
) -> list[tuple[dict[str, str], str, bytes]]:
    """Reads a body through read_parts; returns (headers, content type, body) per part."""

    async def run() -> list[tuple[dict[str, str], str, bytes]]:
        out = []
        async for part in read_parts(
            _aiter(chunks),
            content_type,
            spool_dir=spool_dir,
            max_body=kw.get("max_body", 1 << 40),
            memory_part_limit=kw.get("memory_part_limit", 8 << 20),
        ):
            out.append((part.headers, part.content_type, part.read()))
            part.discard()
        return out

    return asyncio.run(run())


def _email_parts(body: bytes, content_type: str) -> list[tuple[str, bytes]]:
    """The independent reference: the stdlib email parser on the same body."""
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {content_type}\r\n\r\n".encode() + body
    )
    assert msg.is_multipart()
    return [(p.get_content_type(), p.get_payload(decode=True)) for p in msg.iter_parts()]  # type: ignore[attr-defined]


def _body(parts: list[tuple[str, bytes]], boundary: str = BOUNDARY, preamble: bytes = b"") -> bytes:
    out = preamble
    for i, (ctype, data) in enumerate(parts):
        out += (b"\r\n" if i or preamble else b"") + f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode()
        out += data
    return out + f"\r\n--{boundary}--\r\n".encode()


PAYLOADS = [
    ("application/dicom", b"first part \r\n with CRLF and --XbOuNdArY- almost a boundary\r\n--"),
    ("application/dicom", b""),
    ("application/octet-stream", bytes(range(256)) * 3),
]


def test_reader_matches_email_parser() -> None:
    body = _body(PAYLOADS)
    ours = _read([body])
    assert [(c, d) for _, c, d in ours] == [(c, d) for c, d in PAYLOADS]
    assert [(c, d) for _, c, d in ours] == _email_parts(body, CT)


def test_split_at_every_byte_around_each_boundary_line() -> None:
    body = _body(PAYLOADS)
    expected = [(c, d) for c, d in PAYLOADS]
    marks = [i for i in range(len(body)) if body.startswith(f"--{BOUNDARY}".encode(), i)]
    assert len(marks) == 4
    for mark in marks:
        for cut in range(max(0, mark - 4), min(len(body), mark + len(BOUNDARY) + 8)):
            got = _read([body[:cut], body[cut:]])
            assert [(c, d) for _, c, d in got] == expected, f"split at {cut}"


def test_one_byte_chunks_and_three_way_splits() -> None:
    body = _body(PAYLOADS, preamble=b"this is the preamble\r\n")
    expected = [(c, d) for c, d in PAYLOADS]
    assert [(c, d) for _, c, d in _read([body[i : i + 1] for i in range(len(body))])] == expected
    for size in (2, 3, 7, 41, 64):
        assert [
            (c, d) for _, c, d in _read([body[i : i + size] for i in range(0, len(body), size)])
        ] == expected


def test_large_chunks_with_delimiter_straddling_the_carried_tail() -> None:
    # The fast path takes chunks >= the delimiter length; put the split inside the delimiter
    # after long body runs so the carried tail holds its first bytes.
    data = os.urandom(5000)
    body = _body([("application/dicom", data), ("application/dicom", data[::-1])])
    at = body.index(f"\r\n--{BOUNDARY}\r\n".encode(), 100)
    for k in range(0, len(BOUNDARY) + 5):
        cut = at + k
        chunks = [body[:1000], body[1000:cut], body[cut:]]
        assert [d for _, _, d in _read(chunks)] == [data, data[::-1]], f"split at delimiter+{k}"


def test_quoted_boundary_padding_preamble_epilogue_and_headers() -> None:
    boundary = "b'()+_,-./:=? end"  # every bchar RFC 2046 allows, space inside
    ct = f'multipart/related; type="application/dicom"; boundary="{boundary}"'
    body = (
        b"preamble, ignored\r\n--" + boundary.encode() + b"  \t\r\n"  # transport padding
        b"Content-Type: application/dicom\r\nContent-Location: a\r\n  folded\r\n\r\nAAA"
        b"\r\n--" + boundary.encode() + b"\r\n"
        b"\r\nno headers"  # a part without headers: the root type (RFC 2387)
        b"\r\n--" + boundary.encode() + b"-- \r\nepilogue --" + boundary.encode() + b"\r\ngarbage"
    )
    got = _read([body], ct)
    assert [(c, d) for _, c, d in got] == [
        ("application/dicom", b"AAA"),
        ("application/dicom", b"no headers"),
    ]
    assert got[0][0]["content-location"] == "a folded"
    assert [d for _, d in _email_parts(body, ct)] == [b"AAA", b"no headers"]
    # without a `type` parameter a part without headers is text/plain (RFC 2046 5.1)
    assert _read([body], f'multipart/related; boundary="{boundary}"')[1][1] == "text/plain"


def test_first_boundary_after_crlf_and_unquoted_boundary() -> None:
    body = b"\r\n--abc\r\nContent-Type: application/dicom\r\n\r\nX\r\n--abc--"
    got = _read([body], "multipart/related; type=application/dicom; boundary=abc")
    assert [d for _, _, d in got] == [b"X"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"--XbOuNdArY-42\r\n\r\nno end", "before its closing delimiter"),
        (b"--XbOuNdArY-42\r\n\r\nfull part\r\n--XbOuNdArY-42\r\n", "before its closing delimiter"),
        (b"no boundary at all", "no boundary line"),
        (b"", "no boundary line"),
        (b"--XbOuNdArY-42junk\r\n\r\nx\r\n--XbOuNdArY-42--", "instead of CRLF"),
        (b"--XbOuNdArY-42\r\nno colon here\r\n\r\nx\r\n--XbOuNdArY-42--", "malformed part header line"),
        (b"--XbOuNdArY-42\r\n" + b"X-Big: " + b"a" * 20000 + b"\r\n\r\nx", "exceeds"),
    ],
)
def test_malformed_bodies_are_400(body: bytes, message: str) -> None:
    with pytest.raises(RequestError, match=message) as err:
        _read([body])
    assert not isinstance(err.value, PayloadTooLargeError | UnsupportedMediaTypeError)


@pytest.mark.parametrize(
    ("content_type", "error", "message"),
    [
        ("application/dicom", UnsupportedMediaTypeError, "not supported here"),
        ("multipart/form-data; boundary=x", UnsupportedMediaTypeError, "multipart/form-data"),
        (None, UnsupportedMediaTypeError, "missing Content-Type"),
        ('multipart/related; type="application/dicom"', RequestError, "no boundary"),
        ("multipart/related; boundary=a{b}", RequestError, "invalid multipart boundary"),
        ('multipart/related; boundary="trailing "', RequestError, "invalid multipart boundary"),
    ],
)
def test_content_type_errors(content_type: str | None, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        _read([b"--x\r\n\r\n\r\n--x--"], content_type)  # type: ignore[arg-type]


def test_max_body_is_413_and_cleans_the_spool(tmp_path: Path) -> None:
    body = _body([("application/dicom", b"x" * 50_000)])
    with pytest.raises(PayloadTooLargeError, match="10000 bytes"):
        _read(
            [body[i : i + 4096] for i in range(0, len(body), 4096)],
            spool_dir=str(tmp_path),
            max_body=10_000,
            memory_part_limit=1000,
        )
    assert list(tmp_path.iterdir()) == []


def _big_body(boundary: str, size: int, chunk: int) -> Iterator[bytes]:
    """A body holding one `size`-byte part, generated lazily (it never exists whole)."""
    yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    block = bytes(range(256)) * (chunk // 256)
    for _ in range(size // len(block)):
        yield block
    yield f"\r\n--{boundary}\r\nContent-Type: application/dicom\r\n\r\nsmall\r\n--{boundary}--\r\n".encode()


def test_big_part_is_spooled_and_memory_stays_small(tmp_path: Path) -> None:
    size = 48 << 20
    boundary = new_boundary()
    ct = multipart_content_type("application/dicom", boundary)

    async def run() -> list[Part]:
        return [
            p
            async for p in read_parts(
                _aiter(_big_body(boundary, size, 64 << 10)),
                ct,
                spool_dir=str(tmp_path),
                max_body=1 << 40,
                memory_part_limit=1 << 20,
            )
        ]

    tracemalloc.start()
    try:
        parts = asyncio.run(run())
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20, f"peak Python memory {peak} for a {size}-byte part"
    big, small = parts
    assert big.data is None and big.path is not None and big.size == size
    assert os.path.getsize(big.path) == size
    block = bytes(range(256)) * 256
    with open(big.path, "rb") as f:
        for _ in range(size // len(block)):
            assert f.read(len(block)) == block
    assert small.data == b"small" and small.path is None
    big.discard()
    big.discard()  # idempotent
    assert list(tmp_path.iterdir()) == []


def test_truncated_upload_removes_the_partial_spool_file(tmp_path: Path) -> None:
    boundary = new_boundary()
    chunks = list(_big_body(boundary, 4 << 20, 64 << 10))[:-1]  # no closing delimiter
    with pytest.raises(RequestError, match="closing delimiter"):
        _read(
            chunks,
            multipart_content_type("application/dicom", boundary),
            spool_dir=str(tmp_path),
            memory_part_limit=1 << 20,
        )
    assert list(tmp_path.iterdir()) == []


def test_collect_parts_removes_every_spool_file(tmp_path: Path) -> None:
    boundary = new_boundary()
    ct = multipart_content_type("application/dicom", boundary)

    async def run() -> list[str]:
        async with collect_parts(
            _aiter(_big_body(boundary, 2 << 20, 64 << 10)),
            ct,
            spool_dir=str(tmp_path),
            max_body=1 << 40,
            memory_part_limit=1 << 16,
        ) as parts:
            assert [p.size for p in parts] == [2 << 20, 5]
            return [p.path for p in parts if p.path]

    paths = asyncio.run(run())
    assert len(paths) == 1 and not os.path.exists(paths[0])


def _corpus_sample() -> list[Path]:
    wanted = {
        "CT_small.dcm",
        "MR_small_jpeg_ls_lossless.dcm",
        "rtplan.dcm",
        "emri_small_RLE.dcm",
        "liver.dcm",
    }
    found = [p for p in corpus_files() if p.name in wanted]
    assert len(found) == len(wanted)
    return found


def test_writer_reread_by_both_parsers() -> None:
    files = _corpus_sample()
    ts = "1.2.840.10008.1.2.1"
    boundary = new_boundary()
    specs = [(f"application/dicom; transfer-syntax={ts}", f.read_bytes()) for f in files[:-1]] + [
        ("application/dicom", iter([files[-1].read_bytes()[:1000], b"", files[-1].read_bytes()[1000:]]))
    ]
    body = b"".join(multipart_stream(specs, boundary))
    ct = multipart_content_type("application/dicom", boundary)
    expected = [f.read_bytes() for f in files]
    assert [d for _, d in _email_parts(body, ct)] == expected
    ours = _read([body[i : i + 8191] for i in range(0, len(body), 8191)], ct)
    assert [d for _, _, d in ours] == expected
    assert ours[0][1] == f"application/dicom; transfer-syntax={ts}"
    assert ct == f'multipart/related; type="application/dicom"; boundary={boundary}'


def test_writer_details() -> None:
    assert part_header("image/jls; transfer-syntax=1.2.840.10008.1.2.4.80", {"Content-Location": "/f/1"}) == (
        b"Content-Type: image/jls; transfer-syntax=1.2.840.10008.1.2.4.80\r\nContent-Location: /f/1\r\n\r\n"
    )
    with pytest.raises(ValueError, match="line break"):
        part_header("application/dicom\r\nX-Injected: 1")
    assert b"".join(multipart_stream([], "b")) == b"--b--\r\n"
    assert new_boundary() != new_boundary()


def test_parser_is_incremental_and_stops_at_close() -> None:
    p = MultipartParser("b")
    events = p.feed(b"--b\r\nContent-Type: a/b\r\n\r\nhello")
    # the last len("\r\n--b") - 1 bytes are held back: they could start a delimiter
    assert b"".join(e.data for e in events if e.kind == "data") == b"h"
    events = p.feed(b" world\r\n--b--\r\nepilogue")
    assert b"".join(e.data for e in events if e.kind == "data") == b"ello world"
    assert [e.kind for e in events if e.kind != "data"] == ["end", "close"]
    assert p.closed and p.feed(b"more epilogue") == []
    p.finish()
