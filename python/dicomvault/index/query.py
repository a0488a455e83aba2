"""C-FIND / QIDO matching (PS3.4 C.2.2.2) and candidate selection.

A query is a level (PATIENT, STUDY, SERIES, IMAGE) and a dict keyword ->
match string.  Every key in the dict is a *return key*; the non-universal
ones are also *matching keys*.  Supported match forms (:func:`parse_match`):

* universal: ``""`` or ``"*"`` (matches anything, including absent values);
* empty value: ``'""'`` (matches only absent/zero-length values);
* single value: exact, case-sensitive except PN (case-insensitive, normalised
  like the index: upper-case, trailing empty ``^`` components dropped);
* wildcard: ``*`` (any run) and ``?`` (one character);
* range for DA/TM/DT: ``A-B``, ``A-``, ``-B`` (inclusive; a partial upper
  bound includes every value it prefixes);
* list: ``a\\b\\c`` (UID list matching for UI; for other VRs each element is a
  single-value or wildcard matcher, any may match: the form QIDO uses for
  comma lists).

Stored multi-valued attributes (``CT\\MR``) match if any value matches.  A key
that the entity does not hold matches only universal and empty-value keys.

Fuzzy matching (QIDO ``fuzzymatching=true``; ``find(..., fuzzy=True)`` or a
:class:`FuzzyMatch` match string) applies to PN keys only; other keys keep the
rules above.  The rule: the query is split into words at spaces, ``^``, ``=``
and ``,``; every word must match the *start* of some word of the stored name,
whose words are its components (family, given, middle, prefix, suffix) of every
component group (alphabetic, ideographic, phonetic), themselves split at
spaces.  Case-insensitive, order-independent ("smi joh" matches
``Smith^John`` and ``John^Smith``); two query words may match the same stored
word.  ``*`` and ``?`` inside a word keep their meaning (``*ith`` matches
``SMITH``: the word pattern is anchored at the start of a stored word and open
at its end).  A ``\\`` list of names matches if any of them does.  Served by
the PatientName index (entries scanned key-only, the words matched per target
aggregated, so a study is a candidate only if all words found a component)
instead of loading every record.

Newest first (QIDO's study list; ``find(..., newest_first=True)`` or a
:class:`NewestFirst` StudyDate match string, STUDY level only): results come
grouped by StudyDate, newest first, undated studies last (order inside one
date unspecified).  If the cheapest source yields at most ``ORDERED_SORT_MAX``
candidates they are all loaded and sorted; otherwise the StudyDate index is
walked backwards (within the date matcher's range when it has one), so a
``limit`` stops the query after about ``limit`` records however large the
archive, and undated studies follow from a key-only scan of the studies.

Planning: every matching key served by a primary key or a secondary index
(at the query level or, for SERIES/IMAGE, an upper level expanded downwards)
becomes a candidate source.  Each source is probed (up to ``PROBE_CAP``
index entries) and scaled by the average fan-out to the query level; the
cheapest source is scanned, its candidates are loaded with multi-gets, and
*all* matching keys are checked in Python on the stored record.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Container, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from itertools import islice
from typing import Any

from rocksdict import ReadOptions

from .. import _native  # type: ignore[attr-defined]
from . import keys, secondary
from .errors import QueryError
from .records import InstanceRecord, PatientRecord, SeriesRecord, Stats, StudyRecord
from .schema import CF_IDX, CF_INSTANCES, CF_PATIENTS, CF_SERIES, CF_STUDIES
from .secondary import IMAGE, PATIENT, SERIES, STUDY, IndexSpec
from .wildcard import Wildcard

LEVELS: tuple[str, ...] = (PATIENT, STUDY, SERIES, IMAGE)
_LEVEL_ALIASES = {"INSTANCE": IMAGE, "IMAGES": IMAGE, "INSTANCES": IMAGE, "STUDIES": STUDY,
                  "PATIENTS": PATIENT}
UNIQUE_KEY: dict[str, str] = {
    PATIENT: "PatientID", STUDY: "StudyInstanceUID", SERIES: "SeriesInstanceUID",
    IMAGE: "SOPInstanceUID",
}
PROBE_CAP = 512
_CHUNK = 256
_FIRST_CHUNK = 16

# VRs of the keywords we index or compute; others are looked up in pydicom's
# dictionary on first use (importing pydicom costs ~0.3 s, so avoid it).
_KNOWN_VR: dict[str, str] = {
    "PatientName": "PN", "PatientID": "LO", "IssuerOfPatientID": "LO", "PatientBirthDate": "DA",
    "PatientBirthTime": "TM", "PatientSex": "CS", "OtherPatientIDs": "LO", "OtherPatientNames": "PN",
    "StudyInstanceUID": "UI", "StudyDate": "DA", "StudyTime": "TM", "AccessionNumber": "SH",
    "StudyID": "SH", "ReferringPhysicianName": "PN", "StudyDescription": "LO",
    "ModalitiesInStudy": "CS", "SOPClassesInStudy": "UI", "NumberOfStudyRelatedSeries": "IS",
    "NumberOfStudyRelatedInstances": "IS", "NumberOfPatientRelatedStudies": "IS",
    "NumberOfPatientRelatedSeries": "IS", "NumberOfPatientRelatedInstances": "IS",
    "SeriesInstanceUID": "UI", "Modality": "CS", "SeriesNumber": "IS", "SeriesDescription": "LO",
    "SeriesDate": "DA", "SeriesTime": "TM", "NumberOfSeriesRelatedInstances": "IS",
    "BodyPartExamined": "CS", "PerformedProcedureStepStartDate": "DA",
    "PerformedProcedureStepStartTime": "TM", "SOPInstanceUID": "UI", "SOPClassUID": "UI",
    "InstanceNumber": "IS", "AcquisitionDate": "DA", "ContentDate": "DA", "AcquisitionTime": "TM",
    "ContentTime": "TM", "AcquisitionDateTime": "DT", "AvailableTransferSyntaxUID": "UI",
    "InstitutionName": "LO", "PhysiciansOfRecord": "PN", "NameOfPhysiciansReadingStudy": "PN",
    "PerformingPhysicianName": "PN", "OperatorsName": "PN", "FrameOfReferenceUID": "UI",
    "Manufacturer": "LO", "StationName": "SH", "ProtocolName": "LO", "Laterality": "CS",
}
_COUNT_KEYS_PATIENT = frozenset(
    {"NumberOfPatientRelatedStudies", "NumberOfPatientRelatedSeries", "NumberOfPatientRelatedInstances"}
)


@lru_cache(maxsize=4096)
def vr_of(keyword: str) -> str:
    """VR of a DICOM keyword (``LO`` for unknown/private keywords)."""
    vr = _KNOWN_VR.get(keyword)
    if vr is not None:
        return vr
    from pydicom.datadict import dictionary_VR, tag_for_keyword

    tag = tag_for_keyword(keyword)
    if tag is None:
        return "LO"
    try:
        return str(dictionary_VR(tag)).split(" ")[0]
    except KeyError:
        return "LO"


def normalise_level(level: str) -> str:
    """Upper-case and validate a Query/Retrieve level name."""
    lv = level.strip().upper()
    lv = _LEVEL_ALIASES.get(lv, lv)
    if lv not in LEVELS:
        raise QueryError(f"unknown query level {level!r}; expected one of {', '.join(LEVELS)}")
    return lv


# ---------------------------------------------------------------------------
# Matchers
# ---------------------------------------------------------------------------

UNIVERSAL = "universal"
EMPTY = "empty"
SINGLE = "single"
WILDCARD = "wildcard"
RANGE = "range"
LIST = "list"
FUZZY = "fuzzy"

# Separators of query words and stored name words for fuzzy PN matching.
_FUZZY_QUERY_SPLIT = re.compile(r"[\s^=,]+")
_FUZZY_NAME_SPLIT = re.compile(r"[\s^=]+")
# A key-only scan of a name index costs about this fraction of loading and checking a record.
FUZZY_SCAN_COST = 0.2


# An ordered STUDY query whose cheapest source yields at most this many candidates sorts them;
# above it, it walks the StudyDate index backwards instead.
ORDERED_SORT_MAX = 2048


class NewestFirst(str):
    """A StudyDate match string that also asks for STUDY results newest first (see the module
    docstring). A ``str`` so it travels unchanged through ``Index.find(level, query)``."""

    __slots__ = ()


class FuzzyMatch(str):
    """A PN match string to be matched fuzzily (see the module docstring).

    A ``str`` so it travels unchanged through ``Index.find(level, query)``; on a non-PN key it
    is an ordinary match string.
    """

    __slots__ = ()


def fuzzy_words(name: str) -> list[str]:
    """Words of a normalised stored name (components of every group, split at spaces)."""
    return [w for w in _FUZZY_NAME_SPLIT.split(name) if w]


def _norm_literal(vr: str, value: str) -> str:
    if vr == "PN":
        return keys.norm_pn(value)
    if vr == "DA":
        return keys.norm_date(value)
    if vr == "TM":
        return keys.norm_time(value)
    if vr == "UI":
        return keys.norm_uid(value)
    return keys.norm_text(value)


def _stored_values(vr: str, value: str | None) -> list[str]:
    """Normalised stored values to compare against (multi-valued split)."""
    if not value:
        return []
    out: list[str] = []
    for v in value.split("\\"):
        if vr == "PN":
            n = keys.norm_pn(v)
            if n:
                out.append(n)
                if "=" in n:
                    out.extend(g for g in n.split("=") if g)
        else:
            n = _norm_literal(vr, v)
            if n:
                out.append(n)
    return out


@dataclass(slots=True)
class Matcher:
    """One parsed C.2.2.2 match string for one keyword."""

    keyword: str
    vr: str
    kind: str
    raw: str
    value: str = ""  # SINGLE: normalised literal; WILDCARD: literal prefix
    lo: str = ""  # RANGE lower bound ("" = open)
    hi: str = ""  # RANGE upper bound ("" = open)
    regex: Wildcard | None = None
    items: list[Matcher] = field(default_factory=list)
    # FUZZY: one (literal prefix, pattern or None) per query word; all must find a stored word.
    words: list[tuple[str, Wildcard | None]] = field(default_factory=list)

    @property
    def constrains(self) -> bool:
        """False for universal matching (a pure return key)."""
        return self.kind != UNIVERSAL

    def matches(self, stored: str | None) -> bool:
        """Does the stored (raw, possibly multi-valued) value satisfy this key?"""
        if self.kind == UNIVERSAL:
            return True
        values = _stored_values(self.vr, stored)
        if self.kind == EMPTY:
            return not values
        return any(self._match_one(v) for v in values)

    def _match_one(self, v: str) -> bool:
        k = self.kind
        if k == SINGLE:
            return v == self.value
        if k == WILDCARD:
            return self.regex is not None and self.regex.fullmatch(v)
        if k == RANGE:
            if self.lo and v < self.lo:
                return False
            return not self.hi or v <= self.hi or v.startswith(self.hi)
        if k == LIST:
            return any(m._match_one(v) for m in self.items)
        if k == FUZZY:
            names = fuzzy_words(v)
            return all(any(_word_hits(w, n) for n in names) for w in self.words)
        return False

    def word_mask(self, term: str) -> int:
        """FUZZY: bit i set if query word i matches a word of ``term`` (a normalised name)."""
        names = fuzzy_words(term)
        mask = 0
        for i, w in enumerate(self.words):
            if any(_word_hits(w, n) for n in names):
                mask |= 1 << i
        return mask


def _word_hits(word: tuple[str, Wildcard | None], name: str) -> bool:
    prefix, rx = word
    if rx is None:
        return name.startswith(prefix)
    return rx.fullmatch(name)  # the word's pattern ends with "*": open at the end


def _parse_element(keyword: str, vr: str, s: str) -> Matcher:
    if "*" in s or "?" in s:
        pat = s.upper() if vr == "PN" else s
        cut = min(i for i in (pat.find("*"), pat.find("?")) if i >= 0)
        return Matcher(keyword, vr, WILDCARD, s, value=pat[:cut], regex=Wildcard(pat))
    return Matcher(keyword, vr, SINGLE, s, value=_norm_literal(vr, s))


def _parse_fuzzy(keyword: str, s: str) -> Matcher:
    words: list[tuple[str, Wildcard | None]] = []
    for w in _FUZZY_QUERY_SPLIT.split(s.upper()):
        if not w or w.strip("*") == "":
            continue  # a lone "*" word constrains nothing
        if "*" in w or "?" in w:
            words.append(("", Wildcard(w + "*")))
        else:
            words.append((w, None))
    if not words:
        return Matcher(keyword, "PN", UNIVERSAL, s)
    return Matcher(keyword, "PN", FUZZY, s, words=words)


def parse_match(keyword: str, match: str | None, fuzzy: bool = False) -> Matcher:
    """Parse one C.2.2.2 match string for ``keyword`` (VR from the dictionary).

    ``fuzzy`` (or a :class:`FuzzyMatch` string) selects fuzzy matching for PN keywords.
    """
    vr = vr_of(keyword)
    fuzzy = (fuzzy or isinstance(match, FuzzyMatch)) and vr == "PN"
    s = (match or "").strip(" \x00")
    if s == "" or s.strip("*") == "":
        return Matcher(keyword, vr, UNIVERSAL, s)
    if s == '""':
        return Matcher(keyword, vr, EMPTY, s)
    if fuzzy:
        alts = [_parse_fuzzy(keyword, p) for p in s.split("\\") if p.strip()]
        if any(not m.constrains for m in alts) or not alts:
            return Matcher(keyword, vr, UNIVERSAL, s)
        return alts[0] if len(alts) == 1 else Matcher(keyword, vr, LIST, s, items=alts)
    if vr in ("DA", "TM", "DT") and "-" in s and "\\" not in s:
        if s.count("-") != 1:
            raise QueryError(f"bad range {s!r} for {keyword} ({vr}): expected A-B, A- or -B")
        lo, hi = (_norm_literal(vr, p) for p in s.split("-"))
        if lo and hi and lo > hi:
            raise QueryError(f"empty range {s!r} for {keyword}: lower bound after upper bound")
        return Matcher(keyword, vr, RANGE, s, lo=lo, hi=hi)
    if "\\" in s:
        items = [_parse_element(keyword, vr, p.strip()) for p in s.split("\\") if p.strip()]
        if not items:
            return Matcher(keyword, vr, UNIVERSAL, s)
        if len(items) == 1:
            return items[0]
        return Matcher(keyword, vr, LIST, s, items=items)
    return _parse_element(keyword, vr, s)


def parse_query(query: Mapping[str, str | None], fuzzy: bool = False) -> list[Matcher]:
    """Parse every key of a query dict (``fuzzy``: fuzzy matching on every PN key)."""
    out = []
    for kw, m in query.items():
        if not isinstance(kw, str) or not kw:
            raise QueryError(f"query keys must be DICOM keywords, got {kw!r}")
        out.append(parse_match(kw, m if m is None or isinstance(m, str) else str(m), fuzzy))
    return out


# ---------------------------------------------------------------------------
# Candidate sources
# ---------------------------------------------------------------------------

Range = tuple[bytes, bytes | None]


def _literal_ranges(m: Matcher, prefix: bytes, kind: str) -> list[Range] | None:
    """Key ranges (within ``prefix``) holding every term that may match ``m``."""
    if m.kind == SINGLE:
        term = m.value
        if not term:
            return None
        lo = prefix + keys.encode(term)
        return [(lo, keys.prefix_upper_bound(lo))]
    if m.kind == WILDCARD:
        lit = m.value.rstrip("^") if kind == secondary.PN else m.value
        if not lit:
            return None
        lo = prefix + keys.encode_prefix(lit)
        return [(lo, keys.prefix_upper_bound(lo))]
    if m.kind == RANGE:
        lo = prefix + keys.encode_prefix(m.lo) if m.lo else prefix
        hi_base = prefix + keys.encode_prefix(m.hi) if m.hi else prefix
        return [(lo, keys.prefix_upper_bound(hi_base) if hi_base else None)]
    if m.kind == LIST:
        out: list[Range] = []
        for item in m.items:
            r = _literal_ranges(item, prefix, kind)
            if r is None:
                return None
            out.extend(r)
        return out
    return None


def scan(cf: Any, lo: bytes, hi: bytes | None) -> Iterator[tuple[bytes, bytes]]:
    """(key, value) pairs with lo <= key < hi."""
    ro = ReadOptions()
    if hi is not None:
        ro.set_iterate_upper_bound(hi)
    it = cf.iter(ro)
    it.seek(lo)
    while it.valid():
        yield it.key(), it.value()
        it.next()


def scan_keys(cf: Any, lo: bytes, hi: bytes | None) -> Iterator[bytes]:
    """Keys with lo <= key < hi."""
    ro = ReadOptions()
    if hi is not None:
        ro.set_iterate_upper_bound(hi)
    # rocksdict's own key iterator: one call per key where valid()/key()/next() were three (a
    # 2,000-image study's hierarchy entries: 0.6 -> 0.4 ms). Delegated from this generator, not
    # returned: the iterator does not keep `ro` alive, and without it the upper bound is gone
    # (seen: a scan that stopped after 14 of 2,000 entries).
    yield from cf.keys(from_key=lo, read_opt=ro)


def scan_keys_reverse(cf: Any, lo: bytes, hi: bytes | None) -> Iterator[bytes]:
    """Keys with lo <= key < hi, largest first."""
    ro = ReadOptions()
    ro.set_iterate_lower_bound(lo)
    if hi is not None:
        ro.set_iterate_upper_bound(hi)
    it = cf.iter(ro)
    if hi is None:
        it.seek_to_last()
    else:
        it.seek_for_prev(hi)
    while it.valid():
        k = it.key()
        if hi is None or k < hi:  # seek_for_prev stops on hi itself when that key exists
            yield k
        it.prev()


def _after_term(k: bytes) -> bytes:
    """Target part of an idx key: everything after the id byte and the term. The terminator is
    searched for, not decoded (as in _sop_from_hierarchy: an escaped NUL is 00 FF, never 00 01):
    a STUDY query reads one such key per candidate."""
    return k[k.index(keys.TERM, 1) + 2:]


def _series_from_uid_entry(k: bytes) -> bytes:
    """0x20 E(series) E(study) -> series CF key E(study) E(series)."""
    pos = keys.decode_at(k, 1)[1]
    return k[pos:] + k[1:pos]


def _sop_from_hierarchy(k: bytes) -> bytes:
    """0x?? E(study) E(series) u32 number SOP -> the SOP Instance UID key. The terminator is
    searched for, not decoded: an escaped NUL is 00 FF, never 00 01."""
    pos = k.index(keys.TERM, 1) + 2
    pos = k.index(keys.TERM, pos) + 2
    return k[pos + 4:]


def _identity(k: bytes) -> bytes:
    return k


@dataclass(slots=True)
class Source:
    """A way to enumerate candidate keys at ``level`` (CF keys of that level)."""

    name: str
    cf: Any
    ranges: list[Range]
    extract: Callable[[bytes], bytes]
    level: str

    # Keys found by a probe that saw every entry (fewer than the cap): the scan is not repeated.
    probed: list[bytes] | None = None
    # Cost estimate of a source that is not probed (a filtered scan); None = probe it.
    estimate: float | None = None
    # A matcher every candidate of this source satisfies by construction (an exact unique key:
    # the entity and what the hierarchy holds under it), so records need not be checked for it.
    implies: Matcher | None = None

    def keys(self) -> Iterator[bytes]:
        """Candidate keys at ``self.level`` (may contain duplicates)."""
        if self.probed is not None:
            yield from self.probed
            return
        for lo, hi in self.ranges:
            for k in scan_keys(self.cf, lo, hi):
                yield self.extract(k)

    def probe(self, cap: int) -> int:
        """Number of entries, counting at most ``cap``."""
        found: list[bytes] = []
        for lo, hi in self.ranges:
            for k in scan_keys(self.cf, lo, hi):
                found.append(k)
                if len(found) >= cap:
                    return len(found)
        self.probed = [self.extract(k) for k in found]
        return len(found)


@dataclass(slots=True)
class FuzzyNameSource(Source):
    """A PN index scanned key-only for a FUZZY matcher.

    A name index holds one entry per component group, and the words of one query may match
    different groups of the same name, so the word masks are OR-ed per target before a target
    is kept: every target whose stored name could match is yielded (the record check decides).
    """

    matcher: Matcher | None = None

    def keys(self) -> Iterator[bytes]:
        """Targets whose terms together match every query word, in first-seen order."""
        m = self.matcher
        if m is None:
            return
        full = (1 << len(m.words)) - 1
        masks: dict[bytes, int] = {}
        term_masks: dict[str, int] = {}
        for lo, hi in self.ranges:
            for k in scan_keys(self.cf, lo, hi):
                term, pos = keys.decode_at(k, 1)
                tm = term_masks.get(term)
                if tm is None:
                    tm = term_masks[term] = m.word_mask(term)
                if tm:
                    t = self.extract(k)
                    masks[t] = masks.get(t, 0) | tm
        for t, mask in masks.items():
            if mask == full:
                yield t


@dataclass(slots=True)
class QueryStats:
    """What one query touched (pass one to ``find``; filled as the results are consumed).

    For tests and diagnostics: a query served by an index should read about as many entries
    and records as it returns matches, whatever the size of the archive.
    """

    source: str = ""  # the candidate source the planner chose ("full-scan" if none)
    probed: int = 0  # index entries read while costing the usable sources
    scanned: int = 0  # entries read from the chosen source (or the level's full scan)
    loaded: int = 0  # records read to check the matching keys
    matched: int = 0  # results returned
    native: int = 0  # IMAGE/STUDY records read by the native readers (the others: decoded in Python)


class Planner:
    """Builds sources and runs queries against the CF handles of an open Index."""

    # IMAGE rows read by the native reader (_ImageRows); False: every record decoded in Python,
    # the reference the tests compare the native rows with.
    native_image_rows = True
    # The same for STUDY rows (_StudyRows).
    native_study_rows = True

    def __init__(self, cfs: Mapping[str, Any], stats: Callable[[], Stats]) -> None:
        self.cfs = cfs
        self._stats = stats

    # -- sources ------------------------------------------------------------

    def _primary(self, level: str, m: Matcher) -> Source | None:
        src = self._primary_source(level, m)
        if src is not None and m.kind == SINGLE and m.keyword != "PatientID":
            src.implies = m
        return src

    def _primary_source(self, level: str, m: Matcher) -> Source | None:
        cfs = self.cfs
        if level == PATIENT and m.keyword == "PatientID":
            r = _literal_ranges(m, b"", secondary.TEXT)
            return Source("PatientID(primary)", cfs[CF_PATIENTS], r, _identity, PATIENT) if r else None
        if m.keyword == "StudyInstanceUID" and level != PATIENT:
            r = _literal_ranges(m, b"", secondary.UID)
            return Source("StudyInstanceUID(primary)", cfs[CF_STUDIES], r, _identity, STUDY) if r else None
        if m.keyword == "SeriesInstanceUID" and level in (SERIES, IMAGE):
            r = _literal_ranges(m, secondary.IDX_SERIES_UID.prefix, secondary.UID)
            return (Source("SeriesInstanceUID(idx)", cfs[CF_IDX], r, _series_from_uid_entry, SERIES)
                    if r else None)
        if m.keyword == "SOPInstanceUID" and level == IMAGE:
            r = _literal_ranges(m, b"", secondary.UID)
            return Source("SOPInstanceUID(primary)", cfs[CF_INSTANCES], r, _identity, IMAGE) if r else None
        return None

    def _indexed(self, spec: IndexSpec, m: Matcher) -> Source | None:
        if m.kind == FUZZY:
            if spec.kind != secondary.PN:
                return None
            est = self.level_count(spec.level) * FUZZY_SCAN_COST
            return FuzzyNameSource(f"{spec.keyword}(idx {spec.id:#04x}, fuzzy)", self.cfs[CF_IDX],
                                   [(spec.prefix, keys.prefix_upper_bound(spec.prefix))], _after_term,
                                   spec.level, estimate=est, matcher=m)
        r = _literal_ranges(m, spec.prefix, spec.kind)
        if r is None:
            return None
        return Source(f"{spec.keyword}(idx {spec.id:#04x})", self.cfs[CF_IDX], r, _after_term, spec.level)

    def sources(self, level: str, matchers: Iterable[Matcher]) -> list[Source]:
        """Every usable candidate source for a query at ``level``."""
        depth = LEVELS.index(level)
        out: list[Source] = []
        for m in matchers:
            if not m.constrains or m.kind == EMPTY:
                continue
            src = self._primary(level, m)
            if src is None:
                for lv in LEVELS[: depth + 1]:
                    if level != PATIENT and lv == PATIENT:
                        continue  # PATIENT-level indexes map to PatientIDs, not studies
                    spec = secondary.BY_LEVEL.get(lv, {}).get(m.keyword)
                    if spec is not None:
                        src = self._indexed(spec, m)
                        break
            if src is not None:
                out.append(src)
        return out

    def fanout(self, src_level: str, level: str) -> float:
        """Average number of ``level`` entities under one ``src_level`` entity."""
        st = self._stats()
        per = {
            STUDY: 1.0,
            SERIES: st.series / st.studies if st.studies else 1.0,
            IMAGE: st.objects / st.studies if st.studies else 1.0,
        }
        if src_level == SERIES and level == IMAGE:
            return st.objects / st.series if st.series else 1.0
        if src_level == STUDY:
            return per.get(level, 1.0)
        return 1.0

    def level_count(self, level: str) -> int:
        """Number of entities at ``level`` (cost of a full scan)."""
        st = self._stats()
        return {PATIENT: st.patients, STUDY: st.studies, SERIES: st.series, IMAGE: st.objects}[level]

    def choose(self, level: str, matchers: list[Matcher], stats: QueryStats | None = None
               ) -> tuple[Source | None, float]:
        """Cheapest source (None = full scan of the level) and its estimated cost."""
        best: Source | None = None
        best_cost = float(self.level_count(level)) + 1.0
        for src in self.sources(level, matchers):
            if src.estimate is not None:
                cost = src.estimate * self.fanout(src.level, level)
                if cost < best_cost:
                    best, best_cost = src, cost
                continue
            n = src.probe(PROBE_CAP)
            if stats is not None:
                stats.probed += n
            cost = n * self.fanout(src.level, level)
            if cost < best_cost:
                best, best_cost = src, cost
        return best, best_cost

    # -- expansion ----------------------------------------------------------

    def expand(self, src_level: str, level: str, key: bytes) -> Iterator[bytes]:
        """Keys at ``level`` under the ``src_level`` entity ``key``."""
        if src_level == level:
            yield key
            return
        cfs = self.cfs
        if src_level == STUDY and level == SERIES:
            yield from scan_keys(cfs[CF_SERIES], key, keys.prefix_upper_bound(key))
            return
        if src_level in (STUDY, SERIES) and level == IMAGE:
            p = bytes((secondary.IDX_HIERARCHY,)) + key
            yield from map(_sop_from_hierarchy, scan_keys(cfs[CF_IDX], p, keys.prefix_upper_bound(p)))
            return
        raise QueryError(f"cannot expand {src_level} candidates to {level}")

    def full_scan(self, level: str) -> Iterator[bytes]:
        """Every key of the level's column family."""
        cf = {PATIENT: CF_PATIENTS, STUDY: CF_STUDIES, SERIES: CF_SERIES, IMAGE: CF_INSTANCES}[level]
        return scan_keys(self.cfs[cf], b"", None)

    def _keys_from(self, src: Source | None, level: str, stats: QueryStats | None) -> Iterator[bytes]:
        if stats is not None:
            stats.source = src.name if src else "full-scan"
        if src is None:
            for k in self.full_scan(level):
                if stats is not None:
                    stats.scanned += 1
                yield k
            return
        seen: set[bytes] = set()
        if src.level == level:
            for k in src.keys():
                if stats is not None:
                    stats.scanned += 1
                if k not in seen:
                    seen.add(k)
                    yield k
            return
        for k in src.keys():
            if stats is not None:
                stats.scanned += 1
            # lists of a source key's keys, not a key at a time (a study's 2,000 images went
            # through three generators each), and in pieces, not all at once: listing 2,000 held
            # the first match back by ~2.7 ms (growing pieces, as _chunks reads them)
            for piece in _chunks(self.expand(src.level, level, k), _CHUNK):
                fresh = [lk for lk in dict.fromkeys(piece) if lk not in seen]
                seen.update(fresh)
                yield from fresh

    # -- execution ------------------------------------------------------------

    def newest_first(self, matchers: list[Matcher], stats: QueryStats | None = None
                     ) -> tuple[Iterator[bytes], bool]:
        """Candidate study keys for a newest-first query, and whether they already come in
        StudyDate order (a walk of the date index) or must be sorted (few candidates)."""
        src, cost = self.choose(STUDY, matchers, stats)
        if src is not None and cost <= ORDERED_SORT_MAX:
            return self._keys_from(src, STUDY, stats), False
        date = next((m for m in matchers if m.keyword == "StudyDate"), None)
        if stats is not None:
            stats.source = "StudyDate(idx 0x12, newest first)"
        return self._date_walk(date, stats), True

    def _date_walk(self, m: Matcher | None, stats: QueryStats | None) -> Iterator[bytes]:
        spec = secondary.IDX_STUDY_DATE
        walk: list[Range] = [(spec.prefix, keys.prefix_upper_bound(spec.prefix))]
        if m is not None and m.kind in (SINGLE, RANGE):
            walk = _literal_ranges(m, spec.prefix, spec.kind) or walk
        elif m is not None and m.kind == EMPTY:
            walk = []  # only undated studies can match
        undated = m is None or m.kind in (UNIVERSAL, EMPTY)
        seen: set[bytes] = set()
        for lo, hi in walk:
            for k in scan_keys_reverse(self.cfs[CF_IDX], lo, hi):
                if stats is not None:
                    stats.scanned += 1
                t = _after_term(k)
                if t not in seen:  # a multi-valued date indexes a study twice
                    seen.add(t)
                    yield t
        if undated:
            # Every dated study was seen (the whole index was walked): the rest have no date.
            for k in scan_keys(self.cfs[CF_STUDIES], b"", None):
                if k not in seen:
                    if stats is not None:
                        stats.scanned += 1
                    yield k

    def find(self, level: str, query: Mapping[str, str | None], limit: int | None = None,
             stats: QueryStats | None = None, fuzzy: bool = False, newest_first: bool = False
             ) -> Iterator[dict[str, str]]:
        """Run a query; yield one dict per match (requested keys + level unique keys).

        The level and match strings are validated eagerly (QueryError here, not
        on first iteration); candidates are fetched lazily. ``stats``, if given,
        counts what the query reads. ``fuzzy``: fuzzy matching on every PN key
        (a :class:`FuzzyMatch` value does it for one key). ``newest_first`` (or a
        :class:`NewestFirst` StudyDate value; STUDY level): results grouped by
        StudyDate, newest first.
        """
        lv = normalise_level(level)
        requested = list(query.keys())
        if lv == STUDY and "StudyDate" not in query and (
                newest_first or isinstance(query.get("StudyDate"), NewestFirst)):
            requested.append("StudyDate")
        columns = list(dict.fromkeys([*_unique_keys(lv), *requested]))
        rows = self.find_values(lv, query, columns, limit, stats, fuzzy, newest_first)
        return (dict(zip(columns, row, strict=True)) for row in rows)

    def find_values(self, level: str, query: Mapping[str, str | None], columns: list[str],
                    limit: int | None = None, stats: QueryStats | None = None, fuzzy: bool = False,
                    newest_first: bool = False) -> Iterator[list[str]]:
        """:meth:`find`, each match as the texts of ``columns`` (keywords; "" where the match has
        no value) in that order, without a dict per match (C-FIND encodes them straight away)."""
        lv = normalise_level(level)
        matchers = parse_query(query, fuzzy)
        ordered = lv == STUDY and (newest_first or isinstance(query.get("StudyDate"), NewestFirst))
        return self._run(lv, matchers, columns, limit, stats, ordered)

    def _run(self, lv: str, matchers: list[Matcher], columns: list[str], limit: int | None,
             stats: QueryStats | None = None, newest_first: bool = False) -> Iterator[list[str]]:
        if limit is not None and limit <= 0:
            return
        if not newest_first:
            src, _ = self.choose(lv, matchers, stats)
            checked = [m for m in matchers if src is None or m is not src.implies]
            rows = self._matches(lv, checked, columns, self._keys_from(src, lv, stats), stats)
        else:
            cands, in_order = self.newest_first(matchers, stats)
            sort_columns = columns if "StudyDate" in columns else [*columns, "StudyDate"]
            rows = self._matches(lv, matchers, sort_columns, cands, stats)
            if not in_order:
                at = sort_columns.index("StudyDate")
                rows = iter(sorted(rows, key=lambda r: keys.norm_date(r[at]), reverse=True))
            if sort_columns is not columns:
                rows = (r[:-1] for r in rows)
        n = 0
        for row in rows:
            yield row
            n += 1
            if limit is not None and n >= limit:
                return

    def _matches(self, lv: str, matchers: list[Matcher], columns: list[str], candidates: Iterator[bytes],
                 stats: QueryStats | None) -> Iterator[list[str]]:
        filters = [(m.keyword, m.matches) for m in matchers if m.constrains]
        views = _Views(self.cfs, want=set(columns) | {kw for kw, _ in filters})
        native: _NativeRows | None = None
        if lv == IMAGE and self.native_image_rows:
            native = _ImageRows(views, columns, filters)
        elif lv == STUDY and self.native_study_rows and not views.want_patient_counts:
            # (the patient's counts are another record's: such rare queries take the Python path)
            native = _StudyRows(views, columns, filters)
        for chunk in _chunks(candidates, _CHUNK):
            if stats is not None:
                stats.loaded += len(chunk)
            if native is not None:
                for row in native.rows(chunk, stats):
                    if stats is not None:
                        stats.matched += 1
                    yield row
                continue
            yield from _matching_rows(views.load(lv, chunk), filters, columns, stats)

    def explain(self, level: str, query: Mapping[str, str | None]) -> dict[str, Any]:
        """Which source the planner would use (for debugging and tests)."""
        lv = normalise_level(level)
        matchers = parse_query(query)
        src, cost = self.choose(lv, matchers)
        return {"level": lv, "source": src.name if src else "full-scan", "estimate": cost}


def _unique_keys(level: str) -> list[str]:
    if level == PATIENT:
        return ["PatientID"]
    return [UNIQUE_KEY[lv] for lv in LEVELS[1: LEVELS.index(level) + 1]]


def _as_str(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, str):
        return v
    if isinstance(v, list | tuple):
        return "\\".join(str(x) for x in v)
    return str(v)


def _chunks(it: Iterable[bytes], n: int) -> Iterator[list[bytes]]:
    # Small first chunks: a query stopped by a limit (a newest-first page) loads few extra records.
    size = min(n, _FIRST_CHUNK)
    source = iter(it)
    while buf := list(islice(source, size)):
        yield buf
        size = min(n, size * 2)


Filters = list[tuple[str, Callable[[str | None], bool]]]


def _matching_rows(views: Iterable[Mapping[str, Any] | None], filters: Filters, columns: list[str],
                   stats: QueryStats | None) -> Iterator[list[str]]:
    """The texts of ``columns`` of every view that satisfies every filter (on its stored value)."""
    for view in views:
        if view is None:
            continue
        get = view.get
        for kw, matches in filters:
            if not matches(get(kw)):
                break
        else:
            if stats is not None:
                stats.matched += 1
            row = [get(k) for k in columns]
            for i, v in enumerate(row):
                if v.__class__ is not str:
                    row[i] = _as_str(v)
            yield row


# ---------------------------------------------------------------------------
# Record views (stored attrs + computed attributes), cached per query
# ---------------------------------------------------------------------------


class _Everything:
    """A container of every keyword: views compute all their attributes."""

    def __contains__(self, item: object) -> bool:
        return True


_ALL = _Everything()


def patient_view(rec: PatientRecord) -> dict[str, str]:
    """Attributes of a patient as seen by PATIENT-level queries."""
    v = dict(rec.attrs)
    v["PatientID"] = rec.patient_id
    v["NumberOfPatientRelatedStudies"] = str(rec.num_studies)
    v["NumberOfPatientRelatedSeries"] = str(rec.num_series)
    v["NumberOfPatientRelatedInstances"] = str(rec.num_instances)
    return v


def study_view(rec: StudyRecord, want: Container[str] = _ALL) -> dict[str, str]:
    """Attributes of a study as seen by STUDY-level queries (patient attrs included); the lists
    ModalitiesInStudy and SOPClassesInStudy only if in `want` (a query loads many studies)."""
    v = dict(rec.attrs)
    v["StudyInstanceUID"] = rec.study_uid
    v["PatientID"] = rec.patient_id
    if "ModalitiesInStudy" in want:
        v["ModalitiesInStudy"] = "\\".join(rec.modalities_in_study())
    if "SOPClassesInStudy" in want:
        v["SOPClassesInStudy"] = "\\".join(sorted(c for c, n in rec.sop_classes.items() if n > 0))
    v["NumberOfStudyRelatedSeries"] = str(rec.num_series)
    v["NumberOfStudyRelatedInstances"] = str(rec.num_instances)
    return v


def series_view(rec: SeriesRecord) -> dict[str, str]:
    """Series-level attributes (without the study's)."""
    v = dict(rec.attrs)
    v["SeriesInstanceUID"] = rec.series_uid
    v["StudyInstanceUID"] = rec.study_uid
    v["Modality"] = rec.modality
    v["NumberOfSeriesRelatedInstances"] = str(rec.num_instances)
    return v


def instance_view(rec: InstanceRecord) -> dict[str, str]:
    """Instance-level computed attributes (merged over the instance's attrs)."""
    return instance_view_of(rec.to_wire())


# Keywords an instance record answers from its own fields (over every attribute of the same name).
INSTANCE_FIELDS: dict[str, str] = {
    "SOPInstanceUID": "sop_uid", "SOPClassUID": "sop_class_uid", "SeriesInstanceUID": "series_uid",
    "StudyInstanceUID": "study_uid", "AvailableTransferSyntaxUID": "transfer_syntax",
}


def instance_view_of(r: Mapping[str, Any]) -> dict[str, str]:
    """:func:`instance_view` of an instance record's field dict (InstanceRecord.fields_of)."""
    number = r.get("instance_number")
    attrs = r.get("attrs") or {}
    v = {kw: r.get(f, "") for kw, f in INSTANCE_FIELDS.items()}
    v["InstanceNumber"] = attrs.get("InstanceNumber", "" if number is None else str(number))
    return v


def _instance_column(kw: str) -> tuple[str | None, str | None, bool, bool]:
    """Where an IMAGE row's ``kw`` comes from, as _native.InstanceColumns takes it: (record field,
    attrs keyword, series'/study's value first, integer field as text). The same rules as the
    merged view :meth:`_Views.load` builds: instance_view_of over the upper levels over attrs."""
    if kw in INSTANCE_FIELDS:
        return INSTANCE_FIELDS[kw], None, False, False
    if kw == "InstanceNumber":
        return "instance_number", "InstanceNumber", False, True
    return None, kw, True, False


# Distinct stored values whose match a query remembers (see _memo).
_MEMO_MAX = 4096


def _memo(matches: Callable[[str | None], bool]) -> Callable[[str], bool]:
    """``matches`` remembering its answer per stored text: the rows of one query share many
    values (a week's StudyDates, a study's modality), each parsed and compared once."""
    seen: dict[str, bool] = {}

    def check(value: str) -> bool:
        hit = seen.get(value)
        if hit is None:
            hit = matches(value)
            if len(seen) < _MEMO_MAX:
                seen[value] = hit
        return hit

    return check


Checks = list[tuple[int, Callable[[str], bool]]]


def _checks(columns: list[str], filters: Filters) -> Checks:
    """(column index, memoised matcher) per filter of a native reader's rows."""
    return [(columns.index(kw), _memo(matches)) for kw, matches in filters]


def _checked(rows: Iterable[Any], chunk: list[bytes], n: int, checks: Checks,
             hand_back: Callable[[bytes], Iterator[list[str]]], stats: QueryStats | None
             ) -> Iterator[list[str]]:
    """The rows of a native reader's answer for ``chunk`` that pass every check, cut to the first
    ``n`` columns; a record handed back (False) is read by ``hand_back``."""
    for key, row in zip(chunk, rows, strict=True):
        if row is None:
            continue
        if row is False:
            yield from hand_back(key)
            continue
        if stats is not None:
            stats.native += 1
        for at, matches in checks:
            if not matches(row[at]):
                break
        else:
            yield row[:n] if len(row) != n else row


class _NativeRows:
    """Rows of one level read by a native reader: the query's columns, then the filtered keys
    not among them (``all``); a record the reader hands back goes through :meth:`_Views.load` as
    every record did before, so what a query returns does not change."""

    level = ""

    def __init__(self, views: _Views, columns: list[str], filters: Filters) -> None:
        self.views = views
        self.columns = columns
        self.filters = filters
        self.all = list(dict.fromkeys([*columns, *(kw for kw, _ in filters)]))
        self.checks = _checks(self.all, filters)

    def _hand_back(self, key: bytes) -> Iterator[list[str]]:
        return _matching_rows(self.views.load(self.level, [key]), self.filters, self.columns, None)


class _ImageRows(_NativeRows):
    """IMAGE-level rows read natively from the instance records (_native.InstanceColumns: only
    the fields the query needs, no dict per record)."""

    level = IMAGE

    def __init__(self, views: _Views, columns: list[str], filters: Filters) -> None:
        super().__init__(views, columns, filters)
        self.spec = [_instance_column(kw) for kw in self.all]
        self.reader = _native.InstanceColumns(self.spec)
        # (study UID, series UID) -> per column the series'/study's text, or None: the instance's
        self.uppers: dict[tuple[str, str], list[str | None]] = {}

    def _fill(self, pairs: list[tuple[str, str]]) -> None:
        views = self.views
        sekeys = {uids: keys.encode(uids[0]) + keys.encode(uids[1]) for uids in pairs}
        views._fill_series(sekeys.values())
        for uids, sekey in sekeys.items():
            upper = views.series.get(sekey) or {}
            views.by_uids[uids] = upper
            self.uppers[uids] = [_as_str(upper[kw]) if upper_first and kw in upper else None
                                 for kw, (_, _, upper_first, _) in zip(self.all, self.spec, strict=True)]

    def rows(self, chunk: list[bytes], stats: QueryStats | None) -> Iterator[list[str]]:
        """The rows of the matching records of a chunk of SOP Instance UID keys."""
        raws = self.views.cfs[CF_INSTANCES].get(chunk)
        rows = self.reader.rows(raws, self.uppers, self._fill)
        return _checked(rows, chunk, len(self.columns), self.checks, self._hand_back, stats)


# Keywords a study view answers from the study record's own fields (study_view), over any
# attribute of the same name: (source, field) as _native.StudyColumns takes them.
_STUDY_FIELDS: dict[str, tuple[str, str]] = {
    "StudyInstanceUID": ("text", "study_uid"), "PatientID": ("text", "patient_id"),
    "ModalitiesInStudy": ("keys", "modalities"), "SOPClassesInStudy": ("keys", "sop_classes"),
    "NumberOfStudyRelatedSeries": ("count", "num_series"),
    "NumberOfStudyRelatedInstances": ("count", "num_instances"),
}


class _StudyRows(_NativeRows):
    """STUDY-level rows read natively from the study records (_native.StudyColumns: only the
    fields the query needs, the texts study_view computes, no record or dict per study). Not for
    a query of the patient's counts (another record: _Views._study_view)."""

    level = STUDY

    def __init__(self, views: _Views, columns: list[str], filters: Filters) -> None:
        super().__init__(views, columns, filters)
        self.reader = _native.StudyColumns([_STUDY_FIELDS.get(kw, ("attr", kw)) for kw in self.all])

    def rows(self, chunk: list[bytes], stats: QueryStats | None) -> Iterator[list[str]]:
        """The rows of the matching records of a chunk of study keys."""
        rows = self.reader.rows(self.views.cfs[CF_STUDIES].get(chunk))
        return _checked(rows, chunk, len(self.columns), self.checks, self._hand_back, stats)


class _Views:
    def __init__(self, cfs: Mapping[str, Any], want: set[str]) -> None:
        self.cfs = cfs
        self.want = want
        self.want_patient_counts = bool(want & _COUNT_KEYS_PATIENT)
        self.studies: dict[bytes, Mapping[str, str] | None] = {}
        self.series: dict[bytes, Mapping[str, str] | None] = {}
        # (study UID, series UID) -> the flat series view ({} if the series record is gone)
        self.by_uids: dict[tuple[str, str], Mapping[str, str]] = {}
        self.patients: dict[str, PatientRecord | None] = {}

    def _patient(self, pid: str) -> PatientRecord | None:
        if pid not in self.patients:
            raw = self.cfs[CF_PATIENTS].get(keys.encode(pid))
            self.patients[pid] = PatientRecord.decode(raw) if raw is not None else None
        return self.patients[pid]

    def _study_view(self, rec: StudyRecord) -> Mapping[str, str]:
        v = study_view(rec, self.want)
        if self.want_patient_counts:
            p = self._patient(rec.patient_id)
            if p is not None:
                v.update({k: x for k, x in patient_view(p).items() if k in _COUNT_KEYS_PATIENT})
        return v

    def _fill_studies(self, skeys: Iterable[bytes]) -> None:
        missing = list(dict.fromkeys(k for k in skeys if k not in self.studies))
        if missing:
            for k, raw in zip(missing, self.cfs[CF_STUDIES].get(missing), strict=True):
                self.studies[k] = self._study_view(StudyRecord.decode(raw)) if raw is not None else None

    def _fill_series(self, sekeys: Iterable[bytes]) -> None:
        missing = list(dict.fromkeys(k for k in sekeys if k not in self.series))
        if not missing:
            return
        recs = [SeriesRecord.decode(r) if r is not None else None
                for r in self.cfs[CF_SERIES].get(missing)]
        self._fill_studies(keys.encode(r.study_uid) for r in recs if r is not None)
        for k, r in zip(missing, recs, strict=True):
            if r is None:
                self.series[k] = None
                continue
            sv = self.studies.get(keys.encode(r.study_uid))
            # flat, the series' own attributes over the study's (what a ChainMap of the two
            # would show, at a plain dict's lookup cost: SERIES/IMAGE rows read it per match)
            self.series[k] = {**(sv or {}), **series_view(r)}

    def load(self, level: str, chunk: list[bytes]) -> list[Mapping[str, str] | None]:
        """Views for a chunk of candidate keys (None where the record vanished)."""
        if level == PATIENT:
            return [patient_view(PatientRecord.decode(r)) if r is not None else None
                    for r in self.cfs[CF_PATIENTS].get(chunk)]
        if level == STUDY:
            self._fill_studies(chunk)
            return [self.studies.get(k) for k in chunk]
        if level == SERIES:
            self._fill_series(chunk)
            return [self.series.get(k) for k in chunk]
        # Instances are read as field dicts, not records: an IMAGE query may load thousands.
        fields_of = InstanceRecord.fields_of
        recs = [fields_of(r) if r is not None else None for r in self.cfs[CF_INSTANCES].get(chunk)]
        uppers = self.by_uids
        missing = ({(r.get("study_uid", ""), r.get("series_uid", "")) for r in recs if r is not None}
                   - uppers.keys())
        if missing:
            sekeys = {uids: keys.encode(uids[0]) + keys.encode(uids[1]) for uids in missing}
            self._fill_series(sekeys.values())
            for uids, sekey in sekeys.items():
                uppers[uids] = self.series.get(sekey) or {}
        out: list[Mapping[str, str] | None] = []
        for r in recs:
            if r is None:
                out.append(None)
                continue
            # the instance's computed attributes over the series' and study's, over its own
            out.append({**(r.get("attrs") or {}), **uppers[(r.get("study_uid", ""), r.get("series_uid", ""))],
                        **instance_view_of(r)})
        return out
