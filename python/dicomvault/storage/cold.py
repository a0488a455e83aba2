"""The cold tier: blobs re-encoded with the dense codec, packed many to an object of an
S3-compatible store (packs.py), read back one blob per ranged GET.

`ColdTier.put()` is what the migrator calls before it frees a blob anywhere else, so it returns
placements only for what it has read back from the store and checked twice: the stored bytes
against the BLAKE3 the pack index holds (the store kept what we sent), and the decoded bytes
against the blob's content address (the codec round-trips). Anything else raises, and the packs
that call uploaded are deleted: nothing refers to them, and a migrator that retries makes new
ones. A pack left behind by a crash (or by a store that went down before the delete) is found by
`orphan_packs()`.

The engine records a `ColdPlacement` per blob in its index (`placement_fields()` /
`placement_from_fields()`); reads need nothing else: one ranged GET, its digest checked
(`read`), then decoded and checked against the hash (`read_logical`). `verify()` is the scrub:
each referenced pack streamed once, rate-limited, every placement matched against the pack's own
index.

The codecs are native and release the GIL, so the re-encoding before an upload and the decoding
after it run on a pool of one thread per CPU. A store that is down fails fast with
`ObjectStoreUnavailableError` (the ObjectStore's short timeouts and bounded retries; this layer
adds no retries of its own).
"""

from __future__ import annotations

import logging
import os
import threading
from collections import deque
from collections.abc import Collection, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field
from typing import Any

from .. import _native
from ..errors import (
    CorruptError,
    DicomVaultError,
    IntegrityError,
    ObjectNotFoundError,
    ObjectStoreError,
    ObjectStoreUnavailableError,
)
from .objectstore import SSE, MiB, ObjectStore
from .packs import HASH_LEN, HEADER, MAGIC, VERSION, PackEntry, PackReader, PackWriter, unreferenced_packs
from .read_check import DEFAULT as READ_CHECK_DEFAULT

log = logging.getLogger("dicomvault.storage.cold")

CODECS = frozenset({_native.CODEC_RAW, _native.CODEC_HOT, _native.CODEC_COLD})
DEFAULT_PACK_SIZE = 256 * MiB
# Read-back after upload fetches a pack in windows of this size: a 256 MiB pack is never held
# whole, and a small pack is one GET.
READBACK_WINDOW = 16 * MiB


@dataclass(frozen=True, slots=True)
class ColdPlacement:
    """Where a blob lives in the cold tier: what the engine records in its index."""

    hash: bytes  # content address (BLAKE3 of the logical bytes)
    pack_key: str
    offset: int
    length: int  # stored length in the pack
    digest: bytes  # BLAKE3 of the stored bytes (as in the pack index)
    codec: int  # codec id of the stored bytes
    logical_len: int

    def entry(self) -> PackEntry:
        return PackEntry(self.hash, self.pack_key, self.offset, self.length, self.digest, self.codec)


@dataclass
class ColdVerifyReport:
    """What `ColdTier.verify()` found. `packs` streamed, referenced `blobs` checked, blob `bytes`
    streamed; `damaged` and `missing` are (hash hex, reason); `corrupt_packs` are (key, reason)
    for packs whose header, index or trailer is damaged (their blobs were then checked one by
    one with ranged GETs, and only those that failed are in `damaged`)."""

    packs: int = 0
    blobs: int = 0
    bytes: int = 0
    damaged: list[tuple[str, str]] = field(default_factory=list)
    missing: list[tuple[str, str]] = field(default_factory=list)
    corrupt_packs: list[tuple[str, str]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.damaged or self.missing or self.corrupt_packs)


_FIELDS = ("pack_key", "offset", "length", "digest", "codec", "logical_len")


def placement_fields(p: ColdPlacement) -> dict[str, Any]:
    """The fields the engine stores in a blob's record (its key is the hash)."""
    return {
        "pack_key": p.pack_key,
        "offset": p.offset,
        "length": p.length,
        "digest": p.digest,
        "codec": p.codec,
        "logical_len": p.logical_len,
    }


def placement_from_fields(blob_hash: bytes, d: Mapping[str, Any]) -> ColdPlacement:
    """The inverse of `placement_fields`; a record that cannot be a placement is CorruptError
    (the index is damaged: a wrong offset would read someone else's bytes)."""
    where = f"cold placement of blob {bytes(blob_hash).hex()}"
    if len(blob_hash) != HASH_LEN:
        raise CorruptError(f"{where}: hash of {len(blob_hash)} bytes, not {HASH_LEN}")
    missing = [k for k in _FIELDS if k not in d]
    if missing:
        raise CorruptError(f"{where}: record lacks {', '.join(missing)}")
    key, digest = d["pack_key"], d["digest"]
    ints = {k: d[k] for k in ("offset", "length", "codec", "logical_len")}
    if not isinstance(key, str) or not key:
        raise CorruptError(f"{where}: pack_key {key!r} is not a key")
    if not isinstance(digest, bytes | bytearray | memoryview) or len(digest) != HASH_LEN:
        raise CorruptError(f"{where}: digest {digest!r} is not {HASH_LEN} bytes")
    bad = [k for k, v in ints.items() if isinstance(v, bool) or not isinstance(v, int) or v < 0]
    if bad:
        raise CorruptError(f"{where}: {', '.join(f'{k}={ints[k]!r}' for k in bad)} not a count")
    if ints["codec"] not in CODECS:
        raise CorruptError(f"{where}: unknown codec {ints['codec']}")
    return ColdPlacement(
        bytes(blob_hash),
        key,
        ints["offset"],
        ints["length"],
        bytes(digest),
        ints["codec"],
        ints["logical_len"],
    )


def _integrity(message: str, pack_key: str | None, hashes: Sequence[bytes]) -> IntegrityError:
    """IntegrityError with what it concerns as attributes (the migrator skips those hashes)."""
    err = IntegrityError(message)
    err.pack_key = pack_key  # type: ignore[attr-defined]
    err.hashes = list(hashes)  # type: ignore[attr-defined]
    return err


class ColdTier:
    """The object-store tier. Thread-safe: puts, reads and verifies may run concurrently (each
    put packs into packs of its own)."""

    readback_window = READBACK_WINDOW

    def __init__(
        self,
        store: ObjectStore,
        *,
        name: str = "cold",
        prefix: str = "",
        codec: int = _native.CODEC_COLD,
        pack_size: int = DEFAULT_PACK_SIZE,
        level: int = 1,
    ) -> None:
        if codec not in CODECS:
            raise DicomVaultError(f"cold tier {name}: unknown codec {codec}")
        if pack_size <= 0:
            raise DicomVaultError(f"cold tier {name}: pack_size must be positive, got {pack_size}")
        self.store = store
        self.name = name
        # "cold" and "cold/" mean the same folder: keys are never glued to a partial name.
        self.prefix = prefix if not prefix or prefix.endswith("/") else prefix + "/"
        self.codec = codec
        self.pack_size = pack_size
        self.level = level
        self.workers = os.cpu_count() or 1
        self._reader = PackReader(store)
        self._pool: ThreadPoolExecutor | None = None
        self._lock = threading.Lock()
        self._closed = False
        self._owns_store = False

    @classmethod
    def from_spec(
        cls,
        name: str,
        endpoint: str | None,
        bucket: str,
        *,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        prefix: str = "",
        sse: SSE | None = None,
        pack_size: int = DEFAULT_PACK_SIZE,
        codec: int = _native.CODEC_COLD,
        level: int = 1,
        **store_options: Any,
    ) -> ColdTier:
        """A tier on its own ObjectStore (closed with the tier); a missing bucket is created.
        `store_options` go to ObjectStore (timeouts, retries, multipart settings)."""
        store = ObjectStore(
            endpoint,
            bucket,
            region=region,
            access_key=access_key,
            secret_key=secret_key,
            sse=sse,
            **store_options,
        )
        try:
            store.ensure_bucket()
            tier = cls(store, name=name, prefix=prefix, codec=codec, pack_size=pack_size, level=level)
        except BaseException:
            store.close()
            raise
        tier._owns_store = True
        return tier

    def __repr__(self) -> str:
        return f"ColdTier({self.name!r}, {self.store!r}, prefix={self.prefix!r}, codec={self.codec})"

    @property
    def packs_prefix(self) -> str:
        return f"{self.prefix}packs/"

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._closed:
                raise DicomVaultError(f"cold tier {self.name} is closed")
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.workers, thread_name_prefix=f"cold-{self.name}")
            return self._pool

    def close(self) -> None:
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        if self._owns_store:
            self.store.close()

    def __enter__(self) -> ColdTier:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- put --------------------------------------------------------------------------------

    def put(self, items: Sequence[tuple[bytes, int, int, bytes]]) -> list[ColdPlacement]:
        """Stores blobs given as (hash, codec id, logical length, stored bytes in that codec);
        returns one placement per item, in order (a hash given twice is stored once).

        Each blob is re-encoded for this tier's codec (a blob the codec refuses is stored as it
        came), packed, uploaded, then read back and checked. Raises IntegrityError (with
        `.hashes` and `.pack_key`) when a blob read back is not what was written or does not
        decode to its hash, after deleting the packs this call uploaded; a store that is down
        raises ObjectStoreUnavailableError. Either way no placement is returned."""
        unique: dict[bytes, tuple[int, int, bytes]] = {}
        for h, codec, logical_len, stored in items:
            h = bytes(h)
            if len(h) != HASH_LEN:
                raise DicomVaultError(f"cold tier {self.name}: a blob hash is {HASH_LEN} bytes, got {len(h)}")
            if codec not in CODECS:
                raise DicomVaultError(f"cold tier {self.name}: blob {h.hex()} has unknown codec {codec}")
            if logical_len < 0:
                raise DicomVaultError(f"cold tier {self.name}: blob {h.hex()} has length {logical_len}")
            unique.setdefault(h, (codec, logical_len, stored if isinstance(stored, bytes) else bytes(stored)))
        if not unique:
            return []
        writer = PackWriter(self.store, self.prefix, self.pack_size)
        uploaded: list[str] = []
        placed: dict[bytes, ColdPlacement] = {}
        try:
            # closing(): a failure cancels the recodes still queued now, not when collected
            with closing(self._recoded(unique)) as recoded:
                for h, codec, data in recoded:
                    if writer.add(h, data, meta=codec):
                        self._seal(writer, unique, uploaded, placed)
            self._seal(writer, unique, uploaded, placed)
        except ObjectStoreUnavailableError:
            writer.close()
            if uploaded:  # a delete would only wait for the same dead store
                log.warning(
                    "cold tier %s: store down mid-put; packs %s are unreferenced (orphan_packs finds them)",
                    self.name,
                    ", ".join(uploaded),
                )
            raise
        except BaseException:
            writer.close()
            self._discard(uploaded)
            raise
        return [placed[bytes(item[0])] for item in items]

    def _recode(self, codec: int, stored: bytes, logical_len: int) -> tuple[int, bytes]:
        """One blob re-encoded for this tier (a seam: tests make the codec refuse)."""
        used, out = _native.recode(codec, stored, logical_len, self.codec, self.level)
        return used, out

    def _recode_one(self, h: bytes, codec: int, logical_len: int, stored: bytes) -> tuple[bytes, int, bytes]:
        if codec == self.codec:
            return h, codec, stored
        try:
            used, out = self._recode(codec, stored, logical_len)
        except DicomVaultError as exc:
            # Keep the blob in its own codec rather than drop it, but only if it is sound:
            # damaged input must not reach the store under a name that is not its content's.
            self._check_logical(h, codec, stored, logical_len, "the bytes given")
            log.warning(
                "cold tier %s: blob %s: codec %d refused it (%s); stored as it came (codec %d)",
                self.name,
                h.hex(),
                self.codec,
                exc,
                codec,
            )
            return h, codec, stored
        return h, used, out

    def _recoded(self, unique: Mapping[bytes, tuple[int, int, bytes]]) -> Iterator[tuple[bytes, int, bytes]]:
        """(hash, codec, stored) in the order given, re-encoded on the pool; a bounded number in
        flight so a large batch is not held twice over in memory."""
        pool = self._executor()
        pending: deque[Future[tuple[bytes, int, bytes]]] = deque()
        try:
            for h, (codec, n, stored) in unique.items():
                if len(pending) >= 2 * self.workers:
                    yield pending.popleft().result()
                pending.append(pool.submit(self._recode_one, h, codec, n, stored))
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()

    def _seal(
        self,
        writer: PackWriter,
        unique: Mapping[bytes, tuple[int, int, bytes]],
        uploaded: list[str],
        placed: dict[bytes, ColdPlacement],
    ) -> None:
        key = writer.key
        entries = writer.seal()
        if not entries:
            return
        uploaded.append(key)
        self._after_upload(key)
        self._check_upload(key, entries, unique)
        for e in entries:
            placed[e.hash] = ColdPlacement(
                e.hash, e.pack_key, e.offset, e.length, e.digest, e.meta, unique[e.hash][1]
            )

    def _after_upload(self, key: str) -> None:
        """Called once a pack is in the store, before it is read back (a seam for tests that
        damage the object in between)."""

    def _check_upload(
        self, key: str, entries: list[PackEntry], unique: Mapping[bytes, tuple[int, int, bytes]]
    ) -> None:
        """Reads the pack back: its own index must be the one written, its header sound, and
        every blob must match its digest and decode to its hash."""
        where = f"{self.store.bucket}/{key}"
        hashes = [e.hash for e in entries]
        try:
            index = self._reader.read_pack_index(key)
        except ObjectNotFoundError as exc:
            raise _integrity(
                f"cold tier {self.name}: pack {where} not found right after its upload", key, hashes
            ) from exc
        except (CorruptError, ObjectStoreError) as exc:
            raise _integrity(
                f"cold tier {self.name}: pack {where} read back damaged: {exc}", key, hashes
            ) from exc
        if index != entries:
            raise _integrity(
                f"cold tier {self.name}: pack {where}: the index read back differs from the one written",
                key,
                hashes,
            )
        pool = self._executor()
        bad: list[tuple[bytes, str]] = []
        checks: deque[tuple[PackEntry, Future[str | None]]] = deque()
        for start, end, run in _windows(entries, self.readback_window):
            try:
                data = self.store.get_range(key, start, end)
            except (ObjectNotFoundError, ObjectStoreError) as exc:
                raise _integrity(
                    f"cold tier {self.name}: pack {where} read back short: {exc}", key, hashes
                ) from exc
            if start == 0:
                self._check_header(key, data, hashes)
            # The previous window's decodes run while this one downloads; at most two windows
            # are held at a time.
            while checks and checks[0][0].offset < start:
                e, f = checks.popleft()
                if (reason := f.result()) is not None:
                    bad.append((e.hash, reason))
            for e in run:
                blob = data[e.offset - start : e.offset - start + e.length]
                checks.append((e, pool.submit(self._check_blob, e, blob, unique[e.hash][1])))
        for e, f in checks:
            if (reason := f.result()) is not None:
                bad.append((e.hash, reason))
        if bad:
            detail = "; ".join(f"blob {h.hex()}: {reason}" for h, reason in bad[:5])
            more = f" (and {len(bad) - 5} more)" if len(bad) > 5 else ""
            raise _integrity(
                f"cold tier {self.name}: pack {where} read back wrong, {len(bad)} of {len(entries)} "
                f"blob(s): {detail}{more}",
                key,
                [h for h, _ in bad],
            )

    def _check_header(self, key: str, data: bytes, hashes: Sequence[bytes]) -> None:
        magic, version, _, _, pack_id = HEADER.unpack_from(data)
        if magic != MAGIC or version != VERSION or not key.endswith(f"{pack_id.hex()}.pack"):
            raise _integrity(
                f"cold tier {self.name}: pack {self.store.bucket}/{key} read back with a damaged header",
                key,
                hashes,
            )

    def _check_blob(self, e: PackEntry, stored: bytes, logical_len: int) -> str | None:
        """Why the blob read back is wrong, or None."""
        if _native.blake3(stored) != e.digest:
            return f"stored bytes at {e.offset} (+{e.length}) do not match their BLAKE3"
        try:
            logical = _native.decode(e.meta, stored, logical_len)
        except DicomVaultError as exc:
            return f"does not decode (codec {e.meta}): {exc}"
        if _native.blake3(logical) != e.hash:
            return f"decodes (codec {e.meta}) to bytes whose BLAKE3 is not the blob's hash"
        return None

    def _check_logical(self, h: bytes, codec: int, stored: bytes, logical_len: int, what: str) -> bytes:
        try:
            logical = _native.decode(codec, stored, logical_len)
        except DicomVaultError as exc:
            raise _integrity(
                f"blob {h.hex()}: {what} (codec {codec}) do not decode: {exc}", None, [h]
            ) from exc
        if _native.blake3(logical) != h:
            raise _integrity(
                f"blob {h.hex()}: {what} (codec {codec}) do not decode to the blob's hash", None, [h]
            )
        return logical

    def _discard(self, keys: Iterable[str]) -> None:
        """Best effort: a pack left behind is an orphan, which the sweep reclaims."""
        for key in keys:
            try:
                self.store.delete(key)
                log.warning(
                    "cold tier %s: deleted pack %s/%s (put failed)", self.name, self.store.bucket, key
                )
            except (ObjectStoreError, ObjectStoreUnavailableError) as exc:
                log.warning(
                    "cold tier %s: could not delete pack %s (%s); orphan_packs finds it", self.name, key, exc
                )

    # -- reads ------------------------------------------------------------------------------

    def read(self, p: ColdPlacement) -> tuple[int, bytes]:
        """(codec, stored bytes) by one ranged GET, checked against the placement's digest
        (IntegrityError naming the hash and pack)."""
        return p.codec, self._reader.read(p.entry())

    def read_logical(self, p: ColdPlacement) -> bytes:
        """The blob's logical bytes, decoded and checked against its hash."""
        codec, stored = self.read(p)
        return self.logical_of(p, codec, stored)

    def logical_of(self, p: ColdPlacement, codec: int, stored: bytes) -> bytes:
        """Logical bytes of stored bytes already read (`read_many`), decoded and checked
        against the blob's hash."""
        return self._check_logical(p.hash, codec, stored, p.logical_len, self._where(p))

    def read_decoded(
        self, p: ColdPlacement, verify_reads: str = READ_CHECK_DEFAULT
    ) -> tuple[str, _native.DecodedObject]:
        """`decoded_of` the blob's stored bytes, read by one ranged GET."""
        codec, stored = self.read(p)
        return self.decoded_of(p, codec, stored, verify_reads)

    def decoded_of(
        self, p: ColdPlacement, codec: int, stored: bytes, verify_reads: str = READ_CHECK_DEFAULT
    ) -> tuple[str, _native.DecodedObject]:
        """(transfer syntax, data set in a native buffer) of stored bytes already read (their
        digest checked), decoded off the GIL and checked as `verify_reads` says
        (storage/read_check.py): what a retrieve sends as it is. Tier moves and the scrub check
        BLAKE3 (`read_logical`, `verify`)."""
        try:
            return _native.decode_read(codec, stored, p.logical_len, p.hash, verify_reads)
        except DicomVaultError as exc:
            raise _integrity(
                f"blob {p.hash.hex()}: {self._where(p)} (codec {codec}) do not decode to it: {exc}",
                None,
                [p.hash],
            ) from exc

    def _where(self, p: ColdPlacement) -> str:
        return f"the bytes in {self.store.bucket}/{p.pack_key} at {p.offset}"

    def read_many(self, ps: Sequence[ColdPlacement]) -> list[tuple[int, bytes] | Exception]:
        """One result per placement, in order: (codec, stored bytes) or the error for that blob
        (IntegrityError, ObjectNotFoundError for a pack that is gone). Placements close together
        in one pack share a ranged GET. A store that is down raises ObjectStoreUnavailableError
        for the whole call: it is not a fact about any one blob."""
        out: list[tuple[int, bytes] | Exception] = [DicomVaultError("not read")] * len(ps)
        by_pack: dict[str, list[int]] = {}
        for i, p in enumerate(ps):
            by_pack.setdefault(p.pack_key, []).append(i)
        for idx in by_pack.values():
            try:
                blobs = self._reader.read_many([ps[i].entry() for i in idx])
            except ObjectNotFoundError as exc:
                for i in idx:
                    out[i] = exc
                continue
            except (IntegrityError, ObjectStoreError):
                # One bad blob fails the coalesced read: find which, one GET each.
                for i in idx:
                    try:
                        out[i] = self.read(ps[i])
                    except (IntegrityError, ObjectStoreError, ObjectNotFoundError) as exc:
                        out[i] = exc
                continue
            for i, data in zip(idx, blobs, strict=True):
                out[i] = (ps[i].codec, data)
        return out

    # -- scrub and housekeeping -------------------------------------------------------------

    def verify(
        self, placements: Iterable[ColdPlacement], *, rate_limit: int | None = None
    ) -> ColdVerifyReport:
        """Streams each referenced pack once (at most `rate_limit` bytes/s) and checks every
        placement against the pack's own index (same offset, length, digest, codec) and its
        bytes against their digest. A store that is down raises: it says nothing of the blobs."""
        report = ColdVerifyReport()
        by_pack: dict[str, dict[bytes, ColdPlacement]] = {}
        for p in placements:
            by_pack.setdefault(p.pack_key, {})[p.hash] = p
        for key in sorted(by_pack):
            refs = by_pack[key]
            report.blobs += len(refs)
            where = f"{self.store.bucket}/{key}"
            try:
                index = {e.hash: e for e in self._reader.read_pack_index(key)}
                result = self._reader.verify_pack(key, rate_limit=rate_limit)
            except ObjectNotFoundError:
                report.missing += [(h.hex(), f"pack {where} not found") for h in refs]
                continue
            except CorruptError as exc:
                report.corrupt_packs.append((key, str(exc)))
                self._verify_each(refs.values(), report)
                continue
            report.packs += 1
            report.bytes += result.bytes
            bad = set(result.bad)
            for h, p in refs.items():
                e = index.get(h)
                if e is None:
                    report.missing.append((h.hex(), f"not in the index of pack {where}"))
                elif (e.offset, e.length, e.digest, e.meta) != (p.offset, p.length, p.digest, p.codec):
                    report.damaged.append(
                        (
                            h.hex(),
                            f"pack {where} index has it at {e.offset} (+{e.length}, codec {e.meta}, "
                            f"digest {e.digest.hex()[:16]}), the placement at {p.offset} (+{p.length}, "
                            f"codec {p.codec}, digest {p.digest.hex()[:16]})",
                        )
                    )
                elif h in bad:
                    report.damaged.append(
                        (h.hex(), f"bytes in pack {where} at {e.offset} do not match their BLAKE3")
                    )
        return report

    def _verify_each(self, refs: Iterable[ColdPlacement], report: ColdVerifyReport) -> None:
        """A pack whose structure is damaged may still serve its blobs by their placements."""
        for p in refs:
            try:
                self.read(p)
            except ObjectNotFoundError as exc:
                report.missing.append((p.hash.hex(), str(exc)))
            except (IntegrityError, ObjectStoreError) as exc:
                report.damaged.append((p.hash.hex(), str(exc)))

    def orphan_packs(self, referenced_pack_keys: Collection[str]) -> list[str]:
        """Packs under this tier's prefix that no placement names (a crash between upload and
        index commit, a put whose cleanup could not reach the store, a repack)."""
        return unreferenced_packs(self.store, self.prefix, referenced_pack_keys)

    def delete_pack(self, key: str) -> None:
        if not (key.startswith(self.packs_prefix) and key.endswith(".pack")):
            raise DicomVaultError(f"cold tier {self.name}: {key} is not a pack under {self.packs_prefix}")
        self.store.delete(key)

    def usage(self) -> tuple[int, int]:
        """(objects, bytes) under the tier's packs/, from a listing."""
        n = size = 0
        for o in self.store.list(self.packs_prefix):
            n += 1
            size += o.size
        return n, size


def _windows(entries: Sequence[PackEntry], window: int) -> Iterator[tuple[int, int, list[PackEntry]]]:
    """[start, end) ranges of at most `window` bytes (or one blob, if larger) covering the
    header and the blobs, which lie back to back in offset order."""
    start, end, run = 0, HEADER.size, []
    for e in entries:
        if run and e.offset + e.length - start > window:
            yield start, end, run
            start, run = e.offset, []
        run.append(e)
        end = e.offset + e.length
    if run:
        yield start, end, run
