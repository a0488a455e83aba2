"""Fuzzy person-name matching (QIDO fuzzymatching=true) in the index, against a brute force."""

from __future__ import annotations

import re

import pytest
from index_helpers import MakeInst

from dicomvault.index import Index
from dicomvault.index.query import FuzzyMatch, QueryStats, parse_match

NAMES = [
    "Smith^John",
    "Johnson^Mary",
    "Smithers^Wayland^J",
    "Yamada^Tarou=山田^太郎=やまだ^たろう",
    "van der Berg^Anna",
    "Doe^Jane\\Roe^Richard",  # two values of PatientName
    "O'Neil^Sean",
    "",
]


def _brute(query: str, name: str) -> bool:
    """Independent statement of the rule: each query word starts some word of the name."""
    if query.strip("*") == "":
        return True
    return any(_brute_one(query, value) for value in name.split("\\"))


def _brute_one(query: str, name: str) -> bool:
    words_of_name = [w for w in re.split(r"[ ^=]+", name.upper()) if w]
    for alt in query.split("\\"):
        qwords = [w for w in re.split(r"[ ^=,]+", alt.upper()) if w.strip("*")]
        ok = True
        for w in qwords:
            rx = re.compile("".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in w))
            if not any(rx.match(n) for n in words_of_name):
                ok = False
        if ok and qwords:
            return True
    return False


@pytest.fixture
def named(idx: Index, mk: MakeInst) -> Index:
    """One study (and patient) per name."""
    idx.add_instances([
        mk(f"1.2.3.{i}", study=f"1.2.9.{i}", series=f"1.2.9.{i}.1", patient_id=f"P{i}", patient_name=n)
        for i, n in enumerate(NAMES)
    ])
    return idx


QUERIES = ["smi joh", "joh", "john smith", "berg", "van anna", "山田", "tar 山", "たろう", "*ith", "sm?th",
           "x", "smi\\mary", "roe", "jane doe", "o'n", "SMITH^JOHN", "wayland j smithers",
           "smith,john", "jane roe"]


@pytest.mark.parametrize("q", QUERIES)
def test_fuzzy_study_level_matches_brute_force(named: Index, q: str) -> None:
    got = {r["PatientID"] for r in named.find("STUDY", {"PatientName": FuzzyMatch(q), "PatientID": ""})}
    want = {f"P{i}" for i, n in enumerate(NAMES) if n and _brute(q, n)}
    assert got == want, q


def test_fuzzy_examples(named: Index) -> None:
    def ids(q: str) -> set[str]:
        return {r["PatientID"] for r in named.find("STUDY", {"PatientName": FuzzyMatch(q), "PatientID": ""})}

    assert ids("smi joh") == {"P0"}  # order-independent prefixes of family and given name
    assert ids("joh") == {"P0", "P1"}
    assert ids("tar 山") == {"P3"}  # words may match different component groups
    assert ids("*") == {f"P{i}" for i in range(len(NAMES))}  # universal, even the empty name


def test_fuzzy_flag_on_find_and_default_is_literal(named: Index) -> None:
    assert list(named.find("STUDY", {"PatientName": "smi"})) == []
    assert len(list(named._planner.find("STUDY", {"PatientName": "smi"}, fuzzy=True))) == 2  # noqa: SLF001


def test_fuzzy_uses_the_name_index_and_loads_only_matches(named: Index, mk: MakeInst) -> None:
    named.add_instances([mk(f"1.2.4.{i}", study=f"1.2.8.{i}", series=f"1.2.8.{i}.1", patient_id=f"Q{i}",
                            patient_name=f"Other{i}^Person") for i in range(200)])
    assert "fuzzy" in named.explain("STUDY", {"PatientName": FuzzyMatch("smi joh")})["source"]
    st = QueryStats()
    rows = list(named.find("STUDY", {"PatientName": FuzzyMatch("smi joh")}, stats=st))
    assert len(rows) == 1
    assert st.loaded == 1 and "PatientName" in st.source
    # A selective exact key still wins over the key-only scan of the name index.
    src = named.explain("STUDY", {"PatientName": FuzzyMatch("oth"), "PatientID": "Q7"})["source"]
    assert src.startswith("PatientID")


def test_fuzzy_at_every_level(named: Index) -> None:
    q = {"PatientName": FuzzyMatch("john smith")}
    assert [r["PatientID"] for r in named.find("PATIENT", q)] == ["P0"]
    assert [r["SeriesInstanceUID"] for r in named.find("SERIES", q)] == ["1.2.9.0.1"]
    assert [r["SOPInstanceUID"] for r in named.find("IMAGE", q)] == ["1.2.3.0"]


def test_fuzzy_only_changes_pn_keys(named: Index) -> None:
    assert parse_match("PatientID", FuzzyMatch("P1")).kind == "single"
    assert [r["PatientID"] for r in named.find("STUDY", {"PatientID": FuzzyMatch("P1")})] == ["P1"]
    assert parse_match("PatientName", FuzzyMatch("")).kind == "universal"
    assert parse_match("PatientName", FuzzyMatch('""')).kind == "empty"
    assert parse_match("PatientName", "smi", fuzzy=True).kind == "fuzzy"


def test_fuzzy_with_other_keys(named: Index) -> None:
    rows = list(named.find("STUDY", {"PatientName": FuzzyMatch("smi"), "PatientID": "P2"}))
    assert [r["PatientID"] for r in rows] == ["P2"]
