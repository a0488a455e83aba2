"""The audit trail of DIMSE traffic, checked after real scenarios against a real `dicomvault
serve` with dcmtk tools: C-GET and C-MOVE write Begin Transferring and one Instances Transferred
per association and study (the C-MOVE's with its destination), refused associations a throttled
Security Alert; the chain verifies afterwards (`dicomvault audit verify`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from dimse_helpers import (
    ARCHIVE_AE,
    HOST,
    STORESCP_AE,
    Archive,
    Sent,
    free_port,
    run,
    start_archive,
    stop_archive,
)

pytestmark = pytest.mark.interop


def audit_records(data: Path) -> list[dict]:
    path = data / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def verify_cli(data: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomvault.cli", "audit", "verify", "--data", str(data)],
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("fast_path", [True, False], ids=["native", "pynetdicom"])
def test_retrieves_and_refusals_are_audited(tmp_path: Path, storescp: tuple[int, Path],
                                            corpus: list[Path], fast_path: bool) -> None:
    arch: Archive = start_archive(tmp_path / "arch", storescp[0], free_port(), accept_unknown_callers=False,
                                  fast_path=fast_path)
    ct = [p for p in corpus if p.name == "ct_ele.dcm"]
    mr = [p for p in corpus if p.name == "MR_small.dcm"]
    try:
        # A known peer (by AE title) stores two studies.
        for f in ct + mr:
            run(["storescu", "-aet", STORESCP_AE, "-aec", ARCHIVE_AE, *arch.addr, str(f)])
        ct_study, mr_study = Sent.of(ct[0]).study_uid, Sent.of(mr[0]).study_uid
        # C-GET of the CT study by two getscu runs: two associations, two records.
        get_out = tmp_path / "get"
        get_out.mkdir()
        for _ in range(2):
            run(["getscu", "-aet", STORESCP_AE, "-aec", ARCHIVE_AE, "-S", "-k", "QueryRetrieveLevel=STUDY",
                 "-k", f"StudyInstanceUID={ct_study}", "-od", str(get_out), *arch.addr])
        # C-MOVE of the MR study to the dcmtk storescp.
        run(["movescu", "-aet", STORESCP_AE, "-aec", ARCHIVE_AE, "-aem", STORESCP_AE, "-S",
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={mr_study}", *arch.addr])
        # A C-MOVE to an unknown destination is refused before anything transfers: no record.
        run(["movescu", "-aet", STORESCP_AE, "-aec", ARCHIVE_AE, "-aem", "NOWHERE", "-S",
             "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={mr_study}", *arch.addr], check=False)
        # An unknown caller, three times: refused each time, one Security Alert line.
        for _ in range(3):
            refused = run(["echoscu", "-aet", "STRANGER", "-aec", ARCHIVE_AE, *arch.addr], check=False)
            assert refused.returncode != 0
    finally:
        rc = stop_archive(arch)
    assert rc == 0, arch.log_text()[-3000:]
    recs = audit_records(arch.data)
    begins = [r for r in recs if r["event"] == "begin-transferring"]
    sent = [r for r in recs if r["event"] == "instances-transferred" and r["detail"]["direction"] == "sent"]
    gets = [r for r in sent if r["detail"]["protocol"] == "DIMSE C-GET"]
    moves = [r for r in sent if r["detail"]["protocol"] == "DIMSE C-MOVE"]
    assert len(gets) == 2, sent  # two associations
    for r in gets:
        assert (r["user"], r["client"], r["study"], r["outcome"]) == (STORESCP_AE, HOST, ct_study, "success")
        assert (r["detail"]["matched"], r["detail"]["completed"], r["detail"]["failed"]) == (1, 1, 0)
        assert r["patient"] == Sent.of(ct[0]).patient_id
    assert len(moves) == 1, sent
    m = moves[0]
    assert m["study"] == mr_study and m["patient"] == Sent.of(mr[0]).patient_id
    assert m["detail"]["destination"] == f"{STORESCP_AE}@{HOST}:{storescp[0]}"
    assert (m["detail"]["completed"], m["detail"]["failed"], m["outcome"]) == (1, 0, "success")
    # Begin Transferring: one per association and study, the C-MOVE's naming its destination
    assert sorted((b["detail"]["protocol"], b["study"]) for b in begins) == sorted(
        [("DIMSE C-GET", ct_study)] * 2 + [("DIMSE C-MOVE", mr_study)])
    assert all(b["code"] == "DCM 110102" for b in begins)
    assert next(b for b in begins if "MOVE" in b["detail"]["protocol"])["detail"]["destination"].startswith(
        STORESCP_AE)
    # Begin comes before its transfer record
    assert recs.index(begins[0]) < recs.index(gets[0])
    received = [r for r in recs
                if r["event"] == "instances-transferred" and r["detail"]["direction"] == "received"]
    assert sorted(r["study"] for r in received) == sorted([ct_study, mr_study])
    alerts = [r for r in recs if r["event"] == "association-refused"]
    assert len(alerts) == 1, alerts  # three refusals, throttled to one line a minute
    a = alerts[0]
    assert (a["user"], a["client"], a["code"], a["outcome"]) == ("STRANGER", HOST, "DCM 110113", "failure")
    assert "not a known peer" in a["detail"]["reason"]
    v = verify_cli(arch.data)
    assert v.returncode == 0, v.stdout + v.stderr
