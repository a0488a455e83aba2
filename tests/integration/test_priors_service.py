"""The priors service in process on a real archive and a real pynetdicom storage SCP (the reading
workstation): the relevant priors pushed, the irrelevant one not, the push audited; a workstation
that is down makes the entry `failed` with the reason and a retry time, and the retry finishes the
job without resending what went; the add never waits for any of it."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, _config, evt
from pynetdicom.presentation import StoragePresentationContexts

from dicomvault.auth.peer_settings import PeerConfig
from dicomvault.bench.pki import make_pki
from dicomvault.engine import Engine
from dicomvault.integration.priors_settings import PriorsConfig
from dicomvault.integration.worklist_entry import entry_from_fields
from dicomvault.integration.worklist_store import WorklistStore
from dicomvault.priors.service import PriorsService
from dicomvault.tls_policy import client_context

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dimse"))
from dimse_helpers import free_port, wait_port  # noqa: E402
from priors_helpers import days_ago, study_file  # noqa: E402

PATIENT = "SVC-1"
WORKSTATION = "READ1"


class Workstation:
    """A pynetdicom storage SCP: what it received, by study; `delay` seconds per C-STORE."""

    def __init__(self, port: int, delay: float = 0.0) -> None:
        self.port = port
        self.delay = delay
        self.received: dict[str, set[str]] = {}
        self._server: Any = None

    def start(self) -> None:
        ae = AE(ae_title=WORKSTATION)
        ae.supported_contexts = StoragePresentationContexts

        def on_store(event: Any) -> int:
            time.sleep(self.delay)
            ds = event.dataset
            self.received.setdefault(str(ds.StudyInstanceUID), set()).add(str(ds.SOPInstanceUID))
            return 0x0000

        self._server = ae.start_server(("127.0.0.1", self.port), block=False,
                                       evt_handlers=[(evt.EVT_C_STORE, on_store)])

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()


@pytest.fixture
def archive(tmp_path: Path) -> Iterator[tuple[Engine, dict[str, str]]]:
    saved = {k: getattr(_config, k) for k in ("STORE_SEND_CHUNKED_DATASET", "LOG_HANDLER_LEVEL")}
    eng = Engine(tmp_path / "data")
    uids = {}
    for name, args in {"ct_1": ("CT", "CHEST", days_ago(20)), "ct_2": ("CT", "LUNG", days_ago(500)),
                       "mr": ("MR", "CHEST", days_ago(40))}.items():
        uid, files = study_file(PATIENT, *args, instances=2)
        assert all(not isinstance(r, Exception) for r in eng.store_buffers(files))
        uids[name] = uid
    try:
        yield eng, uids
    finally:
        eng.close()
        for k, v in saved.items():
            setattr(_config, k, v)


def service(eng: Engine, port: int, **kw: Any) -> PriorsService:
    peers = {WORKSTATION: PeerConfig(WORKSTATION, "127.0.0.1", port)}
    settings = PriorsConfig(push_to=WORKSTATION, retry_after=kw.pop("retry_after", 60.0), **kw)
    return PriorsService(eng, settings, peer_of=peers.get, calling_ae="DICOMVAULT", promote_days=7)


def audit_lines(eng: Engine) -> list[dict[str, Any]]:
    path = eng.data_dir / "audit" / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


def test_workstation_down_then_up_retry_pushes_the_relevant_priors(archive: tuple[Engine, dict[str, str]]
                                                                   ) -> None:
    eng, uids = archive
    port = free_port()
    svc = service(eng, port)
    store = WorklistStore(eng.index)
    entry = store.add(entry_from_fields({"patient_id": PATIENT, "accession": "ORD1", "modality": "CT",
                                         "procedure": "CT Chest"}))

    before = time.time()
    rec = svc.process(entry.key)
    assert rec is not None and rec["state"] == "failed" and rec["attempts"] == 1
    assert [s["study_uid"] for s in rec["studies"]] == [uids["ct_1"], uids["ct_2"]]
    assert all(s["state"] == "failed" and WORKSTATION in s["reason"] for s in rec["studies"])
    assert before + 59 < rec["next_try"] < time.time() + 61
    assert store.require(entry.key).priors == rec  # what GET /api/worklist shows
    assert not [r for r in audit_lines(eng) if r["event"] == "instances-transferred"]  # nothing went

    ws = Workstation(port)
    ws.start()
    try:
        rec = svc.process(entry.key)
    finally:
        ws.stop()
    assert rec is not None and rec["state"] == "done" and rec["attempts"] == 2 and rec["next_try"] is None
    assert [(s["study_uid"], s["state"], s["pushed"]) for s in rec["studies"]] == [
        (uids["ct_1"], "pushed", 2), (uids["ct_2"], "pushed", 2)]
    assert set(ws.received) == {uids["ct_1"], uids["ct_2"]}  # not the MR
    assert all(len(v) == 2 for v in ws.received.values())
    sent = [r for r in audit_lines(eng) if r["event"] == "instances-transferred"]
    assert sorted(r["study"] for r in sent) == sorted([uids["ct_1"], uids["ct_2"]])
    for r in sent:
        assert r["code"] == "DCM 110104" and r["outcome"] == "success" and r["patient"] == PATIENT
        assert r["detail"]["destination"] == f"{WORKSTATION}@127.0.0.1:{port}"
        assert r["detail"]["completed"] == 2 and r["detail"]["order"] == entry.key

    # done: a third pass sends nothing again
    ws2 = Workstation(port)
    ws2.start()
    try:
        rec = svc.process(entry.key)
    finally:
        ws2.stop()
    assert rec is not None and rec["state"] == "done" and ws2.received == {}


def test_the_add_does_not_wait_and_the_thread_does_the_work(archive: tuple[Engine, dict[str, str]]) -> None:
    eng, uids = archive
    port = free_port()
    ws = Workstation(port, delay=0.5)  # four objects: two seconds of pushing
    ws.start()
    svc = service(eng, port)
    svc.start()
    try:
        store = WorklistStore(eng.index)
        t0 = time.monotonic()
        entry = store.add(entry_from_fields({"patient_id": PATIENT, "accession": "ORD2", "modality": "CT",
                                             "procedure": "CT Thorax"}))
        assert time.monotonic() - t0 < 0.5
        assert store.require(entry.key).priors == {}
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and store.require(entry.key).priors.get("state") != "done":
            time.sleep(0.1)
        rec = store.require(entry.key).priors
        assert rec.get("state") == "done", rec
        assert set(ws.received) == {uids["ct_1"], uids["ct_2"]}
    finally:
        svc.stop()
        ws.stop()
    assert not [t for t in threading.enumerate() if t.name == "dicomvault-priors"]  # stop() joined it


def test_unknown_peer_and_giving_up(archive: tuple[Engine, dict[str, str]]) -> None:
    eng, _ = archive
    settings = PriorsConfig(push_to="NOBODY", max_attempts=2)
    svc = PriorsService(eng, settings, peer_of=lambda _ae: None, calling_ae="DICOMVAULT", promote_days=7)
    store = WorklistStore(eng.index)
    entry = store.add(entry_from_fields({"patient_id": PATIENT, "accession": "ORD3", "modality": "MR",
                                         "procedure": "MR chest"}))
    rec = svc.process(entry.key)
    assert rec is not None and rec["state"] == "failed" and rec["next_try"] is not None
    assert "NOBODY is not a known peer" in rec["studies"][0]["reason"]
    rec = svc.process(entry.key)
    assert rec is not None and rec["attempts"] == 2 and rec["next_try"] is None  # max_attempts reached
    # a canceled order is not worked on
    store.cancel(entry.key)
    assert svc.process(entry.key) is None


def test_no_push_configured_records_the_priors_local(archive: tuple[Engine, dict[str, str]]) -> None:
    eng, uids = archive
    svc = PriorsService(eng, PriorsConfig(), peer_of=lambda _ae: None, calling_ae="DICOMVAULT",
                        promote_days=7)
    store = WorklistStore(eng.index)
    entry = store.add(entry_from_fields({"patient_id": PATIENT, "accession": "ORD4", "modality": "MR",
                                         "procedure": "MRI thorax"}))
    rec = svc.process(entry.key)
    assert rec is not None and rec["state"] == "done"
    assert [(s["study_uid"], s["state"], s["matched"]) for s in rec["studies"]] == [
        (uids["mr"], "local", ["modality", "body_part"])]
    assert rec["order_body_parts"] == ["CHEST"]



def test_entries_scheduled_while_no_service_ran_are_taken_up_at_start(archive: tuple[Engine, dict[str, str]]
                                                                      ) -> None:
    eng, _ = archive
    store = WorklistStore(eng.index)
    # `dicomvault worklist add` with no server: nobody listens
    early = store.add(entry_from_fields({"patient_id": PATIENT, "accession": "ORD5", "modality": "MR",
                                         "procedure": "MR chest"}))
    # a peer lookup that blows up: an unexpected error is recorded with a retry time, not looped on
    calls: list[str] = []

    def broken_peers(ae: str) -> PeerConfig | None:
        calls.append(ae)
        raise RuntimeError("peer table unreadable")

    svc = PriorsService(eng, PriorsConfig(push_to=WORKSTATION), peer_of=broken_peers, calling_ae="DICOMVAULT",
                        promote_days=7)
    svc.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not store.require(early.key).priors:
            time.sleep(0.05)
        rec = store.require(early.key).priors
        assert rec["state"] == "failed" and "peer table unreadable" in rec["error"], rec
        assert rec["attempts"] == 1 and rec["next_try"] > time.time() + 50
        time.sleep(6)  # past a rescan: not retried before next_try
        assert len(calls) == 1 and store.require(early.key).priors["attempts"] == 1
    finally:
        svc.stop()


def test_push_to_a_tls_peer_goes_over_dicom_tls(archive: tuple[Engine, dict[str, str]],
                                                tmp_path: Path) -> None:
    """A push_to peer marked `tls = true`: a DCMTK storescp that only speaks TLS and requires our
    certificate (the site CA signed both)."""
    eng, uids = archive
    pki = make_pki(tmp_path / "pki")
    port = free_port()
    out = tmp_path / "received"
    out.mkdir()
    key, crt = pki["peer"]
    scp = subprocess.Popen(["storescp", "+tls", str(key), str(crt), "-pw", "+cf", str(pki["ca"][1]),
                            "-aet", WORKSTATION, "-od", str(out), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    peers = {WORKSTATION: PeerConfig(WORKSTATION, "127.0.0.1", port, tls=True)}
    ours = pki["client"]
    store = WorklistStore(eng.index)
    try:
        wait_port(port, scp, None)
        # no TLS context: refused with the reason, nothing sent in clear
        settings = PriorsConfig(push_to=WORKSTATION)
        plain = PriorsService(eng, settings, peer_of=peers.get, calling_ae="DICOMVAULT", promote_days=7)
        entry = store.add(entry_from_fields({"patient_id": PATIENT, "accession": "ORD6", "modality": "MR",
                                             "procedure": "MR chest"}))
        rec = plain.process(entry.key)
        assert rec is not None and rec["state"] == "failed" and "wants DICOM TLS" in rec["error"]
        assert list(out.iterdir()) == []

        svc = PriorsService(eng, settings, peer_of=peers.get, calling_ae="DICOMVAULT", promote_days=7,
                            tls=lambda: client_context(pki["ca"][1], ours[1], ours[0], check_hostname=False))
        rec = svc.process(entry.key)
        assert rec is not None and rec["state"] == "done", rec
        assert [(s["study_uid"], s["state"], s["pushed"]) for s in rec["studies"]] == [
            (uids["mr"], "pushed", 2)]
    finally:
        scp.terminate()
        scp.wait(10)
    got = {str(pydicom.dcmread(f, stop_before_pixels=True).StudyInstanceUID) for f in out.iterdir()}
    assert got == {uids["mr"]} and len(list(out.iterdir())) == 2
    sent = [r for r in audit_lines(eng) if r["event"] == "instances-transferred"]
    assert [(r["study"], r["detail"]["tls"]) for r in sent] == [(uids["mr"], True)]
