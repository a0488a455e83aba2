"""Decoding the index attributes the native parser extracts into Python values.

The parser hands back raw value bytes (padding stripped, binary values little endian); only the
few dozen index attributes are decoded, never the pixel data. The native side decodes them itself
for the common character sets (core/src/attrtext.rs: `index_attrs` of a parse or ingest result);
this module is the reference it must agree with, and the path for everything else (ISO 2022 code
extensions, other character sets, invalid UTF-8).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from functools import lru_cache
from typing import Any

from pydicom.charset import convert_encodings, decode_bytes
from pydicom.datadict import dictionary_VR, keyword_for_tag

# VRs whose text depends on (0008,0005) Specific Character Set.
_CHARSET_VRS = {"PN", "LO", "SH", "LT", "ST", "UT", "UC"}
_INT_VRS = {"US": 2, "UL": 4, "SS": 2, "SL": 4, "UV": 8, "SV": 8}
SPECIFIC_CHARACTER_SET = 0x00080005


@lru_cache(maxsize=512)
def keyword(tag: int) -> str:
    return keyword_for_tag(tag) or f"{tag:08X}"


@lru_cache(maxsize=512)
def _dictionary_vr(tag: int) -> str:
    try:
        return dictionary_VR(tag)
    except KeyError:
        return "UN"


@lru_cache(maxsize=64)
def _charsets(raw: bytes | None) -> list[str]:
    """(0008,0005) value → Python codec names, as pydicom's decode_bytes expects them."""
    if not raw:
        return convert_encodings(["ISO_IR 6"])
    names = [c.strip() for c in raw.decode("ascii", "replace").split("\\")]
    # An empty first value means the default repertoire, then code extensions follow.
    return convert_encodings([n or "ISO_IR 6" for n in names])


def decode_value(vr: str, value: bytes, charsets: list[str]) -> str:
    """The value as DICOM's string form (multiple values joined by backslash), for the index."""
    if vr in _INT_VRS:
        width = _INT_VRS[vr]
        signed = vr[0] == "S"
        return "\\".join(
            str(int.from_bytes(value[i : i + width], "little", signed=signed))
            for i in range(0, len(value) - width + 1, width)
        )
    if vr in _CHARSET_VRS:
        delimiters = {"^", "="} if vr == "PN" else {"\\"}
        return decode_bytes(value, charsets, delimiters).rstrip(" \x00")
    return value.decode("ascii", "replace").strip(" \x00")


def decode_attrs(raw: Iterable[tuple[int, str, bytes]]) -> dict[str, str]:
    """[(tag, vr, value bytes)] from the native parser → {keyword: value}."""
    items = list(raw)
    charset_raw = next((v for t, _, v in items if t == SPECIFIC_CHARACTER_SET), None)
    charsets = _charsets(charset_raw)
    out: dict[str, str] = {}
    for tag, vr, value in items:
        if vr == "UN":
            vr = _dictionary_vr(tag)
        out[keyword(tag)] = decode_value(vr, value, charsets)
    return out


def index_attrs(native: Mapping[str, Any]) -> dict[str, str]:
    """{keyword: value} of a native parse or ingest result: as the native side decoded them, or
    decoded here when it left them raw (`index_attrs` None)."""
    decoded = native.get("index_attrs")
    return decoded if decoded is not None else decode_attrs(native["attrs"])
