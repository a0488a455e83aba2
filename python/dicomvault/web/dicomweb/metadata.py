"""WADO-RS metadata, served fast: each instance's DICOM JSON is computed once and cached.

The cache is a small RocksDB at `<data>/cache/metadata`, keyed by the instance's blob hash (the
content address, so a changed object is a new key and nothing ever needs invalidating for a
re-send) plus a format version byte (bumped when the JSON producer changes, so old entries are
simply never read again). Values are the instance's JSON already encoded with orjson, with the
base URL of its BulkDataURIs replaced by a placeholder: one entry serves every base URL (reverse
proxies, X-Forwarded-*), and the warm path of a series is one multi-get, one join and one
bytes.replace.

It is only a cache: writes skip the WAL and are never synced, and a directory that cannot be
opened is dropped and rebuilt. Patient updates/merges applied "on the way out" are not reflected
here yet (see the module report): the JSON is that of the stored bytes.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import orjson
from rocksdict import DBCompressionType, Options, Rdict, WriteBatch, WriteOptions

from ...coercion import json_entries
from ...errors import CorruptError, IntegrityError, NotFoundError
from ...index.records import InstanceRecord
from .json_model import dataset_json

log = logging.getLogger(__name__)

FORMAT_VERSION = 2  # 2: AvailableTransferSyntaxUID added
DEFAULT_THRESHOLD = 1024
WARM_BATCH = 256
# Stands for the base URL inside cached JSON. NULs cannot reach orjson's output unescaped, so the
# encoded form below can only come from this placeholder or from a stored value spelling it
# exactly (such an instance is detected and never cached, see MetadataService._encode).
PLACEHOLDER = "\x00dicomvault-base-url\x00"
ENCODED_PLACEHOLDER = orjson.dumps(PLACEHOLDER)[1:-1]
_BULK_KEY = b'"BulkDataURI":"' + ENCODED_PLACEHOLDER
# Not 33 bytes long, so never an entry's key.
SETTINGS_KEY = b"settings"


class _Engine(Protocol):
    def read_record(self, rec: InstanceRecord, *, background: bool = False,
                    as_received: bool = False) -> tuple[str, bytes]: ...

    def coercion_of(self, study_uid: str) -> dict[str, str]: ...

    def is_remote(self, blob_hash: bytes) -> bool: ...


def with_stored_syntax(obj: dict[str, object], ts: str) -> dict[str, object]:
    """The instance JSON with Available Transfer Syntax UID (0008,3002) = the stored syntax, in tag
    order. A viewer needs it to know what a frame asked for as native bytes went through: a
    YBR JPEG comes back decoded to RGB, a native YBR_FULL_422 frame as stored (subsampled)."""
    if "00083002" in obj:
        return obj
    out: dict[str, object] = {}
    entry: dict[str, object] | None = {"vr": "UI", "Value": [ts]}
    for key, value in obj.items():
        if entry is not None and key > "00083002":
            out["00083002"] = entry
            entry = None
        out[key] = value
    if entry is not None:
        out["00083002"] = entry
    return out


def cache_key(blob_hash: bytes) -> bytes:
    return bytes(blob_hash) + bytes((FORMAT_VERSION,))


class MetadataCache:
    """Encoded instance JSON by blob hash. Never raises on open: a directory that cannot be
    opened is rebuilt; one held by another process leaves the cache disabled (every get misses,
    puts are dropped) rather than failing the server.

    `threshold` is the bulk data threshold the cached JSON was made with (see json_model); a
    cache made with another one, or by another format version, is emptied on open."""

    def __init__(self, path: str | os.PathLike[str], *, threshold: int = DEFAULT_THRESHOLD) -> None:
        self.path = Path(path)
        self.threshold = threshold
        self._db: Rdict | None = self._open()
        if self._db is not None and self._db.get(SETTINGS_KEY) != self._settings():
            self._reset()

    def _settings(self) -> bytes:
        return f"format={FORMAT_VERSION};threshold={self.threshold}".encode()

    def _reset(self) -> None:
        """Empties the cache (its entries were made under other settings)."""
        assert self._db is not None
        self._db.close()
        self._drop_files()
        self._db = self._open()
        if self._db is not None:
            self._db.put(SETTINGS_KEY, self._settings())

    @property
    def enabled(self) -> bool:
        return self._db is not None

    # -- opening ---------------------------------------------------------------------------------
    def _open(self) -> Rdict | None:
        try:
            return self._try_open()
        except Exception as exc:  # noqa: BLE001 — rocksdict raises bare Exception for everything
            if _is_lock_error(str(exc)):
                log.warning("metadata cache %s is in use by another process; running without it: %s",
                            self.path, exc)
                return None
            log.warning("metadata cache %s cannot be opened (%s); rebuilding it", self.path, exc)
        self._drop_files()
        try:
            return self._try_open()
        except Exception as exc:  # noqa: BLE001 — as above
            log.error("metadata cache %s cannot be rebuilt (%s); running without it", self.path, exc)
            return None

    def _try_open(self) -> Rdict:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        # JSON compresses well and LZ4 costs next to nothing on the read path.
        opts.set_compression_type(DBCompressionType.lz4())
        db = Rdict(str(self.path), opts)
        write = WriteOptions()
        write.disable_wal = True
        write.sync = False
        db.set_write_options(write)
        return db

    def _drop_files(self) -> None:
        if self.path.is_dir():
            shutil.rmtree(self.path, ignore_errors=True)
        elif self.path.exists():
            self.path.unlink()

    # -- access ----------------------------------------------------------------------------------
    def get_many(self, hashes: Sequence[bytes]) -> list[bytes | None]:
        """The cached encoded JSON of each blob hash (None for a miss), in order."""
        if self._db is None or not hashes:
            return [None] * len(hashes)
        return list(self._db.get([cache_key(h) for h in hashes]))

    def put_many(self, items: Iterable[tuple[bytes, bytes]]) -> None:
        """Stores (blob hash, encoded JSON) pairs in one unsynced batch."""
        if self._db is None:
            return
        batch = WriteBatch(raw_mode=True)
        count = 0
        for blob_hash, encoded in items:
            batch.put(cache_key(blob_hash), encoded)
            count += 1
        if count:
            self._db.write(batch)

    # A key no blob can produce (cache keys are a 32-byte hash + 1 version byte).
    _CURSOR_KEY = b"warmer-cursor"

    def cursor(self) -> int | None:
        """The change-feed position the warmer has covered, None if it never ran on this cache."""
        if self._db is None:
            return None
        raw = self._db.get(self._CURSOR_KEY)
        return int.from_bytes(raw, "big") if raw else None

    def set_cursor(self, seq: int) -> None:
        if self._db is not None:
            self._db.put(self._CURSOR_KEY, seq.to_bytes(8, "big"))

    def discard(self, hashes: Iterable[bytes]) -> None:
        """Forgets blobs that were deleted (space only: a stale entry is never wrong, its key
        names content that no longer exists)."""
        if self._db is None:
            return
        batch = WriteBatch(raw_mode=True)
        for blob_hash in hashes:
            batch.delete(cache_key(blob_hash))
        self._db.write(batch)

    def close(self) -> None:
        if self._db is None:
            return
        db, self._db = self._db, None
        try:
            db.flush()  # writes skip the WAL: flush so a clean stop keeps the work done
        finally:
            db.close()

    def __enter__(self) -> MetadataCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _overlay(encoded: bytes, entries: Mapping[str, object]) -> bytes:
    obj = orjson.loads(encoded)
    obj.update(entries)
    return orjson.dumps(dict(sorted(obj.items())))


def _is_lock_error(msg: str) -> bool:
    low = msg.lower()
    return "lock" in low and ("/lock" in low or "lock file" in low or "no locks" in low)


def metadata_cache_path(data_dir: Path) -> Path:
    """Where a data directory's metadata cache lives."""
    return data_dir / "cache" / "metadata"


class MetadataService:
    """The metadata arrays of WADO-RS (study, series and instance metadata are all
    `instances_json` of the records the route selected)."""

    def __init__(self, engine: _Engine, cache: MetadataCache | None) -> None:
        self.engine = engine
        self.cache = cache
        self.threshold = cache.threshold if cache is not None else DEFAULT_THRESHOLD
        # "SOP UID: why" of each object warm() could not read, for its caller to report
        self.unreadable: list[str] = []

    def instances_json(self, records: Sequence[InstanceRecord], base_url: str) -> bytes:
        """The JSON array (bytes) of the instances' metadata; each instance's BulkDataURIs are
        `{base_url}/studies/{study}/series/{series}/instances/{sop}/bulkdata/{path}`.

        Misses are computed from the stored bytes and cached in one batch. Raises what the
        engine raises for a blob it cannot read (native NotFoundError / CorruptError)."""
        cached = self.cache.get_many([rec.hash for rec in records]) if self.cache is not None else None
        parts: list[bytes] = []
        fresh: list[tuple[bytes, bytes]] = []
        literal: dict[int, bytes] = {}  # instances served with the base URL written in, uncached
        for i, rec in enumerate(records):
            hit = cached[i] if cached is not None else None
            if hit is None:
                hit = self._encode(rec)
                if hit is None:
                    literal[i] = self._encode_for(rec, base_url)
                    hit = b""
                else:
                    fresh.append((rec.hash, hit))
            parts.append(hit)
        if fresh and self.cache is not None:
            self.cache.put_many(fresh)
        self._coerce(records, parts, literal)
        base = orjson.dumps(base_url.rstrip("/"))[1:-1]
        if not literal:
            return (b"[" + b",".join(parts) + b"]").replace(ENCODED_PLACEHOLDER, base)
        out = [literal.get(i) or part.replace(ENCODED_PLACEHOLDER, base) for i, part in enumerate(parts)]
        return b"[" + b",".join(out) + b"]"

    def _coerce(self, records: Sequence[InstanceRecord], parts: list[bytes],
                literal: dict[int, bytes]) -> None:
        """The patient corrections of the records' studies laid over their JSON (the cache keeps the
        JSON of the bytes as received, so a correction or its undoing shows at once)."""
        entries: dict[str, dict[str, object]] = {}
        for uid in {rec.study_uid for rec in records}:
            values = self.engine.coercion_of(uid)
            if values:
                entries[uid] = json_entries(values)
        if not entries:
            return
        for i, rec in enumerate(records):
            over = entries.get(rec.study_uid)
            if over is None:
                continue
            if i in literal:
                literal[i] = _overlay(literal[i], over)
            else:
                parts[i] = _overlay(parts[i], over)

    def warm(self, records: Iterable[InstanceRecord]) -> int:
        """Computes and caches the metadata of the records not cached yet (e.g. in the
        background after an ingest); returns how many were computed."""
        if self.cache is None or not self.cache.enabled:
            return 0
        computed = 0
        batch: list[InstanceRecord] = []
        for rec in records:
            batch.append(rec)
            if len(batch) >= WARM_BATCH:
                computed += self._warm_batch(batch)
                batch = []
        if batch:
            computed += self._warm_batch(batch)
        return computed

    def _warm_batch(self, records: list[InstanceRecord]) -> int:
        assert self.cache is not None
        cached = self.cache.get_many([rec.hash for rec in records])
        fresh = []
        for rec, hit in zip(records, cached, strict=True):
            # An instance in an object-store tier is not warmed: a GET and a cold decode for a
            # cache nobody asked for (it is cached when it is first read).
            if hit is None and not self.engine.is_remote(rec.hash):
                try:
                    encoded = self._encode(rec, background=True)
                except (NotFoundError, IntegrityError, CorruptError) as exc:
                    # A missing or damaged object (`verify` reports it) is left to its first
                    # view, which fails with the same error; the rest of the batch is warmed.
                    self.unreadable.append(f"{rec.sop_uid}: {exc}")
                    continue
                if encoded is not None:
                    fresh.append((rec.hash, encoded))
        self.cache.put_many(fresh)
        return len(fresh)

    # -- computing -------------------------------------------------------------------------------
    def _json(self, rec: InstanceRecord, base: str, background: bool = False) -> bytes:
        ts, dataset = self.engine.read_record(rec, background=background, as_received=True)
        prefix = f"{base}/studies/{rec.study_uid}/series/{rec.series_uid}/instances/{rec.sop_uid}"
        doc = dataset_json(ts, dataset, prefix, threshold=self.threshold)
        return orjson.dumps(with_stored_syntax(doc, ts))

    def _encode(self, rec: InstanceRecord, background: bool = False) -> bytes | None:
        """The cacheable JSON (base URL as placeholder), or None when a stored value itself
        spells the placeholder, which the base URL replacement would then rewrite."""
        encoded = self._json(rec, PLACEHOLDER, background)
        if encoded.count(ENCODED_PLACEHOLDER) != encoded.count(_BULK_KEY):
            return None
        return encoded

    def _encode_for(self, rec: InstanceRecord, base_url: str) -> bytes:
        return self._json(rec, base_url.rstrip("/"))
