"""numpy-facing wrappers of the Cython pixel kernels (compiled into dicomvault._native)."""

from __future__ import annotations

from typing import Any

import numpy as np

from . import (
    _kernels,  # type: ignore[attr-defined]
    _native,  # noqa: F401  (importing it registers dicomvault._kernels)
)


def _per_sample(kernel: Any, pixels: np.ndarray, dtype: type, *args: Any) -> np.ndarray:
    """Runs a one-output-per-sample kernel over pixels of any shape: kernel(src, out, *args)."""
    src = np.ascontiguousarray(pixels).reshape(-1)
    out = np.empty(src.shape[0], dtype=dtype)
    kernel(src, out, *args)
    return out.reshape(pixels.shape)


def rescale(pixels: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Modality LUT: stored values to output units (e.g. Hounsfield), as float32."""
    return _per_sample(_kernels.rescale, pixels, np.float32, float(slope), float(intercept))


def window_to_u8(
    pixels: np.ndarray,
    center: float,
    width: float,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> np.ndarray:
    """Rescale then apply the DICOM linear window, giving an 8-bit image for display."""
    return _per_sample(
        _kernels.window_to_u8, pixels, np.uint8, float(slope), float(intercept), float(center), float(width)
    )


def minmax(pixels: np.ndarray) -> tuple[float, float]:
    return _kernels.minmax(np.ascontiguousarray(pixels).reshape(-1))


def downsample_u8(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Box-filter thumbnail of an 8-bit 2-D image."""
    out = np.empty((rows, cols), dtype=np.uint8)
    _kernels.downsample_u8(np.ascontiguousarray(image, dtype=np.uint8), out)
    return out


def window_sigmoid_to_u8(
    pixels: np.ndarray,
    center: float,
    width: float,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> np.ndarray:
    """Rescale then apply the DICOM SIGMOID window (PS3.3 C.11.2.1.3.1), giving 8 bits."""
    return _per_sample(
        _kernels.window_sigmoid_to_u8,
        pixels,
        np.uint8,
        float(slope),
        float(intercept),
        float(center),
        float(width),
    )


def _lut16(lut: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(lut, dtype=np.uint16).reshape(-1)


def lut_apply(
    pixels: np.ndarray,
    lut: np.ndarray,
    first_mapped: float,
    slope: float = 1.0,
    intercept: float = 0.0,
) -> np.ndarray:
    """A LUT (Modality LUT Sequence) on the (rescaled) values, clamped to its range, as float32."""
    return _per_sample(
        _kernels.lut_apply,
        pixels,
        np.float32,
        _lut16(lut),
        float(first_mapped),
        float(slope),
        float(intercept),
    )


def lut_to_u8(
    pixels: np.ndarray,
    lut: np.ndarray,
    first_mapped: float,
    out_range: tuple[float, float],
    slope: float = 1.0,
    intercept: float = 0.0,
) -> np.ndarray:
    """A VOI LUT then its output range (lo, hi) scaled to 0..255."""
    lo, hi = out_range
    return _per_sample(
        _kernels.lut_to_u8,
        pixels,
        np.uint8,
        _lut16(lut),
        float(first_mapped),
        float(slope),
        float(intercept),
        float(lo),
        float(hi),
    )


def palette_to_rgb(
    indices: np.ndarray,
    red: np.ndarray,
    green: np.ndarray,
    blue: np.ndarray,
    first_mapped: float = 0,
    entry_bits: int = 16,
) -> np.ndarray:
    """PALETTE COLOR indices (rows, cols) to an 8-bit RGB image (rows, cols, 3)."""
    src = np.ascontiguousarray(indices).reshape(-1)
    out = np.empty((src.shape[0], 3), dtype=np.uint8)
    _kernels.palette_to_rgb(
        src, out, _lut16(red), _lut16(green), _lut16(blue), float(first_mapped), max(entry_bits - 8, 0)
    )
    return out.reshape(*indices.shape, 3)


def ybr_full_to_rgb(image: np.ndarray) -> np.ndarray:
    """8-bit YBR_FULL (..., 3) to RGB (..., 3)."""
    src = np.ascontiguousarray(image, dtype=np.uint8).reshape(-1, 3)
    out = np.empty_like(src)
    _kernels.ybr_full_to_rgb(src, out)
    return out.reshape(image.shape)


def invert_u8(image: np.ndarray) -> np.ndarray:
    """255 - v; in place when image is a contiguous uint8 array (returned either way)."""
    buf = np.ascontiguousarray(image, dtype=np.uint8)
    _kernels.invert_u8(buf.reshape(-1))
    return buf


def downsample_rgb_u8(image: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """Box-filter thumbnail of an 8-bit (rows, cols, channels) image."""
    src = np.ascontiguousarray(image, dtype=np.uint8)
    out = np.empty((rows, cols, src.shape[2]), dtype=np.uint8)
    _kernels.downsample_rgb_u8(src, out)
    return out
