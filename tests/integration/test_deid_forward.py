"""A `[[forward]]` rule with `deidentify = "PROJECT"`: `dicomvault forward run --once` sends the
study de-identified to a real peer (DCMTK storescp), with the UIDs any export of the project
gives, and holds back the object flagged for burned-in annotation."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pydicom
import pytest
from dv_deid import PATIENT_ID, SECRET, make_study, write_config

from dicomvault.bench.ports import free_port
from dicomvault.integration.deid.pseudonyms import Pseudonymizer
from dicomvault.replication.settings import SettingsError, load_settings


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, "storescp exited"
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"storescp not listening on {port}")


def dv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dicomvault.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.skipif(shutil.which("storescp") is None, reason="DCMTK storescp not installed")
def test_forward_sends_deidentified_to_storescp(tmp_path: Path) -> None:
    study = make_study(tmp_path / "in")
    data = tmp_path / "data"
    assert dv("ingest", "--data", str(data), str(tmp_path / "in")).returncode == 0
    port = free_port()
    cfg = write_config(tmp_path, extra=f"""
[[forward]]
name = "research"
ae_title = "PEER"
host = "127.0.0.1"
port = {port}
deidentify = "TRIAL"
""")
    out = tmp_path / "received"
    out.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", "PEER", "-od", str(out), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, scp)
        run = dv("forward", "run", "--once", "--config", str(cfg), "--data", str(data))
    finally:
        scp.terminate()
        scp.wait(10)
    assert run.returncode == 0, run.stdout + run.stderr
    got = [pydicom.dcmread(p) for p in sorted(out.iterdir())]
    pseudo = Pseudonymizer("TRIAL", SECRET.encode())
    expected = {pseudo.uid(o.sop_uid) for o in study.objects if o.modality != "US"}
    assert {ds.SOPInstanceUID for ds in got} == expected
    for ds in got:
        assert ds.PatientID == pseudo.patient_id(PATIENT_ID) and ds.PatientIdentityRemoved == "YES"
        assert ds.StudyInstanceUID == pseudo.uid(study.uid)
        assert str(ds.PatientName) != "DOE^JANE^Q" and "OtherPatientIDsSequence" not in ds
    status = json.loads(dv("forward", "status", "--json", "--data", str(data)).stdout)
    assert status[0]["skipped"] == 1 and status[0]["last_error"] is None and status[0]["pending"] == 0


def test_forward_rule_names_a_configured_project(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, extra="""
[[forward]]
name = "research"
ae_title = "PEER"
host = "127.0.0.1"
port = 104
deidentify = "TRIAL"
deidentify_retain = ["dates", "device"]
allow_burned_in = true
""")
    rule = load_settings(cfg).forward[0]
    assert rule.deidentify is not None and rule.deidentify.name == "TRIAL"
    assert rule.deidentify_retain is not None and rule.deidentify_retain.retain == {"dates", "device"}
    assert rule.allow_burned_in
    bad = tmp_path / "bad.toml"
    bad.write_text(cfg.read_text().replace('deidentify = "TRIAL"', 'deidentify = "NOPE"'))
    with pytest.raises(SettingsError, match="NOPE"):
        load_settings(bad)
    loose = tmp_path / "loose.toml"
    loose.write_text('[[forward]]\nname = "x"\nae_title = "X"\nhost = "h"\nport = 104\n'
                     'allow_burned_in = true\n')
    with pytest.raises(SettingsError, match="only with deidentify"):
        load_settings(loose)
