"""One worklist entry: a Scheduled Procedure Step of a Requested Procedure of an order (Imaging
Service Request), keyed by (Accession Number, Requested Procedure ID, Scheduled Procedure Step ID).

The Study Instance UID is assigned when the entry is scheduled (unless the order brings one), so
the images the modality makes and its MPPS link back to the order. `as_dataset()` is the entry
as the Modality Worklist Information Model presents it (PS3.4 K.6.1.2), matched and returned by
the worklist C-FIND.
"""

from __future__ import annotations

import re
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ..errors import RequestError

# Scheduled Procedure Step Status (0040,0020). The first four keep an entry on the worklist.
SCHEDULED, ARRIVED, READY, STARTED = "SCHEDULED", "ARRIVED", "READY", "STARTED"
COMPLETED, DISCONTINUED, CANCELED = "COMPLETED", "DISCONTINUED", "CANCELED"
ACTIVE = frozenset({SCHEDULED, ARRIVED, READY, STARTED})
STATUSES = (SCHEDULED, ARRIVED, READY, STARTED, COMPLETED, DISCONTINUED, CANCELED)
KEY_SEPARATOR = "^"
# SH/CS/AE/LO limits of PS3.5 6.2, checked so an entry can always be encoded on the wire
_LIMITS = {"accession": 16, "requested_procedure_id": 16, "sps_id": 16, "patient_id": 64,
           "patient_name": 64 * 5, "station_ae": 16, "modality": 16, "procedure": 64,
           "step_description": 64, "performing_physician": 64 * 5, "patient_sex": 16}
_DATE = re.compile(r"^\d{8}$")
_TIME = re.compile(r"^\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?$")
_UID = re.compile(r"^[0-9]+(\.[0-9]+)*$")


@dataclass
class WorklistEntry:
    accession: str
    requested_procedure_id: str
    sps_id: str
    patient_id: str
    patient_name: str = ""
    patient_birth_date: str = ""  # YYYYMMDD
    patient_sex: str = ""  # M, F, O
    study_uid: str = ""
    procedure: str = ""  # Requested Procedure Description
    procedure_code: list[str] = field(default_factory=list)  # [value, scheme, meaning]
    station_ae: str = ""  # Scheduled Station AE Title
    modality: str = ""
    start_date: str = ""  # Scheduled Procedure Step Start Date, YYYYMMDD
    start_time: str = ""  # HHMMSS
    performing_physician: str = ""
    step_description: str = ""
    referring_physician: str = ""
    status: str = SCHEDULED
    # filled as the modality reports (MPPS): the steps' SOP Instance UIDs, the series they made
    mpps: list[str] = field(default_factory=list)
    performed_series: list[dict[str, Any]] = field(default_factory=list)
    # what the priors service did for this order (priors/service.py): state, studies, errors
    priors: dict[str, Any] = field(default_factory=dict)
    created: float = 0.0
    updated: float = 0.0

    @property
    def key(self) -> str:
        return make_key(self.accession, self.requested_procedure_id, self.sps_id)

    @property
    def active(self) -> bool:
        """On the worklist: not completed, discontinued nor canceled."""
        return self.status in ACTIVE

    def as_dict(self) -> dict[str, Any]:
        return {"key": self.key, **asdict(self)}

    @classmethod
    def from_dict(cls, raw: dict[str, Any]) -> WorklistEntry:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in raw.items() if k in names})

    def as_dataset(self) -> Dataset:
        """The entry in the Modality Worklist Information Model (PS3.4 K.6.1.2.2)."""
        ds = Dataset()
        ds.AccessionNumber = self.accession
        ds.ReferringPhysicianName = self.referring_physician
        ds.PatientName = self.patient_name
        ds.PatientID = self.patient_id
        ds.PatientBirthDate = self.patient_birth_date
        ds.PatientSex = self.patient_sex
        ds.StudyInstanceUID = self.study_uid
        ds.RequestedProcedureDescription = self.procedure
        ds.RequestedProcedureCodeSequence = [_code_item(self.procedure_code)] if self.procedure_code else []
        ds.RequestedProcedureID = self.requested_procedure_id
        ds.ReferencedStudySequence = []
        ds.ReferencedPatientSequence = []
        sps = Dataset()
        sps.ScheduledStationAETitle = self.station_ae
        sps.ScheduledProcedureStepStartDate = self.start_date
        sps.ScheduledProcedureStepStartTime = self.start_time
        sps.Modality = self.modality
        sps.ScheduledPerformingPhysicianName = self.performing_physician
        sps.ScheduledProcedureStepDescription = self.step_description
        sps.ScheduledProcedureStepID = self.sps_id
        sps.ScheduledProcedureStepStatus = self.status
        sps.ScheduledProtocolCodeSequence = []
        ds.ScheduledProcedureStepSequence = [sps]
        return ds


def _code_item(code: list[str]) -> Dataset:
    item = Dataset()
    item.CodeValue = code[0]
    item.CodingSchemeDesignator = code[1] if len(code) > 1 else "L"
    item.CodeMeaning = code[2] if len(code) > 2 else code[0]
    return item


def make_key(accession: str, requested_procedure_id: str, sps_id: str) -> str:
    return KEY_SEPARATOR.join((accession, requested_procedure_id, sps_id))


def split_key(key: str) -> tuple[str, str, str]:
    parts = key.split(KEY_SEPARATOR)
    if len(parts) != 3 or not all(parts):
        raise RequestError(f"worklist key {key!r} is not ACCESSION^REQUESTED_PROCEDURE_ID^STEP_ID")
    return parts[0], parts[1], parts[2]


def parse_start(text: str) -> tuple[str, str]:
    """'YYYY-MM-DD HH:MM' (or 'YYYY-MM-DD', ISO 8601 with a 'T', or DICOM 'YYYYMMDD[HHMM[SS]]')
    as (DA, TM)."""
    t = text.strip()
    if re.fullmatch(r"\d{8}(\d{4}(\d{2})?)?", t):
        return t[:8], t[8:]
    for fmt, has_time in (("%Y-%m-%d %H:%M", True), ("%Y-%m-%dT%H:%M", True), ("%Y-%m-%d %H:%M:%S", True),
                          ("%Y-%m-%dT%H:%M:%S", True), ("%Y-%m-%d", False)):
        try:
            when = datetime.strptime(t, fmt)
        except ValueError:
            continue
        return when.strftime("%Y%m%d"), when.strftime("%H%M%S") if has_time else ""
    raise RequestError(f"start {text!r} is not 'YYYY-MM-DD HH:MM' (nor YYYYMMDDHHMM)")


# the fields a client (CLI, HTTP, an HL7 order) may give, and what they mean
FIELDS = {
    "patient_id": "Patient ID", "patient_name": "Patient's Name (DICOM PN: Family^Given)",
    "patient_birth_date": "birth date YYYYMMDD", "patient_sex": "M, F or O",
    "accession": "Accession Number", "requested_procedure_id": "Requested Procedure ID (default: accession)",
    "sps_id": "Scheduled Procedure Step ID (default: accession)", "study_uid": "Study Instance UID "
    "(default: a new one)", "procedure": "Requested Procedure Description",
    "procedure_code": "code value[^scheme[^meaning]]", "station_ae": "Scheduled Station AE Title",
    "modality": "Modality (CT, MR, ...)", "start": "'YYYY-MM-DD HH:MM'",
    "start_date": "YYYYMMDD (instead of start)", "start_time": "HHMM[SS] (instead of start)",
    "performing_physician": "Scheduled Performing Physician's Name",
    "step_description": "Scheduled Procedure Step Description",
    "referring_physician": "Referring Physician's Name", "status": "one of " + ", ".join(STATUSES),
}


def entry_from_fields(raw: dict[str, Any], *, now: float | None = None) -> WorklistEntry:
    """A new entry from client fields (FIELDS), checked; a study UID is assigned if none given."""
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise RequestError(f"unknown worklist field(s) {', '.join(unknown)}; the fields are "
                           f"{', '.join(FIELDS)}")
    values: dict[str, Any] = {}
    for k, v in raw.items():
        if v is None:
            continue
        if k == "procedure_code":
            if isinstance(v, str):
                v = [p for p in v.split("^")]
            if not isinstance(v, list) or not v or not all(isinstance(p, str) for p in v) or len(v) > 3:
                raise RequestError("procedure_code must be 'value[^scheme[^meaning]]' or 1-3 strings")
            values[k] = v
            continue
        if not isinstance(v, str):
            raise RequestError(f"worklist field {k} must be a string, got {type(v).__name__}")
        values[k] = v.strip()
    start = values.pop("start", "")
    if start:
        values["start_date"], values["start_time"] = parse_start(start)
    for k in ("accession", "patient_id"):
        if not values.get(k):
            raise RequestError(f"a worklist entry needs {k} ({FIELDS[k]})")
    values.setdefault("requested_procedure_id", values["accession"])
    values.setdefault("sps_id", values["accession"])
    if not values.get("study_uid"):
        values["study_uid"] = generate_uid()
    values["station_ae"] = values.get("station_ae", "").strip()
    values["modality"] = values.get("modality", "").upper()
    values["patient_sex"] = values.get("patient_sex", "").upper()
    stamp = time.time() if now is None else now
    entry = WorklistEntry(**values, created=stamp, updated=stamp)
    check_entry(entry)
    return entry


def check_entry(entry: WorklistEntry) -> None:
    """Refuses what could not be encoded in a C-FIND response or would make the key ambiguous."""
    for name in ("accession", "requested_procedure_id", "sps_id"):
        value = getattr(entry, name)
        if not value or KEY_SEPARATOR in value or "\\" in value:
            raise RequestError(f"{name} {value!r} must be non-empty, without '{KEY_SEPARATOR}' or '\\'")
    for name, limit in _LIMITS.items():
        value = getattr(entry, name)
        if len(value) > limit:
            raise RequestError(f"{name} {value!r} is longer than {limit} characters")
        if "\\" in value or any(ord(c) < 0x20 for c in value):
            raise RequestError(f"{name} {value!r} holds a backslash or a control character")
    if entry.patient_birth_date and not _DATE.match(entry.patient_birth_date):
        raise RequestError(f"patient_birth_date {entry.patient_birth_date!r} is not YYYYMMDD")
    if entry.start_date and not _DATE.match(entry.start_date):
        raise RequestError(f"start_date {entry.start_date!r} is not YYYYMMDD")
    if entry.start_time and not _TIME.match(entry.start_time):
        raise RequestError(f"start_time {entry.start_time!r} is not HHMM[SS]")
    if entry.study_uid and (len(entry.study_uid) > 64 or not _UID.match(entry.study_uid)):
        raise RequestError(f"study_uid {entry.study_uid!r} is not a UID")
    if entry.status not in STATUSES:
        raise RequestError(f"status {entry.status!r} is not one of {', '.join(STATUSES)}")
