"""Test data for de-identification: one patient's study of real images (a CT series of three
slices, an MR image, an ultrasound image), with what real objects carry that must not leave:
names in sequences, references between objects, a shared frame of reference, private
attributes safe and unsafe; and a [deidentify] configuration for it."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from dv_corpus import real_file

PATIENT_ID = "DEID-PAT-0001"
PATIENT_NAME = "DOE^JANE^Q"
SECRET = "a-project-secret-of-enough-length"
KEY_HEX = "00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"
B_VALUE = 1000  # a Siemens private b-value: safe private
UNSAFE_PRIVATE_TEXT = "Scanned by DR. HOUSE at ROOM 3"


@dataclass(frozen=True)
class Obj:
    path: Path
    modality: str
    sop_uid: str
    series_uid: str


@dataclass(frozen=True)
class Study:
    uid: str
    frame_of_reference: str
    objects: tuple[Obj, ...]

    def of(self, modality: str) -> list[Obj]:
        return [o for o in self.objects if o.modality == modality]


def _equipment_item(operator: str) -> Dataset:
    item = Dataset()
    item.Manufacturer = "ACME"
    item.InstitutionName = "St. Elsewhere Hospital"
    item.OperatorsName = operator
    item.ContributionDateTime = "20240229120000"
    return item


def _identify(ds: Dataset, study_uid: str, series_uid: str, frame_of_reference: str) -> None:
    ds.PatientID, ds.PatientName = PATIENT_ID, PATIENT_NAME
    ds.PatientBirthDate, ds.PatientSex, ds.PatientAge = "19610412", "F", "063Y"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.StudyDate, ds.SeriesDate, ds.ContentDate, ds.StudyTime = "20240229", "20240229", "20240301", "101500"
    ds.AcquisitionDateTime = "20240229101733.250000+0100"
    ds.AccessionNumber, ds.StudyID = "ACC-778899", "S1"
    ds.InstitutionName, ds.StationName = "St. Elsewhere Hospital", "CT-ROOM-3"
    ds.DeviceSerialNumber = "SN-445566"
    ds.ReferringPhysicianName = "HOUSE^GREGORY"
    ds.OperatorsName = "SMITH^TECH"
    ds.StudyDescription = "CHEST for DOE JANE"
    ds.FrameOfReferenceUID = frame_of_reference
    ds.OtherPatientIDsSequence = Sequence([Dataset()])
    ds.OtherPatientIDsSequence[0].PatientID = "MRN-OTHER-1"
    ds.OtherPatientIDsSequence[0].IssuerOfPatientID = "OTHER HOSPITAL"
    # A sequence the table does not list (kept), whose items hold what it replaces
    ds.ContributingEquipmentSequence = Sequence([_equipment_item("WILSON^JAMES")])
    # X/Z/D with items: kept (D), its UIDs replaced
    ds.ReferencedPerformedProcedureStepSequence = Sequence([Dataset()])
    ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPClassUID = "1.2.840.10008.3.1.2.3.3"
    ds.ReferencedPerformedProcedureStepSequence[0].ReferencedSOPInstanceUID = study_uid[:60] + ".7"


def make_study(out: Path) -> Study:
    """Writes the study's Part-10 files under `out`."""
    out.mkdir(parents=True, exist_ok=True)
    study_uid, frame = generate_uid(), generate_uid()
    objects: list[Obj] = []
    ct_series = generate_uid()
    first_ct = None
    for i in range(3):
        ds = pydicom.dcmread(real_file("CT_small.dcm"))
        _identify(ds, study_uid, ct_series, frame)
        ds.InstanceNumber = i + 1
        ds.BurnedInAnnotation = "NO"
        if first_ct is not None:  # later slices reference the first, as a localizer reference would
            ref = Dataset()
            ref.ReferencedSOPClassUID = ds.SOPClassUID
            ref.ReferencedSOPInstanceUID = first_ct
            ds.ReferencedImageSequence = Sequence([ref])
        else:
            first_ct = str(ds.SOPInstanceUID)
        unsafe = ds.private_block(0x0029, "ACME CORP TEXT", create=True)
        unsafe.add_new(0x01, "LO", UNSAFE_PRIVATE_TEXT)
        objects.append(_save(out, ds, "CT"))
    ds = pydicom.dcmread(real_file("MR_small.dcm"))
    _identify(ds, study_uid, generate_uid(), frame)
    ds.BurnedInAnnotation = "NO"
    siemens = ds.private_block(0x0019, "SIEMENS MR HEADER", create=True)
    siemens.add_new(0x0C, "IS", str(B_VALUE))
    siemens.add_new(0x08, "CS", "SECRETCODE")  # not on the safe list: removed even when retained
    objects.append(_save(out, ds, "MR"))
    ds = pydicom.dcmread(real_file("US1_UNCR.dcm"))
    _identify(ds, study_uid, generate_uid(), frame)
    if "BurnedInAnnotation" in ds:
        del ds.BurnedInAnnotation  # ultrasound without the attribute: flagged
    objects.append(_save(out, ds, "US"))
    return Study(study_uid, frame, tuple(objects))


def _save(out: Path, ds: Dataset, modality: str) -> Obj:
    path = out / f"{modality}-{ds.SOPInstanceUID}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return Obj(path, modality, str(ds.SOPInstanceUID), str(ds.SeriesInstanceUID))


def write_config(tmp: Path, *, keep_mapping: str = "encrypted", extra: str = "") -> Path:
    """A config with projects TRIAL (the secret in a 0600 file) and OTHER; the mapping key in a
    0600 file."""
    secret = tmp / "trial.secret"
    secret.write_text(SECRET + "\n")
    os.chmod(secret, 0o600)
    key = tmp / "mapping.key"
    key.write_text(KEY_HEX + "\n")
    os.chmod(key, 0o600)
    cfg = tmp / "dicomvault.toml"
    cfg.write_text(f"""
[deidentify]
keep_mapping = "{keep_mapping}"
mapping_key_file = "{key.name}"
retain = ["dates"]

[deidentify.projects.TRIAL]
secret_file = "{secret.name}"

[deidentify.projects.OTHER]
secret = "another-secret-for-another-project"
retain = []
keep_mapping = "none"
{extra}
""")
    return cfg
