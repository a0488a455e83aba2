"""Exceptions raised by the index. Every message names the path or UID concerned."""

from __future__ import annotations

from ..errors import ConflictError, DicomVaultError, RequestError, StorageFullError, UnknownObjectError


class IndexStoreError(DicomVaultError):
    """Base class of all index errors (named to avoid shadowing builtins.IndexError)."""


class IndexLockedError(IndexStoreError):
    """Another process (or another Index object) holds the writable database."""

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        msg = (
            f"index at {path!r} is locked by another writer (a running server?); "
            "open it read-only instead"
        )
        if detail:
            msg += f" [{detail}]"
        super().__init__(msg)


class IndexNotFoundError(IndexStoreError):
    """Read-only open of a path that holds no index."""

    def __init__(self, path: str, detail: str = "") -> None:
        self.path = path
        super().__init__(f"no index at {path!r}" + (f" [{detail}]" if detail else ""))


class IndexOpenError(IndexStoreError):
    """RocksDB refused to open the database for another reason."""

    def __init__(self, path: str, detail: str) -> None:
        self.path = path
        super().__init__(f"cannot open index at {path!r}: {detail}")


class SchemaVersionError(IndexStoreError):
    """The on-disk schema is newer than this code (or unreadable)."""

    def __init__(self, path: str, found: object, supported: int) -> None:
        self.path = path
        super().__init__(
            f"index at {path!r} has schema version {found!r}; this code supports <= {supported}"
        )


class ReadOnlyIndexError(IndexStoreError):
    """A write was attempted on an index opened read-only."""

    def __init__(self, path: str, op: str) -> None:
        self.path = path
        super().__init__(f"index at {path!r} is open read-only; cannot {op}")


class IndexClosedError(IndexStoreError):
    """The index was used after close()."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"index at {path!r} is closed")


class RecordDecodeError(IndexStoreError):
    """A stored value has an unknown version byte or is not valid msgpack."""

    def __init__(self, what: str, detail: str) -> None:
        super().__init__(f"cannot decode {what}: {detail}")


class InvalidInstanceError(IndexStoreError, ValueError):
    """add_instance() input is missing a required field or has a bad one."""


# The index's "no such UID" is the archive's one: callers catch errors.NotFoundError for any of them.
NotFoundError = UnknownObjectError


class QueryError(IndexStoreError, RequestError, ValueError):
    """Malformed query: unknown level, bad range, unsupported key."""


class IndexFullError(IndexStoreError, StorageFullError):
    """The device under the index is full: a storage-full error like the blob store's, so every
    protocol answers it as out of resources (0xA700 / 507) and the sender retries later."""


class CorrectionError(IndexStoreError, RequestError, ValueError):
    """A patient correction that cannot be applied as asked (an attribute an update may not set,
    a merge of a patient into itself)."""


class CorrectionConflictError(IndexStoreError, ConflictError):
    """A merge that contradicts one already done (the prior patient was merged elsewhere, or the
    survivor was itself merged away)."""
