"""DIMSE status codes (PS3.7 annex C, PS3.4 per service) and the one mapping from the archive's
error tree (errors.py) to a C-STORE status. Every DIMSE module takes its codes from here."""

from __future__ import annotations

from ..errors import (
    CodecError,
    DicomVaultError,
    MalformedError,
    NotDicomError,
    RejectedError,
    StorageFullError,
    UnsupportedError,
)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
OUT_OF_RESOURCES = 0xA700  # PS3.4 B.2.3: Refused, out of resources
OUT_OF_RESOURCES_IO = 0xA701  # same family: the store failed for a local reason (I/O, index)
MOVE_DESTINATION_UNKNOWN = 0xA801
DOES_NOT_MATCH_SOP_CLASS = 0xA900  # Error: data set does not match SOP class
IDENTIFIER_DOES_NOT_MATCH = 0xA900  # C-FIND/C-MOVE/C-GET: identifier does not match SOP class
CANNOT_UNDERSTAND = 0xC000  # Error: cannot understand (C000-CFFF); sub-codes say which part
UNABLE_TO_PROCESS = 0xC000
NOT_DICOM = 0xC001
UNSUPPORTED = 0xC002
CODEC = 0xC003
PROCESSING_FAILURE = 0xC211  # what pynetdicom answers when a handler raises
CANNOT_DECODE_IDENTIFIER = 0xC310
# N-ACTION / N-EVENT-REPORT (storage commitment) failure reasons, PS3.4 J.3.3 / PS3.7 C
NO_SUCH_OBJECT_INSTANCE = 0x0112
INVALID_ARGUMENT = 0x0115
CLASS_INSTANCE_CONFLICT = 0x0119
MISSING_ATTRIBUTE = 0x0120
NO_SUCH_ACTION = 0x0123

# Most specific first: the first class an error is an instance of decides.
_STORE_STATUS: tuple[tuple[type[BaseException], int, str], ...] = (
    (StorageFullError, OUT_OF_RESOURCES, "storage full"),
    # Parsed, but lacks what every composite object must have (Study/Series/SOP UIDs).
    (RejectedError, DOES_NOT_MATCH_SOP_CLASS, "rejected"),
    (NotDicomError, NOT_DICOM, "not a DICOM dataset"),
    (MalformedError, CANNOT_UNDERSTAND, "malformed dataset"),
    (UnsupportedError, UNSUPPORTED, "unsupported"),
    (CodecError, CODEC, "cannot decode pixel data"),
)


def store_status(exc: DicomVaultError) -> tuple[int, str]:
    """(C-STORE status, what kind of failure) for an error the engine raised storing an object.

    Anything not listed is a local failure (I/O, index): out of resources, so the sender retries
    later rather than dropping the object as unreadable."""
    for cls, code, what in _STORE_STATUS:
        if isinstance(exc, cls):
            return code, what
    return OUT_OF_RESOURCES_IO, "store failed"
