"""Value encoding: one version byte followed by a msgpack map.

The map uses the dataclass field names as keys so that any language with a
msgpack library can read the index.  Decoding ignores unknown fields and fills
missing ones with their defaults, so fields can be added without bumping
``RECORD_VERSION``; only incompatible changes need a new version byte.
"""

from __future__ import annotations

import dataclasses
import operator
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, Self

import msgpack
import ormsgpack

from .errors import RecordDecodeError

RECORD_VERSION = 1
_VERSION_BYTE = bytes((RECORD_VERSION,))


def pack(record: Record) -> bytes:
    """msgpack map of a record's fields. ormsgpack (Rust) reads the dataclass itself and writes
    the same bytes as msgpack.packb(record.to_wire(), use_bin_type=True) at a quarter of the cost
    (an instance record's 45 attributes took ~7 µs per store); what it refuses (a non-str map key
    in a change's detail) msgpack writes."""
    try:
        return ormsgpack.packb(record)
    except TypeError:  # ormsgpack.MsgpackEncodeError is one
        return msgpack.packb(record.to_wire(), use_bin_type=True)


# Level-specific keyword sets: which attributes of an incoming instance are
# kept on the patient / study / series records (and therefore answer queries
# at those levels).  Every attribute is kept on the instance record.
PATIENT_KEYWORDS: frozenset[str] = frozenset(
    {
        "PatientName", "PatientID", "IssuerOfPatientID", "TypeOfPatientID",
        "OtherPatientIDs", "OtherPatientNames", "PatientBirthDate", "PatientBirthTime",
        "PatientSex", "EthnicGroup", "PatientComments", "ResponsiblePerson",
        "PatientSpeciesDescription", "PatientBreedDescription", "PatientIdentityRemoved",
        "PatientMotherBirthName",
    }
)
STUDY_KEYWORDS: frozenset[str] = frozenset(
    {
        "StudyInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
        "ReferringPhysicianName", "StudyDescription", "PhysiciansOfRecord",
        "NameOfPhysiciansReadingStudy", "AdmittingDiagnosesDescription", "PatientAge",
        "PatientSize", "PatientWeight", "Occupation", "AdditionalPatientHistory",
        "OtherStudyNumbers", "StudyStatusID", "RequestedProcedureDescription",
        "RequestedProcedureID", "InstitutionName", "TimezoneOffsetFromUTC",
        "SpecificCharacterSet", "IssuerOfAccessionNumberSequence",
    }
)
SERIES_KEYWORDS: frozenset[str] = frozenset(
    {
        "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription", "SeriesDate",
        "SeriesTime", "BodyPartExamined", "Laterality", "ProtocolName",
        "PerformingPhysicianName", "OperatorsName", "PerformedProcedureStepStartDate",
        "PerformedProcedureStepStartTime", "PerformedProcedureStepID",
        "PerformedProcedureStepDescription", "Manufacturer", "ManufacturerModelName",
        "StationName", "InstitutionName", "InstitutionalDepartmentName",
        "FrameOfReferenceUID", "PatientPosition", "SeriesType",
    }
)


class Record:
    """Mixin: msgpack (de)serialisation of a flat dataclass."""

    KIND: ClassVar[str] = "record"
    _FIELDS: ClassVar[tuple[str, ...]] = ()
    # every field's value at once, as a tuple (one C call: each store encodes several records)
    _VALUES: ClassVar[Callable[[Any], tuple[Any, ...]]] = staticmethod(lambda _r: ())

    def to_wire(self) -> dict[str, Any]:
        """Plain dict of the fields (shallow; attrs dicts are shared)."""
        return dict(zip(self._FIELDS, self._VALUES(self), strict=True))

    def encode(self) -> bytes:
        """Version byte + msgpack map."""
        return _VERSION_BYTE + pack(self)

    @classmethod
    def decode(cls, raw: bytes) -> Self:
        """Inverse of :meth:`encode`; raises RecordDecodeError on bad input."""
        data = cls.fields_of(raw)
        try:
            return cls(**data)
        except TypeError:  # a field this version does not know (written by a newer one)
            fields = cls._FIELDS
            return cls(**{k: v for k, v in data.items() if k in fields})  # type: ignore[call-arg]

    @classmethod
    def fields_of(cls, raw: bytes) -> dict[str, Any]:
        """The stored fields as a dict, without building the record (the query path reads a few
        fields of thousands of records); raises RecordDecodeError on bad input."""
        if not raw or raw[0] != RECORD_VERSION:
            ver = raw[0] if raw else None
            raise RecordDecodeError(cls.KIND, f"unsupported record version {ver!r}")
        try:
            data = msgpack.unpackb(memoryview(raw)[1:], raw=False, strict_map_key=True)
        except (ValueError, msgpack.UnpackException) as exc:
            raise RecordDecodeError(cls.KIND, str(exc)) from exc
        if not isinstance(data, dict):
            raise RecordDecodeError(cls.KIND, f"expected a map, got {type(data).__name__}")
        return data


def _finish(cls: type[Record]) -> type[Record]:
    cls._FIELDS = tuple(f.name for f in dataclasses.fields(cls))  # type: ignore[arg-type]
    # attrgetter of two or more names returns a tuple (every record class has several fields)
    cls._VALUES = staticmethod(operator.attrgetter(*cls._FIELDS))  # type: ignore[assignment]
    return cls


@_finish
@dataclass(slots=True)
class PatientRecord(Record):
    """One patient, keyed by PatientID (patients CF)."""

    KIND: ClassVar[str] = "patient"
    patient_id: str = ""
    attrs: dict[str, str] = field(default_factory=dict)
    num_studies: int = 0
    num_series: int = 0
    num_instances: int = 0
    logical_bytes: int = 0
    stored_bytes: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    # when the HIS last corrected this patient (index/patients.py); 0: never. A new study of a
    # corrected patient takes the patient's current values, not the ones its objects carry.
    corrected_at: float = 0.0


@_finish
@dataclass(slots=True)
class StudyRecord(Record):
    """One study (studies CF). ``attrs`` holds patient- and study-level attributes."""

    KIND: ClassVar[str] = "study"
    study_uid: str = ""
    patient_id: str = ""
    attrs: dict[str, str] = field(default_factory=dict)
    num_series: int = 0
    num_instances: int = 0
    # modality -> number of series with that modality (ModalitiesInStudy)
    modalities: dict[str, int] = field(default_factory=dict)
    # SOP Class UID -> number of instances (SOPClassesInStudy)
    sop_classes: dict[str, int] = field(default_factory=dict)
    # "SOP Class UID\\transfer syntax UID" -> number of instances: the presentation contexts a
    # C-MOVE of the study proposes, known without reading every instance record. Complete only
    # if its counts add up to num_instances (a study indexed before this field existed has some
    # instances it does not count): `syntax_pairs()`.
    syntaxes: dict[str, int] = field(default_factory=dict)
    logical_bytes: int = 0
    stored_bytes: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0
    # Patient attributes (keyword -> current value) applied to this study's objects on their way
    # out (coercion.py) because a patient update or merge changed them; the stored bytes keep
    # what was received. Empty for a study nobody corrected.
    coerced: dict[str, str] = field(default_factory=dict)

    def modalities_in_study(self) -> list[str]:
        """Sorted distinct modalities of the study's series."""
        return sorted(m for m, n in self.modalities.items() if n > 0)

    def syntax_pairs(self) -> list[tuple[str, str]] | None:
        """The distinct (SOP Class UID, transfer syntax UID) of the study's instances, in the order
        they were first stored; None if `syntaxes` does not count every instance."""
        if sum(self.syntaxes.values()) != self.num_instances:
            return None
        pairs = [tuple(k.split("\\", 1)) for k, n in self.syntaxes.items() if n > 0]
        return [(c, ts) for c, ts in pairs] if all(len(p) == 2 for p in pairs) else None


@_finish
@dataclass(slots=True)
class SeriesRecord(Record):
    """One series (series CF, keyed by study UID + series UID)."""

    KIND: ClassVar[str] = "series"
    study_uid: str = ""
    series_uid: str = ""
    modality: str = ""
    series_number: int | None = None
    attrs: dict[str, str] = field(default_factory=dict)
    num_instances: int = 0
    logical_bytes: int = 0
    stored_bytes: int = 0
    created_at: float = 0.0
    updated_at: float = 0.0


@_finish
@dataclass(slots=True)
class InstanceRecord(Record):
    """One SOP instance (instances CF, keyed by SOP Instance UID).

    ``prefix`` is the original Part-10 preamble + file meta so that export is
    byte-identical; ``hash`` names the blob holding the dataset.
    """

    KIND: ClassVar[str] = "instance"
    sop_uid: str = ""
    series_uid: str = ""
    study_uid: str = ""
    patient_id: str = ""
    sop_class_uid: str = ""
    instance_number: int | None = None
    hash: bytes = b""
    prefix: bytes = b""
    transfer_syntax: str = ""
    logical_len: int = 0
    stored_len: int = 0
    codec: int = 0
    tier: str = "hot"
    received_at: float = 0.0
    attrs: dict[str, str] = field(default_factory=dict)


@_finish
@dataclass(slots=True)
class BlobRecord(Record):
    """One content-addressed blob (blobs CF, keyed by the 32-byte hash)."""

    KIND: ClassVar[str] = "blob"
    hash: bytes = b""
    refcount: int = 0
    logical_len: int = 0
    stored_len: int = 0
    codec: int = 0
    # Where the blob lives (its placement): a local tier's volumes find it by hash; an
    # object-store tier needs the pack, the offset and the BLAKE3 of the stored bytes.
    tier: str = "hot"
    created_at: float = 0.0
    pack_key: str = ""
    pack_offset: int = 0
    pack_digest: bytes = b""
    moved_at: float = 0.0


# Change kinds written to the feed.
STORED = "stored"
REPLACED = "replaced"
DELETED = "deleted"
MOVED = "moved"
METADATA_UPDATED = "metadata_updated"
# IOCM: an instance hidden by a rejection note / put back by an admin (index/rejections.py).
# They carry no hash: forwarding skips them; a replica derives the hiding from the note itself.
REJECTED = "rejected"
RESTORED = "restored"
# Patient corrections from the HIS (index/patients.py): no hash either; ``detail`` says what
# changed, so a replica applies the same correction to its own index.
PATIENT_UPDATED = "patient_updated"
PATIENTS_MERGED = "patients_merged"
MERGE_UNDONE = "merge_undone"
PATIENT_CHANGES: frozenset[str] = frozenset({PATIENT_UPDATED, PATIENTS_MERGED, MERGE_UNDONE})
CHANGE_KINDS: frozenset[str] = frozenset({STORED, REPLACED, DELETED, MOVED, METADATA_UPDATED, REJECTED,
                                          RESTORED}) | PATIENT_CHANGES


@_finish
@dataclass(slots=True)
class Change(Record):
    """One change-feed entry (feed CF, keyed by big-endian u64 ``seq``)."""

    KIND: ClassVar[str] = "change"
    seq: int = 0
    kind: str = STORED
    level: str = "instance"
    at: float = 0.0
    sop_uid: str = ""
    series_uid: str = ""
    study_uid: str = ""
    patient_id: str = ""
    hash: bytes | None = None
    old_hash: bytes | None = None
    logical_len: int = 0
    detail: dict[str, Any] = field(default_factory=dict)


@_finish
@dataclass(slots=True)
class Stats(Record):
    """Running counters kept in the meta CF, updated in every write batch."""

    KIND: ClassVar[str] = "stats"
    objects: int = 0
    logical_bytes: int = 0
    # sum of the per-instance stored_len of every indexed instance
    stored_bytes: int = 0
    patients: int = 0
    studies: int = 0
    series: int = 0
    blobs: int = 0
    # distinct blobs' stored size (what is actually on disk after dedup)
    blob_bytes: int = 0
    last_seq: int = 0
    # tier name -> [blobs, stored bytes, logical bytes] of the blobs placed there
    tiers: dict[str, list[int]] = field(default_factory=dict)

    def copy(self) -> Stats:
        """Independent copy (for building a batch without touching the live one; every index
        write makes one: positional, without the dict of to_wire)."""
        st = Stats(*self._VALUES(self))
        st.tiers = {k: list(v) for k, v in self.tiers.items()}
        return st

    def count_tier(self, tier: str, blobs: int, stored: int, logical: int) -> None:
        c = self.tiers.setdefault(tier, [0, 0, 0])
        c[0] += blobs
        c[1] += stored
        c[2] += logical
        if c[0] <= 0:
            del self.tiers[tier]

    def as_dict(self) -> dict[str, int]:
        """Public dict form returned by Index.stats() (the per-tier counters: tier_counts())."""
        return {k: int(v) for k, v in self.to_wire().items() if k != "tiers"}


def syntax_pair(rec: InstanceRecord) -> str:
    """An instance's key in StudyRecord.syntaxes."""
    return f"{rec.sop_class_uid}\\{rec.transfer_syntax}"
