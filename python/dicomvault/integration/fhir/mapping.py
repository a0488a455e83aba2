"""Index rows (keyword -> DICOM string value, as Index.find returns them) -> FHIR R4 resources.

The mapping table is docs/integration.md's; in short:

  ImagingStudy.id / identifier   StudyInstanceUID (ids.py; urn:dicom:uid, value urn:oid:<uid>)
  ImagingStudy.identifier ACSN   AccessionNumber (type v2-0203 ACSN)
  ImagingStudy.status            "available": what the index lists can be retrieved
  ImagingStudy.subject           Patient/<id of PatientID>, display PatientName
  ImagingStudy.started           StudyDate + StudyTime (+ TimezoneOffsetFromUTC, else the
                                 archive host's zone: DICOM times are local)
  ImagingStudy.modality          ModalitiesInStudy (DCM codes)
  ImagingStudy.referrer          ReferringPhysicianName (display)
  ImagingStudy.series[]          SeriesInstanceUID, SeriesNumber, Modality, SeriesDescription,
                                 BodyPartExamined (display), Laterality (display),
                                 NumberOfSeriesRelatedInstances, SeriesDate + SeriesTime
  ...series.instance[]           SOPInstanceUID, SOPClassUID (urn:ietf:rfc:3986), InstanceNumber
  Patient                        PatientID, IssuerOfPatientID (assigner), PatientName (HumanName
                                 per component group), PatientBirthDate, PatientSex
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping, Sequence
from typing import Any

from ...index import keys
from .ids import to_fhir_id
from .params import DCM_SYSTEM, DICOM_UID_SYSTEM, V2_0203

ENDPOINT_ID = "dicomweb"
_URI_SYSTEM = "urn:ietf:rfc:3986"
_GENDER = {"M": "male", "F": "female", "O": "other"}
_DA_RE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_TM_RE = re.compile(r"(\d{2})(\d{2})?(\d{2})?(?:\.(\d{1,6}))?")
_TZ_RE = re.compile(r"([+-])(\d{2})(\d{2})")
_NAME_PARTS = ("family", "given", "middle", "prefix", "suffix")


def _v(row: Mapping[str, str], kw: str) -> str:
    return keys.norm_text(row.get(kw))


def fhir_date(da: str | None) -> str | None:
    """``YYYYMMDD`` -> ``YYYY-MM-DD`` (the first value of a multi-valued one); None if absent
    or not a calendar date."""
    m = _DA_RE.fullmatch(keys.norm_date((da or "").split("\\")[0]))
    if m is None:
        return None
    try:
        return dt.date(int(m[1]), int(m[2]), int(m[3])).isoformat()
    except ValueError:
        return None


def fhir_datetime(da: str | None, tm: str | None, tz: str | None) -> str | None:
    """A FHIR dateTime of a DICOM date and time. FHIR requires a zone with a time: the
    TimezoneOffsetFromUTC when given, else the archive host's local zone on that date. Without
    a (valid) time, the date alone."""
    date = fhir_date(da)
    if date is None:
        return None
    t = _TM_RE.fullmatch(keys.norm_time((tm or "").split("\\")[0]))
    if t is None:
        return date
    hh, mm, ss = int(t[1]), int(t[2] or 0), int(t[3] or 0)
    frac = t[4] or ""
    if hh > 23 or mm > 59 or ss > 60:
        return date
    ss = min(ss, 59)  # a leap second: FHIR's dateTime pattern stops at 59
    z = _TZ_RE.fullmatch(keys.norm_text(tz))
    if z is not None:
        zone = f"{z[1]}{z[2]}:{z[3]}"
    else:
        local = dt.datetime.fromisoformat(f"{date}T{hh:02d}:{mm:02d}:{ss:02d}").astimezone()
        off = local.utcoffset() or dt.timedelta()
        sign = "-" if off < dt.timedelta() else "+"
        minutes = abs(int(off.total_seconds())) // 60
        zone = f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"
    return f"{date}T{hh:02d}:{mm:02d}:{ss:02d}{'.' + frac if frac else ''}{zone}"


def human_names(pn: str | None) -> list[dict[str, Any]]:
    """PN ``family^given^middle^prefix^suffix``, one HumanName per non-empty component group
    (alphabetic, ideographic, phonetic); middle names follow the given name in ``given``."""
    out: list[dict[str, Any]] = []
    for grp in keys.norm_text((pn or "").split("\\")[0]).split("="):
        comps = dict(zip(_NAME_PARTS, (c.strip() for c in grp.split("^")), strict=False))
        name: dict[str, Any] = {}
        if comps.get("family"):
            name["family"] = comps["family"]
        given = [g for c in ("given", "middle") for g in comps.get(c, "").split() if g]
        if given:
            name["given"] = given
        for part in ("prefix", "suffix"):
            if comps.get(part):
                name[part] = comps[part].split()
        if name:
            text = " ".join([*name.get("prefix", []), *given, name.get("family", ""),
                             *name.get("suffix", [])]).strip()
            out.append({"text": " ".join(text.split()), **name})
    return out


def gender(sex: str | None) -> str | None:
    s = keys.norm_text(sex).upper()
    if not s:
        return None
    return _GENDER.get(s, "unknown")


def patient_reference(pid: str, name: str | None) -> dict[str, Any]:
    """The subject of a study: a reference to Patient/<id> when the Patient ID has one, else
    the identifier (and the name) alone."""
    ref: dict[str, Any] = {}
    fid = to_fhir_id(pid)
    if fid is not None:
        ref["reference"] = f"Patient/{fid}"
    elif pid:
        ref["identifier"] = {"value": pid}
    names = human_names(name)
    if names:
        ref["display"] = names[0]["text"]
    if not ref:
        ref["display"] = "unknown patient"  # a study without PatientID or name
    return ref


def patient(row: Mapping[str, str]) -> dict[str, Any]:
    """A Patient of a PATIENT-level row (PatientID, PatientName, PatientBirthDate, PatientSex,
    IssuerOfPatientID)."""
    pid = _v(row, "PatientID")
    res: dict[str, Any] = {"resourceType": "Patient"}
    fid = to_fhir_id(pid)
    if fid is not None:
        res["id"] = fid
    ident: dict[str, Any] = {"use": "usual", "value": pid}
    issuer = _v(row, "IssuerOfPatientID")
    if issuer:
        ident["assigner"] = {"display": issuer}
    if pid:
        res["identifier"] = [ident]
    names = human_names(row.get("PatientName"))
    if names:
        res["name"] = names
    g = gender(row.get("PatientSex"))
    if g:
        res["gender"] = g
    birth = fhir_date(row.get("PatientBirthDate"))
    if birth:
        res["birthDate"] = birth
    return res


def endpoint(address: str) -> dict[str, Any]:
    """The archive's DICOMweb endpoint (``address``: the public .../dicom-web root)."""
    return {
        "resourceType": "Endpoint",
        "id": ENDPOINT_ID,
        "status": "active",
        "connectionType": {"system": "http://terminology.hl7.org/CodeSystem/endpoint-connection-type",
                           "code": "dicom-wado-rs"},
        "name": "dicomvault DICOMweb (WADO-RS, QIDO-RS, STOW-RS)",
        "payloadType": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/endpoint-payload-type",
                                     "code": "DICOM"}], "text": "DICOM"}],
        "payloadMimeType": ["application/dicom"],
        "address": address,
    }


def _int(v: str | None) -> int | None:
    n = keys.parse_int(keys.norm_text(v)) if v else None
    return n if n is not None and n >= 0 else None


def _coding(system: str, code: str) -> dict[str, str]:
    return {"system": system, "code": code}


def _series(row: Mapping[str, str], instances: Sequence[Mapping[str, str]]) -> dict[str, Any]:
    # Modality is type 1 in every IOD; an object stored without it is "OT" (other).
    se: dict[str, Any] = {"uid": _v(row, "SeriesInstanceUID"),
                          "modality": _coding(DCM_SYSTEM, _v(row, "Modality").split("\\")[0] or "OT")}
    number = _int(row.get("SeriesNumber"))
    if number is not None:
        se["number"] = number
    desc = _v(row, "SeriesDescription")
    if desc:
        se["description"] = desc
    n = _int(row.get("NumberOfSeriesRelatedInstances"))
    se["numberOfInstances"] = n if n is not None else len(instances)
    # BodyPartExamined's defined terms map to SNOMED CT only through PS3.16 Annex L, which the
    # archive does not carry: the DICOM term is given as the display.
    body = _v(row, "BodyPartExamined")
    if body:
        se["bodySite"] = {"display": body}
    lat = _v(row, "Laterality")
    if lat:
        se["laterality"] = {"display": lat}
    started = fhir_datetime(row.get("SeriesDate"), row.get("SeriesTime"), row.get("TimezoneOffsetFromUTC"))
    if started:
        se["started"] = started
    if instances:
        se["instance"] = [_instance(i) for i in instances]
    return se


def _instance(row: Mapping[str, str]) -> dict[str, Any]:
    inst: dict[str, Any] = {"uid": _v(row, "SOPInstanceUID"),
                            "sopClass": _coding(_URI_SYSTEM, f"urn:oid:{_v(row, 'SOPClassUID')}")}
    number = _int(row.get("InstanceNumber"))
    if number is not None:
        inst["number"] = number
    return inst


def imaging_study(study: Mapping[str, str], series: Sequence[Mapping[str, str]],
                  instances: Mapping[str, Sequence[Mapping[str, str]]]) -> dict[str, Any]:
    """An ImagingStudy of a STUDY-level row, its SERIES rows (in order) and its IMAGE rows by
    SeriesInstanceUID (in order)."""
    uid = _v(study, "StudyInstanceUID")
    res: dict[str, Any] = {"resourceType": "ImagingStudy"}
    fid = to_fhir_id(uid)
    if fid is not None:
        res["id"] = fid
    idents: list[dict[str, Any]] = [{"use": "official", "system": DICOM_UID_SYSTEM,
                                     "value": f"urn:oid:{uid}"}]
    acc = _v(study, "AccessionNumber")
    if acc:
        idents.append({"use": "usual", "type": {"coding": [_coding(V2_0203, "ACSN")]}, "value": acc})
    res["identifier"] = idents
    res["status"] = "available"
    mods = keys.multi_values(study.get("ModalitiesInStudy"))
    if mods:
        res["modality"] = [_coding(DCM_SYSTEM, m) for m in mods]
    res["subject"] = patient_reference(_v(study, "PatientID"), study.get("PatientName"))
    started = fhir_datetime(study.get("StudyDate"), study.get("StudyTime"),
                            study.get("TimezoneOffsetFromUTC"))
    if started:
        res["started"] = started
    referrer = human_names(study.get("ReferringPhysicianName"))
    if referrer:
        res["referrer"] = {"display": referrer[0]["text"]}
    res["endpoint"] = [{"reference": f"Endpoint/{ENDPOINT_ID}"}]
    nse = _int(study.get("NumberOfStudyRelatedSeries"))
    ninst = _int(study.get("NumberOfStudyRelatedInstances"))
    res["numberOfSeries"] = nse if nse is not None else len(series)
    res["numberOfInstances"] = (ninst if ninst is not None
                                else sum(len(v) for v in instances.values()))
    desc = _v(study, "StudyDescription")
    if desc:
        res["description"] = desc
    if series:
        res["series"] = [_series(s, instances.get(_v(s, "SeriesInstanceUID"), ())) for s in series]
    return res


def operation_outcome(code: str, diagnostics: str, severity: str = "error") -> dict[str, Any]:
    return {"resourceType": "OperationOutcome",
            "issue": [{"severity": severity, "code": code, "diagnostics": diagnostics}]}
