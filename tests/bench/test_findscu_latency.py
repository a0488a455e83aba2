"""C-FIND latency from dcmtk findscu (dicomvault.bench.dimse.findscu_queries, used by
bench/dimse_compare.py, bench/compare_all.py and bench/find_dv.py): findscu's microsecond-stamped
log is parsed into one (latency, matches, status) per query, the first queries of each kind are
dropped as warm-up, a query without a successful answer is retried on a new association, and a
real findscu sends one C-FIND per query file, in order, on one association."""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import dimse_compare as dc  # noqa: E402

from dicomvault.bench import dimse  # noqa: E402

# From real runs (bench/dimse_compare.py --quick --skip-ingest, 2026-11-29) with
# FINDSCU_LOG_CONFIG: `dicomvault serve`, PatientName wildcard, the first 3 queries...
DV_LOG = """\
1795978516.596.608 Requesting Association
1795978516.601.040 Association Accepted (Max Send PDV: 131060)
1795978516.601.294 Sending Find Request (MsgID 1)
1795978516.603.152 Received Find Response 1 (Pending)
1795978516.603.215 Received Find Response 2 (Pending)
1795978516.603.233 Received Final Find Response (Success)
1795978516.603.335 Sending Find Request (MsgID 2)
1795978516.604.529 Received Find Response 4 (Pending)
1795978516.604.576 Received Find Response 5 (Pending)
1795978516.604.594 Received Final Find Response (Success)
1795978516.604.689 Sending Find Request (MsgID 3)
1795978516.605.836 Received Find Response 7 (Pending)
1795978516.605.881 Received Find Response 8 (Pending)
1795978516.605.897 Received Final Find Response (Success)
1795978516.704.217 Releasing Association
"""
# ... and Orthanc 1.10, StudyDate range: one match, none, two.
ORTHANC_LOG = """\
1795978540.000.766 Requesting Association
1795978540.001.496 Association Accepted (Max Send PDV: 131060)
1795978540.001.733 Sending Find Request (MsgID 1)
1795978540.008.097 Received Find Response 1 (Pending)
1795978540.008.153 Received Final Find Response (Success)
1795978540.008.257 Sending Find Request (MsgID 2)
1795978540.012.743 Received Final Find Response (Success)
1795978540.012.879 Sending Find Request (MsgID 3)
1795978540.018.831 Received Find Response 4 (Pending)
1795978540.019.040 Received Find Response 5 (Pending)
1795978540.019.101 Received Final Find Response (Success)
1795978540.528.466 Releasing Association
"""


def test_parse_dicomvault_log_to_the_microsecond() -> None:
    ts = dimse.parse_findscu_log(DV_LOG)
    assert [t.msg_id for t in ts] == [1, 2, 3]
    assert [t.matches for t in ts] == [2, 2, 2]
    assert all(t.ok and t.status == "Success" for t in ts)
    # 603.233 - 601.294 ms etc.: exact to the microsecond (integer arithmetic, no float drift)
    assert [t.latency_ms for t in ts] == [1.939, 1.259, 1.208]


def test_parse_orthanc_log_counts_zero_matches() -> None:
    ts = dimse.parse_findscu_log(ORTHANC_LOG)
    assert [(t.msg_id, t.matches) for t in ts] == [(1, 1), (2, 0), (3, 2)]
    assert [t.latency_ms for t in ts] == [6.42, 4.486, 6.222]


def test_parse_keeps_failed_finals_and_drops_unanswered_requests() -> None:
    text = (
        "1795978540.001.733 Sending Find Request (MsgID 1)\n"
        "1795978540.002.000 Received Find Response 1 (Pending: WarningUnsupportedOptionalKeys)\n"
        "1795978540.003.000 Received Find Response 2 (Pending)\n"
        "1795978540.004.733 Received Final Find Response (Failed: UnableToProcess)\n"
        "1795978540.005.000 Sending Find Request (MsgID 2)\n"
        "1795978540.006.000 Received Find Response 4 (Pending)\n"
        "E: Find Failed, file: q0001.dcm:\n"
        "E: 0006:0207 DIMSE No data available (timeout in non-blocking mode)\n"
        "1795978571.000.000 Aborting Association\n"
    )
    ts = dimse.parse_findscu_log(text)
    assert len(ts) == 1
    assert ts[0].matches == 2 and ts[0].latency_ms == 3.0
    assert ts[0].status == "Failed: UnableToProcess" and not ts[0].ok


def test_parse_ignores_dataset_dumps_and_other_formats() -> None:
    # findscu -v without our config (no stamps) or a response dump: no timings, no crash
    text = "I: Sending Find Request (MsgID 1)\nI: Received Final Find Response (Success)\n" + DV_LOG.replace(
        "Received Find Response 2 (Pending)", "Received Find Response 2 (Pending)\n(0010,0020) LO [P1]"
    )
    ts = dimse.parse_findscu_log(text)
    assert [t.matches for t in ts] == [2, 2, 2]


def test_log_config_stamps_microseconds(tmp_path: Path) -> None:
    cfg = dimse.findscu_log_config(tmp_path / "logs").read_text()
    assert "%D{%s.%Q} %m%n" in cfg
    assert "log4cplus.logger.dcmtk.dcmnet.responses = WARN" in cfg  # one line per pending response


def _timing(i: int, ok: bool = True) -> dimse.FindTiming:
    return dimse.FindTiming(i + 1, float(i), i % 3, "Success" if ok else "Failed: UnableToProcess")


def test_find_latencies_drops_the_warm_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    calls: list[list[Path]] = []

    def fake(ae: str, port: int, files: list[Path], log_path: Path, **kw: Any) -> dimse.FindRun:
        calls.append(list(files))
        return dimse.FindRun([_timing(i) for i in range(len(files))], 0, 0.1, log_path)

    monkeypatch.setattr(dc, "findscu_queries", fake)
    out = dc.find_latencies("X", 1, 20, 5000, tmp_path)
    assert list(out) == list(dc.QUERY_KINDS)
    assert [len(c) for c in calls] == [20 + dc.WARMUP] * len(dc.QUERY_KINDS)  # one findscu per kind
    lat = list(range(dc.WARMUP, 20 + dc.WARMUP))  # latency i ms for query i: the first 10 dropped
    p50, p95, hits = out["PatientID exact"]
    assert p50 == pytest.approx(sum(lat[9:11]) / 2) and p95 == lat[int(0.95 * 19)]
    assert hits == pytest.approx(sum(i % 3 for i in lat) / 20)
    # the query files are the queries of dimse_compare.queries(), with the return keys
    first = dcmread(calls[0][0])
    assert first.QueryRetrieveLevel == "STUDY"
    assert first.PatientID == dc.queries("PatientID exact", 1, 5000)[0][0].split("=", 1)[1]
    assert all(k in first for k in dc.RETURN_KEYS)


def test_findscu_all_retries_the_rest_on_a_new_association(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    runs: list[list[str]] = []

    def fake(ae: str, port: int, files: list[Path], log_path: Path, **kw: Any) -> dimse.FindRun:
        runs.append([f.name for f in files])
        if len(runs) == 1:  # 3 answered, the 4th failed, findscu stopped
            return dimse.FindRun([_timing(i) for i in range(3)] + [_timing(3, ok=False)], 1, 1.0, log_path)
        if len(runs) == 2:  # no answer to the first: findscu gave up
            return dimse.FindRun([], 1, 30.0, log_path)
        return dimse.FindRun([_timing(i) for i in range(len(files))], 0, 1.0, log_path)

    monkeypatch.setattr(dc, "findscu_queries", fake)
    monkeypatch.setattr(dc, "FIND_RETRIES", {})
    files = [tmp_path / f"q{i:04d}.dcm" for i in range(6)]
    done = dc.findscu_all("ORTHANC", 1, files, tmp_path)
    assert len(done) == 6
    assert runs == [[f.name for f in files], [f.name for f in files[3:]], [f.name for f in files[3:]]]
    assert dc.FIND_RETRIES == {"ORTHANC": 2}


def test_findscu_all_gives_up(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(dc, "findscu_queries", lambda *a, **k: dimse.FindRun([], 1, 0.0, tmp_path / "x.log"))
    monkeypatch.setattr(dc, "FIND_RETRIES", {})
    with pytest.raises(RuntimeError, match="failed 4 times"):
        dc.findscu_all("ORTHANC", 1, [tmp_path / "q0000.dcm"], tmp_path)


def test_find_table_keeps_its_shape() -> None:
    stats = {k: (1.0 + i, 2.0 + i, 2.0) for i, k in enumerate(dc.QUERY_KINDS)}
    rows = [ln for ln in dc.find_table(stats, stats, 5000, 5000).splitlines() if ln.startswith("|")]
    assert len(rows) == 2 + len(dc.QUERY_KINDS)
    assert {ln.count("|") for ln in rows} == {6}


# -- a real findscu against an in-process pynetdicom C-FIND SCP -------------------------------------

MATCHES = {"P1": 2, "P2": 0, "P3": 5}


@pytest.fixture
def scp() -> Iterator[int]:
    from pynetdicom import AE, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

    seen: list[str] = []

    def on_find(event: Any) -> Iterator[tuple[int, Dataset | None]]:
        pid = str(event.identifier.PatientID)
        seen.append(f"{event.assoc.native_id}:{pid}")
        if pid == "FAIL":
            yield 0xC000, None
            return
        if pid == "HANG":
            time.sleep(2.5)  # past findscu's -td 1
        for i in range(MATCHES.get(pid, 0)):
            ds = Dataset()
            ds.QueryRetrieveLevel = "STUDY"
            ds.PatientID = pid
            ds.StudyInstanceUID = f"1.2.3.{i + 1}"
            yield 0xFF00, ds

    ae = AE("FINDSCP")
    ae.add_supported_context(StudyRootQueryRetrieveInformationModelFind)
    server = ae.start_server((dimse.HOST, 0), block=False, evt_handlers=[(evt.EVT_C_FIND, on_find)])
    server.seen = seen  # type: ignore[attr-defined]
    try:
        yield server
    finally:
        server.shutdown()


def _files(tmp_path: Path, pids: list[str]) -> list[Path]:
    idents = [dc.query_identifier([f"PatientID={p}"]) for p in pids]
    return dimse.write_find_queries(tmp_path / "queries", idents)


@pytest.mark.interop
def test_real_findscu_one_association_one_find_per_file(scp: Any, tmp_path: Path) -> None:
    if shutil.which("findscu") is None:
        pytest.skip("dcmtk findscu not installed")
    port = scp.server_address[1]
    files = _files(tmp_path, ["P1", "P2", "P3", "P1"])
    run = dimse.findscu_queries("FINDSCP", port, files, tmp_path / "findscu.log")
    assert run.exit_code == 0, run.log_tail
    assert [t.msg_id for t in run.timings] == [1, 2, 3, 4]
    assert [t.matches for t in run.timings] == [2, 0, 5, 2]
    assert all(t.ok and 0 < t.latency_ms < 1000 for t in run.timings)
    assert [s.split(":")[1] for s in scp.seen] == ["P1", "P2", "P3", "P1"]  # in order ...
    assert len({s.split(":")[0] for s in scp.seen}) == 1  # ... on one association
    text = run.log_path.read_text()
    assert text.count("Requesting Association") == 1 and "Request Identifiers" not in text
    assert "(0010,0020)" not in text  # no dataset dumps: one line per response


@pytest.mark.interop
def test_real_findscu_failure_and_timeout_then_retry(scp: Any, tmp_path: Path) -> None:
    if shutil.which("findscu") is None:
        pytest.skip("dcmtk findscu not installed")
    port = scp.server_address[1]
    run = dimse.findscu_queries("FINDSCP", port, _files(tmp_path, ["P1", "FAIL", "P3"]), tmp_path / "a.log")
    assert [(t.matches, t.ok) for t in run.timings] == [(2, True), (0, False), (5, True)]
    assert run.timings[1].status.startswith("Failed")
    run = dimse.findscu_queries(
        "FINDSCP", port, _files(tmp_path, ["P1", "HANG", "P3"]), tmp_path / "b.log", dimse_timeout=1
    )
    # findscu gave up on HANG after 1 s and aborted: P3 never sent (its exit code stays 0, so the
    # count of timings is what tells)
    assert [t.matches for t in run.timings] == [2]
    assert "Find Failed" in run.log_tail and "Aborting Association" in run.log_tail
