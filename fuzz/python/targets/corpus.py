"""Real inputs the seeds are built from: pydicom's test files and multipart bodies of them."""

from __future__ import annotations

from pathlib import Path

from pydicom.data import get_testdata_file

# Small files of different kinds: explicit/implicit VR, big endian, RLE, JPEG, multi-frame.
DICOM_FILES = ("CT_small.dcm", "MR_small.dcm", "rtplan.dcm", "MR_small_implicit.dcm",
               "MR_small_bigendian.dcm", "SC_rgb_rle_2frame.dcm", "JPEG2000.dcm", "emri_small.dcm")
BOUNDARY = "fuzz-b0undary"
CONTENT_TYPES = (f'multipart/related; type="application/dicom"; boundary="{BOUNDARY}"',
                 f"multipart/related; boundary={BOUNDARY}", f"Multipart/Related;boundary={BOUNDARY}; start=x")


def dicom_file(name: str, limit: int | None = None) -> bytes:
    data = Path(str(get_testdata_file(name))).read_bytes()
    return data if limit is None else data[:limit]


def multipart_body(parts: list[tuple[str, bytes]], boundary: str = BOUNDARY) -> bytes:
    """A body as STOW-RS clients send it: each part with its Content-Type, CRLF framing."""
    out = bytearray()
    for ctype, body in parts:
        out += f"--{boundary}\r\nContent-Type: {ctype}\r\n\r\n".encode() + body + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def stow_request(content_type: str, body: bytes) -> bytes:
    """The input format of the STOW targets: the Content-Type line, LF, the body."""
    return content_type.encode("latin-1") + b"\n" + body


def split_request(data: bytes) -> tuple[str | None, bytes]:
    head, nl, body = data.partition(b"\n")
    if not nl:
        return None, data
    return head.decode("latin-1"), body
