"""Where the slices of a cross-sectional series lie (PS3.3 C.7.6.2): orientation, slice normal and
position along it, for classic single-frame images and for the frames of an enhanced multi-frame
image (its Plane Position / Plane Orientation functional groups)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

# Two direction cosines or two positions that differ by less than this are the same (DICOM
# stores them as DS, decimal strings a scanner rounds to a few digits).
ORIENTATION_TOLERANCE = 1e-3


@dataclass(frozen=True, slots=True)
class SlicePlane:
    """One image plane: `orientation` is the row then the column direction cosine (2 x 3),
    `position` the centre of the first transmitted pixel in mm (patient coordinates)."""

    orientation: np.ndarray
    position: np.ndarray
    frame: int = 1  # 1-based, as Referenced Frame Number counts

    @property
    def normal(self) -> np.ndarray:
        return np.cross(self.orientation[0], self.orientation[1])

    def distance(self, normal: np.ndarray) -> float:
        """Position along `normal` (the series' slice direction), in mm."""
        return float(np.dot(self.position, normal))


def _vector(value: object, n: int) -> np.ndarray | None:
    try:
        v = np.asarray([float(x) for x in value], dtype=np.float64)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return None
    return v if v.shape == (n,) and np.all(np.isfinite(v)) else None


def _plane(orientation: object, position: object, frame: int) -> SlicePlane | None:
    o, p = _vector(orientation, 6), _vector(position, 3)
    if o is None or p is None:
        return None
    return SlicePlane(orientation=o.reshape(2, 3), position=p, frame=frame)


def _group_value(groups: Dataset | None, sequence: str, keyword: str) -> object:
    if groups is None:
        return None
    seq = groups.get(sequence)
    return seq[0].get(keyword) if seq else None


def planes(ds: Dataset) -> list[SlicePlane]:
    """Every plane of `ds`: one for a classic image, one per frame for an enhanced multi-frame
    image; empty when the instance carries no usable geometry (a CR, a secondary capture)."""
    if "PerFrameFunctionalGroupsSequence" in ds:
        shared = (ds.get("SharedFunctionalGroupsSequence") or [None])[0]
        out = []
        for i, frame in enumerate(ds.PerFrameFunctionalGroupsSequence, start=1):
            orientation = (_group_value(frame, "PlaneOrientationSequence", "ImageOrientationPatient")
                           or _group_value(shared, "PlaneOrientationSequence", "ImageOrientationPatient"))
            position = _group_value(frame, "PlanePositionSequence", "ImagePositionPatient")
            plane = _plane(orientation, position, i)
            if plane is None:
                return []
            out.append(plane)
        return out
    plane = _plane(ds.get("ImageOrientationPatient"), ds.get("ImagePositionPatient"), 1)
    return [] if plane is None else [plane]


def pixel_spacing(ds: Dataset) -> tuple[float, float] | None:
    """(row spacing, column spacing) in mm: Pixel Spacing, or that of the shared Pixel Measures
    functional group of an enhanced image."""
    value = ds.get("PixelSpacing")
    if value is None and "SharedFunctionalGroupsSequence" in ds:
        value = _group_value(ds.SharedFunctionalGroupsSequence[0], "PixelMeasuresSequence", "PixelSpacing")
    v = _vector(value, 2) if value is not None else None
    if v is None or np.any(v <= 0):
        return None
    return float(v[0]), float(v[1])


def same_orientation(a: np.ndarray, b: np.ndarray) -> bool:
    return bool(np.all(np.abs(a - b) <= ORIENTATION_TOLERANCE))
