"""bench/dicomweb_compare.py's arithmetic and tables, from made-up figures (no server runs):
percentiles against numpy's, ratios in the right direction, every markdown row as wide as its
header, the RESULTS.md section replaced rather than duplicated, a STOW body that a MIME parser
splits back into the parts."""

from __future__ import annotations

import email.parser
import email.policy
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import dicomweb_compare as wc  # noqa: E402


def test_p50_p95_against_numpy() -> None:
    rng = np.random.default_rng(3)
    samples = list(rng.exponential(0.004, size=401))
    p50, p95 = wc.p50_p95(samples)
    ms = np.array(samples) * 1e3
    assert p50 == pytest.approx(float(np.median(ms)))
    assert p95 == pytest.approx(float(np.percentile(ms, 95, method="inverted_cdf")))
    assert wc.p50_p95([]) == (None, None)
    assert wc.p50_p95([0.002]) == (2.0, 2.0)


def test_better_direction() -> None:
    assert wc.better(2.0, 50.0, higher_is_better=False) == 25.0  # latency: Orthanc / ours
    assert wc.better(300.0, 150.0, higher_is_better=True) == 2.0  # throughput: ours / Orthanc
    assert wc.better(None, 5.0, True) is None
    assert wc.better(5.0, 0.0, False) is None


def test_mb_per_s() -> None:
    assert wc.mb_per_s(50_000_000, 0.5) == 100.0
    assert wc.mb_per_s(1, 0.0) is None


def _results() -> dict[str, object]:
    lat = {wc.DV: [0.001, 0.002, 0.003], wc.ORTHANC: [0.04, 0.05, 0.06]}
    return {
        "qido": {k: lat for k in wc.QIDO_KINDS},
        "metadata": {wc.DV: (0.2, [0.02, 0.03], 1000), wc.ORTHANC: (0.5, [0.3, 0.4], 1000)},
        "retrieve": {wc.DV: ([0.1, 0.2, 0.3], 40_000_000), wc.ORTHANC: ([0.4, 0.4, 0.4], 40_000_000)},
        "stow": {wc.DV: [300.0, 320.0], wc.ORTHANC: [150.0]},
        "rendered": {wc.DV: [0.01], wc.ORTHANC: [0.03]},
    }


def test_figures_and_table() -> None:
    figs = wc.figures(_results(), 100_000, 100_000)
    by = {f.name: f for f in figs}
    f = by["QIDO-RS /studies PatientID exact, p50 ms"]
    assert (f.dv, f.orthanc) == (2.0, 50.0) and "25.00x" in f.cells()
    assert by["WADO-RS study retrieve, MB/s"].cells()[3] == "2.00x"  # 40 MB / 0.2 s vs / 0.4 s
    assert by["STOW-RS, 4 clients, instances/s"].cells()[3] == "2.07x"  # median(300, 320) / 150
    assert by["series metadata (1,000 instances), warm p50 ms"].cells()[3] == f"{0.35 / 0.025:.2f}x"
    table = wc.markdown_table(figs).splitlines()
    assert len(table) == len(figs) + 2
    assert all(row.count("|") == len(wc.HEADER) + 1 for row in table)


def test_table_with_a_missing_server() -> None:
    r = _results()
    r["stow"] = {wc.DV: [], wc.ORTHANC: [150.0]}
    row = next(f for f in wc.figures(r, 5000, 5000) if f.name.startswith("STOW"))
    assert row.cells()[1] == "-" and row.cells()[3] == "-"


def test_replace_section() -> None:
    head = "# results\n\nintro\n\n## Other\n\nkeep me\n"
    once = wc.replace_section(head, wc.SECTION, "table 1")
    assert once.startswith(head.rstrip()) and once.count(wc.SECTION) == 1 and "table 1" in once
    twice = wc.replace_section(once + "\n## Later\n\nalso kept\n", wc.SECTION, "table 2")
    assert twice.count(wc.SECTION) == 1 and "table 1" not in twice and "table 2" in twice
    assert "keep me" in twice and "also kept" in twice and twice.index("table 2") < twice.index("## Later")
    assert wc.replace_section("", wc.SECTION, "t") == f"{wc.SECTION}\n\nt\n"


def test_multipart_related_parses_back() -> None:
    parts = [b"\x00DICM\r\n--not-a-boundary", bytes(range(256)) * 3]
    body, ctype = wc.multipart_related(parts, "b0undary")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        f"Content-Type: {ctype}\r\n\r\n".encode() + body)
    got = [p.get_payload(decode=True) for p in msg.iter_parts()]
    assert got == parts
    assert msg.get_param("type") == "application/dicom"


def test_interleaved_rotates_order() -> None:
    order = wc.interleaved(["a", "b"], 4)
    assert order == [(0, "a"), (0, "b"), (1, "b"), (1, "a"), (2, "a"), (2, "b"), (3, "b"), (3, "a")]


def test_args_quick_and_full() -> None:
    q = wc.parse_args(["--quick", "--no-results"])
    assert (q.index, q.queries, q.results) == (5000, 50, None)
    full = wc.parse_args([])
    assert full.index == 100_000 and full.results == BENCH / "RESULTS.md"


def test_query_string_keeps_wildcards_literal() -> None:
    assert wc.query_string({}) == ""
    q = wc.query_string({"PatientName": "AB C*", "StudyDate": "20100101-20100107", "x": "a&b"})
    assert q == "?PatientName=AB%20C*&StudyDate=20100101-20100107&x=a%26b"
