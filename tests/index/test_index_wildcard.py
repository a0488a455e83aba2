"""Wildcard matching (index/wildcard.py): the same answers as the regular expression it replaced,
without its backtracking (a QIDO query string the fuzzer found kept a request busy for minutes)."""

from __future__ import annotations

import random
import re
import time

from index_helpers import make_inst

from dicomvault.index import Index
from dicomvault.index.query import parse_match
from dicomvault.index.wildcard import Wildcard


def _regex(pattern: str, text: str) -> bool:
    rx = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.fullmatch(rx, text, re.DOTALL) is not None


def test_same_answers_as_a_regular_expression() -> None:
    rng = random.Random(14)
    for _ in range(30000):
        pattern = "".join(rng.choice("ab*?.") for _ in range(rng.randrange(9)))
        text = "".join(rng.choice("ab.\n") for _ in range(rng.randrange(9)))
        assert Wildcard(pattern).fullmatch(text) == _regex(pattern, text), (pattern, text)


def test_star_runs_cost_no_backtracking() -> None:
    started = time.perf_counter()
    assert not Wildcard("*a" * 40 + "b").fullmatch("a" * 64)
    assert not Wildcard("1.2.,,,," + "*" * 55 + "\0,,,,i").fullmatch("1.2.840.10008.5.1.4.1.1.2")
    assert Wildcard("*a?" * 20 + "*").fullmatch("ab" * 32)
    assert time.perf_counter() - started < 0.05


def test_found_by_fuzzing_qido(tmp_path: object) -> None:
    """The value of the QIDO parameter SOPClassUID in fuzz/python/regressions/qido_params/timeout-58453...:
    minutes per stored value with the regular expression."""
    value = ("1.2.,,,,,,$,,,'!,,,,,,\xd4\xdb,,wc,t=2&SOPClassUID=1.2,,,,,,,i\xd3\xd3\xcf,l,\xcf,.,,$,,,"
             "',,,,,,,,,," + "*" * 55 + "\0" * 7 + ",,,,,,,,,,,,,,i\xd3\xd3\xcf,,,,,cccID=36")
    idx = Index.open(tmp_path / "index")  # type: ignore[operator]
    try:
        idx.add_instances([make_inst("1.1.1", study="1.1", series="1.1.S1")])
        started = time.perf_counter()
        # parse_qido turns the commas into a UID list; its item of 55 stars and 7 NULs was the slow one
        uid_list = "\\".join(p for p in value.split(",") if p)
        assert not parse_match("SOPClassUID", uid_list).matches("1.2.840.10008.5.1.4.1.1.2")
        assert list(idx.find("IMAGE", {"SOPClassUID": uid_list})) == []
        assert time.perf_counter() - started < 0.5
    finally:
        idx.close()


def test_pn_word_patterns_stay_open_at_the_end() -> None:
    m = parse_match("PatientName", "sm?th jo*", fuzzy=True)
    assert m.matches("Smith^John") and m.matches("JOHNSON^SMYTHE") and not m.matches("Smit^John")
