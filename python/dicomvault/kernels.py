"""numpy-facing wrappers of the Cython pixel kernels (compiled into dicomvault._native)."""

from __future__ import annotations

import numpy as np

from . import (
    _kernels,  # type: ignore[attr-defined]
    _native,  # noqa: F401  (importing it registers dicomvault._kernels)
)


def rescale(pixels: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Modality LUT: stored values to output units (e.g. Hounsfield), as float32."""
    src = np.ascontiguousarray(pixels).reshape(-1)
    out = np.empty(src.shape[0], dtype=np.float32)
    _kernels.rescale(src, out, float(slope), float(intercept))
    return out.reshape(pixels.shape)


def window_to_u8(
    pixels: np.ndarray,
    center: float,
    width: float,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> np.ndarray:
    """Rescale then apply the DICOM linear window, giving an 8-bit image for display."""
    src = np.ascontiguousarray(pixels).reshape(-1)
    out = np.empty(src.shape[0], dtype=np.uint8)
    _kernels.window_to_u8(src, out, float(slope), float(intercept), float(center), float(width))
    return out.reshape(pixels.shape)


def minmax(pixels: np.ndarray) -> tuple[float, float]:
    return _kernels.minmax(np.ascontiguousarray(pixels).reshape(-1))


def downsample_u8(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Box-filter thumbnail of an 8-bit 2-D image."""
    out = np.empty((rows, cols), dtype=np.uint8)
    _kernels.downsample_u8(np.ascontiguousarray(image, dtype=np.uint8), out)
    return out
