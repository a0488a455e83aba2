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


# -- pixel generators of the other modalities (used by workloads.py) -------------------------------
# Each returns stored values in the dtype the modality writes. They are vectorised numpy, run once
# per pixel template before a benchmark (never per object), so clarity beats speed here.


def _tent(n_out: int, n_in: int) -> np.ndarray:
    """(n_out, n_in) linear-interpolation matrix: upsampling by a matrix product is smooth and,
    through BLAS, far cheaper than a Python-level interpolation of megapixel images."""
    pos = np.linspace(0.0, n_in - 1.0, n_out, dtype=np.float32)[:, None]
    return np.maximum(0.0, 1.0 - np.abs(pos - np.arange(n_in, dtype=np.float32)[None, :]))


def smooth_field(rows: int, cols: int, cell: int, rng: np.random.Generator) -> np.ndarray:
    """Zero-mean, unit-ish random field varying over about `cell` pixels (tissue texture)."""
    h, w = max(2, rows // cell + 2), max(2, cols // cell + 2)
    coarse = rng.standard_normal((h, w), dtype=np.float32)
    return (_tent(rows, h) @ coarse @ _tent(cols, w).T).astype(np.float32)


def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates in [-1, 1], broadcastable (ogrid: no full-size index arrays)."""
    y, x = np.ogrid[0:rows, 0:cols]
    return (y.astype(np.float32) / max(rows - 1, 1) * 2 - 1), (
        x.astype(np.float32) / max(cols - 1, 1) * 2 - 1
    )


def mr_slice(rows: int, cols: int, z: float, rng: np.random.Generator) -> np.ndarray:
    """One axial brain slice (T1-like), 12-bit values in uint16, noise floor everywhere as in
    magnitude MR images (which is why MR compresses less than CT)."""
    y, x = _grid(rows, cols)
    r2 = (x / 0.72) ** 2 + (y / 0.88) ** 2
    img = np.zeros((rows, cols), dtype=np.float32)
    img[r2 <= 1.0] = 900.0  # scalp fat
    img[r2 <= 0.86] = 250.0  # skull
    brain = r2 <= 0.78
    img[brain] = 620.0
    img += brain * (90.0 * smooth_field(rows, cols, max(4, rows // 24), rng))  # grey/white matter
    for side in (-1, 1):  # lateral ventricles, size varying along z
        v = ((x - side * 0.12) / (0.07 + 0.03 * np.sin(z * 3.0))) ** 2 + (y / 0.28) ** 2 <= 1.0
        img[v] = 180.0
    img += np.abs(rng.normal(0.0, 14.0, size=(rows, cols))).astype(np.float32)
    return np.clip(img, 0, 4095).astype(np.uint16)


def cr_image(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A PA chest radiograph, 12-bit in uint16: collimation border, body, lungs with ribs, spine."""
    y, x = _grid(rows, cols)
    img = np.full((rows, cols), 3600.0, dtype=np.float32)  # direct exposure
    body = (x / 0.85) ** 2 + ((y - 0.1) / 1.05) ** 2 <= 1.0
    img[body] = 1500.0
    for side in (-1, 1):
        lung = ((x - side * 0.36) / 0.27) ** 2 + ((y + 0.05) / 0.55) ** 2 <= 1.0
        ribs = np.sin((y * 14.0 + 4.0 * x * x) * np.pi) > 0.55
        img[lung] = 2500.0
        img[lung & ribs] = 2150.0
    img[:, np.abs(x[0]) < 0.07] = 900.0  # spine / mediastinum
    img += 120.0 * smooth_field(rows, cols, max(8, rows // 20), rng)
    img += rng.normal(0.0, 18.0, size=(rows, cols)).astype(np.float32)
    border = max(1, rows // 30)  # collimated (unexposed) edges
    img[:border] = img[-border:] = 80.0
    img[:, :border] = img[:, -border:] = 80.0
    return np.clip(img, 0, 4095).astype(np.uint16)


def mg_image(rows: int, cols: int, rng: np.random.Generator) -> np.ndarray:
    """A CC mammogram, 14-bit in uint16: the breast against the left edge, fibroglandular texture,
    a quiet background (which is where lossless coders win on MG)."""
    y, x = _grid(rows, cols)
    img = 60.0 + rng.normal(0.0, 3.0, size=(rows, cols)).astype(np.float32)
    breast = ((x + 1.0) / 1.3) ** 2 + (y / 0.85) ** 2 <= 1.0
    tissue = 7000.0 + 1800.0 * smooth_field(rows, cols, max(8, rows // 40), rng)
    tissue += 500.0 * smooth_field(rows, cols, max(4, rows // 300), rng)
    tissue += rng.normal(0.0, 45.0, size=(rows, cols)).astype(np.float32)
    img = np.where(breast, tissue, img)
    return np.clip(img, 0, 16383).astype(np.uint16)


def us_frame(rows: int, cols: int, rng: np.random.Generator, doppler: bool = False) -> np.ndarray:
    """One RGB ultrasound frame (rows, cols, 3) uint8: black surround, a fan-shaped sector of
    speckled grey tissue, a few annotation blocks, and optionally a colour-Doppler box."""
    yy, xx = np.ogrid[0:rows, 0:cols]
    ay, ax = rows * 0.06, cols / 2
    r = np.sqrt((yy - ay) ** 2 + (xx - ax) ** 2).astype(np.float32)
    theta = np.arctan2(xx - ax, yy - ay + 1e-6).astype(np.float32)
    sector = (r > rows * 0.08) & (r < rows * 0.92) & (np.abs(theta) < 0.62)
    echo = 70.0 + 35.0 * smooth_field(rows, cols, max(4, rows // 12), rng)
    speckle = rng.exponential(1.0, size=(rows, cols)).astype(np.float32)
    grey = np.where(sector, np.clip(echo * speckle, 0, 255), 0.0).astype(np.uint8)
    rgb = np.repeat(grey[:, :, None], 3, axis=2)
    rgb[rows // 40 : rows // 40 + rows // 30, cols // 20 : cols // 3] = 200  # annotation text band
    if doppler:
        y0, y1, x0, x1 = int(rows * 0.35), int(rows * 0.55), int(cols * 0.42), int(cols * 0.58)
        flow = smooth_field(y1 - y0, x1 - x0, 6, rng)
        box = rgb[y0:y1, x0:x1]
        box[..., 0] = np.where(flow > 0.4, np.clip(flow * 180, 0, 255), box[..., 0])
        box[..., 2] = np.where(flow < -0.4, np.clip(-flow * 180, 0, 255), box[..., 2])
    return rgb
