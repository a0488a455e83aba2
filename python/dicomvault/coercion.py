"""Patient corrections applied to an object on its way out of the archive.

The stored bytes stay exactly as received (DESIGN §3.4); when the HIS corrected a patient
(an update or a merge, index/patients.py), what leaves carries the current values. Every
attribute a correction sets is a Patient Module attribute of group 0x0010, which sits before
anything large in a data set, so only that group is decoded and written again: the bytes before
it and after it (the rest of the header, the pixel data) are copied untouched. Two cases take
the slow, complete path instead: a value the data set's character set cannot carry (the whole
data set is re-encoded in UTF-8, ISO_IR 192) and a deflated transfer syntax (inflated first).
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping
from io import BytesIO
from typing import Any

from pydicom.charset import convert_encodings
from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from .element_walk import WalkError, encode_text, top_level
from .errors import DicomVaultError

PATIENT_GROUP = 0x0010
UTF8 = "ISO_IR 192"
_CHARSET = frozenset({0x00080005})  # Specific Character Set


class CoercionError(DicomVaultError):
    """An object the corrections cannot be applied to (its header cannot be parsed)."""


def check_keywords(values: Mapping[str, str]) -> None:
    """Raises ValueError for a keyword that is not a text attribute of the Patient Module's
    group 0x0010 (a correction only ever sets those)."""
    for kw in values:
        tag = tag_for_keyword(kw)
        if tag is None or tag >> 16 != PATIENT_GROUP:
            raise ValueError(f"{kw!r} is not a patient attribute (group 0010) a correction may set")
        if dictionary_VR(tag) == "SQ":
            raise ValueError(f"{kw!r} is a sequence; corrections set text attributes only")


def _syntax(ts: str) -> tuple[bool, bool]:
    return ts == ImplicitVRLittleEndian, ts != ExplicitVRBigEndian


def _charset_terms(raw: bytes | str | None) -> list[str]:
    """The defined terms of a Specific Character Set value as encoded (the default repertoire
    when the element is absent or empty)."""
    text = (raw if isinstance(raw, str) else bytes(raw or b"").decode("ascii", "replace")).strip(" \0")
    return [v.strip() for v in text.split("\\")] if text else ["ISO_IR 6"]


def _fits(values: Mapping[str, str], charsets: list[str]) -> bool:
    """Whether every value can be written in the data set's own character set without
    escape sequences: ASCII anywhere, or a single-byte/UTF-8 set that encodes it."""
    text = "".join(values.values())
    if text.isascii():
        return True
    if len(charsets) != 1:
        return False  # ISO 2022 code extensions: leave them to the complete path
    try:
        text.encode(convert_encodings(charsets)[0])
    except (LookupError, UnicodeEncodeError):
        return False
    return True


def _set(ds: Dataset, values: Mapping[str, str]) -> None:
    for kw, value in values.items():
        tag = tag_for_keyword(kw)
        assert tag is not None  # check_keywords ran
        vr = dictionary_VR(tag).split(" or ")[0]
        parts = value.split("\\") if value else []
        ds.add_new(tag, vr, parts[0] if len(parts) == 1 else (parts or ""))


def _encode(ds: Dataset, implicit: bool, little: bool, charsets: list[str]) -> bytes:
    fp = DicomBytesIO()
    fp.is_implicit_VR = implicit
    fp.is_little_endian = little
    write_dataset(fp, ds, parent_encoding=charsets if len(charsets) > 1 else charsets[0])
    return fp.getvalue()


def _whole(dataset: bytes, implicit: bool, little: bool, values: Mapping[str, str]) -> bytes:
    """Every text element decoded and re-encoded in UTF-8 with the new values set."""
    ds = read_dataset(BytesIO(dataset), implicit, little)
    ds.decode()
    ds.SpecificCharacterSet = UTF8
    _set(ds, values)
    return _encode(ds, implicit, little, [UTF8])


def apply(ts: str, dataset: bytes, values: Mapping[str, str]) -> bytes:
    """The data set bytes with the Patient Module attributes in ``values`` (keyword → DICOM
    string form: PN as ``Family^Given``, several values joined by backslashes, "" for empty)
    set; everything else as it was. Raises CoercionError if the header cannot be parsed."""
    if not values:
        return dataset
    check_keywords(values)
    if ts == DeflatedExplicitVRLittleEndian:
        try:
            inflated = zlib.decompress(dataset, -zlib.MAX_WBITS)
        except zlib.error as exc:
            raise CoercionError(f"deflated data set cannot be inflated: {exc}") from exc
        out = apply("1.2.840.10008.1.2.1", inflated, values)
        packer = zlib.compressobj(zlib.Z_DEFAULT_COMPRESSION, zlib.DEFLATED, -zlib.MAX_WBITS)
        return packer.compress(out) + packer.flush()
    implicit, little = _syntax(ts)
    fast = _splice(dataset, implicit, little, values)
    return fast if fast is not None else _splice_pydicom(dataset, implicit, little, values)


def _splice(dataset: bytes, implicit: bool, little: bool, values: Mapping[str, str]) -> bytes | None:
    """The new group 0010 spliced in by walking element headers (element_walk.py); None when the
    walk is not sure of the bytes or the values need the complete path (pydicom's)."""
    if implicit and len(dataset) >= 6 and 65 <= dataset[4] <= 90 and 65 <= dataset[5] <= 90:
        return None  # looks explicit although labelled implicit: pydicom detects and follows that
    try:
        elems, start = top_level(dataset, implicit, little, PATIENT_GROUP, keep=_CHARSET)
    except WalkError:
        return None
    charsets = _charset_terms(next((dataset[e.value_start:e.end] for e in elems if e.tag in _CHARSET), None))
    if not _fits(values, charsets):
        return None
    text = "".join(values.values())
    codec = "ascii" if text.isascii() else convert_encodings(charsets)[0]
    group = [e for e in elems if e.tag >> 16 == PATIENT_GROUP]
    end = group[-1].end if group else start
    pieces = {e.tag: dataset[e.start:e.end] for e in group if e.tag != 0x00100000}  # no group length
    try:
        for kw, value in values.items():
            tag = tag_for_keyword(kw)
            assert tag is not None  # check_keywords ran
            vr = dictionary_VR(tag).split(" or ")[0]
            pieces[tag] = encode_text(tag, vr, value.encode(codec), implicit, little)
    except WalkError:
        return None
    return dataset[:start] + b"".join(pieces[t] for t in sorted(pieces)) + dataset[end:]


def _splice_pydicom(dataset: bytes, implicit: bool, little: bool, values: Mapping[str, str]) -> bytes:
    """The same with pydicom reading the header: slower (about a millisecond), and forgiving of
    what the walker refuses (a mislabelled syntax, a value in a character set the data set lacks)."""
    try:
        fp = BytesIO(dataset)
        head = read_dataset(fp, implicit, little, stop_when=lambda tag, _vr, _len: tag.group >= PATIENT_GROUP)
        start = fp.tell()
        group = read_dataset(fp, implicit, little, stop_when=lambda tag, _vr, _len: tag.group > PATIENT_GROUP)
        end = fp.tell()
        raw = head.get_item(0x00080005)
        charsets = _charset_terms(raw.value if raw is not None else None)
        if not _fits(values, charsets):
            return _whole(dataset, implicit, little, values)
        # as the group was found encoded: some writers mislabel their syntax and pydicom, like
        # every reader, goes by what it finds
        implicit, little = group.original_encoding if group.original_encoding[0] is not None else (implicit,
                                                                                                     little)
        _set(group, values)
        if 0x00100000 in group:
            del group[0x00100000]  # a (retired) group length the new values would make wrong
        return dataset[:start] + _encode(group, implicit, little, charsets) + dataset[end:]
    except (ValueError, TypeError, EOFError, OSError, NotImplementedError) as exc:
        raise CoercionError(f"cannot apply patient corrections: {exc}") from exc


def json_entries(values: Mapping[str, str]) -> dict[str, Any]:
    """The DICOM JSON (PS3.18 F.2) entries of ``values``, to lay over an instance's metadata."""
    check_keywords(values)
    ds = Dataset()
    _set(ds, values)
    return ds.to_json_dict()
