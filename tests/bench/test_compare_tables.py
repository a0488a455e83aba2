"""The DIMSE comparison tables (bench/dimse_compare.py, bench/compare_all.py) carry the no-op
ceiling (dcmtk storescp --fork --ignore) as a target with its ratios, and every markdown row has as many
cells as its header. No server runs: the tables are rendered from made-up results."""

from __future__ import annotations

import argparse
import shutil
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import compare_all as ca  # noqa: E402
import dimse_compare as dc  # noqa: E402

from dicomvault.bench.dimse import RetrieveRun  # noqa: E402

RATES = {"Orthanc": 330.0, "Orthanc zlib": 100.0, "dicomvault": 600.0, dc.CEILING: 820.0}


def _results() -> list[dc.IngestResult]:
    out = []
    for t in (*dc.TARGETS, dc.CEILING):
        for a in (1, 4):
            ips = RATES[t] * (1.25 if a == 1 else 1.0)
            out.append(dc.IngestResult(t, a, 300 / ips, 300, 300, 157.5, 5.0, 9.0))
    return out


def _cells(line: str) -> list[str]:
    assert line.startswith("|") and line.endswith("|"), line
    return [c.strip() for c in line[1:-1].split("|")]


def _table(text: str) -> list[list[str]]:
    rows = [_cells(ln) for ln in text.splitlines() if ln.startswith("|")]
    assert rows and all(len(r) == len(rows[0]) for r in rows), [len(r) for r in rows]
    return rows


def test_ingest_table_has_the_ceiling_row_and_ratios() -> None:
    rows = _table(dc.ingest_table(_results()))
    head = rows[0]
    assert head[-2:] == ["dicomvault / this", "this / ceiling"]
    by = {(r[0], r[1]): dict(zip(head, r, strict=True)) for r in rows[2:]}
    assert set(by) == {(t, a) for t in (*dc.TARGETS, dc.CEILING) for a in ("1", "4")}
    assert dc.CEILING == "storescp --fork --ignore (no-op ceiling)"
    ceil4 = by[(dc.CEILING, "4")]
    assert ceil4["instances"] == "300/300" and ceil4["this / ceiling"] == ""
    assert ceil4["dicomvault / this"] == f"{600 / 820:.2f}x"  # dicomvault / ceiling
    assert by[("dicomvault", "4")]["this / ceiling"] == f"{600 / 820:.2f}x"
    assert by[("Orthanc", "4")]["this / ceiling"] == f"{330 / 820:.2f}x"  # Orthanc / ceiling
    assert by[("Orthanc", "1")]["this / ceiling"] == f"{330 / 820:.2f}x"


def test_ingest_table_marks_failed_storescu_and_works_without_the_ceiling() -> None:
    res = [r for r in _results() if r.target != dc.CEILING]
    res[0].client_failures = 2
    rows = _table(dc.ingest_table(res))
    assert rows[2][2] == "300/300 (2 storescu failed)"
    assert all(r[-1] == "" for r in rows[2:])
    assert dc.ceiling_note(res) == ""


def test_ceiling_note_gives_the_bound_in_multiples_of_orthanc() -> None:
    note = dc.ceiling_note(_results())
    assert f"4 association(s): ceiling 820 inst/s = {820 / 330:.2f}x Orthanc" in note
    assert f"dicomvault {600 / 820:.2f}" in note and "3x Orthanc" in note


def test_start_target_knows_the_ceiling(tmp_path: Path) -> None:
    if shutil.which("storescp") is None:
        pytest.skip("dcmtk storescp not installed")
    target = dc.start_target(dc.CEILING, tmp_path / "store")
    try:
        assert target.name == dc.CEILING and target.root is None and target.count() == 0
    finally:
        target.stop()
    assert (tmp_path / "store" / "storescp" / "storescp.log").exists()


def test_compare_all_report_has_the_ceiling_column(tmp_path: Path) -> None:
    files = []
    for i in range(3):
        f = tmp_path / f"{i}.dcm"
        f.write_bytes(b"x" * 1000)
        files.append(f)
    r = ca.Run(argparse.Namespace(scratch=tmp_path))
    r.dev = {"seq_write": {"mb_s": 400.0}, "seq_read": {"mb_s": 1300.0}}
    r.ingest = _results()
    run = RetrieveRun(1.0, 3, 5.0, 0)
    r.get = {t: run for t in dc.TARGETS}
    r.move = {t: run for t in dc.TARGETS}
    r.size = {
        "dicomvault": {"disk_bytes": 700, "stored_bytes": 600},
        "Orthanc": {"disk_bytes": 3000, "index_bytes": 100},
        "Orthanc zlib": {"disk_bytes": 900, "index_bytes": 100},
    }
    text = ca.report(r, files, 3, 0.003, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), ca.dt.datetime.now())
    rows = _table(text)
    head = rows[0]
    assert dc.CEILING in head and "dicomvault / ceiling" in head
    by = {row[0]: dict(zip(head, row, strict=True)) for row in rows[2:]}
    ips4 = by["DIMSE ingest, 4 assoc., instances/s"]
    assert ips4[dc.CEILING] == "820.0" and ips4["dicomvault / ceiling"] == f"{600 / 820:.2f}x"
    assert by["DIMSE ingest, 1 assoc., MB/s"]["dicomvault / ceiling"] == f"{600 / 820:.2f}x"
    assert by["DIMSE ingest, 4 assoc., p50 ms per instance"]["dicomvault / ceiling"] == "-"
    assert by["C-GET study retrieve, MB/s"][dc.CEILING] == "-"
    assert by["device synced sequential write, MB/s"]["device"] == "400.0"
    assert "No-op ceiling: dcmtk `storescp --fork -pdu 131072 --ignore` (one process per association" in text
    # the bound: the device (400 MB/s) is below the ceiling (157.5 MB in 300/820 s)
    bound4 = by["DIMSE ingest, 4 assoc., / min(no-op ceiling, device synced write) (issue 13: >= 0.8 with 4)"]
    assert bound4["dicomvault"] == f"{157.5 / (300 / 600) / 400:.2f}x"


def test_ingest_bound_is_against_the_lower_of_ceiling_and_device() -> None:
    dv = dc.IngestResult("dicomvault", 4, 1.0, 300, 300, 300.0)
    ceiling = dc.IngestResult(dc.CEILING, 4, 0.5, 300, 300, 300.0)  # 600 MB/s
    assert ca.ingest_bound(dv, ceiling, 400.0) == pytest.approx(300 / 400)  # the disk is lower
    assert ca.ingest_bound(dv, ceiling, 1600.0) == pytest.approx(300 / 600)  # the clients are
    assert ca.ingest_bound(dv, None, 400.0) is None


def test_compare_all_report_c_find_rows(tmp_path: Path) -> None:
    """The C-FIND rows keep their names (dcmtk findscu figures); --pynetdicom-find adds the
    pynetdicom SCU's p50 as extra rows; the method notes name the client and the timing source."""
    files = [tmp_path / "0.dcm"]
    files[0].write_bytes(b"x" * 1000)
    stats = {k: (1.0 + i, 2.0 + i, 2.0) for i, k in enumerate(dc.QUERY_KINDS)}
    orth = {k: (10.0 + i, 20.0 + i, 2.0) for i, k in enumerate(dc.QUERY_KINDS)}
    for py in ({}, {"dv": orth, "orthanc": orth}):
        r = ca.Run(argparse.Namespace(scratch=tmp_path))
        r.dev = {"seq_write": {"mb_s": 400.0}, "seq_read": {"mb_s": 1300.0}}
        r.find = {"dv": stats, "orthanc": orth, "n_dv": 5000, "n_orthanc": 5000, "n_find": 100,
                  "pynetdicom": py}
        text = ca.report(r, files, 1, 0.001, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), ca.dt.datetime.now())
        rows = _table(text)
        by = {row[0]: dict(zip(rows[0], row, strict=True)) for row in rows[2:]}
        p50 = by["C-FIND PatientID exact, p50 ms"]
        assert p50["dicomvault"] == "1.00" and p50["Orthanc"] == "10.00"
        assert p50["dicomvault vs Orthanc"] == "10.00x"
        p95 = 2.0 + dc.QUERY_KINDS.index("StudyDate range")
        assert by["C-FIND StudyDate range, p95 ms"]["dicomvault"] == f"{p95:.2f}"
        assert ("C-FIND PatientName wildcard, pynetdicom SCU, p50 ms" in by) == bool(py)
        assert "dcmtk `findscu`" in text and "%D{%s.%Q}" in text and "1 us resolution" in text


def test_report_keeps_the_sections_other_benchmarks_wrote(tmp_path: Path) -> None:
    out = tmp_path / "RESULTS.md"
    out.write_text("# old title\n\nold table\n\n## How each figure was measured\nold\n\n"
                   "## DICOMweb: x\nweb\n\n## Viewer (make bench-viewer)\nviewer\n\n## Tiers\ntiers\n")
    new = "# new title\n\nnew table\n\n## How each figure was measured\nnew\n"
    text = ca._keep_other_sections(out, new)
    assert text.startswith(new.rstrip())
    assert "old table" not in text and "\nold\n" not in text
    for kept in ("## DICOMweb: x\nweb", "## Viewer (make bench-viewer)\nviewer", "## Tiers\ntiers"):
        assert kept in text
