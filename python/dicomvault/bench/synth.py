"""Synthetic modality output, for volume (never for correctness: real images test that).

Images are built to compress like real ones: anatomy-like smooth regions with edges, a noise
floor, and the value ranges scanners write (CT: 12-bit HU + 1024 in 16-bit words, air outside the
body). Deterministic for a given seed.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

UID_ROOT = "1.2.826.0.1.3680043.10.1078."  # dicomvault's synthetic-data UID prefix


@dataclass(frozen=True)
class SeriesSpec:
    slices: int = 300
    rows: int = 512
    columns: int = 512
    seed: int = 0
    patient_id: str = "SYNTH0001"
    patient_name: str = "SYNTHETIC^PATIENT"
    study_date: str = "20260101"


def ct_slice(rows: int, cols: int, z: float, rng: np.random.Generator) -> np.ndarray:
    """One axial slice in stored values (HU + 1024), int16-safe uint16 range."""
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float32)
    cy, cx = rows / 2, cols / 2
    hu = np.full((rows, cols), -1000.0, dtype=np.float32)  # air
    body = ((x - cx) / (cols * 0.42)) ** 2 + ((y - cy) / (rows * 0.34)) ** 2 <= 1.0
    hu[body] = 40.0  # soft tissue
    fat = body & (((x - cx) / (cols * 0.40)) ** 2 + ((y - cy) / (rows * 0.32)) ** 2 > 1.0)
    hu[fat] = -100.0
    for side in (-1, 1):  # lungs, size varying along z
        r = 0.16 + 0.03 * np.sin(z * 3.0)
        lung = ((x - cx - side * cols * 0.18) / (cols * r)) ** 2 + ((y - cy) / (rows * 0.22)) ** 2 <= 1.0
        hu[lung] = -850.0
    spine = ((x - cx) / (cols * 0.05)) ** 2 + ((y - cy - rows * 0.22) / (rows * 0.05)) ** 2 <= 1.0
    hu[spine] = 700.0
    noise = rng.normal(0.0, 20.0, size=(rows, cols)).astype(np.float32)
    hu = hu + noise * body
    return np.clip(hu + 1024.0, 0, 4095).astype(np.uint16)


def ct_series(spec: SeriesSpec) -> Iterator[bytes]:
    """Part-10 files (explicit VR little endian) of one CT series."""
    rng = np.random.default_rng(spec.seed)
    study_uid = generate_uid(UID_ROOT, [spec.patient_id, str(spec.seed), "study"])
    series_uid = generate_uid(UID_ROOT, [spec.patient_id, str(spec.seed), "series"])
    for i in range(spec.slices):
        ds = Dataset()
        sop_uid = generate_uid(UID_ROOT, [spec.patient_id, str(spec.seed), str(i)])
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = spec.study_date
        ds.SeriesDate = spec.study_date
        ds.StudyTime = "101500"
        ds.AccessionNumber = f"ACC{spec.seed:06d}"
        ds.Modality = "CT"
        ds.Manufacturer = "DICOMVAULT SYNTHETIC"
        ds.ReferringPhysicianName = "REFERRER^A"
        ds.StudyDescription = "CT CHEST"
        ds.SeriesDescription = "AXIAL 1.0"
        ds.PatientName = spec.patient_name
        ds.PatientID = spec.patient_id
        ds.PatientBirthDate = "19700101"
        ds.PatientSex = "O"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = i + 1
        ds.ImagePositionPatient = [-250.0, -250.0, -float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = 1.0
        ds.PixelSpacing = [0.977, 0.977]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = spec.rows
        ds.Columns = spec.columns
        ds.BitsAllocated = 16
        ds.BitsStored = 12
        ds.HighBit = 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.WindowCenter = 40
        ds.WindowWidth = 400
        ds.PixelData = ct_slice(spec.rows, spec.columns, i / max(spec.slices, 1), rng).tobytes()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        yield buf.getvalue()
