"""FHIR searches and reads answered from the index.

A search page costs a constant number of index queries, whatever its size: one STUDY query
(every constraint the index can serve in it, newest first), then for the page's studies one
SERIES and one IMAGE query with the page's Study Instance UIDs as a UID list. A Patient search
is one PATIENT query. Every constraint is also checked exactly on the returned rows: the
index's matching has wildcards and case rules a FHIR token must not inherit (a Patient ID
``12*`` is a literal).

Order: studies newest first (StudyDate, StudyTime), then by Study Instance UID, as QIDO-RS
lists them; patients in the index's order, sorted by Patient ID when the whole result was read.
A search reads at most ``max(offset + count + 1, TOTAL_SCAN)`` matches (completed to the end of
the last study date, so the order inside a day is ours to set); ``total`` is given when that
read every match, and left out (as FHIR allows) when it did not.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from ...errors import NotFoundError, RequestError
from ...index import keys
from ...index.errors import QueryError
from ...index.query import FuzzyMatch, NewestFirst, parse_match
from . import mapping, params
from .ids import from_fhir_id
from .params import DCM_SYSTEM, DICOM_UID_SYSTEM, V2_0203, DayRange, Token

TOTAL_SCAN = 100
IMAGING_STUDY_PARAMS = frozenset({"_id", "patient", "subject", "patient.identifier", "identifier",
                                  "identifier:of-type", "accession", "started", "modality"})
PATIENT_PARAMS = frozenset({"_id", "identifier", "name", "family", "given", "birthdate", "gender"})
GENDER_SYSTEM = "http://hl7.org/fhir/administrative-gender"

STUDY_KEYS = ("StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyTime",
              "TimezoneOffsetFromUTC", "AccessionNumber", "StudyDescription", "ModalitiesInStudy",
              "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "ReferringPhysicianName")
SERIES_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SeriesNumber", "Modality", "SeriesDescription",
               "BodyPartExamined", "Laterality", "NumberOfSeriesRelatedInstances", "SeriesDate",
               "SeriesTime", "TimezoneOffsetFromUTC")
IMAGE_KEYS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber")
PATIENT_KEYS = ("PatientID", "PatientName", "PatientBirthDate", "PatientSex", "IssuerOfPatientID")

Row = Mapping[str, str]
Check = Callable[[Row], bool]


@dataclass(slots=True)
class Page:
    """One page of a search: the resources, every match's count if known, and whether more
    matches follow this page."""

    resources: list[dict[str, Any]]
    total: int | None
    more: bool


class _Criteria:
    """What a search asks of the index and of each row. ``one_of``: keyword -> allowed values
    (a repetition intersects: AND of ORs of one value); ``any_of``: keyword -> value sets the
    row's multi-valued attribute must each meet (modality=CT&modality=MR: both)."""

    def __init__(self) -> None:
        self.one_of: dict[str, set[str]] = {}
        self.any_of: dict[str, list[set[str]]] = {}
        self.checks: list[Check] = []
        self.match: dict[str, str] = {}
        self.nothing = False

    def only(self, kw: str, values: Iterable[str]) -> None:
        vals = {v for v in values if v}
        self.one_of[kw] = self.one_of[kw] & vals if kw in self.one_of else vals

    def each(self, kw: str, values: Iterable[str]) -> None:
        self.any_of.setdefault(kw, []).append({v for v in values if v})

    def query(self, returned: Iterable[str]) -> dict[str, str] | None:
        """The index query (None: nothing can match)."""
        if self.nothing or any(not v for v in self.one_of.values()) \
                or any(not s for sets in self.any_of.values() for s in sets):
            return None
        q: dict[str, str] = dict.fromkeys(returned, "")
        for kw, vals in self.one_of.items():
            q[kw] = "\\".join(sorted(vals))
        for kw, sets in self.any_of.items():
            q[kw] = "\\".join(sorted(min(sets, key=len)))
        q.update(self.match)
        return q

    def passes(self, row: Row) -> bool:
        for kw, vals in self.one_of.items():
            if _norm(kw, row.get(kw)) not in vals:
                return False
        for kw, sets in self.any_of.items():
            have = set(keys.multi_values(row.get(kw)))
            if any(not (have & s) for s in sets):
                return False
        return all(check(row) for check in self.checks)


def _norm(kw: str, value: str | None) -> str:
    return keys.norm_uid(value) if kw.endswith("UID") else keys.norm_text(value)


def _decoded_ids(ids: Iterable[str], what: str) -> set[str]:
    out: set[str] = set()
    for i in ids:
        try:
            out.add(from_fhir_id(i, what))
        except NotFoundError:
            continue  # an id no identifier encodes to: it matches nothing
    return out


def _unsystemed(toks: Iterable[Token]) -> set[str]:
    """The codes of tokens that may name an identifier without a system (ours for Patient IDs
    and accession numbers)."""
    return {t.code for t in toks if t.accepts_system(None)}


def _run(index: Any, level: str, query: Mapping[str, str], what: str) -> Iterable[dict[str, str]]:
    try:
        return index.find(level, query)
    except QueryError as exc:
        raise RequestError(f"{what} search: {exc}") from exc


# ---------------------------------------------------------------------------- ImagingStudy


def _study_criteria(groups: Mapping[str, list[str]]) -> _Criteria:
    c = _Criteria()
    for v in groups.get("_id", []):
        c.only("StudyInstanceUID", _decoded_ids(params.references("_id", v, "ImagingStudy"), "ImagingStudy"))
    for name in ("patient", "subject"):
        for v in groups.get(name, []):
            c.only("PatientID", _decoded_ids(params.references(name, v, "Patient"), "Patient"))
    for v in groups.get("patient.identifier", []):
        c.only("PatientID", _unsystemed(params.tokens("patient.identifier", v)))
    for v in groups.get("identifier", []):
        uids: set[str] = set()
        accs: set[str] = set()
        for t in params.tokens("identifier", v):
            is_uid = t.code.startswith("urn:oid:")
            if t.system == DICOM_UID_SYSTEM or (t.system is None and is_uid):
                if is_uid:
                    uids.add(keys.norm_uid(t.code[len("urn:oid:"):]))
            elif t.accepts_system(None):
                accs.add(t.code)
        if uids and accs:
            raise RequestError(f"search parameter identifier={v!r}: an OR list mixing Study Instance "
                               "UIDs and accession numbers is not supported; repeat the search")
        c.only("AccessionNumber" if accs else "StudyInstanceUID", accs or uids)
    for v in groups.get("identifier:of-type", []):
        c.only("AccessionNumber", {val for typ, val in params.typed_tokens("identifier:of-type", v)
                                   if typ.system == V2_0203 and typ.code == "ACSN"})
    for v in groups.get("accession", []):
        c.only("AccessionNumber", _unsystemed(params.tokens("accession", v)))
    for v in groups.get("modality", []):
        c.each("ModalitiesInStudy", {t.code for t in params.tokens("modality", v)
                                     if t.system is None or t.system == DCM_SYSTEM})
    if "started" in groups:
        rng = params.date_range("started", groups["started"])
        if rng.empty:
            c.nothing = True
        elif rng != DayRange():
            c.match["StudyDate"] = rng.dicom_range()
    return c


def _newest_first(index: Any, query: dict[str, str], c: _Criteria, need: int
                  ) -> tuple[list[dict[str, str]], bool]:
    """Matching rows, newest first, at least ``need`` of them if there are, completed to the end
    of the last one's StudyDate; True if every match was read."""
    query["StudyDate"] = NewestFirst(query.get("StudyDate") or "")
    rows: list[dict[str, str]] = []
    last = ""
    exhausted = True
    for row in _run(index, "STUDY", query, "ImagingStudy"):
        if not c.passes(row):
            continue
        day = keys.norm_date(row.get("StudyDate"))
        if len(rows) >= need and day != last:
            exhausted = False
            break
        rows.append(row)
        last = day
    rows.sort(key=lambda r: keys.norm_uid(r.get("StudyInstanceUID")))
    rows.sort(key=lambda r: (keys.norm_date(r.get("StudyDate")), keys.norm_time(r.get("StudyTime"))),
              reverse=True)
    return rows, exhausted


def _imaging_studies(index: Any, studies: list[dict[str, str]]) -> list[dict[str, Any]]:
    """ImagingStudy resources of study rows: their series and instances in one SERIES and one
    IMAGE query for them all."""
    if not studies:
        return []
    uids = [keys.norm_uid(s.get("StudyInstanceUID")) for s in studies]
    wanted = set(uids)
    uid_list = "\\".join(uids)
    series: dict[str, list[dict[str, str]]] = {}
    for row in _run(index, "SERIES", {**dict.fromkeys(SERIES_KEYS, ""), "StudyInstanceUID": uid_list},
                    "ImagingStudy series"):
        st = keys.norm_uid(row.get("StudyInstanceUID"))
        if st in wanted:
            series.setdefault(st, []).append(row)
    instances: dict[tuple[str, str], list[dict[str, str]]] = {}
    for row in _run(index, "IMAGE", {**dict.fromkeys(IMAGE_KEYS, ""), "StudyInstanceUID": uid_list},
                    "ImagingStudy instances"):
        key = (keys.norm_uid(row.get("StudyInstanceUID")), keys.norm_uid(row.get("SeriesInstanceUID")))
        if key[0] in wanted:
            instances.setdefault(key, []).append(row)

    def num(v: str | None) -> tuple[bool, int]:
        n = keys.parse_int(keys.norm_text(v)) if v else None
        return (n is None, n or 0)

    out: list[dict[str, Any]] = []
    for uid, study in zip(uids, studies, strict=True):
        ses = sorted(series.get(uid, []), key=lambda r: (num(r.get("SeriesNumber")),
                                                         keys.norm_uid(r.get("SeriesInstanceUID"))))
        by_series: dict[str, list[dict[str, str]]] = {}
        for se in ses:
            se_uid = keys.norm_uid(se.get("SeriesInstanceUID"))
            by_series[se_uid] = sorted(instances.get((uid, se_uid), []),
                                       key=lambda r: (num(r.get("InstanceNumber")),
                                                      keys.norm_uid(r.get("SOPInstanceUID"))))
        out.append(mapping.imaging_study(study, ses, by_series))
    return out


def search_imaging_studies(index: Any, groups: Mapping[str, list[str]]) -> Page:
    """``GET ImagingStudy?...``: ``groups`` as params.group returns them."""
    count, offset = params.paging(dict(groups))
    c = _study_criteria(groups)
    query = c.query(STUDY_KEYS)
    if query is None:
        return Page([], 0, False)
    rows, exhausted = _newest_first(index, query, c, max(offset + count + 1, TOTAL_SCAN))
    page = rows[offset: offset + count]
    return Page(_imaging_studies(index, page), len(rows) if exhausted else None,
                len(rows) > offset + len(page))


def read_imaging_study(index: Any, fhir_id: str) -> dict[str, Any]:
    uid = from_fhir_id(fhir_id, "ImagingStudy")
    rows = [r for r in _run(index, "STUDY", {**dict.fromkeys(STUDY_KEYS, ""), "StudyInstanceUID": uid},
                            "ImagingStudy") if keys.norm_uid(r.get("StudyInstanceUID")) == uid]
    if not rows:
        raise NotFoundError(f"ImagingStudy/{fhir_id}: no study with Study Instance UID {uid}")
    return _imaging_studies(index, rows[:1])[0]


# ---------------------------------------------------------------------------- Patient


def _name_parts(pn: str | None, parts: tuple[str, ...]) -> list[str]:
    return [w for n in mapping.human_names(pn) for p in parts
            for w in ([n[p]] if isinstance(n.get(p), str) else n.get(p, []))]


def _starts(pn_parts: tuple[str, ...], prefixes: set[str]) -> Check:
    def check(row: Row) -> bool:
        words = [w.upper() for w in _name_parts(row.get("PatientName"), pn_parts)]
        return any(w.startswith(p) for w in words for p in prefixes)
    return check


def _fuzzy(value: str) -> Check:
    m = parse_match("PatientName", FuzzyMatch(value))
    return lambda row: m.matches(row.get("PatientName"))


def _name_values(name: str, value: str) -> list[str]:
    # FHIR string search has no wildcards: the index's are taken out of the value.
    out = [p.replace("*", "").replace("?", "").strip() for p in params.strings(name, value)]
    if any(not o for o in out):
        raise RequestError(f"search parameter {name}={value!r}: empty name")
    return out


def _patient_criteria(groups: Mapping[str, list[str]]) -> _Criteria:
    c = _Criteria()
    for v in groups.get("_id", []):
        c.only("PatientID", _decoded_ids(params.references("_id", v, "Patient"), "Patient"))
    for v in groups.get("identifier", []):
        c.only("PatientID", _unsystemed(params.tokens("identifier", v)))
    names: list[str] = []
    for name, parts in (("name", None), ("family", ("family",)), ("given", ("given",))):
        for v in groups.get(name, []):
            alts = _name_values(name, v)
            names.append("\\".join(alts))
            if parts is None:
                c.checks.append(_fuzzy("\\".join(alts)))
            else:
                c.checks.append(_starts(parts, {a.upper() for a in alts}))
    if names:
        # The name index serves one of them (each word must start a name word); all are checked.
        c.match["PatientName"] = FuzzyMatch(names[0])
    if "birthdate" in groups:
        rng = params.date_range("birthdate", groups["birthdate"])
        if rng.empty:
            c.nothing = True
        elif rng != DayRange():
            c.match["PatientBirthDate"] = rng.dicom_range()
    for v in groups.get("gender", []):
        wanted = {t.code for t in params.tokens("gender", v) if t.system in (None, GENDER_SYSTEM)}
        bad = wanted - {"male", "female", "other", "unknown"}
        if bad:
            raise RequestError(f"search parameter gender={v!r}: {', '.join(sorted(bad))} is not an "
                               "administrative-gender code")
        c.checks.append(lambda row, w=frozenset(wanted): mapping.gender(row.get("PatientSex")) in w)
    return c


def search_patients(index: Any, groups: Mapping[str, list[str]]) -> Page:
    count, offset = params.paging(dict(groups))
    c = _patient_criteria(groups)
    query = c.query(PATIENT_KEYS)
    if query is None:
        return Page([], 0, False)
    need = max(offset + count + 1, TOTAL_SCAN)
    rows: list[dict[str, str]] = []
    exhausted = True
    for row in _run(index, "PATIENT", query, "Patient"):
        if not c.passes(row):
            continue
        if len(rows) >= need:
            exhausted = False
            break
        rows.append(row)
    if exhausted and len(rows) <= TOTAL_SCAN:
        # Every page of this result reads it whole (need >= TOTAL_SCAN): one order for them all.
        rows.sort(key=lambda r: keys.norm_text(r.get("PatientID")))
    page = rows[offset: offset + count]
    return Page([mapping.patient(r) for r in page], len(rows) if exhausted else None,
                len(rows) > offset + len(page))


def read_patient(index: Any, fhir_id: str) -> dict[str, Any]:
    pid = from_fhir_id(fhir_id, "Patient")
    rec = index.get_patient(pid)
    if rec is None or keys.norm_text(rec.patient_id) != pid:
        raise NotFoundError(f"Patient/{fhir_id}: no patient with Patient ID {pid!r}")
    return mapping.patient({**rec.attrs, "PatientID": rec.patient_id})
