"""A series of single-frame images as one volume of modality values (HU on CT), slices in
spatial order, with the voxel size an analyzer needs for volumes in mL."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut

from .api import SeriesData


class SeriesShapeError(ValueError):
    """A series an analyzer cannot read as one volume (the message names the series)."""


@dataclass(frozen=True, slots=True)
class SeriesVolume:
    voxels: np.ndarray  # float32 [slices, rows, cols], modality values
    datasets: tuple[Dataset, ...]  # in the order of voxels' first axis
    spacing: tuple[float, float, float]  # mm between slices, rows, columns

    @property
    def voxel_ml(self) -> float:
        return float(np.prod(self.spacing)) / 1000.0


def _normal(ds: Dataset) -> np.ndarray | None:
    iop = ds.get("ImageOrientationPatient")
    if iop is None or len(iop) != 6:
        return None
    row, col = np.asarray(iop[:3], dtype=float), np.asarray(iop[3:], dtype=float)
    return np.cross(row, col)


def _order(datasets: Sequence[Dataset]) -> tuple[list[Dataset], float | None]:
    """The datasets sorted along the slice normal, and the median distance between slices;
    without positions, by Instance Number (and no measured spacing)."""
    normal = _normal(datasets[0])
    if normal is not None and all(ds.get("ImagePositionPatient") is not None for ds in datasets):
        where = [float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float))) for ds in datasets]
        order = np.argsort(where, kind="stable")
        ordered = [datasets[i] for i in order]
        gaps = np.diff(np.sort(where))
        return ordered, float(np.median(gaps)) if len(gaps) else None
    return sorted(datasets, key=lambda ds: int(ds.get("InstanceNumber") or 0)), None


def load_volume(series: SeriesData) -> SeriesVolume:
    uid = series.info.series_uid
    datasets = list(series.datasets)
    if not datasets:
        raise SeriesShapeError(f"series {uid}: no instances")
    if any(int(ds.get("NumberOfFrames") or 1) != 1 for ds in datasets):
        raise SeriesShapeError(f"series {uid}: multi-frame instances are not read as a volume yet")
    ordered, gap = _order(datasets)
    shapes = {(int(ds.Rows), int(ds.Columns)) for ds in ordered}
    if len(shapes) != 1:
        raise SeriesShapeError(f"series {uid}: slices of different sizes {sorted(shapes)}")
    slices = [apply_modality_lut(ds.pixel_array, ds).astype(np.float32, copy=False) for ds in ordered]
    first = ordered[0]
    row_mm, col_mm = (float(v) for v in first.get("PixelSpacing") or (1.0, 1.0))
    if gap is None or gap <= 0:
        # Equal positions (or none) give no gap: the nominal thickness is the best remaining guess.
        gap = float(first.get("SpacingBetweenSlices") or first.get("SliceThickness") or 1.0)
    return SeriesVolume(np.stack(slices), tuple(ordered), (gap, row_mm, col_mm))
