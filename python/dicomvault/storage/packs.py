"""Packs: many small blobs in one large object, so millions of instances do not become millions
of PUTs; a blob is read back with one ranged GET.

Layout of `<prefix>packs/<pack id>.pack` (integers little-endian):

    header   32 bytes  magic b"DVPACK\\r\\n" | version u16 (1) | flags u16 (0) | reserved u32 (0)
                       | pack id (16 bytes: 6 bytes of Unix milliseconds + 10 random, so ids sort
                       by creation time)
    blobs              the blobs' bytes back to back, in the order they were added
    index              count u32 | entry size u32 (88) | count entries of
                       hash (32) | offset u64 | length u64 | BLAKE3 of the bytes (32)
                       | meta u32 (the caller's, e.g. a codec id) | reserved u32
    trailer  56 bytes  index offset u64 | index length u64
                       | BLAKE3(index bytes + the two integers before it) (32) | b"DVPKEND\\n"

`hash` is the caller's name for the blob (its content address); the BLAKE3 in the index is of
the bytes as stored, which differ from the content when a codec is applied. `PackWriter.seal()`
uploads one pack and returns its entries for the caller to record in its own index;
`PackReader.read(entry)` fetches one blob with one ranged GET and checks its BLAKE3;
`read_pack_index(key)` recovers the entries of a pack from the pack alone (two ranged GETs:
the trailer by a suffix range, then the index); `verify_pack(key)` streams a whole pack and
checks every blob, the index and the trailer.

Crash semantics. A pack becomes visible only when its PUT completes (an S3 PUT, single or
multipart, is atomic: the object appears whole or not at all), and the caller records the
entries only after `seal()` returned. So a crash before or during the upload leaves nothing
visible (at most an incomplete multipart upload, which the store's lifecycle rule
AbortIncompleteMultipartUpload reclaims), and a crash after the upload but before the caller's
index commit leaves a complete pack nothing refers to. A sweep finds those with
`unreferenced_packs()` (a listing of `packs/` minus the packs the index names) and either adopts
a pack (`verify_pack` passes: record its entries from `read_pack_index`) or deletes it. Packs
are never modified after upload; space is reclaimed by repacking live blobs and deleting the
old pack once the index no longer names it.
"""

from __future__ import annotations

import os
import struct
import tempfile
import time
from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

from blake3 import blake3

from ..errors import CorruptError, DicomVaultError, IntegrityError
from .objectstore import MiB, ObjectStore

MAGIC = b"DVPACK\r\n"
TRAILER_MAGIC = b"DVPKEND\n"
VERSION = 1
HEADER = struct.Struct("<8sHHI16s")
INDEX_HEAD = struct.Struct("<II")
ENTRY = struct.Struct("<32sQQ32sII")
TRAILER = struct.Struct("<QQ32s8s")
HASH_LEN = 32
DEFAULT_TARGET = 256 * MiB
SPOOL_IN_MEMORY = 64 * MiB  # a pack larger than this is spooled to a temporary file


class PackEntry(NamedTuple):
    """Where one blob lives: what the caller records in its index."""

    hash: bytes
    pack_key: str
    offset: int
    length: int
    digest: bytes  # BLAKE3 of the stored bytes
    meta: int = 0


@dataclass
class PackVerifyResult:
    key: str
    blobs: int = 0
    bytes: int = 0
    bad: list[bytes] = field(default_factory=list)  # hashes whose bytes do not match their BLAKE3

    @property
    def ok(self) -> bool:
        return not self.bad


def new_pack_id() -> bytes:
    return int(time.time() * 1000).to_bytes(6, "big") + os.urandom(10)


def pack_key(prefix: str, pack_id: bytes) -> str:
    return f"{prefix}packs/{pack_id.hex()}.pack"


def _trailer_sum(index: bytes, offset: int, length: int) -> bytes:
    return blake3(index + struct.pack("<QQ", offset, length)).digest()


class PackWriter:
    """Accumulates blobs into one pack at a time. `add()` says when the pack reached
    `target_size`; `seal()` uploads it and starts the next one. A failed `seal()` keeps the
    pack, so it can be called again."""

    def __init__(self, store: ObjectStore, prefix: str = "", target_size: int = DEFAULT_TARGET) -> None:
        self.store = store
        self.prefix = prefix
        self.target_size = target_size
        self._start()

    def _start(self) -> None:
        self.pack_id = new_pack_id()
        self.key = pack_key(self.prefix, self.pack_id)
        self._spool = tempfile.SpooledTemporaryFile(max_size=SPOOL_IN_MEMORY)
        self._spool.write(HEADER.pack(MAGIC, VERSION, 0, 0, self.pack_id))
        self._entries: list[PackEntry] = []
        self._seen: set[bytes] = set()
        self._size = HEADER.size
        self._finished_size: int | None = None

    @property
    def size(self) -> int:
        """Bytes of the pack so far (header and blobs)."""
        return self._size

    @property
    def count(self) -> int:
        return len(self._entries)

    @property
    def full(self) -> bool:
        return self._size >= self.target_size

    def add(self, blob_hash: bytes, data: bytes | memoryview, meta: int = 0) -> bool:
        """Appends a blob (a hash already in this pack is skipped); True once the pack is full."""
        if len(blob_hash) != HASH_LEN:
            raise DicomVaultError(f"pack {self.key}: a blob hash is {HASH_LEN} bytes, got {len(blob_hash)}")
        if self._finished_size is not None:
            raise DicomVaultError(f"pack {self.key} is being sealed; add to the next one after seal()")
        if blob_hash in self._seen:
            return self.full
        self._spool.write(data)
        self._entries.append(
            PackEntry(blob_hash, self.key, self._size, len(data), blake3(data).digest(), meta)
        )
        self._seen.add(blob_hash)
        self._size += len(data)
        return self.full

    def _finish(self) -> int:
        if self._finished_size is None:
            index = INDEX_HEAD.pack(len(self._entries), ENTRY.size) + b"".join(
                ENTRY.pack(e.hash, e.offset, e.length, e.digest, e.meta, 0) for e in self._entries
            )
            self._spool.write(index)
            self._spool.write(
                TRAILER.pack(
                    self._size, len(index), _trailer_sum(index, self._size, len(index)), TRAILER_MAGIC
                )
            )
            self._finished_size = self._size + len(index) + TRAILER.size
        return self._finished_size

    def seal(self) -> list[PackEntry]:
        """Uploads the pack (nothing when it is empty) and returns its entries."""
        if not self._entries:
            return []
        size = self._finish()
        self._spool.seek(0)
        self.store.put(self.key, self._spool, size)
        entries = self._entries
        self._spool.close()
        self._start()
        return entries

    def close(self) -> None:
        """Drops an unsealed pack (nothing was uploaded)."""
        self._spool.close()


class _Cursor:
    """Exact-length pieces out of a stream of chunks of arbitrary size."""

    def __init__(self, key: str, chunks: Iterable[bytes]) -> None:
        self.key = key
        self._it = iter(chunks)
        self._buf = memoryview(b"")

    def pieces(self, n: int) -> Iterator[memoryview]:
        while n:
            if not self._buf:
                nxt = next(self._it, None)
                if nxt is None:
                    raise CorruptError(f"pack {self.key}: ends {n} bytes early")
                self._buf = memoryview(nxt)
            take = min(n, len(self._buf))
            yield self._buf[:take]
            self._buf = self._buf[take:]
            n -= take

    def read(self, n: int) -> bytes:
        return b"".join(self.pieces(n))

    def at_end(self) -> bool:
        return not self._buf and all(not c for c in self._it)


class PackReader:
    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    def read(self, entry: PackEntry) -> bytes:
        """One blob, one ranged GET, its BLAKE3 checked (IntegrityError when it differs)."""
        if entry.length == 0:
            return self._checked(entry, b"")
        return self._checked(
            entry, self.store.get_range(entry.pack_key, entry.offset, entry.offset + entry.length)
        )

    def read_many(
        self, entries: Iterable[PackEntry], max_gap: int = 256 << 10, max_span: int = 16 * MiB
    ) -> list[bytes]:
        """Blobs in the order given, each checked. Entries of one pack that lie close together
        (a study moved at once is packed together) come in one ranged GET of at most
        `max_span` bytes, skipping gaps of up to `max_gap` bytes."""
        todo = list(entries)
        out: list[bytes] = [b""] * len(todo)
        run: list[int] = []
        span = [0, 0]  # [start, end) of the current run

        def flush() -> None:
            start, end = span
            key = todo[run[0]].pack_key
            data = self.store.get_range(key, start, end) if end > start else b""
            for i in run:
                e = todo[i]
                out[i] = self._checked(e, data[e.offset - start : e.offset - start + e.length])
            run.clear()

        for i in sorted(range(len(todo)), key=lambda i: (todo[i].pack_key, todo[i].offset)):
            e = todo[i]
            if run and (
                e.pack_key != todo[run[0]].pack_key
                or e.offset - span[1] > max_gap
                or e.offset + e.length - span[0] > max_span
            ):
                flush()
            if not run:
                span[:] = [e.offset, e.offset]
            run.append(i)
            span[1] = max(span[1], e.offset + e.length)
        if run:
            flush()
        return out

    def _checked(self, entry: PackEntry, data: bytes) -> bytes:
        if blake3(data).digest() != entry.digest:
            raise IntegrityError(
                f"blob {entry.hash.hex()} in {self.store.bucket}/{entry.pack_key} at {entry.offset} "
                f"(+{entry.length}): bytes do not match their BLAKE3"
            )
        return data

    def _index(self, key: str) -> tuple[list[PackEntry], bytes, bytes]:
        trailer, size = self.store.get_tail(key, TRAILER.size)
        if len(trailer) != TRAILER.size:
            raise CorruptError(f"pack {key}: {len(trailer)} bytes, shorter than its trailer")
        offset, length, checksum, magic = TRAILER.unpack(trailer)
        if magic != TRAILER_MAGIC:
            raise CorruptError(f"pack {key}: no pack trailer (magic {magic!r})")
        if offset < HEADER.size or length < INDEX_HEAD.size or offset + length + TRAILER.size != size:
            raise CorruptError(
                f"pack {key}: trailer names index [{offset}, +{length}), impossible in {size} bytes"
            )
        index = self.store.get_range(key, offset, offset + length)
        if _trailer_sum(index, offset, length) != checksum:
            raise CorruptError(f"pack {key}: index checksum mismatch")
        count, entry_size = INDEX_HEAD.unpack_from(index)
        if entry_size != ENTRY.size or INDEX_HEAD.size + count * entry_size != length:
            raise CorruptError(f"pack {key}: index of {count} x {entry_size} bytes does not fill {length}")
        entries = []
        expect = HEADER.size
        for i in range(count):
            h, off, n, digest, meta, _ = ENTRY.unpack_from(index, INDEX_HEAD.size + i * entry_size)
            if off != expect:  # blobs are back to back; anything else is damage
                raise CorruptError(f"pack {key}: entry {i} at {off}, expected {expect}")
            entries.append(PackEntry(h, key, off, n, digest, meta))
            expect += n
        if expect != offset:
            raise CorruptError(f"pack {key}: blobs end at {expect}, index starts at {offset}")
        return entries, index, trailer

    def read_pack_index(self, key: str) -> list[PackEntry]:
        """The entries of a pack from its own trailer and index (rebuilding, adopting)."""
        return self._index(key)[0]

    def verify_pack(self, key: str, rate_limit: float | None = None) -> PackVerifyResult:
        """Streams the whole pack: header, every blob against its BLAKE3, index and trailer as
        read by `read_pack_index`. `rate_limit` caps bytes/s (a scrub that yields to ingest).
        Damaged blobs are listed in the result; damaged structure raises CorruptError."""
        entries, index, trailer = self._index(key)
        result = PackVerifyResult(key)
        t0 = time.monotonic()

        def throttled(chunks: Iterator[bytes]) -> Iterator[bytes]:
            done = 0
            for c in chunks:
                yield c
                done += len(c)
                if rate_limit:
                    ahead = done / rate_limit - (time.monotonic() - t0)
                    if ahead > 0:
                        time.sleep(ahead)

        cur = _Cursor(key, throttled(self.store.stream(key)))
        magic, version, _, _, pack_id = HEADER.unpack(cur.read(HEADER.size))
        if magic != MAGIC or version != VERSION:
            raise CorruptError(f"pack {key}: bad header (magic {magic!r}, version {version})")
        if key.endswith(".pack") and not key.endswith(f"{pack_id.hex()}.pack"):
            raise CorruptError(f"pack {key}: header names pack {pack_id.hex()}")
        for e in entries:
            h = blake3()
            for p in cur.pieces(e.length):
                h.update(p)
            result.blobs += 1
            result.bytes += e.length
            if h.digest() != e.digest:
                result.bad.append(e.hash)
        if cur.read(len(index)) != index or cur.read(len(trailer)) != trailer:
            raise CorruptError(f"pack {key}: index or trailer differ between the stream and the tail reads")
        if not cur.at_end():
            raise CorruptError(f"pack {key}: bytes after the trailer")
        return result


def unreferenced_packs(store: ObjectStore, prefix: str, referenced: Collection[str]) -> list[str]:
    """Keys of packs under `prefix` that the caller's index does not name: left by a crash
    between upload and index commit (adopt after verify_pack) or by a repack (delete)."""
    return [
        o.key for o in store.list(f"{prefix}packs/") if o.key.endswith(".pack") and o.key not in referenced
    ]
