"""Lung segmentation of a chest CT by classical image processing (no trained model):

1. air: voxels below `air_hu` (-400 HU: lung parenchyma is about -850, soft tissue above -100);
2. outside air: per axial slice, the air components that touch the image border; what is left is
   the air inside the body (lungs, airways, bowel gas, holes in the table);
3. airways: traced from the most superior slice down: the small air components near the body's
   mid-column there (the trachea), then slice by slice every small component overlapping the
   airway of the slice above, until a component is too large to be an airway (it has merged into
   a lung). This removes the trachea and the main bronchi down to where they enter the lungs;
   the bronchi inside a lung stay in it, as lung volume counts them;
4. lungs: the 3D connected components of what is left; the two largest are the lungs when the
   smaller is at least `min_side_ratio` of the larger, otherwise the largest is both lungs
   touching at the anterior junction and is split at the column with the fewest lung voxels in
   the middle of its extent;
5. vessels: each lung is closed in-plane with a disk of `closing_mm` and its holes filled slice
   by slice, so vessels and nodules inside it count as lung;
6. sides: the lung whose centroid lies further to the patient's left (+x, whatever the image
   orientation) is the left one.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .volume import CtVolume

# In-plane connectivity only: labels each axial slice on its own in one call.
PLANAR = np.zeros((3, 3, 3), dtype=bool)
PLANAR[1] = ndimage.generate_binary_structure(2, 1)


class LungsNotFound(ValueError):
    """The series holds no pair of lungs this method can find; the message says why."""


@dataclass(frozen=True, slots=True)
class LungOptions:
    air_hu: float = -400.0
    max_airway_area_mm2: float = 900.0  # the adult trachea is ~2 cm across, ~300-500 mm2
    airway_band: float = 0.2  # the trachea lies within this fraction of the body width of its middle
    min_lung_ml: float = 100.0
    min_side_ratio: float = 0.2
    closing_mm: float = 4.0


@dataclass(frozen=True, slots=True)
class LungMasks:
    left: np.ndarray  # bool [z, y, x], like CtVolume.hu
    right: np.ndarray
    airway_voxels: int
    split_at_midline: bool

    @property
    def lungs(self) -> np.ndarray:
        return self.left | self.right


def _inside_air(air: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(air inside the body, its per-slice labels, the body's mid-column and width per slice)."""
    labels, count = ndimage.label(air, structure=PLANAR)
    edges = np.concatenate([labels[:, 0, :].ravel(), labels[:, -1, :].ravel(),
                            labels[:, :, 0].ravel(), labels[:, :, -1].ravel()])
    # A lookup table rather than np.isin: one gather over the volume instead of a sort.
    keep = np.arange(count + 1, dtype=labels.dtype)
    keep[np.unique(edges)] = 0
    labels = keep[labels]
    inside = labels > 0
    body_columns = (~(air & ~inside)).any(axis=1)  # [z, x]: columns holding anything but outside air
    xs = np.arange(air.shape[2])
    counts = body_columns.sum(axis=1)
    middle = np.where(counts > 0, (body_columns * xs).sum(axis=1) / np.maximum(counts, 1), air.shape[2] / 2)
    return inside, labels, np.stack([middle, counts.astype(np.float64)], axis=1)


def _airways(labels: np.ndarray, body: np.ndarray, superior_last: bool, max_area_px: float,
             band: float) -> np.ndarray:
    airway = np.zeros(labels.shape, dtype=bool)
    order = range(labels.shape[0] - 1, -1, -1) if superior_last else range(labels.shape[0])
    previous: np.ndarray | None = None
    for z in order:
        plane = labels[z]
        ids, areas = np.unique(plane[plane > 0], return_counts=True)
        if previous is None:
            middle, width = body[z]
            chosen = []
            for label_id, area in zip(ids, areas, strict=True):
                if area > max_area_px:
                    continue
                cols = np.nonzero(plane == label_id)[1]
                if abs(cols.mean() - middle) <= band * width:
                    chosen.append(label_id)
        else:
            touching = np.unique(plane[previous & (plane > 0)])
            small = set(ids[areas <= max_area_px].tolist())
            chosen = [t for t in touching.tolist() if t in small]
        if not chosen:
            break
        current = np.isin(plane, chosen)
        airway[z] = current
        previous = current
    return airway


def _split_midline(component: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    columns = np.count_nonzero(component, axis=(0, 1))
    xs = np.nonzero(columns)[0]
    lo, hi = xs[0], xs[-1]
    a, b = lo + int(0.3 * (hi - lo)), lo + int(0.7 * (hi - lo))
    cut = a + int(np.argmin(columns[a:b + 1]))
    first, second = component.copy(), component.copy()
    first[:, :, cut:] = False
    second[:, :, :cut] = False
    return first, second


def _close_and_fill(mask: np.ndarray, radius_px: tuple[int, int]) -> np.ndarray:
    zs, ys, xs = (np.nonzero(mask.any(axis=axes))[0] for axes in ((1, 2), (0, 2), (0, 1)))
    pad_y, pad_x = radius_px[0] + 1, radius_px[1] + 1
    y0, y1 = max(ys[0] - pad_y, 0), min(ys[-1] + pad_y + 1, mask.shape[1])
    x0, x1 = max(xs[0] - pad_x, 0), min(xs[-1] + pad_x + 1, mask.shape[2])
    ry, rx = radius_px
    yy, xx = np.ogrid[-ry:ry + 1, -rx:rx + 1]
    disk = ((yy / max(ry, 1)) ** 2 + (xx / max(rx, 1)) ** 2) <= 1.0
    out = mask.copy()
    for z in range(zs[0], zs[-1] + 1):
        crop = np.pad(mask[z, y0:y1, x0:x1], ((pad_y, pad_y), (pad_x, pad_x)))
        if ry or rx:
            crop = ndimage.binary_closing(crop, structure=disk)
        crop = ndimage.binary_fill_holes(crop)
        out[z, y0:y1, x0:x1] |= crop[pad_y:-pad_y, pad_x:-pad_x]
    return out


def segment_lungs(volume: CtVolume, options: LungOptions | None = None) -> LungMasks:
    opts = options or LungOptions()
    _, row_mm, col_mm = volume.spacing
    air = volume.hu < opts.air_hu
    inside, labels, body = _inside_air(air)
    del air
    airway = _airways(labels, body, volume.superior_last, opts.max_airway_area_mm2 / (row_mm * col_mm),
                      opts.airway_band)
    del labels
    candidates = inside & ~airway
    del inside
    components, count = ndimage.label(candidates)
    if count == 0:
        raise LungsNotFound("no air inside the body")
    sizes = np.bincount(components.ravel())[1:] * volume.voxel_ml
    order = np.argsort(sizes)[::-1]
    if sizes[order[0]] < opts.min_lung_ml:
        raise LungsNotFound(f"the largest air region inside the body is {sizes[order[0]]:.0f} mL "
                            f"(a lung is at least {opts.min_lung_ml:g} mL)")
    second_is_lung = count >= 2 and sizes[order[1]] >= max(opts.min_lung_ml,
                                                           opts.min_side_ratio * sizes[order[0]])
    split = not second_is_lung
    if split:
        first, second = _split_midline(components == order[0] + 1)
    else:
        first, second = components == order[0] + 1, components == order[1] + 1
    del components
    radius = (int(round(opts.closing_mm / row_mm)), int(round(opts.closing_mm / col_mm)))
    first, second = _close_and_fill(first, radius), _close_and_fill(second, radius)
    second &= ~first

    def side_x(mask: np.ndarray) -> float:
        projection = np.count_nonzero(mask, axis=0)
        rows, cols = np.nonzero(projection)
        weights = projection[rows, cols]
        return volume.patient_x(float(np.average(cols, weights=weights)),
                                float(np.average(rows, weights=weights)))

    if side_x(first) >= side_x(second):
        left, right = first, second
    else:
        left, right = second, first
    return LungMasks(left=left, right=right, airway_voxels=int(np.count_nonzero(airway)),
                     split_at_midline=split)
