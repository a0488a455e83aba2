"""QIDO-RS parsing and search over the real corpus, checked against a brute force over pydicom reads
of the same files (independent matching code below, not index/query.py)."""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset

from dicomvault.engine import Engine
from dicomvault.errors import RequestError
from dicomvault.index import Index
from dicomvault.index import query as query_module
from dicomvault.index.query import NewestFirst, QueryStats
from dicomvault.web.dicomweb import qido as qido_module
from dicomvault.web.dicomweb.attrs_json import element_spec
from dicomvault.web.dicomweb.qido import (
    STUDY_DEFAULTS,
    WARNING_TEXT,
    QidoQuery,
    parse_qido,
    search,
    warning_header,
)
from dv_corpus import corpus_files

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
TAG = {"StudyInstanceUID": "0020000D", "SeriesInstanceUID": "0020000E", "SOPInstanceUID": "00080018"}
VR = {"PatientName": "PN", "ReferringPhysicianName": "PN", "StudyDate": "DA", "StudyTime": "TM",
      "PerformedProcedureStepStartDate": "DA", "PerformedProcedureStepStartTime": "TM",
      "StudyInstanceUID": "UI", "SeriesInstanceUID": "UI", "SOPInstanceUID": "UI", "SOPClassUID": "UI"}


def _val(ds: Dataset, kw: str) -> str:
    """The attribute as the index would hold it: values joined by backslash, padding stripped."""
    el = ds.get(kw)
    if el is None or el == "":
        return ""
    if isinstance(el, pydicom.multival.MultiValue | list):
        return "\\".join(str(x).strip() for x in el)
    return str(el).strip(" \x00")


@dataclass
class Ref:
    """The corpus as pydicom reads it: what the archive kept (newest file per SOP Instance UID)."""

    files: dict[str, Path] = field(default_factory=dict)
    ds: dict[str, Dataset] = field(default_factory=dict)
    study_of: dict[str, str] = field(default_factory=dict)
    series_of: dict[str, str] = field(default_factory=dict)

    def study_sops(self, study: str) -> list[str]:
        return [s for s, st in self.study_of.items() if st == study]

    def series_sops(self, series: str) -> list[str]:
        return [s for s, se in self.series_of.items() if se == series]

    @property
    def studies(self) -> set[str]:
        return set(self.study_of.values())

    @property
    def series(self) -> set[str]:
        return set(self.series_of.values())

    def value(self, level: str, uid: str, kw: str) -> str:
        """Value of kw for a study/series/instance (first non-empty of its instances)."""
        if level == "instance":
            sops = [uid]
        elif level == "series":
            sops = self.series_sops(uid)
        else:
            sops = self.study_sops(uid)
        if kw == "ModalitiesInStudy":
            return "\\".join(sorted({_val(self.ds[s], "Modality") for s in self.study_sops(uid)} - {""}))
        for s in sops:
            v = _val(self.ds[s], kw)
            if v:
                return v
        return ""


@dataclass
class Corpus:
    engine: Engine
    ref: Ref


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Corpus]:
    files = corpus_files()
    with Engine(tmp_path_factory.mktemp("qido") / "data") as eng:
        outs = eng.store_files(files)
        ref = Ref()
        for path, out in zip(files, outs, strict=True):
            if isinstance(out, Exception):
                continue
            ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
            sop = out.sop_instance_uid
            ref.files[sop], ref.ds[sop] = path, ds
            ref.study_of[sop] = out.study_instance_uid
            ref.series_of[sop] = _val(ds, "SeriesInstanceUID")
        assert len(ref.studies) >= 20 and len(ref.ds) >= 50
        yield Corpus(eng, ref)


# ------------------------------------------------------------------ brute-force matching


def _wild(pattern: str) -> re.Pattern[str]:
    return re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern), re.S)


def ref_match(kw: str, query: str, stored: str) -> bool:
    """PS3.4 C.2.2.2 as written in the standard, for the forms the tests use."""
    vr = VR.get(kw, "CS" if kw in ("Modality", "ModalitiesInStudy") else "LO")
    q = query.strip()
    if q in ("", "*"):
        return True
    values = [v for v in stored.split("\\") if v] if stored else []
    if vr == "PN":  # case-insensitive; a name matches on the whole value or any component group
        values = [x for v in values for x in (v.upper(), *v.upper().split("=")) if x]
        q = q.upper()
    if vr in ("DA", "TM") and "-" in q:
        lo, hi = q.split("-")
        return any((not lo or v >= lo) and (not hi or v[: len(hi)] <= hi) for v in values)
    alts = q.replace(",", "\\").split("\\") if vr in ("UI", "CS") else [q]
    for a in alts:
        if "*" in a or "?" in a:
            rx = _wild(a)
            if any(rx.fullmatch(v) for v in values):
                return True
        elif a in values:
            return True
    return False


def expected(ref: Ref, level: str, params: list[tuple[str, str]]) -> set[str]:
    if level == "study":
        uids = ref.studies
    elif level == "series":
        uids = ref.series
    else:
        uids = set(ref.ds)

    def lookup(uid: str, kw: str) -> str:
        if kw in ("StudyInstanceUID", "SeriesInstanceUID") and level != "study":
            sop = uid if level == "instance" else ref.series_sops(uid)[0]
            return ref.study_of[sop] if kw == "StudyInstanceUID" else ref.series_of[sop]
        if level == "instance" and kw in ("PatientName", "StudyDate", "PatientID"):
            return ref.value("study", ref.study_of[uid], kw)
        if level == "series" and kw in ("PatientName", "StudyDate", "PatientID"):
            return ref.value("study", ref.study_of[ref.series_sops(uid)[0]], kw)
        return ref.value(level, uid, kw)

    return {u for u in uids if all(ref_match(k, v, lookup(u, k)) for k, v in params)}


def uids(items: list[dict[str, Any]], kw: str) -> set[str]:
    return {it[TAG[kw]]["Value"][0] for it in items}


def run(c: Corpus, resource: str, params: list[tuple[str, str]], **kw: Any) -> list[dict[str, Any]]:
    res = search(c.engine.index, parse_qido(resource, params, **kw), max_results=100_000)
    assert not res.truncated
    return res.items


# ------------------------------------------------------------------ required matching keys


def _study_params(ref: Ref) -> list[list[tuple[str, str]]]:
    studies = sorted(ref.studies)
    dates = sorted({ref.value("study", s, "StudyDate") for s in studies} - {""})
    lo, hi = dates[len(dates) // 4], dates[3 * len(dates) // 4]

    def some(kw: str) -> str:
        return next(v for s in studies if (v := ref.value("study", s, kw)))

    name = some("PatientName")
    return [
        [("StudyDate", f"{lo}-{hi}")], [("StudyDate", f"{lo}-")], [("StudyDate", f"-{hi}")],
        [("StudyDate", dates[0])],
        [("StudyTime", "080000-160000")], [("StudyTime", "-1000")],
        [("AccessionNumber", some("AccessionNumber"))],
        [("ModalitiesInStudy", "MR")], [("ModalitiesInStudy", "CT,MR")],
        [("ReferringPhysicianName", some("ReferringPhysicianName")[:2].lower() + "*")],
        [("PatientName", f"*{name[1:3].lower()}*")], [("PatientName", name.lower())],
        [("PatientID", some("PatientID"))],
        [("StudyInstanceUID", ",".join(studies[:3]))], [("StudyInstanceUID", "\\".join(studies[3:5]))],
        [("StudyID", some("StudyID"))],
        [("StudyDate", f"{lo}-"), ("ModalitiesInStudy", "CT"), ("PatientName", "*")],
    ]


def test_study_matching_keys(corpus: Corpus) -> None:
    nonempty = 0
    for params in _study_params(corpus.ref):
        got = uids(run(corpus, "studies", params), "StudyInstanceUID")
        want = expected(corpus.ref, "study", params)
        assert got == want, params
        nonempty += bool(want)
        assert want != corpus.ref.studies or params[0][0] == "StudyDate", params  # queries constrain
    assert nonempty >= 14


def test_series_matching_keys(corpus: Corpus) -> None:
    ref = corpus.ref
    series = sorted(ref.series)
    pps = sorted({ref.value("series", s, "PerformedProcedureStepStartDate") for s in series} - {""})
    cases = [
        [("Modality", "CT")], [("Modality", "MR,US")], [("SeriesInstanceUID", ",".join(series[:4]))],
        [("SeriesNumber", "1")], [("PerformedProcedureStepStartDate", f"{pps[0]}-")] if pps else [],
        [("PerformedProcedureStepStartTime", "-120000")],
        [("Modality", "CT"), ("PatientName", "*a*")],  # an upper-level key at series level
        [("StudyDate", "2000-")],
    ]
    for params in cases:
        if not params:
            continue
        got = uids(run(corpus, "series", params), "SeriesInstanceUID")
        assert got == expected(ref, "series", params), params
        assert got, params


def test_instance_matching_keys(corpus: Corpus) -> None:
    ref = corpus.ref
    sops = sorted(ref.ds)
    for params in ([("SOPClassUID", CT_IMAGE)], [("SOPInstanceUID", "\\".join(sops[:5]))],
                   [("InstanceNumber", "1")], [("StudyDate", "2010-"), ("SOPClassUID", CT_IMAGE)]):
        got = uids(run(corpus, "instances", params), "SOPInstanceUID")
        assert got == expected(ref, "instance", params), params
        assert got, params


def test_hex_tags_equal_keywords(corpus: Corpus) -> None:
    ref = corpus.ref
    pid = next(v for s in sorted(ref.studies) if (v := ref.value("study", s, "PatientID")))
    by_kw = run(corpus, "studies", [("PatientID", pid), ("ModalitiesInStudy", "CT")])
    by_tag = run(corpus, "studies", [("00100020", pid), ("00080061", "CT")])
    assert by_kw == by_tag and by_kw
    assert run(corpus, "studies", [("0020000d", next(iter(ref.studies)))])  # lower-case hex too


# ------------------------------------------------------------------ returned attributes


def test_study_rows_carry_values_and_computed_attributes(corpus: Corpus) -> None:
    ref = corpus.ref
    items = run(corpus, "studies", [])
    assert uids(items, "StudyInstanceUID") == ref.studies
    for it in items:
        study = it["0020000D"]["Value"][0]
        sops = ref.study_sops(study)
        js = ref.ds[sops[0]].to_json_dict()
        for tag in ("00100010", "00100020", "00080020", "00080050"):
            assert it[tag].get("Value") == js.get(tag, {}).get("Value"), (study, tag)
        assert it["00201208"]["Value"] == [len(sops)]
        assert it["00201206"]["Value"] == [len({ref.series_of[s] for s in sops})]
        mods = sorted({_val(ref.ds[s], "Modality") for s in sops} - {""})
        assert it["00080061"].get("Value", []) == mods
        assert it["00080056"]["Value"] == ["ONLINE"]
        for kw in STUDY_DEFAULTS:  # every default return attribute is present (RetrieveURL: no base)
            spec = element_spec(kw)
            assert spec is not None and (spec[0] in it) == (kw != "RetrieveURL"), kw
        assert "00081190" not in it


def test_series_and_instance_rows(corpus: Corpus) -> None:
    ref = corpus.ref
    for it in run(corpus, "series", [("Modality", "CT")]):
        se = it["0020000E"]["Value"][0]
        assert it["00201209"]["Value"] == [len(ref.series_sops(se))]
        assert it["00080060"]["Value"] == ["CT"]
        assert "00100010" in it  # /series carries the study's default attributes
    for it in run(corpus, "instances", [("SOPClassUID", CT_IMAGE)]):
        ds = ref.ds[it["00080018"]["Value"][0]]
        assert it["00280010"]["Value"] == [ds.Rows] and it["00280011"]["Value"] == [ds.Columns]
        assert it["00080016"]["Value"] == [CT_IMAGE]


def test_includefield_lists_all_and_matching_keys(corpus: Corpus) -> None:
    base = run(corpus, "studies", [])[0]
    assert "00100030" in base and "00081030" in base
    inc = run(corpus, "studies", [("includefield", "00180015,InstitutionName"),
                                  ("includefield", "OperatorsName")])
    assert {"00180015", "00080080", "00081070"} <= set(inc[0])
    assert "00102160" not in base
    assert "00102160" in run(corpus, "studies", [("EthnicGroup", "")])[0]  # a matching key is returned
    # includefield=all: every attribute the index holds (an instance's Rows, BitsStored, ...)
    sop = next(s for s, ds in sorted(corpus.ref.ds.items()) if "BitsStored" in ds and "ImageType" in ds)
    item = run(corpus, "instances", [("SOPInstanceUID", sop), ("includefield", "all")])[0]
    ds = corpus.ref.ds[sop]
    assert item["00280101"]["Value"] == [ds.BitsStored]
    assert item["00080008"]["Value"] == [None if v == "" else v for v in ds.ImageType]
    assert item["00100010"].get("Value") == ds.to_json_dict()["00100010"].get("Value")
    default = run(corpus, "instances", [("SOPInstanceUID", sop)])[0]
    assert "00280101" not in default and set(default) < set(item)


def test_retrieve_url_with_base(corpus: Corpus) -> None:
    study = sorted(corpus.ref.studies)[0]
    q = parse_qido("series", [], study_uid=study)
    it = search(corpus.engine.index, q, base_url="https://pacs/dicom-web/").items[0]
    se = it["0020000E"]["Value"][0]
    assert it["00081190"]["Value"] == [f"https://pacs/dicom-web/studies/{study}/series/{se}"]


# ------------------------------------------------------------------ resources under a study


def test_study_scoped_resources(corpus: Corpus) -> None:
    ref = corpus.ref
    study = max(ref.studies, key=lambda s: len(ref.study_sops(s)))
    series = run(corpus, "series", [], study_uid=study)
    assert uids(series, "SeriesInstanceUID") == {ref.series_of[s] for s in ref.study_sops(study)}
    assert "00100010" not in series[0]  # the study is known: no study attributes repeated
    inst = run(corpus, "instances", [], study_uid=study)
    assert uids(inst, "SOPInstanceUID") == set(ref.study_sops(study))
    se = ref.series_of[ref.study_sops(study)[0]]
    inst = run(corpus, "instances", [], study_uid=study, series_uid=se)
    assert uids(inst, "SOPInstanceUID") == set(ref.series_sops(se))
    assert run(corpus, "series", [("StudyInstanceUID", "1.2.3")], study_uid=study) == []
    assert run(corpus, "series", [], study_uid="1.2.3.4.5.404") == []


# ------------------------------------------------------------------ paging and ordering


def test_limit_offset_truncated_and_order(corpus: Corpus) -> None:
    idx = corpus.engine.index
    full = search(idx, parse_qido("studies", []), max_results=1000)
    n = len(full.items)
    assert not full.truncated and full.total == n == len(corpus.ref.studies)
    keys = [(it["00080020"].get("Value", [""])[0], it["00080030"].get("Value", [""])[0]) for it in full.items]
    assert keys == sorted(keys, reverse=True)  # newest first
    pages: list[dict[str, Any]] = []
    for off in range(0, n, 7):
        page = search(idx, parse_qido("studies", [("limit", "7"), ("offset", str(off))]))
        assert page.truncated == (off + 7 < n)
        pages.extend(page.items)
    assert pages == full.items
    capped = search(idx, parse_qido("studies", [("limit", "50")]), max_results=10)
    assert len(capped.items) == 10 and capped.truncated
    assert search(idx, parse_qido("studies", [("offset", str(n))])).items == []
    assert not search(idx, parse_qido("studies", [("offset", str(n))])).truncated
    assert warning_header("pacs:8080") == f'299 pacs:8080: "{WARNING_TEXT}"'


def test_instance_order_is_series_then_instance_number(corpus: Corpus) -> None:
    items = run(corpus, "instances", [])
    keys = [(it["0020000D"]["Value"][0], it["0020000E"]["Value"][0]) for it in items]
    # instances of one series are contiguous
    seen: set[tuple[str, str]] = set()
    for i, k in enumerate(keys):
        if i and keys[i - 1] != k:
            assert k not in seen
        seen.add(k)


# ------------------------------------------------------------------ fuzzy matching


def test_fuzzymatching(tmp_path: Path) -> None:
    with Engine(tmp_path / "fz") as eng:
        eng.store_files([p for p in pydicom.data.get_charset_files()
                         if p.endswith(("chrH31.dcm", "chrGerm.dcm"))])
        idx = eng.index

        def names(params: list[tuple[str, str]]) -> list[str]:
            items = search(idx, parse_qido("studies", params)).items
            return sorted(i["00100010"]["Value"][0]["Alphabetic"] for i in items)

        assert names([]) == ["Yamada^Tarou", "Äneas^Rüdiger"]
        assert names([("PatientName", "tar")]) == []
        assert names([("PatientName", "tar"), ("fuzzymatching", "false")]) == []
        assert names([("PatientName", "tar"), ("fuzzymatching", "true")]) == ["Yamada^Tarou"]
        assert names([("PatientName", "rüd äne"), ("fuzzymatching", "true")]) == ["Äneas^Rüdiger"]
        assert names([("PatientName", "太郎"), ("fuzzymatching", "true")]) == ["Yamada^Tarou"]
        assert names([("PatientName", "*eas"), ("fuzzymatching", "true")]) == ["Äneas^Rüdiger"]
        assert names([("PatientName", "yam zzz"), ("fuzzymatching", "true")]) == []


# ------------------------------------------------------------------ bad parameters


@pytest.mark.parametrize(("params", "named"), [
    ([("Foo", "1")], "Foo"),
    ([("limit", "-1")], "limit"),
    ([("limit", "ten")], "limit"),
    ([("offset", "x")], "offset"),
    ([("fuzzymatching", "maybe")], "fuzzymatching"),
    ([("StudyDate", "2020-01-01")], "StudyDate"),
    ([("StudyDate", "20200101-20190101")], "StudyDate"),
    ([("StudyDate", "2020*")], "StudyDate"),
    ([("StudyTime", "noon")], "StudyTime"),
    ([("PatientName", "a"), ("PatientName", "b")], "PatientName"),
    ([("includefield", "NotAKeyword")], "NotAKeyword"),
    ([("00091001", "x")], "00091001"),
    ([("RequestAttributesSequence.ScheduledProcedureStepID", "X")], "RequestAttributesSequence"),
    ([("PatientName.FamilyName", "X")], "PatientName"),
])
def test_bad_parameters(params: list[tuple[str, str]], named: str) -> None:
    with pytest.raises(RequestError, match=re.escape(named)):
        parse_qido("series", params)


def test_accepted_parameter_forms() -> None:
    q = parse_qido("series", [("RequestAttributesSequence.ScheduledProcedureStepID", ""),
                              ("StudyInstanceUID", "1.2\\1.3,1.4"), ("StudyInstanceUID", "1.5"),
                              ("Modality", "CT,MR"), ("limit", "0"), ("accept", "application/dicom+json"),
                              ("includefield", "all"), ("fuzzymatching", "TRUE"), ("PatientName", "doe")])
    assert isinstance(q, QidoQuery)
    assert q.match["StudyInstanceUID"] == "1.2\\1.3\\1.4\\1.5"
    assert q.match["Modality"] == "CT\\MR"
    assert q.limit is None and q.include_all and q.fuzzy
    assert q.accept == ("application/dicom+json",)
    with pytest.raises(RequestError, match="patients"):
        parse_qido("patients", [])


# ------------------------------------------------------------------ newest-first order at scale


def _synthetic(i: int, date: str, time_: str, pid: str) -> dict[str, Any]:
    attrs = {"PatientID": pid, "PatientName": f"Name{i}^Test", "StudyInstanceUID": f"1.2.77.{i}",
             "SeriesInstanceUID": f"1.2.77.{i}.1", "SOPInstanceUID": f"1.2.77.{i}.1.1",
             "SOPClassUID": CT_IMAGE, "Modality": "CT", "StudyTime": time_}
    if date:
        attrs["StudyDate"] = date
    return {"attrs": attrs, "hash": hashlib.blake2b(str(i).encode(), digest_size=32).digest(),
            "prefix": b"", "transfer_syntax": "1.2.840.10008.1.2.1", "logical_len": 10, "stored_len": 10}


def test_study_order_and_paging_walk_and_sort(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    rnd = random.Random(5)
    rows = []
    for i in range(400):
        # a few undated studies, many studies sharing a day (ties broken by time, then UID)
        date = "" if i % 37 == 0 else f"20{rnd.randrange(10, 24)}{rnd.randrange(1, 4):02d}01"
        rows.append((f"1.2.77.{i}", date, f"{rnd.randrange(24):02d}0000", f"P{i % 30}"))
    brute = sorted(rows, key=lambda r: r[0])
    brute.sort(key=lambda r: (r[1], r[2]), reverse=True)
    with Index.open(str(tmp_path / "ix"), durable=False) as idx:
        idx.add_instances([_synthetic(i, d, t, p) for i, (_, d, t, p) in enumerate(rows)])
        cases: list[tuple[list[tuple[str, str]], Any]] = [
            ([], lambda r: True),
            ([("PatientID", "P7")], lambda r: r[3] == "P7"),
            ([("StudyDate", "2015-")], lambda r: r[1] >= "2015"),
            ([("StudyDate", "20120101-20200301")], lambda r: "20120101" <= r[1] <= "20200301"),
            ([("StudyDate", '""')], lambda r: r[1] == ""),
        ]
        for sort_max in (0, 100_000):  # force the date-index walk, then the load-and-sort path
            monkeypatch.setattr(query_module, "ORDERED_SORT_MAX", sort_max)
            for params, pred in cases:
                want = [r[0] for r in brute if pred(r)]
                got: list[str] = []
                for off in range(0, len(want) + 1, 25):
                    res = search(idx, parse_qido("studies", [*params, ("limit", "25"), ("offset", str(off))]))
                    assert res.truncated == (off + 25 < len(want)), (params, off)
                    got.extend(it["0020000D"]["Value"][0] for it in res.items)
                assert got == want, (sort_max, params)
        monkeypatch.setattr(query_module, "ORDERED_SORT_MAX", 0)
        st = QueryStats()
        first = list(itertools.islice(idx.find("STUDY", {"StudyDate": NewestFirst("")}, stats=st), 20))
        assert len(first) == 20 and st.loaded <= 64  # a page reads about a page, not the archive


def test_broad_instance_search_pages_in_index_order(corpus: Corpus, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(qido_module, "SORT_MAX_ROWS", 0)  # as if /instances matched a huge archive
    idx = corpus.engine.index
    got: list[str] = []
    n = len(corpus.ref.ds)
    for off in range(0, n, 9):
        res = search(idx, parse_qido("instances", [("limit", "9"), ("offset", str(off))]))
        assert res.truncated == (off + 9 < n)
        got.extend(it["00080018"]["Value"][0] for it in res.items)
    assert len(got) == len(set(got)) == n and set(got) == set(corpus.ref.ds)
    again = search(idx, parse_qido("instances", [("limit", "9"), ("offset", "9")])).items
    assert [it["00080018"]["Value"][0] for it in again] == got[9:18]  # stable between requests
