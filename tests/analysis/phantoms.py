"""Synthetic CT series for the analyzers' tests, written as real CT Image Storage instances
(every CT Image IOD attribute dciodvfy asks for), with their voxel truth.

The chest phantom is defined in millimetres, so one geometry serves a 128 x 128 x 60 test
volume and a 512 x 512 x 300 timing volume: an elliptic body cylinder (~40 HU), two lung
ellipsoids (~-850 HU) on either side of the midline, a trachea from the top slice down to the
carina and two main bronchi running from there into the lungs (-1000 HU), vessels inside the
lungs (40 HU), and a chosen fraction of each lung's parenchyma set to -990 HU (emphysema).
Gaussian noise is added everywhere; the truth is counted on the final voxels.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

LEFT, RIGHT = 1, 2
BODY_HU, LUNG_HU, AIR_HU, VESSEL_HU, EMPHYSEMA_HU = 40, -850, -1000, 40, -990
INTERCEPT = -1024


@dataclass
class Phantom:
    hu: np.ndarray  # int16 [z, y, x], z = 0 the most superior slice
    labels: np.ndarray  # uint8: LEFT / RIGHT lung (vessels and intrapulmonary bronchi included)
    spacing: tuple[float, float, float]  # (slice, row, column) mm
    datasets: list[Dataset] = field(default_factory=list)

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    def volume_ml(self, side: int) -> float:
        return float((self.labels == side).sum()) * self.voxel_ml

    def emphysema_percent(self, side: int | None = None) -> float:
        lung = self.labels > 0 if side is None else self.labels == side
        return 100.0 * float((self.hu[lung] < -950).sum()) / float(lung.sum())


def _segment_centre(z: float, start: tuple[float, float, float], end: tuple[float, float, float]
                    ) -> tuple[float, float] | None:
    (x0, y0, z0), (x1, y1, z1) = start, end
    lo, hi = min(z0, z1), max(z0, z1)
    if not lo <= z <= hi:
        return None
    t = (z - z0) / (z1 - z0)
    return x0 + t * (x1 - x0), y0 + t * (y1 - y0)


def chest_phantom(shape: tuple[int, int, int] = (60, 128, 128),
                  spacing: tuple[float, float, float] = (5.0, 2.5, 2.5),
                  emphysema: tuple[float, float] = (0.15, 0.05), noise_hu: float = 15.0, seed: int = 7,
                  lung_x: float = 62.0, trachea_y: float = -10.0, with_datasets: bool = True,
                  **series: object) -> Phantom:
    """`emphysema`: the fraction of (left, right) lung parenchyma set to -990 HU. The scan spans
    z = 0 (the first, most superior slice) down to -(nz - 1) * slice spacing. `lung_x`: the
    lungs' centres from the midline (below 42 mm they touch there; move the trachea out of their
    way with `trachea_y`)."""
    nz, ny, nx = shape
    dz, dy, dx = spacing
    rng = np.random.default_rng(seed)
    ys = (np.arange(ny) - (ny - 1) / 2.0) * dy
    xs = (np.arange(nx) - (nx - 1) / 2.0) * dx
    yy, xx = np.meshgrid(ys, xs, indexing="ij")
    depth = (nz - 1) * dz
    lung_top, lung_bottom = 0.2 * depth, 0.88 * depth  # mm below the first slice
    lung_c, lung_az = (lung_top + lung_bottom) / 2, (lung_bottom - lung_top) / 2
    lungs = {LEFT: (lung_x, 0.0), RIGHT: (-lung_x, 0.0)}  # +x is the patient's left
    carina = (0.0, trachea_y, -0.3 * depth)
    trachea = ((0.0, trachea_y, 0.0), carina)
    bronchi = [(carina, (side * 50.0, -5.0, -0.42 * depth)) for side in (1, -1)]
    vessels = [(sx * lung_x + ox, oy) for sx in (1, -1) for ox, oy in ((-15, 20), (15, -20), (0, 35))]
    hu = np.empty(shape, dtype=np.int16)
    labels = np.zeros(shape, dtype=np.uint8)
    body = (xx / 150.0) ** 2 + (yy / 110.0) ** 2 <= 1.0
    for k in range(nz):
        z = -k * dz
        below = -z
        plane = np.where(body, float(BODY_HU), float(AIR_HU))
        lab = np.zeros((ny, nx), dtype=np.uint8)
        for side, (cx, cy) in lungs.items():
            r2 = 1.0 - ((below - lung_c) / lung_az) ** 2
            if r2 > 0:
                inside = ((xx - cx) / 42.0) ** 2 + ((yy - cy) / 65.0) ** 2 <= r2
                lab[inside & ((xx >= 0) if side == LEFT else (xx < 0))] = side
        lung = lab > 0
        plane[lung] = LUNG_HU
        vessel = np.zeros((ny, nx), dtype=bool)
        for vx, vy in vessels:
            vessel |= (xx - vx) ** 2 + (yy - vy) ** 2 <= 3.0 ** 2
        vessel &= lung
        for start, end, radius in [(*trachea, 8.0)] + [(s, e, 5.0) for s, e in bronchi]:
            centre = _segment_centre(z, start, end)
            if centre is not None:
                tube = (xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 <= radius ** 2
                plane[tube] = AIR_HU
                vessel &= ~tube
        plane[vessel] = VESSEL_HU
        parenchyma = lung & ~vessel & (plane == LUNG_HU)
        for side, fraction in zip((LEFT, RIGHT), emphysema, strict=True):
            hit = parenchyma & (lab == side) & (rng.random((ny, nx)) < fraction)
            plane[hit] = EMPHYSEMA_HU
        plane += rng.normal(0.0, noise_hu, (ny, nx))
        hu[k] = np.clip(np.rint(plane), INTERCEPT, 4095 + INTERCEPT).astype(np.int16)
        labels[k] = lab
    phantom = Phantom(hu=hu, labels=labels, spacing=spacing)
    if with_datasets:
        phantom.datasets = ct_series(hu, spacing, **series)  # type: ignore[arg-type]
    return phantom


def study_attributes(patient_id: str = "PHANTOM-1", study_uid: str | None = None) -> Dataset:
    ds = Dataset()
    ds.PatientName = "Phantom^Chest"
    ds.PatientID = patient_id
    ds.PatientBirthDate = "19600101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.StudyDate, ds.StudyTime = "20240517", "101500"
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.AccessionNumber = "ACC1"
    ds.StudyDescription = "CT chest"
    return ds


def ct_series(hu: np.ndarray, spacing: tuple[float, float, float], *, study: Dataset | None = None,
              series_uid: str | None = None, body_part: str = "CHEST", protocol: str = "Chest routine",
              description: str = "Chest 5mm", first_z: float = 0.0,
              slice_z: Sequence[float] | None = None, mirrored: bool = False,
              edit: Callable[[int, Dataset], None] | None = None) -> list[Dataset]:
    """One CT Image Storage instance per slice of `hu` (slice 0 at z = `first_z`, then downwards
    by the slice spacing unless `slice_z` gives every position); `edit(k, ds)` changes slice k
    before its pixels are packed (tests craft defects with it). `mirrored`: the rows run towards
    the patient's right (Image Orientation (Patient) -1\\0\\0\\0\\1\\0, as some scanners write
    feet-first scans), the same anatomy stored with its columns reversed."""
    nz, ny, nx = hu.shape
    dz, dy, dx = spacing
    study = study or study_attributes()
    series_uid = series_uid or generate_uid()
    frame_uid = generate_uid()
    out = []
    for k in range(nz):
        ds = Dataset()
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.update(study)
        ds.Modality = "CT"
        ds.SeriesInstanceUID = series_uid
        ds.SeriesNumber = 2
        ds.SeriesDescription = description
        ds.ProtocolName = protocol
        ds.BodyPartExamined = body_part
        ds.PatientPosition = "HFS"
        ds.FrameOfReferenceUID = frame_uid
        ds.PositionReferenceIndicator = ""
        ds.Manufacturer = "dicomvault-phantom"
        ds.InstanceNumber = k + 1
        ds.ContentDate, ds.ContentTime = study.StudyDate, study.StudyTime
        ds.AcquisitionNumber = 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.KVP = 120
        ds.SliceThickness = dz
        z = slice_z[k] if slice_z is not None else first_z - k * dz
        sign = -1 if mirrored else 1
        ds.ImagePositionPatient = [-sign * (nx - 1) / 2.0 * dx, -(ny - 1) / 2.0 * dy, z]
        ds.ImageOrientationPatient = [sign, 0, 0, 0, 1, 0]
        ds.SliceLocation = z
        ds.PixelSpacing = [dy, dx]
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = ny, nx
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
        ds.PixelRepresentation = 0
        ds.RescaleIntercept, ds.RescaleSlope = INTERCEPT, 1
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = -600, 1500
        pixels = hu[k][:, ::-1] if mirrored else hu[k]
        if edit is not None:
            edited = edit(k, ds)
            if isinstance(edited, np.ndarray):
                pixels = edited
        stored = (pixels.astype(np.int32) - INTERCEPT)
        if int(ds.PixelRepresentation) == 0:
            ds.PixelData = np.clip(stored, 0, 65535).astype(np.uint16).tobytes()
        else:
            ds.PixelData = stored.astype(np.int16).tobytes()
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = ds.SOPClassUID
        meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta = meta
        out.append(ds)
    return out
