"""Lossless transfer-syntax changes for retrieves that ask for a syntax other than the stored one
(WADO-RS `Accept`, a DIMSE peer that did not accept the stored syntax).

Only changes that keep every stored value: between the native little endian syntaxes, big endian or
deflated to little endian, any decodable encapsulated syntax to explicit VR little endian (the
decoded pixels are exactly what the stored codestream holds; Lossy Image Compression keeps saying
whether the original was lossy), and native to RLE Lossless. Everything else is a 406.

Input and output are dataset bytes without file meta, as the engine stores them.
"""

from __future__ import annotations

import io
import struct

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import correct_ambiguous_vr, write_dataset
from pydicom.pixels import get_decoder

from ..errors import MalformedError, NotAcceptableError
from . import syntaxes
from .syntaxes import inflate

_NATIVE_OUT = (syntaxes.EXPLICIT_VR_LITTLE_ENDIAN, syntaxes.IMPLICIT_VR_LITTLE_ENDIAN)
# Word size of the binary VRs whose byte order follows the transfer syntax (PS3.5 7.3).
_SWAP_WIDTH = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}
# Lossy Image Compression Method (0028,2114) defined terms, by the lossy syntax that implies them.
_LOSSY_METHOD = {
    "1.2.840.10008.1.2.4.50": "ISO_10918_1",
    "1.2.840.10008.1.2.4.51": "ISO_10918_1",
    "1.2.840.10008.1.2.4.81": "ISO_14495_1",
    "1.2.840.10008.1.2.4.91": "ISO_15444_1",
    "1.2.840.10008.1.2.4.93": "ISO_15444_2",
    "1.2.840.10008.1.2.4.203": "ISO_15444_15",
}


def can_transcode(src_ts: str, dst_ts: str) -> bool:
    """Whether transcode(src_ts, ..., dst_ts) is a supported lossless change (checked before reading;
    native to RLE can still fail for pixel layouts RLE cannot hold, e.g. 1-bit)."""
    if src_ts == dst_ts:
        return syntaxes.is_known(src_ts)
    if not (syntaxes.is_known(src_ts) and syntaxes.is_known(dst_ts)):
        return False
    src = syntaxes.lookup(src_ts)
    if dst_ts in _NATIVE_OUT:
        return not src.video
    if dst_ts == syntaxes.RLE_LOSSLESS:
        return not src.encapsulated
    return False


def transcode(src_ts: str, dataset: bytes, dst_ts: str) -> bytes:
    """The dataset re-encoded in dst_ts (bytes without file meta); NotAcceptableError when that
    would lose information or is not supported."""
    if not can_transcode(src_ts, dst_ts):
        raise NotAcceptableError(f"cannot transcode {src_ts} to {dst_ts} without loss")
    if src_ts == dst_ts:
        return dataset
    asked = src_ts
    src = syntaxes.lookup(src_ts)
    if src.deflated:
        dataset = inflate(dataset)
        src_ts = syntaxes.EXPLICIT_VR_LITTLE_ENDIAN
        src = syntaxes.lookup(src_ts)
        if dst_ts == src_ts:
            return dataset  # Deflated wraps exactly this encoding.
    ds = _parse(src_ts, dataset)
    if not src.little_endian:
        _swap_to_little_endian(ds)
        # Re-read as what it now is, so nothing downstream still sees a big endian dataset.
        src_ts = syntaxes.EXPLICIT_VR_LITTLE_ENDIAN
        ds = _parse(src_ts, _write(ds, implicit_vr=False))
    if src.encapsulated:
        _decompress(ds, asked)
    if dst_ts == syntaxes.RLE_LOSSLESS:
        _compress_rle(ds, asked)
    dst = syntaxes.lookup(dst_ts)
    return _write(ds, implicit_vr=dst.implicit_vr)


def _parse(ts_uid: str, dataset: bytes) -> Dataset:
    ts = syntaxes.lookup(ts_uid)
    try:
        ds = read_dataset(io.BytesIO(dataset), ts.implicit_vr, ts.little_endian)
    except (ValueError, EOFError, struct.error, NotImplementedError) as exc:
        raise MalformedError(f"dataset does not parse as {ts_uid}: {exc}") from exc
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts_uid
    # Resolves "OB or OW", "US or SS" ... with the source byte order before anything re-encodes.
    correct_ambiguous_vr(ds, is_little_endian=ts.little_endian)
    return ds


def _swap_to_little_endian(ds: Dataset) -> None:
    """pydicom re-encodes numbers when the byte order changes, but keeps OW/OF/OL/OD/OV values as
    the bytes read: swap those words here, at every nesting level."""
    bits = int(ds.get("BitsAllocated", 0) or 0)
    for elem in ds.iterall():
        width = _SWAP_WIDTH.get(str(elem.VR))
        if elem.tag == 0x7FE00010 and width and bits > 16:
            # Wider samples in OW Pixel Data swap per sample, as every reader (pydicom too) does.
            width = bits // 8
        value = elem.value
        if width and isinstance(value, bytes | bytearray) and value:
            if len(value) % width:
                raise MalformedError(f"{elem.tag} ({elem.VR}) has {len(value)} bytes, not whole words")
            elem.value = np.frombuffer(value, dtype=f">u{width}").astype(f"<u{width}").tobytes()


def _decompress(ds: Dataset, src_ts: str) -> None:
    had_lossy = str(ds.get("LossyImageCompression", "")).strip()
    try:
        ds.decompress(generate_instance_uid=False)
    except (RuntimeError, ValueError, NotImplementedError, AttributeError) as exc:
        raise NotAcceptableError(
            f"cannot transcode {src_ts} to explicit VR little endian: the pixel data "
            f"does not decode here ({exc})"
        ) from exc
    if not syntaxes.is_lossless(src_ts):
        # The pixels were lossy-compressed once; decoding must not make them look original.
        ds.LossyImageCompression = "01"
        method = _LOSSY_METHOD.get(src_ts)
        if method and "LossyImageCompressionMethod" not in ds:
            ds.LossyImageCompressionMethod = method
    elif had_lossy:
        ds.LossyImageCompression = had_lossy


def _compress_rle(ds: Dataset, src_ts: str) -> None:
    if int(ds.get("BitsAllocated", 0) or 0) not in (8, 16, 32, 64) or "PixelData" not in ds:
        raise NotAcceptableError(
            f"cannot transcode {src_ts} to RLE Lossless: RLE holds 8/16/32/64-bit Pixel Data only"
        )
    try:
        # raw: the stored samples, no YBR to RGB conversion (Photometric Interpretation stays).
        arr = get_decoder(ds.file_meta.TransferSyntaxUID).as_array(ds, raw=True)[0]
        # pydicom encodes the interleaved array but would keep Planar Configuration 1, which
        # decoders then misread: the encoded object is planar configuration 0.
        if int(ds.get("SamplesPerPixel", 1) or 1) > 1:
            ds.PlanarConfiguration = 0
        ds.compress(syntaxes.RLE_LOSSLESS, arr, encoding_plugin="pydicom", generate_instance_uid=False)
    except (RuntimeError, ValueError, NotImplementedError) as exc:
        raise NotAcceptableError(f"cannot transcode {src_ts} to RLE Lossless: {exc}") from exc


def _write(ds: Dataset, *, implicit_vr: bool) -> bytes:
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit_vr
    write_dataset(fp, ds)
    return fp.getvalue()
