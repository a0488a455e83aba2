"""Preprocessing for a model: modality values → the tensor a model was trained on (window or HU
range, normalisation, resampling to its grid), and model maps resampled back to the source grid."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .model_options import InputSpec


def resize(x: np.ndarray, shape: tuple[int, ...], order: int = 1) -> np.ndarray:
    """``x`` resampled to ``shape`` with pixel centres aligned (grid_mode), so that a model grid
    and the source grid cover the same field of view whatever their sizes."""
    if x.shape == tuple(shape):
        return x
    factors = [out / inp for out, inp in zip(shape, x.shape, strict=True)]
    out = ndimage.zoom(x, factors, order=order, mode="nearest", grid_mode=True)
    if out.shape != tuple(shape):  # zoom rounds each size: trim or pad by the edge to be exact
        out = np.pad(out, [(0, max(0, s - o)) for s, o in zip(shape, out.shape, strict=True)], mode="edge")
        out = out[tuple(slice(0, s) for s in shape)]
    return out


def normalise(voxels: np.ndarray, spec: InputSpec) -> np.ndarray:
    x = voxels.astype(np.float32, copy=True)
    if spec.clip is not None:
        np.clip(x, spec.clip[0], spec.clip[1], out=x)
    if spec.normalise == "minmax":
        lo, hi = spec.clip if spec.clip is not None else (float(x.min()), float(x.max()))
        # A flat image (hi == lo) maps to zeros instead of dividing by zero.
        x = (x - lo) / (hi - lo) if hi > lo else np.zeros_like(x)
    elif isinstance(spec.normalise, tuple):
        mean, std = spec.normalise
        x = (x - mean) / std
    return x


def model_grid(source: tuple[int, int, int], spacing: tuple[float, float, float],
               spec: InputSpec) -> tuple[int, int, int]:
    """The [slices, rows, cols] the model sees for a source volume of that shape and voxel size
    (mm between slices, rows, columns). With ``spec.spacing`` the field of view is kept and the
    pixel count rounded, so the model's pixels come within half a pixel of the spacing asked."""
    if spec.spacing is not None:
        axes = (1, 2) if spec.layout == "slice2d" else (0, 1, 2)
        grid = list(source)
        for axis, mm in zip(axes, spec.spacing, strict=True):
            grid[axis] = max(1, round(source[axis] * spacing[axis] / mm))
        return (grid[0], grid[1], grid[2])
    if spec.size is None:
        return source
    if spec.layout == "slice2d":
        return (source[0], spec.size[0], spec.size[1])
    return (spec.size[0], spec.size[1], spec.size[2])


def to_model_input(voxels: np.ndarray, spacing: tuple[float, float, float], spec: InputSpec) -> np.ndarray:
    """[slices, rows, cols] modality values → [N, 1, rows, cols] (slice2d, one item per slice) or
    [1, 1, slices, rows, cols] (volume3d) in the model's dtype."""
    x = resize(normalise(voxels, spec), model_grid(voxels.shape, spacing, spec), order=1)
    x = x.astype(spec.dtype, copy=False)
    return x[:, None] if spec.layout == "slice2d" else x[None, None]
