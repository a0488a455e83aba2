"""Secondary index definitions (``idx`` column family) and entry derivation.

An index entry is ``id(1 byte) E(term) <target>`` with an empty value, where
``term`` is the normalised attribute value and ``<target>`` is the primary key
of the indexed record in its own column family:

====  =====================  ========  ==============================================
id    keyword                level     target
====  =====================  ========  ==============================================
0x01  PatientName (PN)       PATIENT   ``E(PatientID)``
0x10  PatientID              STUDY     ``E(StudyInstanceUID)``
0x11  PatientName (PN)       STUDY     ``E(StudyInstanceUID)``
0x12  StudyDate (DA)         STUDY     ``E(StudyInstanceUID)``
0x13  AccessionNumber        STUDY     ``E(StudyInstanceUID)``
0x14  ModalitiesInStudy      STUDY     ``E(StudyInstanceUID)``
0x20  SeriesInstanceUID      SERIES    ``E(StudyInstanceUID)``  (series key = term+target)
0x21  Modality               SERIES    ``E(StudyInstanceUID) E(SeriesInstanceUID)``
0x30  SOPClassUID            IMAGE     ``E(SOPInstanceUID)``
0x3F  (hierarchy)            IMAGE     ``E(study) E(series) u32(InstanceNumber) E(sop)``
====  =====================  ========  ==============================================

The hierarchy index (0x3F) has no term: it lists the instances of a study or
series in (series, InstanceNumber, SOP UID) order and drives deletes and
``instances_of``.  Entries are recomputed from the record before and after a
change and only the difference is written, so any attribute update keeps the
index exact.  Extra indexes (configurable later) take ids >= 0x80.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType

from . import keys
from .records import InstanceRecord, PatientRecord, SeriesRecord, StudyRecord

PATIENT = "PATIENT"
STUDY = "STUDY"
SERIES = "SERIES"
IMAGE = "IMAGE"

IDX_HIERARCHY = 0x3F

# term kinds: how a stored value is split/normalised into index terms
PN = "PN"
DATE = "DA"
UID = "UI"
TEXT = "TEXT"


def terms_for(kind: str, value: str | None) -> list[str]:
    """Index terms of a stored value (same normalisation as the query side)."""
    if kind == PN:
        return keys.pn_index_terms(value)
    if kind == DATE:
        return [t for t in (keys.norm_date(v) for v in (value or "").split("\\")) if t]
    if kind == UID:
        return [t for t in (keys.norm_uid(v) for v in (value or "").split("\\")) if t]
    return keys.multi_values(value)


def norm_term(kind: str, value: str) -> str:
    """Normalise one query literal the way stored terms are normalised."""
    if kind == PN:
        return keys.norm_pn(value)
    if kind == DATE:
        return keys.norm_date(value)
    if kind == UID:
        return keys.norm_uid(value)
    return keys.norm_text(value)


@dataclass(frozen=True, slots=True)
class IndexSpec:
    """One secondary index: which keyword of which level, and how to split it."""

    id: int
    level: str
    keyword: str
    kind: str

    @property
    def prefix(self) -> bytes:
        """Key prefix shared by every entry of this index."""
        return bytes((self.id,))


IDX_PATIENT_NAME = IndexSpec(0x01, PATIENT, "PatientName", PN)
IDX_STUDY_PATIENT_ID = IndexSpec(0x10, STUDY, "PatientID", TEXT)
IDX_STUDY_PATIENT_NAME = IndexSpec(0x11, STUDY, "PatientName", PN)
IDX_STUDY_DATE = IndexSpec(0x12, STUDY, "StudyDate", DATE)
IDX_ACCESSION = IndexSpec(0x13, STUDY, "AccessionNumber", TEXT)
IDX_MODALITIES = IndexSpec(0x14, STUDY, "ModalitiesInStudy", TEXT)
IDX_SERIES_UID = IndexSpec(0x20, SERIES, "SeriesInstanceUID", UID)
IDX_SERIES_MODALITY = IndexSpec(0x21, SERIES, "Modality", TEXT)
IDX_SOP_CLASS = IndexSpec(0x30, IMAGE, "SOPClassUID", UID)

INDEXES: tuple[IndexSpec, ...] = (
    IDX_PATIENT_NAME, IDX_STUDY_PATIENT_ID, IDX_STUDY_PATIENT_NAME, IDX_STUDY_DATE,
    IDX_ACCESSION, IDX_MODALITIES, IDX_SERIES_UID, IDX_SERIES_MODALITY, IDX_SOP_CLASS,
)

# level -> keyword -> spec
BY_LEVEL: dict[str, dict[str, IndexSpec]] = {}
for _spec in INDEXES:
    BY_LEVEL.setdefault(_spec.level, {})[_spec.keyword] = _spec


def entry_key(spec: IndexSpec, term: str, target: bytes) -> bytes:
    """Full idx key of one entry."""
    return spec.prefix + keys.encode(term) + target


def hierarchy_key(study_uid: str, series_uid: str, instance_number: int | None, sop_uid: str) -> bytes:
    """Hierarchy index key of one instance."""
    return hierarchy_prefix(study_uid, series_uid) + _instance_part(instance_number, keys.encode(sop_uid))


def _instance_part(instance_number: int | None, sop_key: bytes) -> bytes:
    """What follows a series' hierarchy prefix in an instance's key (instance number order)."""
    return keys.u32(keys.instance_number_key(instance_number)) + sop_key


def hierarchy_prefix(study_uid: str, series_uid: str | None = None) -> bytes:
    """Prefix of the hierarchy entries of a study (or of one of its series)."""
    p = bytes((IDX_HIERARCHY,)) + keys.encode(study_uid)
    if series_uid is not None:
        p += keys.encode(series_uid)
    return p


def sop_from_hierarchy_key(k: bytes, prefix_len: int = 1) -> str:
    """SOP Instance UID at the end of a hierarchy key. The terminators are searched for (an
    escaped NUL is 00 FF, never 00 01); only a UID holding an escape is decoded component-wise.
    Why: a C-GET lists a study this way before its first image (300 keys: 1.2 -> 0.3 ms)."""
    pos = k.index(keys.TERM, prefix_len) + 2
    pos = k.index(keys.TERM, pos) + 2 + 4
    raw = k[pos:k.index(keys.TERM, pos)]
    return raw.decode() if b"\x00" not in raw else keys.decode_at(k, pos)[0]



def sop_after_series_prefix(k: bytes, series_prefix_len: int) -> str:
    """sop_from_hierarchy_key of a key that starts with a series' hierarchy prefix of this
    length: the instance number (u32) and E(sop) follow it, so no terminator is searched for."""
    start = series_prefix_len + 4
    raw = k[start:-len(keys.TERM)]
    return raw.decode() if b"\x00" not in raw else keys.decode_at(k, start)[0]

def _add(out: dict[bytes, bytes], spec: IndexSpec, values: list[str], target: bytes) -> None:
    for term in values:
        out[entry_key(spec, term, target)] = b""


# Entries of hierarchy records by what they are derived from. Every store rewrites its study,
# series and patient records, and their entries were derived twice per store (the record as
# loaded, as written), though they change only with the first object of a series or study:
# ~30 % of an index commit's Python time (profiled, /tmp/idx_bench.py). The cached mappings
# are read-only views: callers only read them.
_ENTRY_CACHE: dict[tuple[object, ...], Mapping[bytes, bytes]] = {}
_ENTRY_CACHE_MAX = 4096


def _memo(key: tuple[object, ...], build: Callable[[], dict[bytes, bytes]]) -> Mapping[bytes, bytes]:
    hit = _ENTRY_CACHE.get(key)
    if hit is None:
        if len(_ENTRY_CACHE) >= _ENTRY_CACHE_MAX:
            _ENTRY_CACHE.clear()
        hit = _ENTRY_CACHE[key] = MappingProxyType(build())
    return hit


def patient_entries(rec: PatientRecord) -> Mapping[bytes, bytes]:
    """Index entries of a patient record."""
    name = rec.attrs.get("PatientName")
    return _memo((IDX_PATIENT_NAME.id, rec.patient_id, name), lambda: _patient_entries(rec.patient_id, name))


def _patient_entries(patient_id: str, name: str | None) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    _add(out, IDX_PATIENT_NAME, terms_for(PN, name), keys.encode(patient_id))
    return out


def study_entries(rec: StudyRecord) -> Mapping[bytes, bytes]:
    """Index entries of a study record."""
    a = rec.attrs
    fields = (rec.study_uid, rec.patient_id, a.get("PatientName"), a.get("StudyDate"),
              a.get("AccessionNumber"), tuple(rec.modalities_in_study()))
    return _memo((IDX_STUDY_PATIENT_ID.id, *fields), lambda: _study_entries(*fields))


def _study_entries(study_uid: str, patient_id: str, name: str | None, date: str | None,
                   accession: str | None, modalities: tuple[str, ...]) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    target = keys.encode(study_uid)
    _add(out, IDX_STUDY_PATIENT_ID, [patient_id], target)
    _add(out, IDX_STUDY_PATIENT_NAME, terms_for(PN, name), target)
    _add(out, IDX_STUDY_DATE, terms_for(DATE, date), target)
    _add(out, IDX_ACCESSION, terms_for(TEXT, accession), target)
    _add(out, IDX_MODALITIES, list(modalities), target)
    return out


def series_entries(rec: SeriesRecord) -> Mapping[bytes, bytes]:
    """Index entries of a series record."""
    fields = (rec.study_uid, rec.series_uid, rec.modality)
    return _memo((IDX_SERIES_UID.id, *fields), lambda: _series_entries(*fields))


def _series_entries(study_uid: str, series_uid: str, modality: str) -> dict[bytes, bytes]:
    out: dict[bytes, bytes] = {}
    study = keys.encode(study_uid)
    out[entry_key(IDX_SERIES_UID, series_uid, study)] = b""
    _add(out, IDX_SERIES_MODALITY, terms_for(TEXT, modality), study + keys.encode(series_uid))
    return out


def instance_entries(rec: InstanceRecord) -> dict[bytes, bytes]:
    """Index entries of an instance record (those of entry_key and hierarchy_key, in that order,
    from parts shared by the instances of a series or a SOP class: ~5 µs per store otherwise)."""
    target = keys.encode(rec.sop_uid)
    out = dict.fromkeys([p + target for p in _sop_class_prefixes(rec.sop_class_uid)], b"")
    out[_hierarchy_prefix(rec.study_uid, rec.series_uid) + _instance_part(rec.instance_number, target)] = b""
    return out


@lru_cache(maxsize=256)
def _sop_class_prefixes(sop_class_uid: str) -> tuple[bytes, ...]:
    return tuple(entry_key(IDX_SOP_CLASS, term, b"") for term in terms_for(UID, sop_class_uid))


@lru_cache(maxsize=4096)
def _hierarchy_prefix(study_uid: str, series_uid: str) -> bytes:
    return hierarchy_prefix(study_uid, series_uid)

