"""DIMSE status codes (PS3.7 annex C, PS3.4 per service). Every DIMSE module takes its codes from
here; the store failures (and their mapping from the error tree) are failures.py's, shared with
STOW-RS."""

from __future__ import annotations

from ..errors import DicomVaultError
from ..failures import (
    CANNOT_UNDERSTAND,
    CODEC,
    DOES_NOT_MATCH_SOP_CLASS,
    NOT_DICOM,
    OUT_OF_RESOURCES,
    OUT_OF_RESOURCES_IO,
    UNSUPPORTED,
    store_failure,
)

SUCCESS = 0x0000
PENDING = 0xFF00
CANCEL = 0xFE00
MOVE_DESTINATION_UNKNOWN = 0xA801
# C-GET/C-MOVE final statuses (PS3.4 C.4.2.1.5, C.4.3.1.4)
ALL_FAILED = 0xA702  # out of resources: unable to perform sub-operations (every one failed)
SUB_OPERATIONS_FAILED = 0xB000  # complete, one or more failures or warnings
# C-STORE warnings a sub-operation can answer (PS3.4 B.2.3): counted as warnings, not failures
WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})
IDENTIFIER_DOES_NOT_MATCH = 0xA900  # C-FIND/C-MOVE/C-GET: identifier does not match SOP class
UNABLE_TO_PROCESS = 0xC000
PROCESSING_FAILURE = 0xC211  # what pynetdicom answers when a handler raises
CANNOT_DECODE_IDENTIFIER = 0xC310
# N-ACTION / N-EVENT-REPORT (storage commitment) failure reasons, PS3.4 J.3.3 / PS3.7 C
NO_SUCH_OBJECT_INSTANCE = 0x0112
INVALID_ARGUMENT = 0x0115
CLASS_INSTANCE_CONFLICT = 0x0119
MISSING_ATTRIBUTE = 0x0120
NO_SUCH_ACTION = 0x0123


def store_status(exc: DicomVaultError) -> tuple[int, str]:
    """(C-STORE status, what kind of failure) for an error the engine raised storing an object.

    Anything failures.py does not list is a local failure (I/O, index): out of resources, so the
    sender retries later rather than dropping the object as unreadable."""
    return store_failure(exc) or (OUT_OF_RESOURCES_IO, "store failed")


# re-exported: the DIMSE modules take every status from here
__all__ = ["CANNOT_UNDERSTAND", "CODEC", "DOES_NOT_MATCH_SOP_CLASS", "NOT_DICOM", "OUT_OF_RESOURCES",
           "OUT_OF_RESOURCES_IO", "UNSUPPORTED"]
