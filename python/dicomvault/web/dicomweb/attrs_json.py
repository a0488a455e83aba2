"""Index attribute strings -> DICOM JSON (PS3.18 F.2), for QIDO-RS rows.

The index keeps every attribute as one string: multiple values joined by ``\\``, PN component
groups joined by ``=``, text already decoded from its Specific Character Set (so any charset the
archive stores comes out as UTF-8 JSON). This turns such strings into DICOM JSON elements:
keys are 8 upper-hex-digit tags, ``"vr"`` comes from pydicom's dictionary, ``"Value"`` is typed
per VR (IS, DS and the binary integer/float VRs as JSON numbers, PN as objects with
``Alphabetic``/``Ideographic``/``Phonetic``), and an empty value has no ``"Value"`` key (F.2.5).

Values the index cannot represent faithfully (sequences, bulk/binary VRs, unparsable numbers of
binary VRs) are emitted as the bare ``{"vr": ...}``: the attribute is present, its value unknown
to the index, and WADO-RS metadata is the place to get it.

Runs for every row of every QIDO response, so each keyword's tag, VR and converter are resolved
once (``_plan``) and each row is one loop over prepared tuples.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from functools import lru_cache
from typing import Any

from ...index.query import vr_of

# Index string (non-empty) -> "Value" array, or None when there is nothing to show.
Converter = Callable[[str], list[Any] | None]

# VRs with at most one value: a backslash in them is text, not a separator (PS3.5 6.4).
_SINGLE_VALUED = frozenset({"LT", "ST", "UT", "UR"})
_INT_VRS = frozenset({"IS", "US", "SS", "UL", "SL", "UV", "SV"})
_FLOAT_VRS = frozenset({"FL", "FD"})
# The index keeps only strings; for these it cannot hold the value (or only a lossy decoding).
_OPAQUE_VRS = frozenset({"SQ", "OB", "OW", "OF", "OD", "OL", "OV", "UN", "AT"})
_PN_GROUPS = ("Alphabetic", "Ideographic", "Phonetic")


def _int_or_float(text: str) -> int | float | str:
    """IS/DS/binary number text as a JSON number; text that is no number stays text, so a
    malformed stored value is shown rather than dropped."""
    t = text.strip()
    try:
        return int(t)
    except ValueError:
        pass
    try:
        f = float(t)
    except ValueError:
        return t
    if not math.isfinite(f):
        return t  # JSON has no NaN/Infinity
    return int(f) if f.is_integer() and "." not in t and "e" not in t.lower() else f


def _numbers(value: str) -> list[Any] | None:
    if "\\" not in value:
        return [_int_or_float(value)] if value.strip() else None
    out = [_int_or_float(v) if v.strip() else None for v in value.split("\\")]
    return out if any(x is not None for x in out) else None


def _binary_numbers(value: str) -> list[Any] | None:
    out = _numbers(value)
    # A binary VR's index string that does not parse is a lossy decoding: show nothing.
    return None if out is None or any(isinstance(v, str) for v in out) else out


def _pn_one(name: str) -> dict[str, str] | None:
    if "=" not in name:
        return {"Alphabetic": name} if name else None
    groups = name.split("=")
    obj = {_PN_GROUPS[i]: g for i, g in enumerate(groups[:3]) if g}
    return obj or None


def _pn(value: str) -> list[Any] | None:
    if "\\" not in value:
        one = _pn_one(value)
        return [one] if one is not None else None
    out = [_pn_one(v) for v in value.split("\\")]
    return out if any(x is not None for x in out) else None


def _strings(value: str) -> list[Any] | None:
    if "\\" not in value:
        return [value]
    out = [v if v else None for v in value.split("\\")]
    return out if any(x is not None for x in out) else None


def _single(value: str) -> list[Any]:
    return [value]


def _opaque(value: str) -> None:
    return None


def converter(vr: str) -> Converter:
    """The function turning an index string of VR ``vr`` into a DICOM JSON ``Value`` array
    (None: no value to show)."""
    if vr == "PN":
        return _pn
    if vr in ("IS", "DS"):
        return _numbers
    if vr in _INT_VRS or vr in _FLOAT_VRS:
        return _binary_numbers
    if vr in _OPAQUE_VRS:
        return _opaque
    if vr in _SINGLE_VALUED:
        return _single
    return _strings


@lru_cache(maxsize=8192)
def element_spec(keyword: str) -> tuple[str, str, Converter] | None:
    """(tag as 8 upper-hex digits, VR, converter) of a keyword or an 8-hex-digit tag;
    None if it names no attribute (unknown keyword)."""
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        if len(keyword) != 8:
            return None
        try:
            tag = int(keyword, 16)
        except ValueError:
            return None
        try:
            vr = str(dictionary_VR(tag)).split(" ")[0]
        except KeyError:
            vr = "UN"  # private or unknown tag the parser kept
    else:
        vr = vr_of(keyword)
    return f"{tag:08X}", vr, converter(vr)


@lru_cache(maxsize=1024)
def _plan(keywords: tuple[str, ...]) -> tuple[tuple[str, str, str, Converter], ...]:
    """Deduplicated (keyword, tag, vr, converter) in tag order (F.2: objects ordered by tag)."""
    seen: dict[str, tuple[str, str, str, Converter]] = {}
    for kw in keywords:
        spec = element_spec(kw)
        if spec is not None and spec[0] not in seen:
            seen[spec[0]] = (kw, *spec)
    return tuple(seen[t] for t in sorted(seen))


def attrs_json(values: Mapping[str, str], keywords: Iterable[str]) -> dict[str, Any]:
    """DICOM JSON object of ``keywords`` (keywords or 8-hex-digit tags) taken from ``values``
    (index strings). Every known keyword is present; unknown keywords are skipped."""
    kws = keywords if isinstance(keywords, tuple) else tuple(keywords)
    out: dict[str, Any] = {}
    get = values.get
    for kw, tag, vr, conv in _plan(kws):
        v = get(kw)
        val = conv(v) if v else None
        out[tag] = {"vr": vr} if val is None else {"vr": vr, "Value": val}
    return out


__all__ = ["attrs_json", "converter", "element_spec"]
