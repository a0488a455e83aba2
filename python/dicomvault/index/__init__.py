"""dicomvault metadata index on RocksDB (rocksdict, raw mode).

Modules:

* ``keys``      key codec: prefixes, order-preserving escaping, normalisation
* ``records``   value encoding (version byte + msgpack) and record dataclasses
* ``schema``    column families, schema version, opening the DB
* ``secondary`` secondary index definitions and entry derivation
* ``txn``       write transactions (record cache + index diff -> one WriteBatch)
* ``commit``    group commit (shared WAL sync, leader/follower)
* ``feed``      change feed
* ``rejections`` the IOCM rejected set (instances a rejection note hides)
* ``query``     C.2.2.2 matching and candidate selection
* ``store``     the :class:`Index` facade
* ``errors``    exceptions

Typical use::

    with Index.open("/data/index") as idx:
        res = idx.add_instance({"attrs": {...}, "hash": h, ...})
        for row in idx.find("STUDY", {"PatientID": "123", "StudyDate": "20240101-"}):
            ...
"""

from .errors import (
    IndexClosedError,
    IndexLockedError,
    IndexNotFoundError,
    IndexOpenError,
    IndexStoreError,
    InvalidInstanceError,
    NotFoundError,
    QueryError,
    ReadOnlyIndexError,
    RecordDecodeError,
    SchemaVersionError,
)
from .records import (
    BlobRecord,
    Change,
    InstanceRecord,
    PatientRecord,
    SeriesRecord,
    StudyRecord,
)
from .rejections import REJECTION_TITLES, Reference, RejectedEntry, Rejection
from .schema import SCHEMA_VERSION
from .store import AddResult, DeleteResult, Index, Placement

__all__ = [
    "SCHEMA_VERSION",
    "AddResult",
    "Placement",
    "BlobRecord",
    "Change",
    "DeleteResult",
    "Index",
    "IndexClosedError",
    "IndexLockedError",
    "IndexNotFoundError",
    "IndexOpenError",
    "IndexStoreError",
    "InstanceRecord",
    "InvalidInstanceError",
    "NotFoundError",
    "PatientRecord",
    "REJECTION_TITLES",
    "Reference",
    "RejectedEntry",
    "Rejection",
    "QueryError",
    "ReadOnlyIndexError",
    "RecordDecodeError",
    "SchemaVersionError",
    "SeriesRecord",
    "StudyRecord",
]
