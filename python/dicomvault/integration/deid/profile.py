"""Which Table E.1-1 action applies to an attribute, given the retain options chosen.

An option that names an attribute replaces the Basic Profile's action for it (PS3.15 E.3: the
options are "in addition to" the basic profile and override its actions where they list one).
The two longitudinal temporal options are alternatives: Full Dates keeps dates (K), Modified
Dates cleans them (C), which here is a shift by a per-patient number of days.
"""

from __future__ import annotations

from dataclasses import dataclass

from ...errors import RequestError
from .table_e1_1 import ROWS, Row

# Retain options as the CLI, the configuration and the HTTP body name them -> the option keys of
# table_e1_1 and their CID 7050 code. "dates" is the modified (shifted) form: the one a research
# export normally wants, since full dates identify an encounter.
RETAIN_OPTIONS: dict[str, tuple[str, str, str]] = {
    "dates": ("modified_dates", "113107", "Retain Longitudinal Temporal Information Modified Dates Option"),
    "full-dates": ("full_dates", "113106", "Retain Longitudinal Temporal Information Full Dates Option"),
    "patient": ("patient", "113108", "Retain Patient Characteristics Option"),
    "device": ("device", "113109", "Retain Device Identity Option"),
    "institution": ("institution", "113112", "Retain Institution Identity Option"),
    "private": ("private", "113111", "Retain Safe Private Option"),
}
BASIC_CODE = ("113100", "Basic Application Level Confidentiality Profile")


@dataclass(frozen=True)
class Options:
    """The retain options of one de-identification (names of RETAIN_OPTIONS)."""

    retain: frozenset[str] = frozenset()

    @classmethod
    def parse(cls, names: str | list[str] | tuple[str, ...] | frozenset[str] | None, where: str = "--retain"
              ) -> Options:
        if names is None:
            return cls()
        items = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        items = [n for n in items if n]
        unknown = sorted(n for n in items if n not in RETAIN_OPTIONS)
        if unknown:
            raise RequestError(f"{where}: unknown retain option(s) {', '.join(unknown)} "
                               f"(choose from {', '.join(RETAIN_OPTIONS)})")
        if "dates" in items and "full-dates" in items:
            raise RequestError(f"{where}: dates (shifted) and full-dates are alternatives; give one")
        return cls(frozenset(items))

    @property
    def option_keys(self) -> tuple[str, ...]:
        return tuple(RETAIN_OPTIONS[n][0] for n in sorted(self.retain))

    def codes(self) -> list[tuple[str, str]]:
        """(CID 7050 code value, meaning) of the profile and each option applied."""
        return [BASIC_CODE] + [RETAIN_OPTIONS[n][1:] for n in sorted(self.retain)]

    def temporal(self) -> str:
        """Longitudinal Temporal Information Modified (0028,0303) for this choice."""
        if "full-dates" in self.retain:
            return "UNMODIFIED"
        return "MODIFIED" if "dates" in self.retain else "REMOVED"


def _tag_key(tag: int) -> str:
    return f"{tag:08X}"


_BY_TAG: dict[str, Row] = {r.tag: r for r in ROWS if "x" not in r.tag}
_REPEATING: tuple[Row, ...] = tuple(r for r in ROWS if "x" in r.tag)


def row_for(tag: int) -> Row | None:
    """The Table E.1-1 row of a (public) tag; None for an attribute the table does not list,
    which the profile keeps."""
    row = _BY_TAG.get(_tag_key(tag))
    if row is not None:
        return row
    group, elem = tag >> 16, tag & 0xFFFF
    for r in _REPEATING:  # 50xx,xxxx curves; 60xx,3000 / 60xx,4000 overlays
        if group & 0xFF00 == int(r.tag[:2], 16) << 8 and (r.tag[4:] == "xxxx" or int(r.tag[4:], 16) == elem):
            return r
    return None


def action_for(row: Row, options: Options) -> str:
    """The action code for `row` with `options`: the last option listing the row wins over the
    basic action (only the temporal pair can both list one, and Options refuses that pair)."""
    code = row.basic
    for key in options.option_keys:
        if key in row.options:
            code = row.options[key]
    return code
