"""The DICOM JSON model (PS3.18 F.2) of a stored instance, and its bulk data values.

Input is what the engine keeps: the dataset bytes without file meta, in their transfer syntax
(deflated ones are inflated first). Two readers give the same JSON:
- `_FastReader` walks little endian datasets straight from their bytes with struct, converting
  ASCII text and binary numbers itself and leaving the rest of the text to pydicom's character set
  decoding (every Specific Character Set pydicom supports, ISO 2022 code extensions included).
  It is about 2.5x cheaper than going through pydicom Datasets, which matters for the first
  metadata request of a large series.
- `_Walker` goes through pydicom's Dataset: big endian data, and whatever the fast reader hands
  over (`_Fallback`: a VR that depends on other attributes, sequences stored as UN, odd framing).
The walk is ours, not `Dataset.to_json_dict`, because bulk data URIs need the path of each element
inside its sequences, which pydicom's bulk data handler is not given. `bulk_value` likewise finds
a value by walking the framing and only asks pydicom when the walk cannot decide.

Choices (PS3.18 allows either, these are the ones clients handle best):
- Binary values (OB, OD, OF, OL, OV, OW, UN) of at most `threshold` bytes are InlineBinary: a
  round trip per tiny private OB or short LUT would cost clients more than the base64 does.
  Pixel Data, Float and Double Float Pixel Data are always BulkDataURI (clients fetch them as
  frames or bulk data anyway).
- Non-binary values longer than `threshold` bytes become BulkDataURI only for the VRs PS3.18 8.7.5
  lists as bulk data (DS, FD, FL, IS, LT, SL, SS, ST, SV, UC, UL, US, UT, UV); names, codes, UIDs
  and dates always stay inline, whatever their length.
- An attribute with no value has no "Value" key; an empty value inside a multi-valued attribute
  is `null` (F.2.5); empty Person Name component groups are left out (F.2.2).
- FL/FD (and DS) values that are NaN or infinite are the strings "NaN", "Infinity", "-Infinity"
  (F.2.3.1: JSON numbers cannot carry them). IS/DS values that are not valid numbers stay strings,
  as F.2.3.1 permits, rather than being dropped.
- A standard element stored as explicit UN is shown with its dictionary VR and decoded value
  (PS3.5 6.2.2, as pydicom reads it); a private one stays UN (InlineBinary or bulk): only its
  creator knows its VR. Group 0002 is not part of the dataset and never appears; neither do
  Group Length (gggg,0000) elements (F.2.2). Attributes are in ascending tag order (F.2.2).
- Big endian (retired) values are given little endian in InlineBinary and bulk data, as PS3.18
  defines both for the transfer-syntax-free representations.
"""

from __future__ import annotations

import base64
import math
import re
import struct
from io import BytesIO
from typing import Any

import numpy as np
from pydicom.charset import convert_encodings, decode_bytes, default_encoding
from pydicom.datadict import dictionary_VR, private_dictionary_VR
from pydicom.dataelem import DataElement, RawDataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.uid import UID
from pydicom.valuerep import TEXT_VR_DELIMS, PersonName

from ...errors import MalformedError, NotFoundError, RequestError
from ...transfer.syntaxes import inflate

BINARY_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "UN"})
# PS3.18 8.7.5: the VRs whose values may be sent as bulk data.
BULK_VRS = BINARY_VRS | frozenset(
    {"DS", "FD", "FL", "IS", "LT", "SL", "SS", "ST", "SV", "UC", "UL", "US", "UT", "UV"}
)
# Pixel Data, Float Pixel Data, Double Float Pixel Data.
ALWAYS_BULK_TAGS = frozenset({0x7FE00010, 0x7FE00008, 0x7FE00009})
INT_VRS = frozenset({"IS", "SL", "SS", "UL", "US", "SV", "UV"})
FLOAT_VRS = frozenset({"DS", "FL", "FD"})
# Bytes per value of the VRs whose byte order depends on the transfer syntax.
WORD_SIZES = {
    "OW": 2, "US": 2, "SS": 2, "OL": 4, "OF": 4, "UL": 4, "SL": 4, "FL": 4,
    "OD": 8, "FD": 8, "OV": 8, "SV": 8, "UV": 8,
}
STRUCT_CODES = {"US": "H", "SS": "h", "UL": "I", "SL": "i", "FL": "f", "FD": "d", "SV": "q", "UV": "Q"}
# VRs whose text the Specific Character Set decodes (PS3.5 6.1.2.3), PN apart.
TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UC", "UT"})
SINGLE_VALUE_TEXT_VRS = frozenset({"LT", "ST", "UT", "UR"})
# Leading spaces are not significant either (PS3.5 6.2).
STRIP_BOTH_VRS = frozenset({"AE", "AS", "CS", "DA", "DT", "TM", "UI"})
ALL_VRS = frozenset(
    {"AE", "AS", "AT", "CS", "DA", "DS", "DT", "FL", "FD", "IS", "LO", "LT", "OB", "OD", "OF", "OL",
     "OV", "OW", "PN", "SH", "SL", "SQ", "SS", "ST", "SV", "TM", "UC", "UI", "UL", "UN", "UR", "US",
     "UT", "UV"}
)
# VRs pydicom could not pin down (no Pixel Representation, no Bits Allocated): what to call them.
AMBIGUOUS_VR_CHOICE = {"OB or OW": "OW", "US or SS": "US", "US or OW": "OW", "US or SS or OW": "OW"}
DEFLATED_EXPLICIT_LE = "1.2.840.10008.1.2.1.99"
UNDEFINED_LENGTH = 0xFFFFFFFF

_PATH_TAG = re.compile(r"[0-9A-Fa-f]{8}")
_PATH_INDEX = re.compile(r"0|[1-9][0-9]{0,8}")


class _Syntax:
    """How a transfer syntax frames a dataset (unknown UIDs: explicit VR little endian, which is
    what every private or future encapsulated syntax uses)."""

    __slots__ = ("uid", "implicit", "little", "deflated")

    def __init__(self, transfer_syntax: str) -> None:
        uid = UID(transfer_syntax.rstrip("\0 "))
        self.uid = str(uid)
        self.deflated = self.uid == DEFLATED_EXPLICIT_LE
        try:
            self.implicit = bool(uid.is_implicit_VR)
            self.little = bool(uid.is_little_endian)
        except ValueError:
            self.implicit, self.little = False, True


def _inflated(syntax: _Syntax, dataset: bytes) -> bytes:
    return inflate(dataset) if syntax.deflated else dataset


def parse_dataset(transfer_syntax: str, dataset: bytes) -> tuple[Dataset, bool]:
    """(pydicom Dataset with every element still raw, whether values are big endian)."""
    syntax = _Syntax(transfer_syntax)
    return _pydicom_dataset(syntax, _inflated(syntax, dataset)), not syntax.little


def _pydicom_dataset(syntax: _Syntax, data: bytes) -> Dataset:
    # pydicom warns about the oddities of real files (a VR mismatch it corrects, ...). They are
    # not silenced here: warnings.catch_warnings is process-global state, not safe in the
    # server's worker threads, and Python's default filter shows each warning once anyway.
    try:
        return read_dataset(BytesIO(data), syntax.implicit, syntax.little)
    except (ValueError, TypeError, EOFError, OSError, NotImplementedError) as exc:
        raise MalformedError(f"cannot parse dataset in transfer syntax {syntax.uid}: {exc}") from exc


def dataset_json(
    transfer_syntax: str, dataset: bytes, bulk_uri_prefix: str, *, threshold: int = 1024
) -> dict[str, Any]:
    """The DICOM JSON object of a whole dataset (no file meta); bulk values are
    `{bulk_uri_prefix}/bulkdata/{path}` with `path` as `bulk_value` takes it."""
    syntax = _Syntax(transfer_syntax)
    data = _inflated(syntax, dataset)
    bulk_prefix = f"{bulk_uri_prefix}/bulkdata/"
    if syntax.little:
        try:
            return _FastReader(bulk_prefix, threshold, data, syntax.implicit).top()
        except (_Fallback, struct.error, IndexError, UnicodeError, LookupError, ValueError):
            pass  # something only pydicom knows how to read (or a malformed dataset)
    walker = _Walker(bulk_prefix, threshold, not syntax.little)
    return walker.dataset(_pydicom_dataset(syntax, data), "", top_level=True)


class _Walker:
    """Builds the JSON of one dataset. Common elements (ASCII text, binary numbers, binary
    values) are converted straight from their raw bytes, at a fraction of pydicom's per-element
    cost; the rest (sequences, non-ASCII text needing the character set, ambiguous or private
    VRs of implicit syntaxes) goes through pydicom's own conversion."""

    __slots__ = ("bulk_prefix", "threshold", "big_endian")

    def __init__(self, bulk_prefix: str, threshold: int, big_endian: bool) -> None:
        self.bulk_prefix = bulk_prefix
        self.threshold = threshold
        self.big_endian = big_endian

    def dataset(self, ds: Dataset, path: str, *, top_level: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for tag in sorted(ds.keys()):
            if (top_level and tag >> 16 == 0x0002) or not tag & 0xFFFF:
                continue
            key = f"{tag:08X}"
            out[key] = self.element(ds, tag, path + key)
        return out

    def element(self, ds: Dataset, tag: int, path: str) -> dict[str, Any]:
        raw = ds.get_item(tag)
        if isinstance(raw, RawDataElement):
            length = raw.length
            value = raw.value
            if isinstance(value, bytes) or value is None:
                vr = _implicit_vr(tag) if raw.is_implicit_VR else raw.VR
                if vr == "UN" and not tag >> 16 & 1:
                    # A standard tag stored as UN is read with its dictionary VR (PS3.5 6.2.2);
                    # pydicom does that. Private UN stays UN: only its creator knows the VR.
                    vr = None
                if vr is not None and length != UNDEFINED_LENGTH:
                    fast = self.raw_element(vr, value or b"", raw.is_little_endian, tag, path)
                    if fast is not None:
                        return fast
        else:
            length = _value_length(raw)
        try:
            elem = ds[tag]
        except (ValueError, TypeError, KeyError, UnicodeError, OverflowError):
            # pydicom refused the value (e.g. an IS that is not a number): still show it.
            return self.undecodable(raw, tag, path)
        # str.__str__: pydicom's VRs are a str Enum; the JSON wants the plain string.
        vr = str.__str__(AMBIGUOUS_VR_CHOICE.get(elem.VR, elem.VR))
        if vr == "SQ":
            items = [self.dataset(item, f"{path}/{i}/") for i, item in enumerate(elem.value or ())]
            return {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
        if vr in BINARY_VRS:
            value = elem.value
            if value is None:
                return {"vr": vr}
            return self.binary(vr, value if isinstance(value, bytes) else bytes(value), tag, path)
        if vr in BULK_VRS and length != UNDEFINED_LENGTH and length > self.threshold:
            return {"vr": vr, "BulkDataURI": self.bulk_prefix + path}
        values = _json_values(elem, vr)
        return {"vr": vr, "Value": values} if values else {"vr": vr}

    def raw_element(
        self, vr: str, value: bytes, little: bool, tag: int, path: str
    ) -> dict[str, Any] | None:
        """The JSON of an element from its raw value, or None when pydicom must convert it."""
        kind = _TEXT_KINDS.get(vr)
        if kind is not None:  # the common case first: text, most often one value
            if len(value) > self.threshold and vr in BULK_VRS:
                return {"vr": vr, "BulkDataURI": self.bulk_prefix + path}
            if not value.isascii() or b"\x1b" in value:
                return None  # the Specific Character Set decides: pydicom decodes it
            text = value.decode("ascii").rstrip("\0 ")
            if not text:
                return {"vr": vr}
            if kind == _SINGLE or "\\" not in text:
                return {"vr": vr, "Value": [_ONE_VALUE[kind](text)]}
            return {"vr": vr, "Value": _text_values(vr, text)}
        if vr in BINARY_VRS:
            return self.binary(vr, value, tag, path)
        if vr == "SQ":
            return None
        if vr in BULK_VRS and len(value) > self.threshold:
            return {"vr": vr, "BulkDataURI": self.bulk_prefix + path}
        if not value:
            return {"vr": vr}
        values: list[Any] | None
        fmt = STRUCT_CODES.get(vr)
        if fmt is not None:
            size = WORD_SIZES[vr]
            if len(value) % size:
                return None
            nums = struct.unpack(f"{'<' if little else '>'}{len(value) // size}{fmt}", value)
            values = [_float_value(v) for v in nums] if fmt in "fd" else list(nums)
        elif vr == "AT":
            if len(value) % 4:
                return None
            halves = struct.unpack(f"{'<' if little else '>'}{len(value) // 2}H", value)
            values = [f"{halves[i]:04X}{halves[i + 1]:04X}" for i in range(0, len(halves), 2)]
        elif not value.isascii() or b"\x1b" in value:
            return None  # the Specific Character Set decides: pydicom decodes it
        else:
            values = _text_values(vr, value.decode("ascii"))
        return {"vr": vr, "Value": values} if values else {"vr": vr}

    def binary(self, vr: str, value: bytes, tag: int, path: str) -> dict[str, Any]:
        if not value:
            return {"vr": vr}
        if tag in ALWAYS_BULK_TAGS or len(value) > self.threshold:
            return {"vr": vr, "BulkDataURI": self.bulk_prefix + path}
        if self.big_endian:
            value = to_little_endian(value, vr)
        return {"vr": vr, "InlineBinary": base64.b64encode(value).decode("ascii")}

    def undecodable(self, raw: DataElement | RawDataElement, tag: int, path: str) -> dict[str, Any]:
        vr = str.__str__(raw.VR or "UN")
        value = raw.value
        if not isinstance(value, bytes) or vr in BINARY_VRS:
            return self.binary(vr if vr in BINARY_VRS else "UN", value or b"", tag, path)
        if vr in BULK_VRS and len(value) > self.threshold:
            return {"vr": vr, "BulkDataURI": self.bulk_prefix + path}
        parts = _text_values(vr, value.decode("latin-1"))
        return {"vr": vr, "Value": parts} if parts else {"vr": vr}


class _Fallback(Exception):
    """The fast reader met something whose reading pydicom decides (ambiguous VRs that depend
    on other attributes, UN sequences, VRs it does not know)."""


# Tags whose "US or SS" VR follows Pixel Representation alone (other ambiguous ones, such as LUT
# descriptors, have special rules: pydicom reads those datasets).
_US_SS_BY_PIXEL_REP = frozenset(
    {0x00280106, 0x00280107, 0x00280108, 0x00280109, 0x00280110, 0x00280111, 0x00280120, 0x00280121}
)
_LONG_HEADER_VRS = frozenset({"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"})
_ITEM, _ITEM_END, _SEQ_END = 0xFFFEE000, 0xFFFEE00D, 0xFFFEE0DD
_CHARSET_TAG, _PIXEL_REP_TAG = 0x00080005, 0x00280103


class _FastReader(_Walker):
    """Reads little endian datasets straight from their bytes (struct, no pydicom Dataset):
    the element framing of PS3.5 7.1, sequences and items of defined and undefined length,
    encapsulated pixel data skipped item by item. Produces exactly what `_Walker` produces from
    pydicom's reading (the corpus test holds both to pydicom), at a fraction of the cost."""

    __slots__ = ("buf", "implicit")

    def __init__(self, bulk_prefix: str, threshold: int, buf: bytes, implicit: bool) -> None:
        super().__init__(bulk_prefix, threshold, False)
        self.buf = buf
        self.implicit = implicit

    def top(self) -> dict[str, Any]:
        out, pos = self.read(0, len(self.buf), "", [default_encoding], (), top_level=True)
        return out

    def read(
        self, pos: int, end: int | None, path: str, encodings: list[str], pixel_reps: tuple[int, ...],
        *, top_level: bool = False,
    ) -> tuple[dict[str, Any], int]:
        """Elements from `pos` to `end` (None: to the item delimiter); (JSON, position after)."""
        buf = self.buf
        implicit = self.implicit
        unpack = struct.unpack_from
        out: dict[str, Any] = {}
        creators: dict[int, str] = {}
        limit = len(buf) if end is None else end
        last_tag, in_order = -1, True
        while pos < limit:
            group, element = unpack("<HH", buf, pos)
            tag = group << 16 | element
            if tag == _ITEM_END:
                return (out if in_order else dict(sorted(out.items()))), pos + 8
            if tag < last_tag:
                in_order = False  # not valid DICOM, but the JSON keeps tag order as pydicom does
            last_tag = tag
            if implicit:
                (length,) = unpack("<I", buf, pos + 4)
                pos += 8
                vr = self.implicit_vr(tag, creators, pixel_reps)
            else:
                vr = buf[pos + 4:pos + 6].decode("ascii")
                if vr in _LONG_HEADER_VRS:
                    (length,) = unpack("<I", buf, pos + 8)
                    pos += 12
                elif vr in ALL_VRS:
                    (length,) = unpack("<H", buf, pos + 6)
                    pos += 8
                else:
                    raise _Fallback(f"VR {vr!r} of {tag:08X}")
            key = f"{tag:08X}"
            if length == UNDEFINED_LENGTH:
                if vr == "SQ":
                    items, pos = self.sequence(pos, None, path + key, encodings, pixel_reps)
                    out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
                elif vr in ("OB", "OW") and tag in ALWAYS_BULK_TAGS:
                    pos = _skip_fragments(self.buf, pos)
                    out[key] = {"vr": vr, "BulkDataURI": self.bulk_prefix + path + key}
                else:
                    raise _Fallback(f"undefined length {vr} {tag:08X}")
                continue
            if vr == "UN" and not implicit and not group & 1 and length < 0xFFFF:
                # a standard tag stored as UN: its dictionary VR, as pydicom reads it (PS3.5 6.2.2)
                vr = self.implicit_vr(tag, creators, pixel_reps)
                if vr == "SQ":
                    raise _Fallback(f"sequence {tag:08X} stored as UN")
            value_end = pos + length
            if value_end > limit:
                raise _Fallback(f"{tag:08X} runs past its dataset")
            if (top_level and group == 0x0002) or not element:
                pos = value_end
                continue
            if vr == "SQ":
                items, _ = self.sequence(pos, value_end, path + key, encodings, pixel_reps)
                out[key] = {"vr": "SQ", "Value": items} if items else {"vr": "SQ"}
            elif length and (tag in ALWAYS_BULK_TAGS or length > self.threshold) and vr in BULK_VRS:
                out[key] = {"vr": vr, "BulkDataURI": self.bulk_prefix + path + key}
            else:
                value = buf[pos:value_end]
                if tag == _CHARSET_TAG:
                    encodings = convert_encodings(
                        [v.strip() for v in value.decode("ascii").rstrip("\0 ").split("\\")]
                    )
                elif tag == _PIXEL_REP_TAG and length == 2:
                    pixel_reps = (unpack("<H", value)[0], *pixel_reps)
                elif group & 1 and 0x10 <= element <= 0xFF:
                    creators[group << 8 | element] = value.decode("latin-1").rstrip("\0 ")
                json = self.raw_element(vr, value, True, tag, path + key)
                out[key] = json if json is not None else self.text(vr, value, encodings)
            pos = value_end
        if end is None:
            raise _Fallback("item without its delimiter")
        return (out if in_order else dict(sorted(out.items()))), pos

    def sequence(
        self, pos: int, end: int | None, path: str, encodings: list[str], pixel_reps: tuple[int, ...]
    ) -> tuple[list[dict[str, Any]], int]:
        unpack = struct.unpack_from
        items: list[dict[str, Any]] = []
        limit = len(self.buf) if end is None else end
        while pos < limit:
            group, element, length = unpack("<HHI", self.buf, pos)
            tag = group << 16 | element
            pos += 8
            if tag == _SEQ_END:
                return items, pos
            if tag != _ITEM:
                raise _Fallback(f"{tag:08X} where a sequence item was expected in {path}")
            item_end = None if length == UNDEFINED_LENGTH else pos + length
            item, after = self.read(pos, item_end, f"{path}/{len(items)}/", encodings, pixel_reps)
            items.append(item)
            pos = after if item_end is None else item_end
        if end is None:
            raise _Fallback(f"sequence {path} without its delimiter")
        return items, end

    def implicit_vr(self, tag: int, creators: dict[int, str], pixel_reps: tuple[int, ...]) -> str:
        """What pydicom reads an implicit VR element as (PS3.5 6.2.2 for private tags)."""
        if tag >> 16 & 1:
            element = tag & 0xFFFF
            if 0x10 <= element <= 0xFF:
                return "LO"
            # the creator of block bb of group gggg is (gggg,00bb)
            creator = creators.get(tag >> 16 << 8 | element >> 8) if element & 0xFF00 else None
            if not creator:
                return "UN"
            try:
                vr = private_dictionary_VR(tag, creator)
            except KeyError:
                return "UN"
        else:
            vr = _implicit_vr(tag) or ""
            if not vr:
                if tag & 0xFFFF == 0:
                    return "UL"  # group length
                try:
                    vr = dictionary_VR(tag)
                except KeyError:
                    return "UN"
        if vr in ALL_VRS:
            return vr
        if vr == "OB or OW":
            return "OW"  # PS3.5 A.1: OW in implicit VR
        if vr == "US or SS" and tag in _US_SS_BY_PIXEL_REP and pixel_reps:
            return "US" if pixel_reps[0] == 0 else "SS"
        raise _Fallback(f"ambiguous VR {vr} of {tag:08X}")

    def text(self, vr: str, value: bytes, encodings: list[str]) -> dict[str, Any]:
        """A text value that is not plain ASCII, decoded with the dataset's character sets."""
        if vr == "PN":
            text = decode_bytes(value.rstrip(b"\0 "), encodings, TEXT_VR_DELIMS)
            names = [
                _person_name(PersonName(part, encodings)) if part else None for part in text.split("\\")
            ]
            return {"vr": vr, "Value": names}
        if vr not in TEXT_VRS:
            raise _Fallback(f"{vr} value that is not ASCII")
        values = _text_values(vr, decode_bytes(value, encodings, TEXT_VR_DELIMS))
        return {"vr": vr, "Value": values} if values else {"vr": vr}


_VR_CACHE: dict[int, str | None] = {}


def _implicit_vr(tag: int) -> str | None:
    """The dictionary VR of a tag read in an implicit syntax; None when pydicom must decide
    (private data elements, unknown tags, ambiguous VRs)."""
    try:
        return _VR_CACHE[tag]
    except KeyError:
        pass
    if tag >> 16 & 1:
        # Private creator elements are LO by definition; other private data need pydicom's
        # private dictionary. Not cached: a dataset could bring any number of private tags.
        return "LO" if 0x10 <= tag & 0xFFFF <= 0xFF else None
    vr: str | None
    try:
        vr = dictionary_VR(tag)
    except KeyError:
        vr = None
    if vr is not None and vr not in ALL_VRS:
        vr = None
    if len(_VR_CACHE) < 100_000:  # the dictionary's size, plus room for unknown tags
        _VR_CACHE[tag] = vr
    return vr


def _pn_groups(text: str) -> dict[str, str] | None:
    """Person Name component groups of an ASCII value (PS3.5 6.2.1)."""
    groups = text.split("=")
    if len(groups) == 1:
        return {"Alphabetic": text}
    out = {name: comp for name, comp in zip(("Alphabetic", "Ideographic", "Phonetic"), groups, strict=False)
           if comp}
    return out or None


_RSTRIP, _STRIP, _INT, _FLOAT, _PN, _SINGLE = range(6)
_TEXT_KINDS = {
    "LO": _RSTRIP, "SH": _RSTRIP, "UC": _RSTRIP,
    "AE": _STRIP, "AS": _STRIP, "CS": _STRIP, "DA": _STRIP, "DT": _STRIP, "TM": _STRIP, "UI": _STRIP,
    "IS": _INT, "DS": _FLOAT, "PN": _PN,
    "LT": _SINGLE, "ST": _SINGLE, "UT": _SINGLE, "UR": _SINGLE,
}
# One value (already right-stripped and not empty) by kind.
_ONE_VALUE: tuple[Any, ...] = (
    lambda t: t,
    lambda t: t.lstrip("\0 "),
    lambda t: _int_value(t.strip()),
    lambda t: _float_value(t.strip()),
    _pn_groups,
    lambda t: t,
)


def _text_values(vr: str, text: str) -> list[Any]:
    """The "Value" array of a decoded string value ([] for an empty one)."""
    text = text.rstrip("\0 ")
    if not text:
        return []
    if vr in SINGLE_VALUE_TEXT_VRS:
        return [text]
    parts = text.split("\\")
    if vr == "PN":
        return [_person_name(p.rstrip("\0 ")) for p in parts]
    if vr in INT_VRS:
        return [_int_value(p.strip()) for p in parts]
    if vr in FLOAT_VRS:
        return [_float_value(p.strip()) for p in parts]
    if vr in STRIP_BOTH_VRS:
        return [p.strip("\0 ") or None for p in parts]
    return [p.rstrip("\0 ") or None for p in parts]


def _value_length(elem: DataElement) -> int:
    value = elem.value
    if isinstance(value, bytes | str):
        return len(value)
    return 0


def _json_values(elem: DataElement, vr: str) -> list[Any]:
    """The "Value" array of a non-binary, non-sequence element ([] when it has no value)."""
    value = elem.value
    if value is None or value == "" or value == b"":
        return []
    multi = isinstance(value, MultiValue | list | tuple)
    values = list(value) if multi else [value]
    if vr == "PN":
        return [_person_name(v) for v in values]
    if vr == "AT":
        return [None if v is None else f"{int(v):08X}" for v in values]
    if vr in INT_VRS:
        return [_int_value(v) for v in values]
    if vr in FLOAT_VRS:
        return [_float_value(v) for v in values]
    return [v if v not in ("", None) else None for v in values]


def _person_name(value: PersonName | str | None) -> dict[str, str] | None:
    if value is None or value == "":
        return None
    pn = value if isinstance(value, PersonName) else PersonName(value)
    groups = {
        name: comp
        for name, comp in zip(("Alphabetic", "Ideographic", "Phonetic"), pn.components, strict=False)
        if comp
    }
    return groups or None


def _int_value(v: Any) -> int | str | None:
    if v is None or v == "":
        return None
    try:
        return int(v)
    except (TypeError, ValueError):
        pass
    try:
        f = float(v)  # "1.0" in an IS: pydicom accepts it, so do we
    except (TypeError, ValueError):
        return str(v)
    return int(f) if f.is_integer() else str(v)


def _float_value(v: Any) -> float | int | str | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return str(v).strip()
    if math.isfinite(f):
        return f
    if math.isnan(f):
        return "NaN"
    return "Infinity" if f > 0 else "-Infinity"


def to_little_endian(value: bytes, vr: str) -> bytes:
    """A big endian value of `vr` in little endian (unchanged for byte VRs)."""
    size = WORD_SIZES.get(vr, 1)
    if size == 1 or len(value) % size:
        return value
    return np.frombuffer(value, dtype=f">u{size}").astype(f"<u{size}").tobytes()


# -- bulk data ------------------------------------------------------------------------------------
def parse_bulk_path(path: str) -> list[int | str]:
    """`TAG` or `SEQTAG/ITEMINDEX/TAG/...` → [tag, index, tag, ...]; RequestError if malformed."""
    parts = path.strip("/").split("/")
    out: list[int | str] = []
    for i, part in enumerate(parts):
        if i % 2 == 0:
            if not _PATH_TAG.fullmatch(part):
                raise RequestError(f"bulk data path {path!r}: {part!r} is not an 8-digit hex tag")
            out.append(int(part, 16))
        else:
            if not _PATH_INDEX.fullmatch(part):
                raise RequestError(f"bulk data path {path!r}: {part!r} is not an item index")
            out.append(part)
    if len(parts) % 2 == 0:
        raise RequestError(f"bulk data path {path!r} ends with an item index, not a tag")
    return out


def bulk_value(transfer_syntax: str, dataset: bytes, path: str) -> bytes:
    """The value bytes of the element at `path` (as `dataset_json` names it), little endian.

    Encapsulated Pixel Data is its whole encapsulated value (Basic Offset Table item and fragment
    items, without the sequence delimiter), as stored. Text of the character-set dependent VRs
    (LT, UT, ST, UC) that is not ASCII is given in UTF-8, like the JSON it belongs to (PS3.18
    F.2.2 note 4); ASCII text, the usual case, is served as stored.
    """
    steps = parse_bulk_path(path)
    syntax = _Syntax(transfer_syntax)
    data = _inflated(syntax, dataset)
    if syntax.little:
        try:
            return _locate(data, syntax.implicit, steps, path)
        except (_Fallback, struct.error, IndexError, UnicodeError, KeyError):
            pass  # pydicom decides (UN sequences, unknown private sequences, malformed data)
    return _pydicom_bulk_value(syntax, data, steps, path)


def _locate(buf: bytes, implicit: bool, steps: list[int | str], path: str) -> bytes:
    """The value at `steps`, found by walking the element framing (no decoding, no copy of the
    values skipped)."""
    pos, end = 0, len(buf)  # end None: an item of undefined length
    region_end: int | None = end
    for depth in range(0, len(steps), 2):
        target = int(steps[depth])
        found = _find_element(buf, pos, region_end, implicit, target, top_level=depth == 0)
        if found is None:
            raise NotFoundError(f"bulk data path {path!r}: no element {target:08X}")
        vr, value_pos, length = found
        if depth == len(steps) - 1:
            if length == UNDEFINED_LENGTH:
                if target not in ALWAYS_BULK_TAGS:
                    raise _Fallback(f"undefined length {target:08X}")
                return buf[value_pos:_skip_fragments(buf, value_pos) - 8]
            value = buf[value_pos:value_pos + length]
            if (vr in TEXT_VRS or vr == "PN") and not value.isascii():
                raise _Fallback("text to decode with the character set")
            return value
        if not (vr == "SQ" or (implicit and length == UNDEFINED_LENGTH)):
            if vr == "UN" or vr is None:
                raise _Fallback(f"{target:08X} may be a sequence stored as UN")
            raise NotFoundError(f"bulk data path {path!r}: {target:08X} is not a sequence")
        index = int(steps[depth + 1])
        seq_end = None if length == UNDEFINED_LENGTH else value_pos + length
        item = _find_item(buf, value_pos, seq_end, index, implicit)
        if item is None:
            raise NotFoundError(f"bulk data path {path!r}: no item {index} in {target:08X}")
        pos, region_end = item
    raise AssertionError("unreachable: a bulk data path ends with a tag")


def _element_header(buf: bytes, pos: int, implicit: bool) -> tuple[int, str | None, int, int]:
    """(tag, VR or None when implicit and unknown, value position, value length) at `pos`."""
    group, element = struct.unpack_from("<HH", buf, pos)
    tag = group << 16 | element
    if implicit or group == 0xFFFE:
        (length,) = struct.unpack_from("<I", buf, pos + 4)
        vr = _implicit_vr(tag) if implicit and group != 0xFFFE else None
        return tag, vr, pos + 8, length
    vr = buf[pos + 4:pos + 6].decode("ascii")
    if vr in _LONG_HEADER_VRS:
        return tag, vr, pos + 12, struct.unpack_from("<I", buf, pos + 8)[0]
    if vr not in ALL_VRS:
        raise _Fallback(f"VR {vr!r} of {tag:08X}")
    return tag, vr, pos + 8, struct.unpack_from("<H", buf, pos + 6)[0]


def _find_element(
    buf: bytes, pos: int, end: int | None, implicit: bool, target: int, *, top_level: bool
) -> tuple[str | None, int, int] | None:
    """(VR, value position, length) of `target` in the dataset from `pos` to `end` (None: to
    its item delimiter), or None."""
    limit = len(buf) if end is None else end
    while pos < limit:
        tag, vr, value_pos, length = _element_header(buf, pos, implicit)
        if tag == _ITEM_END:
            return None
        if tag == target and not (top_level and tag >> 16 == 0x0002):
            return vr, value_pos, length
        pos = _after_value(buf, tag, vr, value_pos, length, implicit)
    return None


def _find_item(
    buf: bytes, pos: int, end: int | None, index: int, implicit: bool
) -> tuple[int, int | None] | None:
    """(start, end or None for undefined length) of item `index` of the sequence value at `pos`."""
    limit = len(buf) if end is None else end
    count = 0
    while pos < limit:
        length, pos = _item_header(buf, pos)
        if length is None:
            return None
        item_end = None if length == UNDEFINED_LENGTH else pos + length
        if count == index:
            return pos, item_end
        count += 1
        pos = item_end if item_end is not None else _skip_item(buf, pos, implicit)
    return None


def _after_value(buf: bytes, tag: int, vr: str, value_pos: int, length: int, implicit: bool) -> int:
    """Position after an element's value: its length, or its delimiter when undefined."""
    if length != UNDEFINED_LENGTH:
        return value_pos + length
    if vr in ("OB", "OW") or tag in ALWAYS_BULK_TAGS:
        return _skip_fragments(buf, value_pos)
    if vr == "SQ" or implicit:
        return _skip_sequence(buf, value_pos, implicit)
    raise _Fallback(f"undefined length {vr} {tag:08X}")


def _item_header(buf: bytes, pos: int) -> tuple[int | None, int]:
    """(item length, position after the header) of the item starting at `pos`; length None at
    the sequence delimiter."""
    group, element, length = struct.unpack_from("<HHI", buf, pos)
    tag = group << 16 | element
    if tag == _SEQ_END:
        return None, pos + 8
    if tag != _ITEM:
        raise _Fallback(f"{tag:08X} where a sequence item was expected")
    return length, pos + 8


def _skip_item(buf: bytes, pos: int, implicit: bool) -> int:
    """Position after the delimiter of an item of undefined length starting at `pos`."""
    while True:
        tag, vr, value_pos, length = _element_header(buf, pos, implicit)
        if tag == _ITEM_END:
            return value_pos
        pos = _after_value(buf, tag, vr, value_pos, length, implicit)


def _skip_sequence(buf: bytes, pos: int, implicit: bool) -> int:
    """Position after the delimiter of a sequence of undefined length whose value is at `pos`."""
    while True:
        length, pos = _item_header(buf, pos)
        if length is None:
            return pos
        pos = pos + length if length != UNDEFINED_LENGTH else _skip_item(buf, pos, implicit)


def _skip_fragments(buf: bytes, pos: int) -> int:
    """Position after the sequence delimiter of encapsulated pixel data whose value is at `pos`."""
    while True:
        group, element, length = struct.unpack_from("<HHI", buf, pos)
        pos += 8
        if group << 16 | element == _SEQ_END:
            return pos
        if group << 16 | element != _ITEM or length == UNDEFINED_LENGTH:
            raise _Fallback("malformed encapsulated pixel data")
        pos += length


def _pydicom_bulk_value(syntax: _Syntax, data: bytes, steps: list[int | str], path: str) -> bytes:
    ds = _pydicom_dataset(syntax, data)
    big_endian = not syntax.little
    for i in range(0, len(steps) - 1, 2):
        tag = int(steps[i])
        index = int(steps[i + 1])
        if tag not in ds:
            raise NotFoundError(f"bulk data path {path!r}: no element {tag:08X}")
        elem = ds[tag]
        items = elem.value if elem.VR == "SQ" else None
        if items is None or index >= len(items):
            raise NotFoundError(f"bulk data path {path!r}: no item {index} in {tag:08X}")
        ds = items[index]
    tag = int(steps[-1])
    if tag not in ds or (len(steps) == 1 and tag >> 16 == 0x0002):
        raise NotFoundError(f"bulk data path {path!r}: no element {tag:08X}")
    raw = ds.get_item(tag)
    value = raw.value
    vr = raw.VR
    if big_endian and vr is None:
        vr = ds[tag].VR
    if value is None:
        return b""
    if not isinstance(value, bytes):
        raise NotFoundError(f"bulk data path {path!r}: {tag:08X} has no raw value to serve")
    if not value.isascii() and str.__str__(ds[tag].VR) in TEXT_VRS:
        text = ds[tag].value
        return (text if isinstance(text, str) else "\\".join(text)).encode("utf-8")
    return to_little_endian(value, AMBIGUOUS_VR_CHOICE.get(vr, vr)) if big_endian else value
