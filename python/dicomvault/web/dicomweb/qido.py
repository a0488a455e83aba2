"""QIDO-RS (PS3.18 10.6): query parameters -> index query -> DICOM JSON rows.

Plain functions for the Starlette routes: :func:`parse_qido` validates the raw query string pairs
of a search resource into a :class:`QidoQuery` (``RequestError`` naming the parameter on any bad
one, HTTP 400); :func:`search` runs it against the index and returns the page of DICOM JSON
objects and whether more results matched (the route then adds :func:`warning_header`).

Parameters (10.6.1): ``{attributeID}={value}`` with attributeID a keyword (``PatientID``) or a
tag (``00100020``); repeated keys and comma lists are value lists for UI and CS attributes (UID
list matching, ``ModalitiesInStudy=CT,MR``) and an error for the others; ``includefield``
(repeated and/or comma separated; ``all``), ``fuzzymatching=true|false`` (PN attributes, rule in
index/query.py), ``limit``, ``offset``; the generic ``accept`` and ``charset`` parameters
(PS3.18 8.3.3) are kept for the route. Matching is PS3.4 C.2.2.2 as implemented by
index/query.py (single value, ``*``/``?`` wildcards, date/time ranges, UID lists, case rules).
``{sequence}.{attribute}`` keys: the index holds no sequences, so a universal one is accepted
(as a return key it has no value) and a constraining one is refused naming it.
Study searches also take the analysis flag parameters of qido_flags.py (``00991001=urgent``,
``flagged=true``, ``orderby=flag``), and every flagged study's row carries its private block.

Results are ordered deterministically before ``offset``/``limit`` apply, so pages do not
overlap while the archive does not change:
studies by StudyDate, then StudyTime, newest first (no date last), then StudyInstanceUID;
series by StudyInstanceUID, SeriesNumber (unnumbered last), SeriesInstanceUID;
instances by StudyInstanceUID, SeriesNumber, SeriesInstanceUID, InstanceNumber (unnumbered
last), SOPInstanceUID. A study search asks the index for its matches newest first
(``NewestFirst``: a walk of the StudyDate index when the other keys select little), so it reads
about ``offset + limit`` records plus the rest of the last day, whatever the archive's size; series
and instance searches read every match and sort it, unless the index estimates more than
``SORT_MAX_ROWS`` candidates (``/instances`` of a whole archive): those come in the index's own
order (deterministic while the archive does not change) and stop after ``offset + limit``, so no
request reads the whole archive. Only the returned page is converted to JSON.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from ...errors import RequestError
from ...index import keys
from ...index.errors import QueryError
from ...index.query import (
    FuzzyMatch,
    NewestFirst,
    instance_view,
    parse_match,
    series_view,
    study_view,
    vr_of,
)
from . import qido_flags
from .attrs_json import attrs_json

STUDY, SERIES, IMAGE = "STUDY", "SERIES", "IMAGE"
RESOURCE_LEVELS: dict[str, str] = {"studies": STUDY, "series": SERIES, "instances": IMAGE}

WARNING_TEXT = ("The number of results exceeded the maximum supported by the server. "
                "Additional results can be requested.")

# PS3.18 table 10.6.3-3, plus StudyDescription (every viewer's study list shows it).
STUDY_DEFAULTS: tuple[str, ...] = (
    "SpecificCharacterSet", "StudyDate", "StudyTime", "AccessionNumber", "InstanceAvailability",
    "ModalitiesInStudy", "ReferringPhysicianName", "TimezoneOffsetFromUTC", "RetrieveURL",
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyID",
    "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances", "StudyDescription",
)
# Table 10.6.3-4, plus StudyInstanceUID (a series row names its study).
SERIES_DEFAULTS: tuple[str, ...] = (
    "SpecificCharacterSet", "Modality", "TimezoneOffsetFromUTC", "SeriesDescription", "RetrieveURL",
    "SeriesInstanceUID", "SeriesNumber", "NumberOfSeriesRelatedInstances",
    "PerformedProcedureStepStartDate", "PerformedProcedureStepStartTime",
    "RequestAttributesSequence", "StudyInstanceUID",
)
# Table 10.6.3-5, plus the study and series UIDs of the instance.
INSTANCE_DEFAULTS: tuple[str, ...] = (
    "SpecificCharacterSet", "SOPClassUID", "SOPInstanceUID", "InstanceAvailability",
    "TimezoneOffsetFromUTC", "RetrieveURL", "InstanceNumber", "Rows", "Columns", "BitsAllocated",
    "NumberOfFrames", "StudyInstanceUID", "SeriesInstanceUID",
)
# Keys read for ordering (never returned unless asked for).
_SORT_KEYS: dict[str, tuple[str, ...]] = {
    STUDY: ("StudyDate", "StudyTime", "StudyInstanceUID"),
    SERIES: ("StudyInstanceUID", "SeriesNumber", "SeriesInstanceUID"),
    IMAGE: ("StudyInstanceUID", "SeriesNumber", "SeriesInstanceUID", "InstanceNumber", "SOPInstanceUID"),
}
# Computed here, not held by the index.
_COMPUTED = frozenset({"RetrieveURL", "InstanceAvailability"})
# VRs whose comma-separated or repeated values are a value list (commas cannot occur in them).
_LIST_VRS = frozenset({"UI", "CS"})
_DATE_RE = {
    "DA": re.compile(r"\d{4}(\d{2}(\d{2})?)?|\d{4}\.\d{2}\.\d{2}"),
    "TM": re.compile(r"\d{2}(:?\d{2}(:?\d{2}(\.\d{1,6})?)?)?"),
    "DT": re.compile(r"\d{4}(\d{2}(\d{2}(\d{2}(\d{2}(\d{2}(\.\d{1,6})?)?)?)?)?)?([+-]\d{4})?"),
}
# Above this many estimated candidates a series/instance search is not sorted (module docstring).
SORT_MAX_ROWS = 2000
MAX_OFFSET = 100_000
_RESERVED = frozenset({"includefield", "fuzzymatching", "limit", "offset", "accept", "charset"})


def warning_header(host: str) -> str:
    """Value of the ``Warning`` header for a result cut at the server's maximum (10.6.3.2)."""
    return f'299 {host}: "{WARNING_TEXT}"'


@dataclass(frozen=True, slots=True)
class QidoQuery:
    """A validated QIDO-RS request.

    ``match``: keyword -> C.2.2.2 match string for the index (path UIDs included; PN values are
    :class:`FuzzyMatch` when ``fuzzy``); ``include``: the return attributes asked for beyond the
    defaults (matching keys and includefield); ``empty``: the path and the parameters contradict
    each other, nothing can match.
    """

    resource: str
    level: str
    match: Mapping[str, str] = field(default_factory=dict)
    include: tuple[str, ...] = ()
    include_all: bool = False
    fuzzy: bool = False
    limit: int | None = None
    offset: int = 0
    study_uid: str | None = None
    series_uid: str | None = None
    accept: tuple[str, ...] = ()
    charset: tuple[str, ...] = ()
    empty: bool = False
    flags: qido_flags.FlagQuery | None = None  # the analysis flag parameters (qido_flags.py)


@dataclass(slots=True)
class QidoResult:
    """One page of results: DICOM JSON objects, and whether more matched than returned."""

    items: list[dict[str, Any]]
    truncated: bool
    total: int | None = None  # every match (before offset and limit); None: not counted


# ---------------------------------------------------------------------------- parsing


@lru_cache(maxsize=4096)
def _keyword(name: str) -> str | None:
    """Keyword named by a keyword or an 8-hex-digit tag (None: no standard attribute)."""
    from pydicom.datadict import keyword_for_tag, tag_for_keyword

    if len(name) == 8 and all(c in "0123456789abcdefABCDEF" for c in name):
        return keyword_for_tag(int(name, 16)) or None
    return name if tag_for_keyword(name) is not None else None


def _attribute(param: str) -> tuple[str, str | None]:
    """(keyword, nested keyword of a dotted form or None); RequestError naming ``param``."""
    head, _, rest = param.partition(".")
    kw = _keyword(head)
    if kw is None:
        raise RequestError(f"unknown query parameter {param!r}: not a DICOM keyword or tag "
                           f"nor one of {', '.join(sorted(_RESERVED))}")
    if not rest:
        return kw, None
    if vr_of(kw) != "SQ":
        raise RequestError(f"query parameter {param!r}: {kw} is not a sequence")
    nested = rest.split(".")
    for part in nested:
        if _keyword(part) is None:
            raise RequestError(f"query parameter {param!r}: {part!r} is not a DICOM keyword or tag")
    return kw, _keyword(nested[-1])


def _check_value(param: str, kw: str, value: str) -> None:
    """Refuse match strings the index would silently never match (bad dates, wildcards in
    dates/times) and those it rejects (bad ranges), naming the parameter."""
    vr = vr_of(kw)
    try:
        parse_match(kw, value)
    except QueryError as exc:
        raise RequestError(f"query parameter {param}={value!r}: {exc}") from exc
    rx = _DATE_RE.get(vr)
    s = value.strip()
    if rx is None or s in ("", "*", '""'):
        return
    if "*" in s or "?" in s:
        raise RequestError(f"query parameter {param}={value!r}: no wildcards in a {vr} value")
    for item in s.split("\\"):
        if vr == "DT" and "-" in item:
            continue  # a range or a UTC offset: the index's range parsing decides
        for bound in item.split("-"):
            if bound and not rx.fullmatch(bound):
                raise RequestError(f"query parameter {param}={value!r}: {bound!r} is not a {vr} value")


def _int_param(name: str, values: list[str], minimum: int) -> int:
    if len(values) != 1:
        raise RequestError(f"query parameter {name} given {len(values)} times")
    try:
        n = int(values[0])
    except ValueError:
        raise RequestError(f"query parameter {name}={values[0]!r}: not an integer") from None
    if n < minimum:
        raise RequestError(f"query parameter {name}={n}: must be >= {minimum}")
    return n


def _bool_param(name: str, values: list[str]) -> bool:
    vals = {v.strip().lower() for v in values}
    if not vals <= {"true", "false"} or len(vals) != 1:
        raise RequestError(f"query parameter {name}={','.join(values)!r}: expected true or false")
    return vals == {"true"}


def _includefields(values: list[str]) -> tuple[tuple[str, ...], bool, bool]:
    """(keywords, all, an analysis flag element named)"""
    out: list[str] = []
    include_all = flag_fields = False
    for v in values:
        for item in v.split(","):
            item = item.strip()
            if not item:
                continue
            if item.lower() == "all":
                include_all = True
                continue
            if qido_flags.is_flag_field(item):
                flag_fields = True
                continue
            kw = _keyword(item.partition(".")[0])
            if kw is None:
                raise RequestError(f"includefield {item!r}: not a DICOM keyword or tag")
            out.append(kw)
    return tuple(dict.fromkeys(out)), include_all, flag_fields


def parse_qido(resource: str, params: Sequence[tuple[str, str]], *, study_uid: str | None = None,
               series_uid: str | None = None) -> QidoQuery:
    """Validate a QIDO-RS search: ``resource`` "studies", "series" or "instances" (the level of
    the resource path), ``params`` the raw query string pairs, ``study_uid``/``series_uid`` the
    UIDs of the path (``/studies/{s}/series/{se}/instances``). RequestError names any bad one."""
    level = RESOURCE_LEVELS.get(resource)
    if level is None:
        raise RequestError(f"unknown QIDO-RS resource {resource!r}; expected studies, series or instances")
    reserved: dict[str, list[str]] = {}
    attrs: dict[str, list[tuple[str, str]]] = {}  # keyword -> [(param name, value)]
    flag_params: list[tuple[str, str]] = []
    for name, value in params:
        lname = name.lower()
        if lname in _RESERVED:
            reserved.setdefault(lname, []).append(value)
            continue
        if qido_flags.is_flag_param(name):
            flag_params.append((name, value))
            continue
        kw, nested = _attribute(name)
        if nested is not None:
            if parse_match(nested, value).constrains:
                raise RequestError(f"query parameter {name}={value!r}: matching on attributes "
                                   "inside sequences is not supported")
            attrs.setdefault(kw, [])
            continue
        attrs.setdefault(kw, []).append((name, value))

    fuzzy = _bool_param("fuzzymatching", reserved["fuzzymatching"]) if "fuzzymatching" in reserved else False
    limit = _int_param("limit", reserved["limit"], 0) if "limit" in reserved else None
    offset = _int_param("offset", reserved["offset"], 0) if "offset" in reserved else 0
    if offset > MAX_OFFSET:
        # A page past this would walk (and decode) every record before it; narrow the query.
        raise RequestError(f"offset={offset} is past the {MAX_OFFSET:,} results a search may page through; "
                           "narrow the query (e.g. a StudyDate range)")
    include, include_all, flag_fields = _includefields(reserved.get("includefield", []))
    flags = qido_flags.parse(flag_params, flag_fields or include_all and level == STUDY, level)

    match: dict[str, str] = {}
    for kw, pairs in attrs.items():
        if not pairs:
            match.setdefault(kw, "")
            continue
        vr = vr_of(kw)
        if len(pairs) > 1 and vr not in _LIST_VRS:
            raise RequestError(f"query parameter {pairs[0][0]} given {len(pairs)} times; only UID "
                               "and code string attributes take value lists")
        if vr in _LIST_VRS:
            parts = [p.strip() for _, v in pairs for p in v.replace(",", "\\").split("\\")]
            value = "\\".join(p for p in parts if p) if any(v.strip() for _, v in pairs) else ""
        else:
            value = pairs[0][1]
        _check_value(pairs[0][0], kw, value)
        match[kw] = FuzzyMatch(value) if fuzzy and vr == "PN" else value

    empty = False
    for kw, uid in (("StudyInstanceUID", study_uid), ("SeriesInstanceUID", series_uid)):
        if uid is None:
            continue
        uid = keys.norm_uid(uid)
        given = match.get(kw)
        if given is not None and not parse_match(kw, given).matches(uid):
            empty = True  # /studies/{s}/series?StudyInstanceUID=<another>
        match[kw] = uid
    return QidoQuery(
        resource=resource, level=level, match=match, include=include, include_all=include_all,
        fuzzy=fuzzy, limit=limit or None, offset=offset,
        study_uid=keys.norm_uid(study_uid) if study_uid else None,
        series_uid=keys.norm_uid(series_uid) if series_uid else None,
        accept=tuple(reserved.get("accept", ())), charset=tuple(reserved.get("charset", ())),
        empty=empty, flags=flags,
    )


# ---------------------------------------------------------------------------- searching


def return_keywords(q: QidoQuery) -> tuple[str, ...]:
    """The attributes every row of ``q`` carries (defaults of the level and of the levels above
    that the resource does not fix, matching keys, includefield), in no particular order."""
    if q.level == STUDY:
        base = STUDY_DEFAULTS
    elif q.level == SERIES:
        base = SERIES_DEFAULTS if q.study_uid else SERIES_DEFAULTS + STUDY_DEFAULTS
    elif q.series_uid:
        base = INSTANCE_DEFAULTS
    elif q.study_uid:
        base = INSTANCE_DEFAULTS + SERIES_DEFAULTS
    else:
        base = INSTANCE_DEFAULTS + SERIES_DEFAULTS + STUDY_DEFAULTS
    return tuple(dict.fromkeys((*base, *q.match, *q.include)))


def _int_or_none(v: str | None) -> int | None:
    return keys.parse_int(v) if v else None


def _order(level: str, rows: list[dict[str, str]]) -> None:
    """Sort in place (see the module docstring)."""
    if level == STUDY:
        rows.sort(key=lambda r: r.get("StudyInstanceUID", ""))
        # Stable and reversed only on the date: the UID order of equal dates survives.
        rows.sort(key=lambda r: (keys.norm_date(r.get("StudyDate")), keys.norm_time(r.get("StudyTime"))),
                  reverse=True)
        return

    def num(v: str | None) -> tuple[bool, int]:
        n = _int_or_none(v)
        return (n is None, n or 0)

    if level == SERIES:
        rows.sort(key=lambda r: (r.get("StudyInstanceUID", ""), num(r.get("SeriesNumber")),
                                 r.get("SeriesInstanceUID", "")))
    else:
        rows.sort(key=lambda r: (r.get("StudyInstanceUID", ""), num(r.get("SeriesNumber")),
                                 r.get("SeriesInstanceUID", ""), num(r.get("InstanceNumber")),
                                 r.get("SOPInstanceUID", "")))


def _full_view(index: Any, level: str, row: Mapping[str, str]) -> dict[str, str]:
    """Every attribute the index holds for the row's entity (includefield=all)."""
    out: dict[str, str] = {}
    study = index.get_study(row.get("StudyInstanceUID", ""))
    if study is not None:
        out.update(study_view(study))
    if level in (SERIES, IMAGE):
        se = index.get_series(row.get("SeriesInstanceUID", ""))
        if se is not None:
            out.update(se.attrs)
            out.update(series_view(se))
    if level == IMAGE:
        inst = index.get_instance(row.get("SOPInstanceUID", ""))
        if inst is not None:
            out.update(inst.attrs)
            out.update(instance_view(inst))
    out.update({k: v for k, v in row.items() if v})
    return out


def _retrieve_url(base_url: str, level: str, row: Mapping[str, str]) -> str:
    url = f"{base_url.rstrip('/')}/studies/{row.get('StudyInstanceUID', '')}"
    if level == STUDY:
        return url
    url += f"/series/{row.get('SeriesInstanceUID', '')}"
    return url if level == SERIES else f"{url}/instances/{row.get('SOPInstanceUID', '')}"


def search(index: Any, q: QidoQuery, *, max_results: int = 1000, base_url: str | None = None
           ) -> QidoResult:
    """Run ``q`` against ``index`` (an :class:`dicomvault.index.Index`): at most
    ``min(q.limit, max_results)`` rows from ``q.offset``, as DICOM JSON objects.

    ``base_url`` (the public ``.../dicom-web`` root) adds RetrieveURL to every row; without it
    RetrieveURL is left out. InstanceAvailability is ONLINE (every tier is read transparently).
    """
    if q.empty:
        return QidoResult([], False, 0)
    wanted = return_keywords(q)
    if base_url is None:
        wanted = tuple(k for k in wanted if k != "RetrieveURL")
    # Every returned and sort key is a universal return key of the index query, then the matches.
    query: dict[str, str] = dict.fromkeys(
        (k for k in (*wanted, *_SORT_KEYS[q.level]) if k not in _COMPUTED), "")
    query.update(q.match)
    size = min(q.limit or max_results, max_results)
    try:
        if q.level == STUDY:
            query["StudyDate"] = NewestFirst(query.get("StudyDate") or "")
            if q.flags is not None and q.flags.reorders:
                rows, counted = qido_flags.study_rows(index, q.flags, query, q.offset + size + 1,
                                                      _first_days, lambda r: _order(STUDY, r))
            else:
                rows, counted = _first_days(index.find(STUDY, query), q.offset + size + 1)
                _order(STUDY, rows)
        elif index.explain(q.level, query)["estimate"] > SORT_MAX_ROWS:
            rows = list(index.find(q.level, query, q.offset + size + 1))
            counted = len(rows) <= q.offset + size
        else:
            rows = list(index.find(q.level, query))
            counted = True
            _order(q.level, rows)
    except QueryError as exc:
        raise RequestError(f"QIDO-RS {q.resource} query: {exc}") from exc
    page = rows[q.offset: q.offset + size]
    items: list[dict[str, Any]] = []
    for row in page:
        values: Mapping[str, str] = _full_view(index, q.level, row) if q.include_all else row
        values = {**values, "InstanceAvailability": "ONLINE"}
        if base_url is not None:
            values["RetrieveURL"] = _retrieve_url(base_url, q.level, row)
        kws: Iterable[str] = wanted
        if q.include_all:
            kws = (*wanted, *(k for k, v in values.items() if v))
        item = attrs_json(values, tuple(kws))
        if q.level == STUDY:
            item = qido_flags.annotate(index, item, row.get("StudyInstanceUID", ""),
                                       q.flags is not None and q.flags.include)
        items.append(item)
    return QidoResult(items, len(rows) > q.offset + len(page), len(rows) if counted else None)


def _first_days(rows: Iterable[dict[str, str]], need: int) -> tuple[list[dict[str, str]], bool]:
    """At least ``need`` rows of a newest-first stream, completed to the end of the last row's
    StudyDate (the order inside one date is ours to set); True if the stream was exhausted."""
    out: list[dict[str, str]] = []
    last = ""
    for row in rows:
        day = keys.norm_date(row.get("StudyDate"))
        if len(out) >= need and day != last:
            return out, False
        out.append(row)
        last = day
    return out, True


__all__ = [
    "INSTANCE_DEFAULTS",
    "RESOURCE_LEVELS",
    "SERIES_DEFAULTS",
    "STUDY_DEFAULTS",
    "WARNING_TEXT",
    "QidoQuery",
    "QidoResult",
    "parse_qido",
    "return_keywords",
    "search",
    "warning_header",
]
