"""Studies of one patient for the priors tests: a real CT image (pydicom's CT_small) re-identified
with the patient, modality, body part, date and description a test needs."""

from __future__ import annotations

import io
from datetime import date, timedelta

import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid


def study_file(patient_id: str, modality: str, body_part: str | None, study_date: str, description: str = "",
               *, study_uid: str | None = None, instances: int = 1) -> tuple[str, list[bytes]]:
    """(study uid, Part-10 files of one series) of a study as the test describes it."""
    study = study_uid or generate_uid()
    series = generate_uid()
    out = []
    for n in range(instances):
        ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
        ds.PatientID, ds.PatientName = patient_id, f"Prior^{patient_id}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.Modality, ds.StudyDate, ds.StudyDescription = modality, study_date, description
        ds.SeriesDescription = ""
        ds.InstanceNumber = n + 1
        if body_part is None:
            if "BodyPartExamined" in ds:
                del ds.BodyPartExamined
        else:
            ds.BodyPartExamined = body_part
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return study, out


def days_ago(n: int) -> str:
    return (date.today() - timedelta(days=n)).strftime("%Y%m%d")
