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


def _sigmoid_ref(x: np.ndarray, c: float, w: float) -> np.ndarray:
    with np.errstate(over="ignore"):
        y = 255.0 / (1.0 + np.exp(-4.0 * (x - c) / w))
    return np.clip(np.floor(y + 0.5), 0, 255).astype(np.uint8)


@pytest.mark.parametrize("center,width", [(40, 400), (-600, 1500), (0, 0.5)])
def test_window_sigmoid_matches_dicom_sigmoid_function(center: float, width: float) -> None:
    a = np.arange(-2048, 3072, dtype=np.int16).reshape(64, -1)
    got = kernels.window_sigmoid_to_u8(a, center, width, slope=1.0, intercept=-1024)
    ref = _sigmoid_ref(a.astype(np.float64) - 1024, center, width)
    assert got.shape == a.shape and got.dtype == np.uint8
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
    with pytest.raises(ValueError):
        kernels.window_sigmoid_to_u8(a, center, 0)


def _lut_index(x: np.ndarray, first: float, n: int) -> np.ndarray:
    return np.clip(np.floor(x - first), 0, n - 1).astype(np.int64)


@pytest.mark.parametrize("dtype", [np.int16, np.uint16, np.uint8, np.float32])
def test_lut_apply_clamps_like_ps33(dtype: type) -> None:
    rng = np.random.default_rng(2)
    lut = rng.integers(0, 65535, size=300).astype(np.uint16)
    a = rng.integers(0, 120, size=(20, 30)).astype(dtype)
    got = kernels.lut_apply(a, lut, first_mapped=-50, slope=3, intercept=-10)
    ref = lut[_lut_index(a.astype(np.float64) * 3 - 10, -50, lut.size)].astype(np.float32)
    np.testing.assert_array_equal(got, ref)


def test_lut_to_u8_scales_the_output_range() -> None:
    rng = np.random.default_rng(3)
    lut = rng.integers(0, 4096, size=1000).astype(np.uint16)
    a = rng.integers(-200, 1200, size=(33, 17)).astype(np.int16)
    got = kernels.lut_to_u8(a, lut, first_mapped=10, out_range=(0, 4095))
    vals = lut[_lut_index(a.astype(np.float64), 10, lut.size)].astype(np.float64)
    ref = np.clip(np.floor(vals * 255 / 4095 + 0.5), 0, 255).astype(np.uint8)
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1
    with pytest.raises(ValueError):
        kernels.lut_to_u8(a, lut, 0, (5, 5))
    with pytest.raises(ValueError):
        kernels.lut_to_u8(a, np.zeros(0, np.uint16), 0, (0, 1))


@pytest.mark.parametrize("bits", [8, 16])
def test_palette_to_rgb(bits: int) -> None:
    rng = np.random.default_rng(4)
    top = (1 << bits) - 1
    r, g, b = (rng.integers(0, top, size=256).astype(np.uint16) for _ in range(3))
    idx = rng.integers(0, 300, size=(40, 50)).astype(np.uint16)
    got = kernels.palette_to_rgb(idx, r, g, b, first_mapped=16, entry_bits=bits)
    k = _lut_index(idx.astype(np.float64), 16, 256)
    ref = np.stack([lut[k] >> (bits - 8) for lut in (r, g, b)], axis=-1).astype(np.uint8)
    np.testing.assert_array_equal(got, ref)
    with pytest.raises(ValueError):
        kernels.palette_to_rgb(idx, r, g[:10], b)


def test_ybr_full_to_rgb_matches_pydicom() -> None:
    from pydicom.pixels import convert_color_space

    rng = np.random.default_rng(5)
    ybr = rng.integers(0, 256, size=(31, 29, 3)).astype(np.uint8)
    got = kernels.ybr_full_to_rgb(ybr)
    ref = convert_color_space(ybr.copy(), "YBR_FULL", "RGB")
    assert np.abs(got.astype(int) - ref.astype(int)).max() <= 1


def test_invert_u8() -> None:
    a = np.arange(256, dtype=np.uint8).reshape(16, 16)
    np.testing.assert_array_equal(kernels.invert_u8(a.copy()), 255 - a)


def test_downsample_rgb_u8() -> None:
    rng = np.random.default_rng(6)
    a = rng.integers(0, 256, size=(6, 9, 3)).astype(np.uint8)
    got = kernels.downsample_rgb_u8(a, 2, 3)
    ref = np.floor(a.astype(np.float64).reshape(2, 3, 3, 3, 3).mean(axis=(1, 3)) + 0.5).astype(np.uint8)
    np.testing.assert_array_equal(got, ref)
    with pytest.raises(ValueError):
        kernels.downsample_rgb_u8(a, 7, 3)
