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


def test_decode_read_gives_the_data_set_checked(corpus: list[tuple[Path, bytes]]) -> None:
    """decode_read (the cold retrieve's decode: pooled native buffers, off the GIL) gives each
    object's transfer syntax and data set as decode does; the buffers of objects still held are
    never reused under them; a wrong hash is IntegrityError where the read checks BLAKE3
    ("hash"), while "checksum" trusts the checksum the codec stored with the bytes; damaged
    bytes are CodecError or IntegrityError in both modes."""
    held = []
    for i, (path, data) in enumerate(corpus[:60]):
        codec, stored, n = _native.encode(data, codec=_native.CODEC_COLD)
        canonical = bytes(_native.decode(codec, stored, n))
        mode = ("checksum", "hash")[i % 2]
        ts, obj = _native.decode_read(codec, stored, n, _native.blake3(canonical), mode)
        assert isinstance(obj, _native.DecodedObject)
        want_ts, _, want_ds = canonical.partition(b"\0")
        assert (ts, obj.bytes()) == (want_ts.decode("ascii"), want_ds), path.name
        held.append((obj, want_ds))
        if len(held) > 12:  # more than the pool keeps: buffers go back and are taken again
            old, want = held.pop(0)
            assert old.bytes() == want
    assert all(obj.bytes() == want for obj, want in held)
    encoded = (_native.encode(d, codec=_native.CODEC_COLD) for _, d in corpus)
    codec, stored, n = next(e for e in encoded if e[0] == _native.CODEC_COLD)
    with pytest.raises(_native.IntegrityError):
        _native.decode_read(codec, stored, n, bytes(32), "hash")
    assert len(_native.decode_read(codec, stored, n, bytes(32), "checksum")[1]) < n
    with pytest.raises(_native.CodecError):
        _native.decode_read(codec, stored, n, bytes(32), "sometimes")
    damaged = bytearray(stored)
    damaged[len(damaged) // 2] ^= 0x55
    digest = _native.blake3(_native.decode(codec, stored, n))
    for mode in ("checksum", "hash"):
        with pytest.raises((_native.CodecError, _native.IntegrityError)):
            _native.decode_read(codec, bytes(damaged), n, digest, mode)
