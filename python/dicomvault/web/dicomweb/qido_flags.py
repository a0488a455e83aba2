"""The analysis flags of a study as QIDO-RS attributes of our own (issue 16, worklist priority).

A study the analysis pipeline flagged carries, in every study-level QIDO-RS row, a private block
of group 0099 (PS3.5 7.8: creator element (0099,0010), elements 0x10xx):

    (0099,0010) LO  "DICOMVAULT ANALYSIS"   private creator
    (0099,1001) CS  highest severity: URGENT, WARNING or INFO
    (0099,1002) UC  the reasons, one value each, most severe first
    (0099,1003) LO  the flag codes, in the same order ("quality.missing_slices", ...)

A study without flags has no block, unless the request names one of these attributes (as a
match key or in includefield), then the elements are present and empty. Request parameters:

    00991001=urgent[,warning...]  studies whose highest severity is one of these (any case);
                                  empty or * only asks for the elements
    flagged=true | false          studies with any flag | with none
    orderby=flag                  flagged studies first (urgent, then warning, then info; newest
                                  first inside each), then the others in the usual order

QIDO-RS has no standard ordering parameter, so `orderby` is ours; it is accepted on study searches
only, like the attributes themselves. The flags are read from the results store
(analysis/results.py): the flagged studies from their own keys (by severity, then the study date
recorded with the result), never by a scan of all studies; their records are loaded newest first,
a chunk at a time, until the page is complete.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ...analysis import results
from ...analysis.api import SEVERITIES
from ...errors import RequestError
from ...index.query import parse_match

CREATOR = "DICOMVAULT ANALYSIS"
CREATOR_TAG, SEVERITY_TAG, REASONS_TAG, CODES_TAG = "00990010", "00991001", "00991002", "00991003"
ELEMENT_TAGS = (CREATOR_TAG, SEVERITY_TAG, REASONS_TAG, CODES_TAG)
_PARAMS = ("flagged", "orderby")
ORDER_FLAG = "flag"


@dataclass(frozen=True, slots=True)
class FlagQuery:
    """The flag part of a study search. ``severities``: only studies whose highest severity is
    one of these (None: no such filter); ``unflagged``: only studies without flags; ``first``:
    flagged studies first; ``include``: the elements on every row, empty where no flag."""

    severities: frozenset[str] | None = None
    unflagged: bool = False
    first: bool = False
    include: bool = False

    @property
    def reorders(self) -> bool:
        return self.severities is not None or self.unflagged or self.first


def is_flag_param(name: str) -> bool:
    return name.lower() in _PARAMS or name.upper() in ELEMENT_TAGS


def is_flag_field(item: str) -> bool:
    """An includefield item naming one of our elements."""
    return item.strip().upper() in ELEMENT_TAGS


def parse(pairs: Sequence[tuple[str, str]], include: bool, level: str) -> FlagQuery | None:
    """The flag parameters of a search (``pairs``: those `is_flag_param` accepted, ``include``:
    includefield named an element); RequestError naming the parameter at fault."""
    if not pairs and not include:
        return None
    if level != "STUDY":
        names = ", ".join(dict.fromkeys(n for n, _ in pairs)) or "includefield=0099xxxx"
        raise RequestError(f"{names}: the analysis flags are study attributes; search /studies")
    severities: frozenset[str] | None = None
    unflagged = first = False
    for name, value in pairs:
        key = name.lower()
        if key == "orderby":
            if value.strip().lower() != ORDER_FLAG:
                raise RequestError(f"orderby={value!r}: the only ordering offered is orderby={ORDER_FLAG}")
            first = True
        elif key == "flagged":
            v = value.strip().lower()
            if v not in ("true", "false"):
                raise RequestError(f"flagged={value!r}: expected true or false")
            if v == "true":
                severities = frozenset(SEVERITIES) if severities is None else severities
            else:
                unflagged = True
        elif name.upper() == SEVERITY_TAG:
            include = True
            items = [s.strip().lower() for s in value.replace("\\", ",").split(",") if s.strip()]
            if not items or items == ["*"]:
                continue
            bad = [s for s in items if s not in SEVERITIES]
            if bad:
                raise RequestError(f"{name}={value!r}: {', '.join(bad)} is not a severity "
                                   f"({', '.join(SEVERITIES)})")
            given = frozenset(items)
            severities = given if severities is None else severities & given
        else:
            include = True  # a match on the creator, reasons or codes: returned, not matched
            if value.strip() not in ("", "*"):
                raise RequestError(f"{name}={value!r}: only {SEVERITY_TAG} (the severity) can be matched")
    if unflagged and severities is not None:
        raise RequestError("flagged=false contradicts flagged=true or a severity match")
    return FlagQuery(severities=severities, unflagged=unflagged, first=first, include=include)


Rows = list[dict[str, str]]
# Flagged studies are loaded this many at a time, newest first, until a page is complete.
CHUNK = 64


def study_rows(index: Any, fq: FlagQuery, query: Mapping[str, str], need: int,
               first_days: Callable[[Iterable[dict[str, str]], int], tuple[Rows, bool]],
               order: Callable[[Rows], None]) -> tuple[Rows, bool]:
    """The study rows of a search the flags filter or reorder: at least ``need`` of them when
    there are, ordered, and whether every match was read. ``first_days`` and ``order`` are
    qido.py's newest-first paging and its ordering of a list of study rows."""
    given = parse_match("StudyInstanceUID", str(query.get("StudyInstanceUID") or ""))
    if fq.severities is not None and not fq.first:
        # newest first across the severities asked for: merged by the dates in the keys
        keys = sorted((k for s in fq.severities for k in results.flagged(index, s)), reverse=True)
        rows, counted = first_days(_load(index, query, keys, given), need)
        order(rows)
        return rows, counted
    head: Rows = []
    if not fq.unflagged:
        for severity in sorted(fq.severities or SEVERITIES, key=lambda s: -results.RANK[s]):
            keys = sorted(results.flagged(index, severity), reverse=True)
            rows, counted = first_days(_load(index, query, keys, given), need - len(head))
            order(rows)
            head += rows
            if not counted:
                return head, False
        if fq.severities is not None:
            return head, True
    every_flagged = results.flagged_studies(index)
    rest: Iterator[dict[str, str]] = (r for r in index.find("STUDY", query)
                                      if r.get("StudyInstanceUID", "") not in every_flagged)
    tail, counted = first_days(rest, max(0, need - len(head)))
    order(tail)
    return head + tail, counted


def _load(index: Any, query: Mapping[str, str], keys: Sequence[tuple[str, str]], given: Any
          ) -> Iterator[dict[str, str]]:
    """The records of the flagged studies ``keys`` ((study date, UID), newest first) that match
    the query, in that order, loaded a chunk at a time as the caller reads on."""
    uids = [uid for _, uid in keys if given.matches(uid)]
    rank = {uid: i for i, uid in enumerate(uids)}
    # These few are put in order here: no newest-first walk of the StudyDate index for them.
    plain = {**query, "StudyDate": str(query.get("StudyDate") or "")}
    for i in range(0, len(uids), CHUNK):
        chunk = uids[i:i + CHUNK]
        rows = list(index.find("STUDY", {**plain, "StudyInstanceUID": "\\".join(chunk)}))
        rows.sort(key=lambda r: rank.get(r.get("StudyInstanceUID", ""), 0))
        yield from rows


def annotate(index: Any, item: dict[str, Any], study_uid: str, include: bool) -> dict[str, Any]:
    """``item`` (a study's DICOM JSON) with the flag elements when the study is flagged or
    ``include``; keys kept in tag order."""
    summary = results.flag_summary(index, study_uid) if study_uid else None
    if summary is None and not include:
        return item
    item[CREATOR_TAG] = {"vr": "LO", "Value": [CREATOR]}
    if summary is None:
        item[SEVERITY_TAG], item[REASONS_TAG], item[CODES_TAG] = {"vr": "CS"}, {"vr": "UC"}, {"vr": "LO"}
    else:
        item[SEVERITY_TAG] = {"vr": "CS", "Value": [summary["severity"].upper()]}
        item[REASONS_TAG] = {"vr": "UC", "Value": list(summary["reasons"])}
        item[CODES_TAG] = {"vr": "LO", "Value": list(summary["codes"])}
    return dict(sorted(item.items()))


__all__ = ["CREATOR", "ELEMENT_TAGS", "FlagQuery", "annotate", "is_flag_field", "is_flag_param", "parse",
           "study_rows"]
