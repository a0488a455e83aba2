"""The CapabilityStatement (GET /fhir/r4/metadata): exactly the interactions and search
parameters that search.py and params.py implement. A test checks the two agree."""

from __future__ import annotations

from typing import Any

# name -> (type, documentation); the names are search.IMAGING_STUDY_PARAMS / PATIENT_PARAMS.
IMAGING_STUDY_SEARCH: dict[str, tuple[str, str]] = {
    "_id": ("token", "the resource id (derived from the Study Instance UID)"),
    "patient": ("reference", "Patient/<id>: the study's Patient ID"),
    "subject": ("reference", "as patient (only Patient subjects exist here)"),
    "patient.identifier": ("token", "chained: the Patient ID (identifiers carry no system: "
                                    "|value or value)"),
    "identifier": ("token", "urn:dicom:uid|urn:oid:<StudyInstanceUID>, or the accession number "
                            "(|value or value)"),
    "identifier:of-type": ("token", "http://terminology.hl7.org/CodeSystem/v2-0203|ACSN|<accession>"),
    "accession": ("token", "the accession number (this server's shorthand for identifier:of-type ACSN)"),
    "started": ("date", "StudyDate; prefixes eq, gt, ge, lt, le; date precision only"),
    "modality": ("token", "a modality in the study (DICOM DCM system or none)"),
}
PATIENT_SEARCH: dict[str, tuple[str, str]] = {
    "_id": ("token", "the resource id (derived from the Patient ID)"),
    "identifier": ("token", "the Patient ID (|value or value)"),
    "name": ("string", "every word starts a word of the name (family, given, middle, prefix, "
                       "suffix), case-insensitive"),
    "family": ("string", "starts the family name, case-insensitive"),
    "given": ("string", "starts a given or middle name, case-insensitive"),
    "birthdate": ("date", "PatientBirthDate; prefixes eq, gt, ge, lt, le"),
    "gender": ("token", "male, female, other, unknown (PatientSex M, F, O, other values)"),
}
PAGING_DOC = "_count (default 20, at most 100; 0 = total only) and _offset page through a search"


def _params(table: dict[str, tuple[str, str]]) -> list[dict[str, str]]:
    return [{"name": n, "type": t, "documentation": d} for n, (t, d) in table.items()]


def capability_statement(base: str, version: str, date: str) -> dict[str, Any]:
    """``base``: the FHIR base URL; ``date``: YYYY-MM-DD of this server's start."""
    return {
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": date,
        "publisher": "dicomvault",
        "kind": "instance",
        "software": {"name": "dicomvault", "version": version},
        "implementation": {"description": "dicomvault PACS archive: FHIR R4 read API", "url": base},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "documentation": "Read only. " + PAGING_DOC + ". Unknown search parameters are refused "
                             "with 400. Authentication: the archive's (Bearer or Basic), read role.",
            "resource": [
                {"type": "ImagingStudy",
                 "interaction": [{"code": "read"}, {"code": "search-type"}],
                 "searchParam": _params(IMAGING_STUDY_SEARCH)},
                {"type": "Patient",
                 "interaction": [{"code": "read"}, {"code": "search-type"}],
                 "searchParam": _params(PATIENT_SEARCH)},
                {"type": "Endpoint", "interaction": [{"code": "read"}]},
            ],
        }],
    }
