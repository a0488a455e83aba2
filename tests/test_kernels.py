"""The Cython pixel kernels against straightforward numpy definitions."""

from __future__ import annotations

import numpy as np
import pytest

from dicomvault import kernels


def _window_ref(x: np.ndarray, c: float, w: float) -> np.ndarray:
    lo, hi = c - 0.5 - (w - 1) / 2, c - 0.5 + (w - 1) / 2
    with np.errstate(divide="ignore", invalid="ignore"):
        y = ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.0
    out = np.where(x <= lo, 0.0, np.where(x > hi, 255.0, np.floor(y + 0.5)))
    return np.clip(out, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8, np.float32])
def test_rescale(dtype: type) -> None:
    rng = np.random.default_rng(1)
    a = rng.integers(0, 200, size=(7, 9)).astype(dtype)
    np.testing.assert_allclose(kernels.rescale(a, 2.5, -1024), a.astype(np.float64) * 2.5 - 1024, rtol=1e-6)


@pytest.mark.parametrize("center,width", [(40, 400), (-600, 1500), (0, 1), (100.5, 2)])
def test_window_to_u8_matches_dicom_linear_function(center: float, width: float) -> None:
    a = np.arange(-2048, 3072, dtype=np.int16).reshape(64, -1)
    got = kernels.window_to_u8(a, center, width, slope=1.0, intercept=-1024)
    ref = _window_ref(a.astype(np.float64) - 1024, center, width)
    assert got.shape == a.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
    assert got.min() == 0 and got.max() == 255


def test_window_rejects_bad_width() -> None:
    with pytest.raises(ValueError):
        kernels.window_to_u8(np.zeros(4, np.int16), 0, 0)


def test_minmax_and_downsample() -> None:
    a = np.arange(16, dtype=np.uint8).reshape(4, 4)
    assert kernels.minmax(a) == (0.0, 15.0)
    small = kernels.downsample_u8(a, 2, 2)
    # Round half up, as the kernel does (integer mean with +n/2).
    ref = np.floor(a.reshape(2, 2, 2, 2).mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(small, ref)
    with pytest.raises(ValueError):
        kernels.downsample_u8(a, 8, 8)
