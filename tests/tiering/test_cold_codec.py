"""The cold codec through the bindings, on the real-image corpus: every object comes back
bit-exact through encode(codec=COLD) and through recode(hot -> cold -> hot); the cold tier never
stores more than the warm tier would; and it is denser where the issue asks (>= 1.6x zlib on the
uncompressed clinical images)."""

from __future__ import annotations

import zlib
from pathlib import Path

import pydicom
import pytest

from dicomvault import _native
from dv_corpus import corpus_files

CLINICAL = {"CR", "CT", "MR", "NM", "US", "MG", "DX", "XA", "PT"}
UNCOMPRESSED = {"1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2"}


def _readable(paths: list[Path]) -> list[tuple[Path, bytes]]:
    out = []
    for p in paths:
        data = p.read_bytes()
        try:
            _native.encode(data, codec=_native.CODEC_HOT)
        except Exception:  # noqa: BLE001 - not an object the engine keeps: not this test's subject
            continue
        out.append((p, data))
    return out


@pytest.fixture(scope="module")
def corpus() -> list[tuple[Path, bytes]]:
    files = _readable(corpus_files())
    assert len(files) > 100, "the real-image corpus (pydicom-data, pydicom test files) is missing"
    return files


def test_every_corpus_object_round_trips_bit_exact(corpus: list[tuple[Path, bytes]]) -> None:
    used = {_native.CODEC_HOT: 0, _native.CODEC_COLD: 0, _native.CODEC_RAW: 0}
    for path, data in corpus:
        hot_id, hot, n = _native.encode(data, codec=_native.CODEC_HOT)
        cold_id, cold, n2 = _native.encode(data, codec=_native.CODEC_COLD)
        assert n2 == n
        used[cold_id] += 1
        canonical = bytes(_native.decode(hot_id, hot, n))
        assert bytes(_native.decode(cold_id, cold, n)) == canonical, path.name
        # the cold tier keeps the smaller of cold and hot: never more than the warm tier
        assert len(cold) <= len(hot), path.name
        # a tier move: stored hot -> cold -> hot, the logical bytes (and so the hash) unchanged
        moved_id, moved = _native.recode(hot_id, hot, n, _native.CODEC_COLD)
        back_id, back = _native.recode(moved_id, moved, n, _native.CODEC_HOT)
        assert bytes(_native.decode(back_id, back, n)) == canonical, path.name
    assert used[_native.CODEC_COLD] >= 30, used


def test_denser_than_zlib_on_uncompressed_clinical_images(corpus: list[tuple[Path, bytes]]) -> None:
    """The codec benchmark's set (bench/test_codec_corpus.py): pydicom-data's clinical images with
    uncompressed pixel data; total zlib-6 bytes over total cold bytes."""
    zl = cold = 0
    for path, data in corpus:
        if "data_store" not in str(path):
            continue
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except pydicom.errors.InvalidDicomError:
            continue  # no file meta: not part of the codec benchmark's set either
        native = ds.file_meta.TransferSyntaxUID in UNCOMPRESSED
        if not native or ds.get("Modality") not in CLINICAL or "PixelData" not in pydicom.dcmread(path):
            continue
        zl += len(zlib.compress(data, 6))
        cold += len(_native.encode(data, codec=_native.CODEC_COLD)[1])
    assert zl and cold
    print(f"cold is {zl / cold:.3f}x zlib-6 over {zl} zlib bytes")
    assert zl / cold >= 1.6, f"cold is {zl / cold:.2f}x zlib"
