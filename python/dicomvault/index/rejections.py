"""The rejected set (IHE IOCM): instances a rejection note hides, kept aside from the hierarchy.

A hidden instance leaves the instances column family, its secondary entries and its parents'
counters, exactly as a delete does, so every read path (C-FIND, QIDO, WADO, C-GET, C-MOVE, the
viewer's counts) stops seeing it without checking anything per matched instance. Its record
moves into the meta column family under ``iocm/rej/E(SOPInstanceUID)`` and keeps its blob's
reference, so an admin can put it back unchanged.

An entry without a record names an instance the note rejected before it arrived (a modality
may send the KOS first): when that instance is stored it goes straight into its entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from . import keys
from .records import Record, _finish

REJECTED_PREFIX = b"iocm/rej/"

# DICOM CID 7011 rejection titles (scheme DCM) IOCM acts on.
QUALITY = "113001"
PATIENT_SAFETY = "113037"
INCORRECT_MWL_ENTRY = "113038"
RETENTION_EXPIRED = "113039"
REJECTION_TITLES: dict[str, str] = {
    QUALITY: "Rejected for Quality Reasons",
    PATIENT_SAFETY: "Rejected for Patient Safety Reasons",
    INCORRECT_MWL_ENTRY: "Incorrect Modality Worklist Entry",
    RETENTION_EXPIRED: "Data Retention Policy Expired",
}


@dataclass(frozen=True, slots=True)
class Reference:
    """One instance a rejection note lists."""

    study_uid: str
    series_uid: str
    sop_uid: str


@dataclass(frozen=True, slots=True)
class Rejection:
    """What one rejection note (KOS) says: its title code and the instances it rejects."""

    note_uid: str
    code: str
    refs: tuple[Reference, ...]

    @property
    def deletes(self) -> bool:
        """Whether the title asks for deletion (retention expired) rather than hiding."""
        return self.code == RETENTION_EXPIRED


@_finish
@dataclass(slots=True)
class RejectedEntry(Record):
    """One rejected SOP instance (meta CF, ``iocm/rej/E(sop)``).

    ``record``: the encoded InstanceRecord held aside (b"" if the instance has not arrived,
    or was deleted by policy). ``deleted``: the note's policy deleted it, so a late arrival is
    dropped instead of kept."""

    KIND: ClassVar[str] = "rejected"
    sop_uid: str = ""
    study_uid: str = ""
    series_uid: str = ""
    note_uid: str = ""
    code: str = ""
    at: float = 0.0
    deleted: bool = False
    record: bytes = b""


def entry_key(sop_uid: str) -> bytes:
    """Meta-CF key of one rejected instance."""
    return REJECTED_PREFIX + keys.encode(keys.norm_uid(sop_uid))
