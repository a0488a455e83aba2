"""The audit trail of DIMSE traffic, checked after real scenarios against a real `dicomvault
serve` with dcmtk tools: C-GET and C-MOVE write Begin Transferring and one Instances Transferred
per association and study (the C-MOVE's with its destination), refused associations a throttled
Security Alert; the chain verifies afterwards (`dicomvault audit verify`)."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from dimse_helpers import (
    ARCHIVE_AE,
    HOST,
    STORESCP_AE,
    Archive,
    Sent,
    free_port,
    pynetdicom_options_kept,
    run,
    start_archive,
    stop_archive,
)
from pynetdicom import AE
from pynetdicom.sop_class import Verification

from dicomvault.bench.pki import dcmtk_tls_args, make_pki
from dicomvault.config import Config, DimseConfig, PeerConfig
from dicomvault.dimse import DimseServer
from dicomvault.engine import Engine

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


def test_refused_tls_handshakes_are_security_alerts(tmp_path: Path) -> None:
    """Expired, untrusted and missing client certificates at the DICOM TLS port (dcmtk echoscu
    +tls): one Security Alert per host and reason a minute, naming the reason. An association
    refused after a good handshake names the TLS peer's address, not the relay's loopback one."""
    pki = make_pki(tmp_path / "pki")
    data = tmp_path / "data"
    tls_port = free_port()
    key, crt = pki["server"]
    dimse = DimseConfig(port=0, tls_port=tls_port, tls_cert=crt, tls_key=key, tls_ca=pki["ca"][1])
    quick = ["-aec", ARCHIVE_AE, "-to", "5", "-ta", "5", HOST, str(tls_port)]
    with pynetdicom_options_kept(), Engine(data) as engine:
        dimse = replace(dimse, accept_unknown_callers=False)
        peers = (PeerConfig("KNOWN", HOST, 104),)
        srv = DimseServer(engine, Config(data_dir=data, dimse=dimse, peers=peers))
        srv.start()
        try:
            for _ in range(2):  # the second of each is left out of the log (counted)
                assert run(["echoscu", *dcmtk_tls_args(pki, "expired"), *quick], check=False).returncode != 0
            assert run(["echoscu", *dcmtk_tls_args(pki, "rogue"), *quick], check=False).returncode != 0
            assert run(["echoscu", "+tla", "+cf", str(pki["ca"][1]), *quick], check=False).returncode != 0
            run(["echoscu", "-aet", "KNOWN", *dcmtk_tls_args(pki, "client"), *quick])  # a good one: no alert
            ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"][1]))
            ctx.check_hostname = False
            ctx.load_cert_chain(str(pki["client"][1]), str(pki["client"][0]))
            ae = AE(ae_title="STRANGER")
            ae.add_requested_context(Verification)
            assoc = ae.associate(HOST, tls_port, ae_title=ARCHIVE_AE, tls_args=(ctx, None),
                                 bind_address=("127.0.0.2", 0))
            assert assoc.is_rejected
        finally:
            assert srv.stop(10)  # waits for the relays (each reports its refusal) and writes
    alerts = [r for r in audit_records(data) if r["event"] == "tls-refused"]
    reasons = sorted(r["detail"]["reason"] for r in alerts)
    assert len(alerts) == 3, reasons
    assert any("certificate has expired" in x for x in reasons), reasons
    assert any("peer did not return a certificate" in x for x in reasons), reasons
    assert all((r["client"], r["code"], r["outcome"]) == (HOST, "DCM 110113", "failure") for r in alerts)
    (refused,) = [r for r in audit_records(data) if r["event"] == "association-refused"]
    assert (refused["user"], refused["client"]) == ("STRANGER", "127.0.0.2")
    assert verify_cli(data).returncode == 0


def test_receiver_processes_audit_refused_associations(tmp_path: Path, storescp: tuple[int, Path]) -> None:
    arch = start_archive(tmp_path / "arch", storescp[0], free_port(), accept_unknown_callers=False, workers=2)
    try:
        for _ in range(2):
            stranger = run(["echoscu", "-aet", "STRANGER", "-aec", ARCHIVE_AE, *arch.addr], check=False)
            assert stranger.returncode != 0
        run(["echoscu", "-aet", STORESCP_AE, "-aec", ARCHIVE_AE, *arch.addr])
    finally:
        rc = stop_archive(arch)
    assert rc == 0, arch.log_text()[-3000:]
    alerts = [r for r in audit_records(arch.data) if r["event"] == "association-refused"]
    # two receivers: each throttles on its own, so one or two lines, never a line per attempt
    # beyond that; the same caller and reason
    assert 1 <= len(alerts) <= 2, alerts
    assert all((r["user"], r["client"]) == ("STRANGER", HOST) for r in alerts)
    assert verify_cli(arch.data).returncode == 0
