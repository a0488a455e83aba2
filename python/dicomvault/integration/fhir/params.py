"""FHIR search parameters (R4 3.1.1.4 / search.html) as the archive understands them.

Parsing only: each function takes the raw values of one parameter and returns plain values or
raises RequestError naming the parameter and value (HTTP 400). Repeating a parameter is AND,
a comma inside one value is OR (FHIR 3.1.1.4.2). Unknown parameters are refused, not ignored:
a client that believes it filtered on something we do not support must not get everything.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ...errors import RequestError

DCM_SYSTEM = "http://dicom.nema.org/resources/ontology/DCM"
DICOM_UID_SYSTEM = "urn:dicom:uid"
V2_0203 = "http://terminology.hl7.org/CodeSystem/v2-0203"
DEFAULT_COUNT = 20
MAX_COUNT = 100
MAX_OFFSET = 10_000
# Parameters every search takes besides its own.
PAGING = frozenset({"_count", "_offset", "_format"})
_FORMATS = frozenset({"json", "application/json", "application/fhir+json"})
_DATE_RE = re.compile(r"(eq|ne|gt|lt|ge|le|sa|eb|ap)?(\d{4})(?:-(\d{2})(?:-(\d{2}))?)?")
_SUPPORTED_PREFIXES = frozenset({"eq", "gt", "lt", "ge", "le"})


@dataclass(frozen=True, slots=True)
class Token:
    """``[system]|code``: system None = any system (no bar), "" = no system (a leading bar)."""

    system: str | None
    code: str

    def accepts_system(self, system: str | None) -> bool:
        if self.system is None:
            return True
        return self.system == (system or "")


@dataclass(frozen=True, slots=True)
class DayRange:
    """Inclusive ``YYYYMMDD`` bounds (None: open); ``empty`` when the constraints exclude all."""

    lo: str | None = None
    hi: str | None = None

    @property
    def empty(self) -> bool:
        return self.lo is not None and self.hi is not None and self.lo > self.hi

    def dicom_range(self) -> str:
        """The DA range match string of the index (C.2.2.2.5)."""
        if self.lo is not None and self.lo == self.hi:
            return self.lo
        return f"{self.lo or ''}-{self.hi or ''}"

    def intersect(self, other: DayRange) -> DayRange:
        lo = max((x for x in (self.lo, other.lo) if x is not None), default=None)
        hi = min((x for x in (self.hi, other.hi) if x is not None), default=None)
        return DayRange(lo, hi)


def group(params: Sequence[tuple[str, str]], allowed: frozenset[str], resource: str
          ) -> dict[str, list[str]]:
    """name -> values of the query string; RequestError for a name not in ``allowed`` (or
    paging)."""
    out: dict[str, list[str]] = {}
    for name, value in params:
        if name not in allowed and name not in PAGING:
            raise RequestError(f"{resource} search parameter {name!r} is not supported; supported: "
                               f"{', '.join(sorted(allowed | PAGING))}")
        out.setdefault(name, []).append(value)
    fmt = out.get("_format", [])
    for f in fmt:
        if f.strip().lower() not in _FORMATS:
            raise RequestError(f"_format={f!r}: only JSON (json, application/fhir+json) is served")
    return out


def _ors(name: str, value: str) -> list[str]:
    parts = [p.strip() for p in _split_unescaped(value, ",")]
    if not parts or any(not p for p in parts):
        raise RequestError(f"search parameter {name}={value!r}: empty value")
    return parts


def _split_unescaped(value: str, sep: str) -> list[str]:
    """Split at ``sep`` not preceded by a backslash, unescaping ``\\,``, ``\\|``, ``\\$``, ``\\\\``
    (FHIR 3.1.1.4.3)."""
    out, cur, i = [], [], 0
    while i < len(value):
        c = value[i]
        if c == "\\" and i + 1 < len(value):
            cur.append("\\" + value[i + 1])
            i += 2
            continue
        if c == sep:
            out.append("".join(cur))
            cur = []
        else:
            cur.append(c)
        i += 1
    out.append("".join(cur))
    return out


def _unescape(value: str) -> str:
    return re.sub(r"\\([\\,|$])", r"\1", value)


def strings(name: str, value: str) -> list[str]:
    """One string parameter value: a comma list (escapes removed)."""
    return [_unescape(p) for p in _ors(name, value)]


def tokens(name: str, value: str) -> list[Token]:
    """One token parameter value: a comma list of ``[system|]code``."""
    out: list[Token] = []
    for part in _ors(name, value):
        bars = _split_unescaped(part, "|")
        if len(bars) > 2:
            raise RequestError(f"search parameter {name}={value!r}: {part!r} has more than one '|'")
        system = _unescape(bars[0]) if len(bars) == 2 else None
        code = _unescape(bars[-1])
        if not code:
            raise RequestError(f"search parameter {name}={value!r}: {part!r} has no code")
        out.append(Token(system, code))
    return out


def typed_tokens(name: str, value: str) -> list[tuple[Token, str]]:
    """``identifier:of-type`` values: ``type-system|type-code|value`` (comma list)."""
    out: list[tuple[Token, str]] = []
    for part in _ors(name, value):
        bars = [_unescape(b) for b in _split_unescaped(part, "|")]
        if len(bars) != 3 or not bars[1] or not bars[2]:
            raise RequestError(f"search parameter {name}={value!r}: expected "
                               "type-system|type-code|value")
        out.append((Token(bars[0], bars[1]), bars[2]))
    return out


def references(name: str, value: str, resource: str) -> list[str]:
    """Ids named by a reference parameter: ``Resource/id``, a bare ``id`` or an absolute URL
    ending in ``Resource/id``."""
    out: list[str] = []
    for part in _ors(name, value):
        head, sep, tail = part.rpartition("/")
        if sep:
            kind = head.rpartition("/")[2]
            if kind != resource:
                raise RequestError(f"search parameter {name}={value!r}: {part!r} is not a "
                                   f"{resource} reference")
            part = tail
        if not part:
            raise RequestError(f"search parameter {name}={value!r}: empty id")
        out.append(part)
    return out


def _day(y: int, m: int, d: int, name: str, value: str) -> dt.date:
    try:
        return dt.date(y, m, d)
    except ValueError:
        raise RequestError(f"search parameter {name}={value!r}: not a calendar date") from None


def date_range(name: str, values: Sequence[str]) -> DayRange:
    """The days a date parameter allows (every repetition ANDed). Date precision only: a value
    with a time is refused, since the index compares days."""
    rng = DayRange()
    for value in values:
        if "," in value:
            raise RequestError(f"search parameter {name}={value!r}: OR lists of dates are not supported")
        m = _DATE_RE.fullmatch(value.strip())
        if m is None:
            raise RequestError(f"search parameter {name}={value!r}: expected [prefix]YYYY[-MM[-DD]] "
                               "(prefixes eq, gt, lt, ge, le; date precision only)")
        prefix = m.group(1) or "eq"
        if prefix not in _SUPPORTED_PREFIXES:
            raise RequestError(f"search parameter {name}={value!r}: prefix {prefix!r} is not "
                               "supported (eq, gt, lt, ge, le)")
        y = int(m.group(2))
        mo = int(m.group(3)) if m.group(3) else None
        d = int(m.group(4)) if m.group(4) else None
        if mo is None:
            first, last = _day(y, 1, 1, name, value), _day(y, 12, 31, name, value)
        elif d is None:
            first = _day(y, mo, 1, name, value)
            nxt = dt.date(y + 1, 1, 1) if mo == 12 else dt.date(y, mo + 1, 1)
            last = nxt - dt.timedelta(days=1)
        else:
            first = last = _day(y, mo, d, name, value)
        # At day precision each prefix is an interval of days (search.html#prefix).
        fmt = "%Y%m%d"
        one = dt.timedelta(days=1)
        if prefix == "eq":
            step = DayRange(first.strftime(fmt), last.strftime(fmt))
        elif prefix == "ge":
            step = DayRange(first.strftime(fmt), None)
        elif prefix == "gt":
            step = DayRange((last + one).strftime(fmt) if last < dt.date.max else "99999999", None)
        elif prefix == "le":
            step = DayRange(None, last.strftime(fmt))
        else:  # lt
            step = DayRange(None, (first - one).strftime(fmt) if first > dt.date.min else "00000000")
        rng = rng.intersect(step)
    return rng


def paging(groups: dict[str, list[str]]) -> tuple[int, int]:
    """(count, offset) of ``_count`` (default 20, more is cut to 100; 0 = the total only) and
    ``_offset``."""
    def one(name: str, default: int, hi: int, clamp: bool) -> int:
        vals = groups.get(name)
        if not vals:
            return default
        if len(vals) > 1:
            raise RequestError(f"search parameter {name} given {len(vals)} times")
        try:
            n = int(vals[0])
        except ValueError:
            raise RequestError(f"search parameter {name}={vals[0]!r} is not an integer") from None
        if n < 0:
            raise RequestError(f"search parameter {name}={n} must not be negative")
        if n > hi and clamp:
            return hi  # a server may return fewer than asked (search.html#count)
        if n > hi:
            raise RequestError(f"search parameter {name}={n} is above the maximum of {hi}")
        return n

    return one("_count", DEFAULT_COUNT, MAX_COUNT, True), one("_offset", 0, MAX_OFFSET, False)
