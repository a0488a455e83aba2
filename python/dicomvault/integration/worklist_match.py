"""Matching a Modality Worklist C-FIND identifier against an entry, and the response to it
(PS3.4 C.2.2.2 and K.6.1.2).

Every key of the identifier is a return key; a key with a value is also a matching key:
single value (exact; case-insensitive for person names), wildcard (`*`, `?`), range
(`lo-hi`, `lo-`, `-hi` for DA, TM, DT), UID list (`uid1\\uid2`), universal (empty). A
sequence key with an item matches when one item of the entry's sequence matches every key of
that item (sequence matching, K.6.1.2.1: ScheduledProcedureStepSequence carries the station,
modality and dates); a sequence key with no item is universal and returns the whole sequence.
Scheduled start date and time given together match as one date-time range (C.2.2.2.5.1).
Values are Unicode (pydicom applied the request's Specific Character Set).
"""

from __future__ import annotations

import re
from functools import lru_cache

from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue

# Not matching keys: they qualify the query or the encoding (a Query/Retrieve Level has no place in
# a worklist identifier, but some SCUs send one: ignored rather than matched against nothing).
_SKIP_TAGS = {0x00080005, 0x00080052}
_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "AT", "US", "SS", "UL", "SL", "FL", "FD",
               "UV", "SV"}
_RANGE_VRS = {"DA", "TM", "DT"}
START_DATE, START_TIME = 0x00400002, 0x00400003


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value).strip()


@lru_cache(maxsize=256)
def _wildcard(pattern: str, fold: bool) -> re.Pattern[str]:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(rx + r"\Z", re.IGNORECASE | re.DOTALL if fold else re.DOTALL)


def _time_bound(text: str, high: bool) -> str:
    """A TM as HHMMSS.FFFFFF for comparison; a bound is widened to the whole precision it names."""
    t = text.replace(":", "")
    whole, _, frac = t.partition(".")
    fill = "9" if high else "0"
    return whole.ljust(6, fill) + "." + frac.ljust(6, fill)


def _in_range(vr: str, query: str, stored: str) -> bool:
    if not stored:
        return False
    lo, _, hi = query.partition("-")
    if vr == "TM":
        s = _time_bound(stored, False)
        return (not lo or s >= _time_bound(lo, False)) and (not hi or s <= _time_bound(hi, True))
    if vr == "DT":
        return (not lo or stored >= lo) and (not hi or stored[:len(hi)] <= hi)
    return (not lo or stored >= lo) and (not hi or stored <= hi)


def match_value(vr: str, query: str, stored: str) -> bool:
    """C.2.2.2 matching of one non-sequence key value."""
    if not query or vr in _BINARY_VRS:
        return True
    if vr in _RANGE_VRS:
        if "-" in query:
            return _in_range(vr, query, stored)
        if vr == "TM":
            return bool(stored) and _time_bound(stored, False).startswith(query.replace(":", ""))
        return stored == query
    fold = vr == "PN"
    if vr == "UI":
        return stored in query.split("\\")
    for q in query.split("\\"):
        if "*" in q or "?" in q:
            if _wildcard(q, fold).match(stored):
                return True
        elif (q.casefold() == stored.casefold()) if fold else (q == stored):
            return True
    return False


def _datetime_match(q_date: str, q_time: str, s_date: str, s_time: str) -> bool:
    """Date and time ranges together as one date-time range (C.2.2.2.5.1): '20240101-20240102'
    with '2200-0600' is from 2024-01-01 22:00 to 2024-01-02 06:00."""
    if "-" not in q_date or "-" not in q_time:
        return match_value("DA", q_date, s_date) and match_value("TM", q_time, s_time)
    if not s_date:
        return False
    d_lo, _, d_hi = q_date.partition("-")
    t_lo, _, t_hi = q_time.partition("-")
    stored = s_date + _time_bound(s_time or "000000", False)
    lo = (d_lo + _time_bound(t_lo, False)) if d_lo else ""
    hi = (d_hi + _time_bound(t_hi, True)) if d_hi else ""
    return (not lo or stored >= lo) and (not hi or stored <= hi)


def _element_matches(q: DataElement, stored: Dataset) -> bool:
    if q.VR == "SQ":
        items = list(q.value or [])
        if not items:
            return True
        return any(matches(items[0], s) for s in (stored.get(q.tag).value if q.tag in stored else []) or [])
    value = stored[q.tag].value if q.tag in stored else None
    return match_value(q.VR, _text(q.value), _text(value))


def matches(query: Dataset, stored: Dataset) -> bool:
    """Whether `stored` matches every matching key of `query`."""
    q_date = _text(query.get("ScheduledProcedureStepStartDate"))
    q_time = _text(query.get("ScheduledProcedureStepStartTime"))
    together = bool(q_date and q_time)
    for elem in query:
        tag = int(elem.tag)
        if tag in _SKIP_TAGS or elem.tag.is_private or elem.tag.element == 0:
            continue
        if together and tag in (START_DATE, START_TIME):
            continue
        if not _element_matches(elem, stored):
            return False
    if together:
        return _datetime_match(q_date, q_time, _text(stored.get("ScheduledProcedureStepStartDate")),
                               _text(stored.get("ScheduledProcedureStepStartTime")))
    return True


def response(query: Dataset, stored: Dataset) -> Dataset:
    """The response identifier: every key the query asked for, with the entry's value (empty when
    the entry has none); a sequence key with an item returns, per item of the entry's sequence,
    the keys of that item; without an item, the entry's whole sequence."""
    out = Dataset()
    for elem in query:
        tag = int(elem.tag)
        if tag in _SKIP_TAGS or elem.tag.is_private or elem.tag.element == 0:
            continue
        have = stored[elem.tag] if elem.tag in stored else None
        if elem.VR == "SQ":
            items = list(elem.value or [])
            if have is None:
                out.add_new(elem.tag, "SQ", [])
            elif not items:
                out.add_new(elem.tag, "SQ", list(have.value))
            else:
                out.add_new(elem.tag, "SQ", [response(items[0], s) for s in have.value])
        else:
            out.add_new(elem.tag, elem.VR, have.value if have is not None else None)
    return out
