"""Test data for IOCM: a CT series with fresh UIDs (from pydicom's test files) and rejection
notes built with pydicom as a modality or a QC workstation would: SR Document General module,
Key Object Document module, the evidence sequence and the IMAGE content items."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sequence import Sequence
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

KOS = "1.2.840.10008.5.1.4.1.1.88.59"
TITLES = {
    "113001": "Rejected for Quality Reasons",
    "113037": "Rejected for Patient Safety Reasons",
    "113038": "Incorrect Modality Worklist Entry",
    "113039": "Data Retention Policy Expired",
}


@dataclass(frozen=True)
class Image:
    path: Path
    study_uid: str
    series_uid: str
    sop_uid: str
    sop_class: str


def ct_series(out: Path, n: int, *, patient_id: str = "IOCM1", study_uid: str | None = None,
              series_uid: str | None = None) -> list[Image]:
    """`n` CT slices of one new series (and study unless given), written as Part-10 files."""
    out.mkdir(parents=True, exist_ok=True)
    src = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    images = []
    for i in range(n):
        ds = src.copy()
        ds.PatientID, ds.PatientName = patient_id, "IOCM^TEST"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.InstanceNumber = i + 1
        path = out / f"ct{i:03d}-{ds.SOPInstanceUID}.dcm"
        ds.save_as(path, enforce_file_format=True)
        images.append(Image(path, study_uid, series_uid, str(ds.SOPInstanceUID), str(ds.SOPClassUID)))
    return images


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def rejection_note(path: Path, rejected: list[Image], *, code: str = "113001", patient_id: str = "IOCM1",
                   scheme: str = "DCM") -> str:
    """Writes a KOS rejecting `rejected` (all of one study); returns its SOP Instance UID."""
    study_uid = rejected[0].study_uid
    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.SOPClassUID = KOS
    ds.SOPInstanceUID = generate_uid()
    ds.StudyDate, ds.StudyTime, ds.ContentDate, ds.ContentTime = "20040119", "072730", "20261206", "120000"
    ds.AccessionNumber, ds.ReferringPhysicianName, ds.StudyID = "", "", "1"
    ds.Modality, ds.Manufacturer = "KO", "dicomvault-tests"
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "IOCM^TEST", patient_id, "", "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber, ds.InstanceNumber = 999, 1
    ds.ReferencedPerformedProcedureStepSequence = Sequence([])
    # SR Document Content: the title is the rejection reason (CID 7011)
    ds.ValueType, ds.ContinuityOfContent = "CONTAINER", "SEPARATE"
    ds.ConceptNameCodeSequence = Sequence([_code(code, scheme, TITLES.get(code, "Other"))])
    tmpl = Dataset()
    tmpl.MappingResource, tmpl.TemplateIdentifier = "DCMR", "2010"
    ds.ContentTemplateSequence = Sequence([tmpl])
    by_series: dict[str, list[Image]] = {}
    for im in rejected:
        by_series.setdefault(im.series_uid, []).append(im)
    series_items = []
    for series_uid, ims in by_series.items():
        se = Dataset()
        se.SeriesInstanceUID = series_uid
        refs = []
        for im in ims:
            r = Dataset()
            r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID = im.sop_class, im.sop_uid
            refs.append(r)
        se.ReferencedSOPSequence = Sequence(refs)
        series_items.append(se)
    st = Dataset()
    st.StudyInstanceUID = study_uid
    st.ReferencedSeriesSequence = Sequence(series_items)
    ds.CurrentRequestedProcedureEvidenceSequence = Sequence([st])
    content = []
    for im in rejected:
        item = Dataset()
        item.RelationshipType, item.ValueType = "CONTAINS", "IMAGE"
        r = Dataset()
        r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID = im.sop_class, im.sop_uid
        item.ReferencedSOPSequence = Sequence([r])
        content.append(item)
    ds.ContentSequence = Sequence(content)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = KOS, ds.SOPInstanceUID
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    ds.save_as(path, enforce_file_format=True)
    return str(ds.SOPInstanceUID)
