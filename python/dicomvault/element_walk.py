"""Where the top-level elements of an encoded data set start and end, found by reading element
headers only (values are skipped, sequences of undefined length walked item by item).

Why: a patient correction (coercion.py) rewrites a handful of elements near the start of every
object it sends; decoding the header with pydicom to find them costs about a millisecond per
object, this costs microseconds. Anything unexpected (a VR that is not two capital letters, a
length running past the end, an item tag missing) raises WalkError, and the caller takes
pydicom's slower, more forgiving path instead.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

# Explicit VR: these have two reserved bytes and a 4-byte length (PS3.5 7.1.2)
LONG_VRS = frozenset({b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"SV", b"UC", b"UN", b"UR", b"UT",
                      b"UV"})
UNDEFINED = 0xFFFFFFFF
ITEM, ITEM_END, SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_MAX_DEPTH = 64


class WalkError(ValueError):
    """The bytes are not a data set this walker reads with confidence."""


@dataclass(frozen=True, slots=True)
class Element:
    tag: int
    start: int  # first byte of the header
    end: int  # one past the last byte of the value
    value_start: int


class _Reader:
    def __init__(self, data: bytes, little: bool) -> None:
        self.data = data
        e = "<" if little else ">"
        self.short = struct.Struct(f"{e}HH2sH").unpack_from  # group, element, VR, 2-byte length
        self.long = struct.Struct(f"{e}HHI").unpack_from  # group, element, 4-byte length (implicit)
        self.u32 = struct.Struct(f"{e}I").unpack_from

    def header(self, pos: int, implicit: bool) -> tuple[int, bytes | None, int, int]:
        """(tag, VR or None, value length, value start) of the element at ``pos``."""
        if pos + 8 > len(self.data):
            raise WalkError(f"element header past the end at byte {pos}")
        if implicit:
            group, elem, length = self.long(self.data, pos)
            return group << 16 | elem, None, length, pos + 8
        group, elem, vr, length = self.short(self.data, pos)
        if group == 0xFFFE:  # items and delimiters have no VR, whatever the syntax
            return group << 16 | elem, None, self.u32(self.data, pos + 4)[0], pos + 8
        if not (65 <= vr[0] <= 90 and 65 <= vr[1] <= 90):
            raise WalkError(f"no explicit VR at byte {pos} (found {vr!r})")
        if vr in LONG_VRS:
            if pos + 12 > len(self.data):
                raise WalkError(f"element header past the end at byte {pos}")
            return group << 16 | elem, vr, self.u32(self.data, pos + 8)[0], pos + 12
        return group << 16 | elem, vr, length, pos + 8


def _skip_items(r: _Reader, pos: int, implicit: bool, depth: int) -> int:
    """From the first item of a sequence of undefined length to one past its delimiter."""
    if depth > _MAX_DEPTH:
        raise WalkError("sequences nested too deep")
    while True:
        tag, _, length, value = r.header(pos, True)
        if tag == SEQ_END:
            return value
        if tag != ITEM:
            raise WalkError(f"expected an item at byte {pos}, found ({tag >> 16:04X},{tag & 0xFFFF:04X})")
        if length != UNDEFINED:
            pos = value + length
            continue
        pos = value
        while True:
            tag, vr, length, value = r.header(pos, implicit)
            if tag == ITEM_END:
                pos = value
                break
            pos = _skip_value(r, pos, tag, vr, length, value, implicit, depth + 1)


def _skip_value(r: _Reader, pos: int, tag: int, vr: bytes | None, length: int, value: int,
                implicit: bool, depth: int) -> int:
    if length != UNDEFINED:
        end = value + length
        if end > len(r.data):
            raise WalkError(f"element ({tag >> 16:04X},{tag & 0xFFFF:04X}) at byte {pos} runs past the end")
        return end
    # undefined length: a sequence, encapsulated pixel data or UN holding a sequence (whose
    # content is implicit VR little endian, PS3.5 6.2.2)
    return _skip_items(r, value, implicit or vr == b"UN", depth)


def top_level(data: bytes, implicit: bool, little: bool, last_group: int, *,
              keep: frozenset[int] = frozenset()) -> tuple[list[Element], int]:
    """The top-level elements of group ``last_group`` and those whose tags are in ``keep``, and
    the offset where the elements of ``last_group`` start (or would be inserted). The walk stops
    at the first element of a later group, which is not read."""
    r = _Reader(data, little)
    out: list[Element] = []
    pos = insert = 0
    n = len(data)
    while pos < n:
        tag, vr, length, value = r.header(pos, implicit)
        group = tag >> 16
        if group > last_group:
            break
        end = value + length if length != UNDEFINED else _skip_items(r, value, implicit or vr == b"UN", 0)
        if end > n:
            raise WalkError(f"element ({group:04X},{tag & 0xFFFF:04X}) at byte {pos} runs past the end")
        if group == last_group or tag in keep:
            out.append(Element(tag, pos, end, value))
        elif group < last_group:
            insert = end
        pos = end
    first = next((e.start for e in out if e.tag >> 16 == last_group), insert)
    return out, first


def encode_text(tag: int, vr: str, value: bytes, implicit: bool, little: bool) -> bytes:
    """One text element (padded to an even length with a space, as PS3.5 6.2 asks)."""
    if len(value) % 2:
        value += b" "
    e = "<" if little else ">"
    head = struct.pack(f"{e}HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack(f"{e}I", len(value)) + value
    if vr.encode() in LONG_VRS:
        return head + vr.encode() + b"\0\0" + struct.pack(f"{e}I", len(value)) + value
    if len(value) > 0xFFFF:
        raise WalkError(f"a {vr} value of {len(value)} bytes does not fit a 2-byte length")
    return head + vr.encode() + struct.pack(f"{e}H", len(value)) + value
