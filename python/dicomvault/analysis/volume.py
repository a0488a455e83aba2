"""A CT series as one volume of Hounsfield units: slices sorted along their normal, Rescale
Slope/Intercept applied, voxel spacing from Pixel Spacing and the slice positions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from .geometry import SlicePlane, pixel_spacing, planes, same_orientation


class VolumeError(ValueError):
    """The series cannot be stacked into one regular volume; the message names the series."""


@dataclass(frozen=True, slots=True)
class CtVolume:
    """`hu[z, y, x]`: z follows `datasets` (sorted by position along `normal`, ascending), y the
    rows, x the columns. `spacing` is (slice, row, column) spacing in mm."""

    hu: np.ndarray
    spacing: tuple[float, float, float]
    datasets: list[Dataset]
    planes: list[SlicePlane]
    normal: np.ndarray

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0

    @property
    def superior_last(self) -> bool:
        """Whether the last slice is the most superior (head-most) one: +z is superior in
        patient coordinates, so it is when the normal points up."""
        return bool(self.normal[2] >= 0)

    def patient_x(self, column: float, row: float = 0.0) -> float:
        """Patient x (+ = patient's left) of an image point of the first slice."""
        p = self.planes[0]
        return float(p.position[0] + column * self.spacing[2] * p.orientation[0][0]
                     + row * self.spacing[1] * p.orientation[1][0])


def _hu(ds: Dataset) -> np.ndarray:
    pixels = ds.pixel_array
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    if slope == 1 and intercept.is_integer():
        # Integer rescale keeps int16 (half the memory of float32 on a 300-slice 512 x 512 CT)
        # unless the values would not fit.
        out = pixels.astype(np.int32) + int(intercept)
        if out.min(initial=0) >= -32768 and out.max(initial=0) <= 32767:
            return out.astype(np.int16)
        return out.astype(np.float32)
    return (pixels.astype(np.float32) * np.float32(slope) + np.float32(intercept)).astype(np.float32)


def build_volume(datasets: Sequence[Dataset], series_uid: str = "") -> CtVolume:
    """Stack single-frame slices of one orientation and matrix; raises VolumeError otherwise."""
    where = f"series {series_uid}" if series_uid else "series"
    items: list[tuple[SlicePlane, Dataset]] = []
    for ds in datasets:
        ps = planes(ds)
        if len(ps) != 1:
            raise VolumeError(f"{where}: instance {ds.get('SOPInstanceUID', '?')} is not a single-frame "
                              "image with a position and an orientation")
        items.append((ps[0], ds))
    if len(items) < 2:
        raise VolumeError(f"{where}: {len(items)} slice(s); a volume needs at least 2")
    orientation = items[0][0].orientation
    if any(not same_orientation(p.orientation, orientation) for p, _ in items):
        raise VolumeError(f"{where}: the slices do not share one orientation")
    shapes = {(int(ds.Rows), int(ds.Columns)) for _, ds in items}
    spacings = {pixel_spacing(ds) for _, ds in items}
    if len(shapes) != 1 or len(spacings) != 1 or None in spacings:
        raise VolumeError(f"{where}: the slices differ in rows/columns or pixel spacing, or lack it")
    normal = items[0][0].normal
    items.sort(key=lambda item: item[0].distance(normal))
    distances = np.asarray([p.distance(normal) for p, _ in items])
    steps = np.diff(distances)
    if np.any(steps < 1e-3):
        raise VolumeError(f"{where}: two slices share a position")
    row_spacing, column_spacing = spacings.pop()  # type: ignore[misc]
    hu = np.stack([_hu(ds) for _, ds in items])
    return CtVolume(hu=hu, spacing=(float(np.median(steps)), row_spacing, column_spacing),
                    datasets=[ds for _, ds in items], planes=[p for p, _ in items], normal=normal)
