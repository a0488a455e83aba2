"""The Part-10 header (preamble, "DICM", group 0002) for datasets that arrive without one.

Written with struct rather than pydicom: on the DIMSE store path pydicom's writer cost ~1 ms of
GIL per object (profiled), this costs microseconds. tests/test_filemeta.py checks it is byte for
byte what pydicom writes.
"""

from __future__ import annotations

import struct
from functools import lru_cache

from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

IMPLEMENTATION_VERSION_NAME = "DICOMVAULT_010"
_SHORT_VRS = {b"UI", b"SH", b"AE", b"UL"}


def _element(element: int, vr: bytes, value: bytes) -> bytes:
    if vr in _SHORT_VRS:
        return struct.pack("<HH2sH", 0x0002, element, vr, len(value)) + value
    return struct.pack("<HH2sHI", 0x0002, element, vr, 0, len(value)) + value


def _ui(uid: str) -> bytes:
    raw = uid.encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def _text(s: str) -> bytes:
    raw = s.encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def file_meta_prefix(
    sop_class_uid: str,
    sop_instance_uid: str,
    transfer_syntax: str,
    source_ae: str | None = None,
) -> bytes:
    """128 zero bytes + b"DICM" + the file meta group (explicit VR little endian)."""
    ae = source_ae.strip()[:16] if source_ae else ""
    before, after = _fixed_elements(sop_class_uid, transfer_syntax, ae)
    instance = _element(0x0003, b"UI", _ui(sop_instance_uid))
    length = len(before) + len(instance) + len(after)
    return b"".join((_PREAMBLE, _element(0x0000, b"UL", struct.pack("<I", length)), before, instance, after))


_PREAMBLE = b"\0" * 128 + b"DICM"


@lru_cache(maxsize=256)
def _fixed_elements(sop_class_uid: str, transfer_syntax: str, ae: str) -> tuple[bytes, bytes]:
    """The elements before and after the SOP Instance UID's, the same for every object of one
    SOP class, transfer syntax and sender: every C-STORE made them again (3.9 against 1.7 µs a
    call, hot caches)."""
    before = _element(0x0001, b"OB", b"\x00\x01") + _element(0x0002, b"UI", _ui(sop_class_uid))
    after = b"".join(
        [
            _element(0x0010, b"UI", _ui(transfer_syntax)),
            _element(0x0012, b"UI", _ui(PYDICOM_IMPLEMENTATION_UID)),
            _element(0x0013, b"SH", _text(IMPLEMENTATION_VERSION_NAME)),
        ]
        + ([_element(0x0016, b"AE", _text(ae))] if ae else [])
    )
    return before, after
