"""DIMSE command sets packed with `struct` (PS3.7 §6.3: group 0000, always Implicit VR Little
Endian, elements in tag order after the Command Group Length). The fast encoders of encoded.py
and find.py build theirs here; each checks its bytes against pynetdicom's own encoding of the
same message (encoded.encoders_verified() before first use, or in the tests)."""

from __future__ import annotations

import struct
from collections.abc import Iterable

# Command Field values (PS3.7 E.1), for every module that reads or writes command sets
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_FIND_RQ, C_FIND_RSP = 0x0020, 0x8020
C_MOVE_RQ, C_MOVE_RSP = 0x0021, 0x8021
C_ECHO_RQ, C_ECHO_RSP = 0x0030, 0x8030
C_CANCEL_RQ = 0x0FFF

_ELEMENT = struct.Struct("<HHI")  # group, element, value length
_US = struct.Struct("<H")
_UL = struct.Struct("<I")


def ui(value: object) -> bytes:
    """A UI value, padded to even length with NUL."""
    raw = str(value).encode("ascii")
    return raw + b"\0" if len(raw) % 2 else raw


def ae(value: object) -> bytes:
    """An AE value, padded to even length with a space."""
    raw = str(value).strip().encode("ascii")
    return raw + b" " if len(raw) % 2 else raw


def us(value: int) -> bytes:
    return _US.pack(value)


def pack(elements: Iterable[tuple[int, bytes]]) -> bytes:
    """(element number in group 0000, value bytes), in tag order -> the encoded command set."""
    body = b"".join(_ELEMENT.pack(0x0000, elem, len(value)) + value for elem, value in elements)
    return _ELEMENT.pack(0x0000, 0x0000, 4) + _UL.pack(len(body)) + body
