"""Column families, on-disk schema version, and opening RocksDB with all of them.

Key layout per column family (see keys.py for the component encoding;
``E(x)`` = escaped + terminated component, ``u64``/``u32`` = big-endian):

=============  ======================================================  ==================
CF             key                                                     value
=============  ======================================================  ==================
``meta``       ASCII name: ``schema``, ``stats``                       record
``patients``   ``E(PatientID)``                                        PatientRecord
``studies``    ``E(StudyInstanceUID)``                                 StudyRecord
``series``     ``E(StudyInstanceUID) E(SeriesInstanceUID)``            SeriesRecord
``instances``  ``E(SOPInstanceUID)``                                   InstanceRecord
``blobs``      32-byte content hash                                    BlobRecord
``idx``        ``index-id(1 byte) E(normalised value) <target key>``   empty
``feed``       ``u64(seq)``                                            Change
=============  ======================================================  ==================

The secondary index ids and their target keys are defined in secondary.py.
"""

from __future__ import annotations

import os
import time

import msgpack
from rocksdict import AccessType, BlockBasedOptions, Cache, Options, Rdict

from .errors import IndexLockedError, IndexNotFoundError, IndexOpenError, SchemaVersionError

SCHEMA_VERSION = 1

CF_META = "meta"
CF_PATIENTS = "patients"
CF_STUDIES = "studies"
CF_SERIES = "series"
CF_INSTANCES = "instances"
CF_BLOBS = "blobs"
CF_IDX = "idx"
CF_FEED = "feed"

COLUMN_FAMILIES: tuple[str, ...] = (
    CF_META, CF_PATIENTS, CF_STUDIES, CF_SERIES, CF_INSTANCES, CF_BLOBS, CF_IDX, CF_FEED,
)

META_SCHEMA = b"schema"
META_STATS = b"stats"


# One LRU cache of uncompressed blocks for every column family of every index this process
# opens (RocksDB's default is 8 MB per column family). Why: at a million instances a study
# query's records sit in blocks a cold 8 MB cache had to read and decompress again (measured:
# a third of a 120-match date-range query). The capacity bounds the data blocks reads keep
# (index and filter blocks and the memtables are outside it). DICOMVAULT_INDEX_CACHE_MB sets it.
BLOCK_CACHE_MB = 256
_block_cache: Cache | None = None


def block_cache() -> Cache:
    """The process's shared block cache (created on first use; outlives every DB using it)."""
    global _block_cache
    if _block_cache is None:
        mb = int(os.environ.get("DICOMVAULT_INDEX_CACHE_MB", BLOCK_CACHE_MB))
        _block_cache = Cache(max(mb, 8) << 20)
    return _block_cache


def _cf_options(name: str) -> Options:
    opts = Options(raw_mode=True)
    table = BlockBasedOptions()
    table.set_block_cache(block_cache())
    if name in (CF_INSTANCES, CF_BLOBS, CF_STUDIES, CF_PATIENTS):
        # point lookups dominate: bloom filters avoid disk reads for misses
        table.set_bloom_filter(10, False)
    opts.set_block_based_table_factory(table)
    return opts


def _db_options(create: bool) -> Options:
    opts = Options(raw_mode=True)
    opts.create_if_missing(create)
    opts.create_missing_column_families(create)
    opts.increase_parallelism(2)
    opts.set_max_background_jobs(2)
    return opts


def _is_lock_error(msg: str) -> bool:
    low = msg.lower()
    return "lock" in low and ("/lock" in low or "lock file" in low or "no locks" in low)


def open_db(path: str, read_only: bool = False, secondary_path: str | None = None) -> Rdict:
    """Open (creating if writable) the RocksDB at ``path`` with every column family.

    Column families present on disk but unknown to this code (a newer schema)
    are opened too, since RocksDB refuses to open a subset for writing.
    Raises IndexLockedError, IndexNotFoundError or IndexOpenError.
    """
    exists = os.path.exists(os.path.join(path, "CURRENT"))
    if (read_only or secondary_path) and not exists:
        raise IndexNotFoundError(path)
    names = list(COLUMN_FAMILIES)
    if exists:
        try:
            for name in Rdict.list_cf(path, Options(raw_mode=True)):
                if name != "default" and name not in names:
                    names.append(name)
        except Exception as exc:  # rocksdict raises bare Exception
            raise IndexOpenError(path, f"cannot list column families: {exc}") from exc
    cfs = {name: _cf_options(name) for name in names}
    if secondary_path:
        access = AccessType.secondary(secondary_path)
    elif read_only:
        # error_if_log_file_exist=False: a live writer always has a WAL
        access = AccessType.read_only(False)
    else:
        access = AccessType.read_write()
    try:
        return Rdict(path, _db_options(not (read_only or secondary_path)), column_families=cfs,
                     access_type=access)
    except Exception as exc:  # rocksdict raises bare Exception
        msg = str(exc)
        if not read_only and not secondary_path and _is_lock_error(msg):
            raise IndexLockedError(path, msg) from exc
        if "does not exist" in msg or "No such file" in msg:
            raise IndexNotFoundError(path, msg) from exc
        raise IndexOpenError(path, msg) from exc


def read_schema(db: Rdict, path: str) -> int | None:
    """Schema version stored in meta, or None for a brand-new database."""
    raw = db.get_column_family(CF_META).get(META_SCHEMA)
    if raw is None:
        return None
    try:
        data = msgpack.unpackb(raw[1:], raw=False)
        version = int(data["version"])
    except (ValueError, KeyError, TypeError, msgpack.UnpackException) as exc:
        raise SchemaVersionError(path, raw[:32], SCHEMA_VERSION) from exc
    return version


def schema_value() -> bytes:
    """Encoded meta/schema value written when a database is created."""
    from .records import RECORD_VERSION

    return bytes((RECORD_VERSION,)) + msgpack.packb(
        {"version": SCHEMA_VERSION, "created_at": time.time(), "format": "dicomvault-index"},
        use_bin_type=True,
    )


def check_schema(db: Rdict, path: str, writable: bool) -> None:
    """Verify (or, for a new writable DB, initialise) the schema version."""
    version = read_schema(db, path)
    if version is None:
        if writable:
            db.get_column_family(CF_META).put(META_SCHEMA, schema_value())
            db.flush_wal(True)
            return
        raise SchemaVersionError(path, None, SCHEMA_VERSION)
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(path, version, SCHEMA_VERSION)
