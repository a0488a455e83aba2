"""Why a store failed, as a DICOM status: the one table from the error tree (errors.py) to the
codes PS3.4 B.2.3 gives C-STORE, which PS3.18 I.2 reuses as STOW-RS Failure Reasons. DIMSE
(dimse/status.py) sends them as they are; STOW-RS folds the C0xx sub-codes into 0xC000, the only
"cannot understand" code it defines."""

from __future__ import annotations

from .errors import (
    CodecError,
    MalformedError,
    MissingAttributeError,
    NotDicomError,
    RejectedError,
    ReplicaWriteError,
    StorageFullError,
    UnsupportedError,
)

OUT_OF_RESOURCES = 0xA700  # Refused: out of resources
OUT_OF_RESOURCES_IO = 0xA701  # same family: not stored for a local reason (I/O, index, a replica)
DOES_NOT_MATCH_SOP_CLASS = 0xA900  # Error: data set does not match SOP class
CANNOT_UNDERSTAND = 0xC000  # Error: cannot understand (C000-CFFF); the sub-codes say which part
NOT_DICOM = 0xC001
UNSUPPORTED = 0xC002
CODEC = 0xC003

# Most specific first: the first class an error is an instance of decides. A missing required
# attribute is a MalformedError natively, but the data set was understood: it just does not
# satisfy its SOP class, so it comes before the parse errors.
_STORE_FAILURES: tuple[tuple[tuple[type[BaseException], ...], int, str], ...] = (
    ((StorageFullError,), OUT_OF_RESOURCES, "storage full"),
    # A7xx tells a sender to retry later, e.g. after `dr promote`: the object is not at fault.
    ((ReplicaWriteError,), OUT_OF_RESOURCES_IO, "this archive is a replica"),
    ((RejectedError, MissingAttributeError), DOES_NOT_MATCH_SOP_CLASS, "rejected"),
    ((NotDicomError,), NOT_DICOM, "not a DICOM dataset"),
    ((MalformedError,), CANNOT_UNDERSTAND, "malformed dataset"),
    ((UnsupportedError,), UNSUPPORTED, "unsupported"),
    ((CodecError,), CODEC, "cannot decode pixel data"),
)


def store_failure(exc: BaseException) -> tuple[int, str] | None:
    """(status, what kind of failure) of an error the engine raised storing an object, or None
    for a local failure (I/O, index), which each protocol answers in its own way."""
    for classes, code, what in _STORE_FAILURES:
        if isinstance(exc, classes):
            return code, what
    return None
