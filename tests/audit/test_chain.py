"""The audit log's hash chain (`seq`, `prev`, the head file): `verify` finds an edited, inserted,
removed or cut-off line, and `search`; the CLI's `audit verify|search`, and the records that
`delete` and `export` leave."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomvault.audit.log import (
    DATA_DELETION,
    EXPORT,
    LOGIN,
    SECURITY_ALERT,
    SUCCESS,
    AuditLog,
    line_hash,
    search,
    verify,
)

CLI = str(Path(sys.executable).with_name("dicomvault"))


def _log(tmp_path: Path, n: int = 6) -> AuditLog:
    a, b = AuditLog(tmp_path), AuditLog(tmp_path)  # two writers (a server and the CLI, say)
    for i in range(n):
        (a if i % 2 else b).record(LOGIN, SUCCESS, user=f"u{i}", client="10.0.0.1", patient=f"P{i % 3}",
                                   study=f"1.2.{i}")
    return a


def _rewrite(path: Path, edit) -> None:  # type: ignore[no-untyped-def]
    lines = path.read_bytes().split(b"\n")[:-1]
    path.write_bytes(b"".join(x + b"\n" for x in edit(lines)))


def test_a_chain_from_concurrent_writers_verifies(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)

    def many(n: int) -> None:
        for i in range(25):
            AuditLog(tmp_path).record(LOGIN, SUCCESS, user=f"t{n}", client=None, detail={"i": i})

    threads = [threading.Thread(target=many, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    log.write([log.event(SECURITY_ALERT, SUCCESS, user="x", client=None)] * 3)  # one write, 3 lines
    r = verify(tmp_path)
    assert r.intact, r.breaks
    assert (r.lines, r.chained) == (103, 103)
    recs = [json.loads(x) for x in log.path.read_bytes().split(b"\n")[:-1]]
    assert [x["seq"] for x in recs] == list(range(1, 104))
    assert recs[0]["prev"] == "0" * 64
    assert log.head_path.read_text().split() == ["103", line_hash(log.path.read_bytes().split(b"\n")[-2])]


@pytest.mark.parametrize(
    ("tamper", "line", "why"),
    [
        (lambda ls: [*ls[:2], ls[2].replace(b"u2", b"u9"), *ls[3:]], 4, "prev does not match"),
        (lambda ls: [*ls[:3], *ls[4:]], 4, "prev does not match"),
        (lambda ls: [*ls[:3], ls[1], *ls[3:]], 4, "prev does not match"),
        (lambda ls: ls[:-1], 5, "cut off the end"),
    ],
    ids=["edited", "removed", "inserted", "cut"],
)
def test_tampering_breaks_the_chain_where_it_happened(  # type: ignore[no-untyped-def]
    tmp_path: Path, tamper, line: int, why: str
) -> None:
    log = _log(tmp_path)
    _rewrite(log.path, tamper)
    r = verify(tmp_path)
    assert not r.intact
    assert r.breaks[0][0] == line and why in r.breaks[0][1], r.breaks


def test_lines_from_before_the_chain_are_kept_and_anchored(tmp_path: Path) -> None:
    log_dir = tmp_path / "audit"
    log_dir.mkdir()
    old = {"time": "2026-01-01T00:00:00.000+00:00", "event": "login", "outcome": "success", "user": "old",
           "client": None, "study": None, "detail": {}}
    (log_dir / "audit.jsonl").write_text(json.dumps(old) + "\n")
    _log(tmp_path, 2)
    r = verify(tmp_path)
    assert r.intact and (r.unchained, r.chained) == (1, 2)
    first = json.loads((log_dir / "audit.jsonl").read_bytes().split(b"\n")[1])
    assert first["prev"] == line_hash(json.dumps(old).encode())


def test_search_by_patient_user_event_and_time(tmp_path: Path) -> None:
    _log(tmp_path)
    assert [r["user"] for r in search(tmp_path, patient="P1")] == ["u1", "u4"]
    assert [r["seq"] for r in search(tmp_path, user="u5")] == [6]
    assert list(search(tmp_path, event=EXPORT)) == []
    assert len(list(search(tmp_path, since="2000-01-01"))) == 6
    assert list(search(tmp_path, until="2000-01-01T00:00:00+00:00")) == []


def test_cli_delete_and_export_are_audited_and_the_cli_verifies_and_searches(tmp_path: Path) -> None:
    data = tmp_path / "data"
    ct = get_testdata_file("CT_small.dcm")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([CLI, *args, "--data", str(data)], capture_output=True, text=True, timeout=120)

    assert cli("ingest", ct).returncode == 0
    ds = pydicom.dcmread(ct, stop_before_pixels=True)
    assert cli("export", "--study", ds.StudyInstanceUID, "-o", str(tmp_path / "out")).returncode == 0
    assert cli("delete", "--study", ds.StudyInstanceUID).returncode == 0
    found = cli("audit", "search", "--patient", ds.PatientID, "--json")
    recs = [json.loads(x) for x in found.stdout.splitlines()]
    assert [(r["event"], r["code"], r["study"]) for r in recs] == [
        (EXPORT, "DCM 110106", ds.StudyInstanceUID),
        (DATA_DELETION, "DCM 110105", ds.StudyInstanceUID),
    ]
    assert recs[1]["detail"]["instances"] == 1 and recs[1]["user"].startswith("cli:")
    ok = cli("audit", "verify")
    assert ok.returncode == 0 and "intact" in ok.stdout
    _rewrite(data / "audit" / "audit.jsonl", lambda ls: [ls[0].replace(b"success", b"failure"), *ls[1:]])
    bad = cli("audit", "verify")
    assert bad.returncode == 1 and "line 2" in bad.stdout, bad.stdout


def test_serve_records_its_start_and_stop(tmp_path: Path) -> None:
    import signal
    import socket
    import time

    from seaweed_server import free_ports

    dimse, http = free_ports(2)
    data = tmp_path / "data"
    ct = get_testdata_file("CT_small.dcm")
    args = ["serve", "--data", str(data), "--accept-unknown-callers",
            "--host", "127.0.0.1", "--dimse-port", str(dimse),
            "--http-port", str(http)]
    proc = subprocess.Popen([CLI, *args], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, "dicomvault serve exited"
            try:
                socket.create_connection(("127.0.0.1", dimse), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "dicomvault serve not up after 30 s"
                time.sleep(0.1)
        send = subprocess.run(["storescu", "-aet", "CT_ROOM_3", "-aec", "DICOMVAULT", "127.0.0.1", str(dimse),
                               ct, ct], capture_output=True, text=True, timeout=60)
        assert send.returncode == 0, send.stderr
        pid = str(pydicom.dcmread(ct, stop_before_pixels=True).PatientID)
        keys = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"PatientID={pid}", "-k", "StudyInstanceUID"]
        find = subprocess.run(["findscu", "-S", "-aet", "VIEWER", "-aec", "DICOMVAULT", *keys, "127.0.0.1",
                               str(dimse)], capture_output=True, text=True, timeout=60)
        assert find.returncode == 0, find.stderr
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(40) == 0
    recs = list(search(data))
    assert [r["event"] for r in recs] == [
        "application-start", "query", "instances-transferred", "application-stop"]
    start, query, moved, stop = recs
    assert (query["code"], query["user"], query["patient"]) == ("DCM 110112", "VIEWER", pid)
    assert query["detail"]["level"] == "STUDY" and query["detail"]["matches"] == 1
    assert all(r["code"] == "DCM 110100" and r["detail"]["pid"] == proc.pid for r in (start, stop))
    assert start["detail"]["dimse_port"] == dimse and stop["detail"]["clean"] is True
    ds = pydicom.dcmread(ct, stop_before_pixels=True)
    # One record for the burst (the same object twice: both acknowledged, one stored).
    assert (moved["code"], moved["user"], moved["study"], moved["patient"]) == (
        "DCM 110104", "CT_ROOM_3", ds.StudyInstanceUID, ds.PatientID)
    assert moved["detail"]["instances"] == 2 and moved["detail"]["direction"] == "received"
    assert verify(data).intact


def test_a_torn_last_line_is_cut_before_the_next_event(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    with log.path.open("ab") as f:  # an append cut short by a full disk or a crash
        f.write(b'{"time":"2026')
    assert not verify(tmp_path).intact
    log.record(EXPORT, SUCCESS, user="u", client=None, patient="P9")
    assert [r["seq"] for r in search(tmp_path)] == [1, 2, 3]
    assert [r["patient"] for r in search(tmp_path, event=EXPORT)] == ["P9"]
    assert verify(tmp_path).intact


def test_verify_while_a_server_appends_sees_no_false_break(tmp_path: Path) -> None:
    _log(tmp_path, 1)
    stop = threading.Event()

    def append() -> None:
        w = AuditLog(tmp_path)
        while not stop.is_set():
            w.record(LOGIN, SUCCESS, user="busy", client=None)

    t = threading.Thread(target=append)
    t.start()
    try:
        reports = [verify(tmp_path) for _ in range(30)]
    finally:
        stop.set()
        t.join()
    assert all(r.intact for r in reports), [r.breaks for r in reports if not r.intact][:1]


def test_a_damaged_head_is_a_break_not_a_crash(tmp_path: Path) -> None:
    log = _log(tmp_path, 2)
    log.head_path.write_text("x y\n")
    r = verify(tmp_path)
    assert not r.intact and "head file is damaged" in r.breaks[-1][1]


def test_transfers_are_one_record_per_callers_burst_of_a_study(tmp_path: Path) -> None:
    from dicomvault.audit.dimse import DimseAudit

    now = [1000.0]
    audit = DimseAudit(AuditLog(tmp_path), {"s1": "P1", "s2": "P2"}.get, quiet=10, clock=lambda: now[0])
    try:
        for sop in ("s1", "s1b", "s1c"):
            audit.stored("CT1", "1.2.1", sop)
        audit.stored("MR1", "1.2.2", "s2")
        now[0] += 5
        audit.stored("MR1", "1.2.2", "s2b")
        assert audit.flush() == 0  # nothing quiet for 10 s yet
        now[0] += 6
        assert audit.flush() == 1  # CT1's burst ended 11 s ago; MR1's 6 s ago
        now[0] += 5
        assert audit.flush() == 1
    finally:
        audit.close()
    recs = list(search(tmp_path, event="instances-transferred"))
    assert [(r["user"], r["study"], r["patient"], r["detail"]["instances"]) for r in recs] == [
        ("CT1", "1.2.1", "P1", 3), ("MR1", "1.2.2", "P2", 2)]
    assert verify(tmp_path).intact


def test_a_retrieve_longer_than_the_quiet_window_is_one_record(tmp_path: Path) -> None:
    """A C-MOVE still running after `quiet` seconds is not cut in two: its burst is busy until
    it ends; then the operations of one association and study add up."""
    from dicomvault.audit.dimse import DimseAudit

    now = [1000.0]
    audit = DimseAudit(AuditLog(tmp_path), {"s1": "P1"}.get, quiet=10, clock=lambda: now[0])
    try:
        key = audit.retrieve_started(7, "WS1", "10.0.0.9", "C-MOVE", "1.2.1", None, "s1", 300, "PACS@h:104")
        assert audit.flush() == 1  # Begin Transferring, at once
        now[0] += 60
        assert audit.flush() == 0  # still running
        audit.retrieve_ended(key, 299, 1, 0)
        key2 = audit.retrieve_started(7, "WS1", "10.0.0.9", "C-MOVE", "1.2.1", None, "s1", 5, "PACS@h:104")
        audit.retrieve_ended(key2, 5, 0, 0)
        assert audit.flush() == 0  # ended just now: not quiet yet; no second Begin either
        now[0] += 11
        assert audit.flush() == 1
    finally:
        audit.close()
    (begin,) = search(tmp_path, event="begin-transferring")
    (rec,) = search(tmp_path, event="instances-transferred")
    assert (begin["user"], begin["patient"], begin["detail"]["destination"]) == ("WS1", "P1", "PACS@h:104")
    d = rec["detail"]
    assert (rec["outcome"], d["operations"], d["matched"], d["completed"], d["failed"]) == (
        "failure", 2, 305, 304, 1)
    assert verify(tmp_path).intact
