"""Frames out of stored dataset bytes, checked against pydicom's own decoding of the same files."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate, encapsulate_extended, generate_frames
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, generate_uid

from dicomvault.engine import Engine
from dicomvault.errors import NotAcceptableError, NotFoundError, RequestError
from dicomvault.transfer import syntaxes
from dicomvault.web.dicomweb import pixels
from dicomvault.web.dicomweb.pixels import FrameIndexCache, FrameSource, decoded_frame, native_frame_bytes
from dv_corpus import corpus_dirs, corpus_files, split_part10

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")
DATA = corpus_dirs()[0]




def encode(ds: Dataset, *, implicit: bool = False, little: bool = True) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = little
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return fp.getvalue()


# Encapsulated pixel data with a defined length (PS3.5 A.4 requires undefined): refused, not sliced.
BROKEN = {"SC_rgb_jpeg.dcm"}


def _image_files() -> list[Path]:
    """Corpus files with pixel data pydicom decodes, small enough to keep this file fast."""
    out = []
    for path in corpus_files():
        if path.stat().st_size > 3_000_000:
            continue
        try:
            split_part10(path)
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except Exception:  # noqa: BLE001 — files pydicom cannot open are not a reference
            continue
        if "Rows" in ds and path.name not in BROKEN:
            out.append(path)
    return out


IMAGES = _image_files()


def test_syntax_table() -> None:
    assert syntaxes.frame_media_type("1.2.840.10008.1.2") == "application/octet-stream"
    assert syntaxes.frame_media_type("1.2.840.10008.1.2.4.50") == "image/jpeg"
    assert syntaxes.frame_media_type("1.2.840.10008.1.2.4.80") == "image/jls"
    assert syntaxes.frame_media_type("1.2.840.10008.1.2.4.90") == "image/jp2"
    assert syntaxes.frame_media_type("1.2.840.10008.1.2.4.92") == "image/jpx"
    assert syntaxes.frame_media_type("1.2.840.10008.1.2.4.201") == "image/jphc"
    assert syntaxes.frame_media_type("1.2.840.10008.1.2.5") == "image/dicom-rle"
    assert syntaxes.frame_media_type("1.2.840.10008.1.2.4.102") == "video/mp4"
    assert syntaxes.default_syntax("image/jpeg") == "1.2.840.10008.1.2.4.70"
    assert syntaxes.default_syntax("application/octet-stream") == ExplicitVRLittleEndian
    assert syntaxes.is_lossless("1.2.840.10008.1.2.4.70")
    assert not syntaxes.is_lossless("1.2.840.10008.1.2.4.50")
    assert set(syntaxes.syntaxes_for_media_type("application/octet-stream")) == {
        "1.2.840.10008.1.2",
        "1.2.840.10008.1.2.1",
        "1.2.840.10008.1.2.1.99",
        "1.2.840.10008.1.2.2",
    }
    # Every UID pydicom knows as a transfer syntax of these kinds has the same properties here.
    for uid, ts in syntaxes.SYNTAXES.items():
        puid = pydicom.uid.UID(uid)
        if puid.is_transfer_syntax:
            assert ts.encapsulated == puid.is_compressed, uid
    with pytest.raises(NotAcceptableError, match="1.2.3"):
        syntaxes.lookup("1.2.3")
    with pytest.raises(NotAcceptableError):
        syntaxes.default_syntax("image/gif")


@pytest.mark.parametrize("path", IMAGES, ids=lambda p: p.name)
def test_frames_match_pydicom(path: Path) -> None:
    ds = pydicom.dcmread(path)
    try:
        ref = ds.pixel_array
    except Exception:  # noqa: BLE001 — pydicom cannot decode it either: nothing to compare
        pytest.skip("pydicom cannot decode it")
    ts, data = split_part10(path)
    src = FrameSource.from_dataset(ts, data)
    nframes = int(ds.get("NumberOfFrames", 1) or 1)
    assert src.number_of_frames == nframes
    assert (src.rows, src.columns) == (ds.Rows, ds.Columns)
    encapsulated = pydicom.uid.UID(ts).is_compressed
    encoded = list(generate_frames(ds.PixelData, number_of_frames=nframes)) if encapsulated else []
    for n in range(1, nframes + 1):
        expect = ref if nframes == 1 else ref[n - 1]
        photometric = str(ds.PhotometricInterpretation)
        arr, pi = src.decode(n)
        if photometric.startswith("YBR_FULL") and not encapsulated:
            # pydicom converts native YBR to RGB; decode() leaves that to the renderer.
            expect = pydicom.pixels.convert_color_space(arr.copy(), photometric, "RGB")
            assert np.abs(expect.astype(int) - ref.reshape(expect.shape).astype(int)).max() <= 1
            continue
        np.testing.assert_array_equal(arr, expect)
        if encapsulated:
            assert src.frame(n).rstrip(b"\0") == encoded[n - 1].rstrip(b"\0")
        elif ds.BitsAllocated > 1 and not photometric.startswith("YBR"):
            if ds.PixelRepresentation and ds.BitsStored < ds.BitsAllocated:
                # pydicom sign-extends; the frame keeps the stored bits above High Bit as they are.
                if ts != syntaxes.EXPLICIT_VR_BIG_ENDIAN:
                    size = len(src.frame(n))
                    assert src.frame(n) == ds.PixelData[(n - 1) * size : n * size]
            else:
                # The native frame is the little endian image of exactly these pixels.
                le = np.ascontiguousarray(expect, dtype=expect.dtype.newbyteorder("<"))
                if ds.get("PlanarConfiguration", 0) == 1:
                    le = np.ascontiguousarray(le.transpose(2, 0, 1))
                assert src.frame(n) == le.tobytes()
            assert native_frame_bytes(ts, data, n) == src.frame(n)


def test_big_endian_frames_equal_little_endian_ones() -> None:
    for le_name, be_name in [
        ("emri_small.dcm", "emri_small_big_endian.dcm"),
        ("OBXXXX1A_2frame.dcm", "OBXXXX1A_expb_2frame.dcm"),
        ("SC_rgb_16bit_2frame.dcm", "SC_rgb_expb_16bit_2frame.dcm"),
    ]:
        le = FrameSource.from_dataset(*split_part10(DATA / le_name))
        be = FrameSource.from_dataset(*split_part10(DATA / be_name))
        assert be.frame_transfer_syntax == ExplicitVRLittleEndian
        for n in range(1, le.number_of_frames + 1):
            assert be.frame(n) == le.frame(n), (be_name, n)


def test_compressed_frame_as_native_bytes() -> None:
    ref = pydicom.dcmread(DATA / "emri_small.dcm").pixel_array
    ts, data = split_part10(DATA / "emri_small_jpeg_ls_lossless.dcm")
    for n in (1, 7, 10):
        assert native_frame_bytes(ts, data, n) == ref[n - 1].astype("<u2").tobytes()
        np.testing.assert_array_equal(decoded_frame(ts, data, n), ref[n - 1])
    src = FrameSource.from_dataset(ts, data)
    assert src.frame_media_type == "image/jls" and src.frame_transfer_syntax == ts


def _multiframe(nframes: int, rows: int, cols: int, bits: int) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"
    ds.SOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = nframes
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = bits
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    return ds


def test_one_bit_frames_not_on_byte_boundaries() -> None:
    rng = np.random.default_rng(7)
    bits = rng.integers(0, 2, size=(3, 3, 5)).astype(np.uint8)  # 15 bits a frame
    ds = _multiframe(3, 3, 5, 1)
    ds.PixelData = np.packbits(bits.reshape(-1), bitorder="little").tobytes()
    ds["PixelData"].VR = "OB"
    data = encode(ds)
    src = FrameSource.from_dataset(ExplicitVRLittleEndian, data)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ref = ds.pixel_array
    for n in range(1, 4):
        np.testing.assert_array_equal(ref[n - 1], bits[n - 1])
        assert src.frame(n) == np.packbits(bits[n - 1].reshape(-1), bitorder="little").tobytes()
        np.testing.assert_array_equal(src.decode(n)[0], ref[n - 1])


def _jpeg_frames() -> tuple[Dataset, list[bytes]]:
    ds = pydicom.dcmread(DATA / "color3d_jpeg_baseline.dcm")
    frames = [bytes(f) for f in generate_frames(ds.PixelData, number_of_frames=int(ds.NumberOfFrames))][:6]
    hdr = pydicom.dcmread(DATA / "color3d_jpeg_baseline.dcm", stop_before_pixels=True)
    hdr.NumberOfFrames = len(frames)
    return hdr, frames


@pytest.mark.parametrize("how", ["bot", "no-bot", "eot", "bot-2-fragments", "no-bot-2-fragments"])
def test_encapsulated_frame_location(how: str) -> None:
    hdr, frames = _jpeg_frames()
    ds = Dataset()
    ds.update(hdr)
    if how == "eot":
        ds.PixelData, ds.ExtendedOffsetTable, ds.ExtendedOffsetTableLengths = encapsulate_extended(frames)
    else:
        fragments = 2 if how.endswith("2-fragments") else 1
        ds.PixelData = encapsulate(frames, fragments_per_frame=fragments, has_bot=how.startswith("bot"))
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    data = encode(ds)
    src = FrameSource.from_dataset(JPEGBaseline8Bit, data, cache=None)
    assert src.number_of_frames == len(frames)
    for n, frame in enumerate(frames, 1):
        assert src.frame(n).rstrip(b"\0") == frame.rstrip(b"\0")
    ref = pydicom.pixels.pixel_array(DATA / "color3d_jpeg_baseline.dcm", index=3)
    np.testing.assert_array_equal(src.decode(4)[0], ref)


def test_deflated_object() -> None:
    path = get_testdata_file("image_dfl.dcm")
    ts, data = split_part10(path)
    assert ts == syntaxes.DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN
    src = FrameSource.from_dataset(ts, data)
    np.testing.assert_array_equal(src.decode(1)[0], pydicom.dcmread(path).pixel_array)
    # Deflate is over the explicit little endian dataset: inflating gives that syntax's bytes.
    assert zlib.compress(syntaxes.inflate(data))


def test_cache_reuses_the_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = _multiframe(500, 16, 16, 16)
    frames = np.arange(500 * 256, dtype=np.uint16).reshape(500, 16, 16)
    ds.PixelData = frames.tobytes()
    ds["PixelData"].VR = "OW"
    data = encode(ds)
    cache = FrameIndexCache(capacity=2)
    src = FrameSource.from_dataset(ExplicitVRLittleEndian, data, key=b"blob-1", cache=cache)
    assert src.frame(300) == frames[299].tobytes()

    def no_parse(*args: object) -> None:
        raise AssertionError("layout parsed again")

    monkeypatch.setattr(pixels, "build_layout", no_parse)
    again = FrameSource.from_dataset(ExplicitVRLittleEndian, data, key=b"blob-1", cache=cache)
    assert again.frame(300) == frames[299].tobytes()
    assert cache.hits == 1
    monkeypatch.undo()
    FrameSource.from_dataset(ExplicitVRLittleEndian, data, key=b"blob-2", cache=cache)
    FrameSource.from_dataset(ExplicitVRLittleEndian, data, key=b"blob-3", cache=cache)
    assert len(cache) == 2 and cache.get(b"blob-1") is None


def test_errors_name_what_is_wrong() -> None:
    ts, data = split_part10(DATA / "emri_small.dcm")
    src = FrameSource.from_dataset(ts, data)
    for bad in (0, 11, -1):
        with pytest.raises(RequestError, match=f"frame {bad}"):
            src.frame(bad)
    ts, data = split_part10(get_testdata_file("rtplan.dcm"))
    with pytest.raises(NotFoundError, match="1.2.777.777.77.7.7777.7777.20030903150023"):
        FrameSource.from_dataset(ts, data)


def test_through_the_engine(engine: Engine) -> None:
    """What the routes do: read the stored bytes, slice a frame keyed by the blob hash."""
    path = DATA / "emri_small_RLE.dcm"
    [outcome] = engine.store_files([path])
    assert not isinstance(outcome, Exception)
    rec, ts, data = engine.read_instance(outcome.sop_instance_uid)
    ref = pydicom.dcmread(path)
    cache = FrameIndexCache()
    for _ in range(2):
        src = FrameSource.from_dataset(ts, data, key=rec.hash, cache=cache)
        assert src.frame_media_type == "image/dicom-rle" and src.frame_transfer_syntax == ts
        np.testing.assert_array_equal(src.decode(3)[0], ref.pixel_array[2])
    assert cache.hits == 1
    np.testing.assert_array_equal(decoded_frame(ts, data, 1, key=rec.hash), ref.pixel_array[0])


def test_a_wrong_basic_offset_table_is_ignored() -> None:
    hdr, frames = _jpeg_frames()
    ds = Dataset()
    ds.update(hdr)
    good = encapsulate(frames, has_bot=True)
    # Offsets of every frame + 2: none points at an item tag.
    count = struct.unpack_from("<I", good, 4)[0] // 4
    offsets = [o + 2 for o in struct.unpack_from(f"<{count}I", good, 8)]
    ds.PixelData = good[:8] + struct.pack(f"<{count}I", *offsets) + good[8 + 4 * count :]
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    src = FrameSource.from_dataset(JPEGBaseline8Bit, encode(ds), cache=None)
    for n, frame in enumerate(frames, 1):
        assert src.frame(n).rstrip(b"\0") == frame.rstrip(b"\0")
