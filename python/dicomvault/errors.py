"""The exceptions every layer raises, in one place.

The native ones are created in rust/src/errors.rs (one funnel maps each core error to one class);
they are re-exported here so Python code imports errors from a single module.
"""

from __future__ import annotations

from ._native import (  # type: ignore[attr-defined]
    CodecError,
    CorruptError,
    DicomVaultError,
    IntegrityError,
    LockedError,
    MalformedError,
    MissingAttributeError,
    NotDicomError,
    NotFoundError,
    StorageFullError,
    UnsupportedError,
)


class UnknownObjectError(DicomVaultError):
    """A UID the index does not know."""

    def __init__(self, level: str, uid: str) -> None:
        super().__init__(f"no {level} with UID {uid}")
        self.level = level
        self.uid = uid


class RejectedError(DicomVaultError):
    """An object was refused before the index named it (missing UIDs, not DICOM, malformed)."""


class UIDMismatchError(RejectedError):
    """The dataset's SOP Instance/Class UID is not the one its C-STORE request announced."""


__all__ = [
    "CodecError",
    "CorruptError",
    "DicomVaultError",
    "IntegrityError",
    "LockedError",
    "MalformedError",
    "MissingAttributeError",
    "NotDicomError",
    "NotFoundError",
    "RejectedError",
    "StorageFullError",
    "UIDMismatchError",
    "UnknownObjectError",
    "UnsupportedError",
]
