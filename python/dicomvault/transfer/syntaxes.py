"""The transfer syntaxes the archive can hold, and their frame media types (PS3.18 8.7.3).

Pure data: the WADO-RS frame and bulk data routes negotiate with it (which media type a stored
frame is, which transfer syntax a requested media type defaults to) before reading any bytes.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass

from ..errors import MalformedError, NotAcceptableError

OCTET_STREAM = "application/octet-stream"


@dataclass(frozen=True)
class TransferSyntax:
    uid: str
    name: str
    encapsulated: bool
    lossless: bool
    # Media type of one frame (or of the pixel data bulk) in this syntax, PS3.18 table 8.7.3-2/-3.
    media_type: str
    # Native syntaxes only: how the dataset is encoded.
    implicit_vr: bool = False
    little_endian: bool = True
    deflated: bool = False
    # Video syntaxes hold the whole multi-frame object as one stream, not per-frame fragments.
    video: bool = False


def _native(
    uid: str, name: str, *, implicit: bool = False, little: bool = True, deflated: bool = False
) -> TransferSyntax:
    return TransferSyntax(uid, name, False, True, OCTET_STREAM, implicit, little, deflated)


def _encaps(uid: str, name: str, media_type: str, *, lossless: bool, video: bool = False) -> TransferSyntax:
    return TransferSyntax(uid, name, True, lossless, media_type, video=video)


IMPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2"
EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1"
DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN = "1.2.840.10008.1.2.1.99"
EXPLICIT_VR_BIG_ENDIAN = "1.2.840.10008.1.2.2"
RLE_LOSSLESS = "1.2.840.10008.1.2.5"

_ALL: tuple[TransferSyntax, ...] = (
    _native(IMPLICIT_VR_LITTLE_ENDIAN, "Implicit VR Little Endian", implicit=True),
    _native(EXPLICIT_VR_LITTLE_ENDIAN, "Explicit VR Little Endian"),
    _native(DEFLATED_EXPLICIT_VR_LITTLE_ENDIAN, "Deflated Explicit VR Little Endian", deflated=True),
    _native(EXPLICIT_VR_BIG_ENDIAN, "Explicit VR Big Endian", little=False),
    _encaps("1.2.840.10008.1.2.4.50", "JPEG Baseline (Process 1)", "image/jpeg", lossless=False),
    _encaps("1.2.840.10008.1.2.4.51", "JPEG Extended (Process 2 & 4)", "image/jpeg", lossless=False),
    _encaps(
        "1.2.840.10008.1.2.4.57", "JPEG Lossless, Non-Hierarchical (Process 14)", "image/jpeg", lossless=True
    ),
    _encaps(
        "1.2.840.10008.1.2.4.70",
        "JPEG Lossless, Non-Hierarchical, First-Order Prediction",
        "image/jpeg",
        lossless=True,
    ),
    _encaps("1.2.840.10008.1.2.4.80", "JPEG-LS Lossless", "image/jls", lossless=True),
    _encaps("1.2.840.10008.1.2.4.81", "JPEG-LS Near-Lossless", "image/jls", lossless=False),
    _encaps("1.2.840.10008.1.2.4.90", "JPEG 2000 (Lossless Only)", "image/jp2", lossless=True),
    _encaps("1.2.840.10008.1.2.4.91", "JPEG 2000", "image/jp2", lossless=False),
    _encaps(
        "1.2.840.10008.1.2.4.92",
        "JPEG 2000 Part 2 Multi-component (Lossless Only)",
        "image/jpx",
        lossless=True,
    ),
    _encaps("1.2.840.10008.1.2.4.93", "JPEG 2000 Part 2 Multi-component", "image/jpx", lossless=False),
    _encaps(
        "1.2.840.10008.1.2.4.201", "High-Throughput JPEG 2000 (Lossless Only)", "image/jphc", lossless=True
    ),
    _encaps(
        "1.2.840.10008.1.2.4.202",
        "High-Throughput JPEG 2000 with RPCL Options (Lossless Only)",
        "image/jphc",
        lossless=True,
    ),
    _encaps("1.2.840.10008.1.2.4.203", "High-Throughput JPEG 2000", "image/jphc", lossless=False),
    # image/dicom-rle since PS3.18 2019 (image/x-dicom-rle before; media.py accepts both)
    _encaps(RLE_LOSSLESS, "RLE Lossless", "image/dicom-rle", lossless=True),
    _encaps("1.2.840.10008.1.2.4.110", "JPEG XL Lossless", "image/jxl", lossless=True),
    _encaps("1.2.840.10008.1.2.4.111", "JPEG XL JPEG Recompression", "image/jxl", lossless=True),
    _encaps("1.2.840.10008.1.2.4.112", "JPEG XL", "image/jxl", lossless=False),
    _encaps(
        "1.2.840.10008.1.2.4.100", "MPEG2 Main Profile / Main Level", "video/mpeg", lossless=False, video=True
    ),
    _encaps(
        "1.2.840.10008.1.2.4.101", "MPEG2 Main Profile / High Level", "video/mpeg", lossless=False, video=True
    ),
    _encaps(
        "1.2.840.10008.1.2.4.102",
        "MPEG-4 AVC/H.264 High Profile / Level 4.1",
        "video/mp4",
        lossless=False,
        video=True,
    ),
    _encaps(
        "1.2.840.10008.1.2.4.103",
        "MPEG-4 AVC/H.264 BD-compatible High Profile / Level 4.1",
        "video/mp4",
        lossless=False,
        video=True,
    ),
    _encaps(
        "1.2.840.10008.1.2.4.104",
        "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 2D Video",
        "video/mp4",
        lossless=False,
        video=True,
    ),
    _encaps(
        "1.2.840.10008.1.2.4.105",
        "MPEG-4 AVC/H.264 High Profile / Level 4.2 For 3D Video",
        "video/mp4",
        lossless=False,
        video=True,
    ),
    _encaps(
        "1.2.840.10008.1.2.4.106",
        "MPEG-4 AVC/H.264 Stereo High Profile / Level 4.2",
        "video/mp4",
        lossless=False,
        video=True,
    ),
    _encaps(
        "1.2.840.10008.1.2.4.107",
        "HEVC/H.265 Main Profile / Level 5.1",
        "video/mp4",
        lossless=False,
        video=True,
    ),
    _encaps(
        "1.2.840.10008.1.2.4.108",
        "HEVC/H.265 Main 10 Profile / Level 5.1",
        "video/mp4",
        lossless=False,
        video=True,
    ),
)

SYNTAXES: dict[str, TransferSyntax] = {ts.uid: ts for ts in _ALL}

# PS3.18 table 8.7.3-2/-3: the transfer syntax a frame media type means when the client names no
# transfer-syntax parameter (the first one listed for the media type is the default).
DEFAULT_SYNTAX_FOR_MEDIA_TYPE: dict[str, str] = {
    OCTET_STREAM: EXPLICIT_VR_LITTLE_ENDIAN,
    "image/jpeg": "1.2.840.10008.1.2.4.70",
    "image/jls": "1.2.840.10008.1.2.4.80",
    "image/jp2": "1.2.840.10008.1.2.4.90",
    "image/jpx": "1.2.840.10008.1.2.4.92",
    "image/jphc": "1.2.840.10008.1.2.4.201",
    "image/jxl": "1.2.840.10008.1.2.4.110",
    "image/dicom-rle": RLE_LOSSLESS,
    "video/mpeg": "1.2.840.10008.1.2.4.100",
    "video/mp4": "1.2.840.10008.1.2.4.102",
}


def lookup(uid: str) -> TransferSyntax:
    """The table entry of a transfer syntax; NotAcceptableError for one the archive cannot hold."""
    try:
        return SYNTAXES[uid]
    except KeyError:
        raise NotAcceptableError(f"transfer syntax {uid!r} is not supported") from None


def is_known(uid: str) -> bool:
    return uid in SYNTAXES


def is_encapsulated(uid: str) -> bool:
    return lookup(uid).encapsulated


def is_lossless(uid: str) -> bool:
    return lookup(uid).lossless


def frame_media_type(uid: str) -> str:
    """Media type of a frame stored in transfer syntax uid (octet-stream for every native one)."""
    return lookup(uid).media_type


def default_syntax(media_type: str) -> str:
    """Transfer syntax a frame media type stands for when no transfer-syntax parameter is given."""
    try:
        return DEFAULT_SYNTAX_FOR_MEDIA_TYPE[media_type.lower()]
    except KeyError:
        raise NotAcceptableError(f"media type {media_type!r} is not a frame media type") from None


def syntaxes_for_media_type(media_type: str) -> list[str]:
    """Every transfer syntax whose frames have this media type (octet-stream: the native ones)."""
    mt = media_type.lower()
    return [ts.uid for ts in _ALL if ts.media_type == mt]


def media_type_matches(media_type: str, uid: str) -> bool:
    """Whether a frame in transfer syntax uid may be sent as media_type (PS3.18 8.7.3.5.2)."""
    return frame_media_type(uid) == media_type.lower()


def inflate(dataset: bytes) -> bytes:
    """The explicit VR little endian dataset inside a Deflated transfer syntax (raw deflate)."""
    try:
        return zlib.decompress(dataset, -zlib.MAX_WBITS)
    except zlib.error as exc:
        raise MalformedError(f"deflated dataset does not inflate: {exc}") from exc
