"""The audit trail of forwarding and replication, after real transfers: a forwarder sending to a
real pynetdicom peer that refuses one object once, and a replica pulling from a primary over
loopback HTTP. One record per study and batch, never per object; the chains verify."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import threading
from pathlib import Path

import pydicom
from procs import free_port
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage
from repl_helpers import TOKEN, synth_files

from dicomvault.dimse.association import requestor_ae
from dicomvault.dr.failover import failback
from dicomvault.engine import Engine
from dicomvault.replication.client import SiteClient
from dicomvault.replication.forward import Forwarder
from dicomvault.replication.puller import Puller
from dicomvault.replication.settings import ForwardRule


def records(data: Path, event: str | None = None) -> list[dict]:
    path = data / "audit" / "audit.jsonl"
    recs = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return [r for r in recs if event is None or r["event"] == event]


def verify(data: Path) -> None:
    v = subprocess.run([sys.executable, "-m", "dicomvault.cli", "audit", "verify", "--data", str(data)],
                       capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr


def study_of(buf: bytes) -> str:
    return str(pydicom.dcmread(io.BytesIO(buf), stop_before_pixels=True).StudyInstanceUID)


def test_forwarding_is_audited_per_study_and_page(tmp_path: Path) -> None:
    files = synth_files(2, slices=4, seed=7)
    victim = str(pydicom.dcmread(io.BytesIO(files[2]), stop_before_pixels=True).SOPInstanceUID)
    refused: list[str] = []
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        with lock:
            if uid == victim and not refused:
                refused.append(uid)
                return 0xA700  # out of resources, once: the page fails here and is retried
        return 0x0000

    port = free_port()
    ae = AE(ae_title="PEER")
    ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    data = tmp_path / "site"
    try:
        with Engine(data, min_free_bytes=0) as eng:
            eng.store_buffers(files)
            fwd = Forwarder(eng, ForwardRule(name="peer", ae_title="PEER", host="127.0.0.1", port=port),
                            make_ae=requestor_ae)
            assert fwd.step() == 0 and refused == [victim]  # the first page failed at the victim
            while fwd.step():
                pass
    finally:
        server.shutdown()
    dest = f"PEER@127.0.0.1:{port}"
    a, b = study_of(files[0]), study_of(files[4])  # the feed holds them in the order stored
    sent = records(data, "instances-transferred")
    begins = records(data, "begin-transferring")
    assert {r["client"] for r in sent + begins} == {dest}
    assert all(r["detail"]["destination"] == dest for r in sent + begins)
    # the failed page reached the victim (third of study a): a's record says 2 done, 1 failed;
    # the retried page sent both studies whole
    assert [(r["study"], r["outcome"], r["detail"]["completed"], r["detail"]["failed"]) for r in sent] == [
        (a, "failure", 2, 1), (a, "success", 4, 0), (b, "success", 4, 0)]
    assert all(r["code"] == "DCM 110104" and r["detail"]["direction"] == "sent" for r in sent)
    # Begin Transferring: each page, one per study, before its transfer records
    assert [(r["study"], r["detail"]["instances"]) for r in begins] == [(a, 4), (b, 4)] * 2
    assert all(r["code"] == "DCM 110102" for r in begins)
    everything = records(data)
    assert everything.index(begins[0]) < everything.index(sent[0]) < everything.index(begins[2])
    verify(data)


def test_replication_is_audited_per_study_and_page_on_the_replica(primary, tmp_path: Path) -> None:
    eng, site = primary
    files = synth_files(3, slices=5, seed=3)
    eng.store_buffers(files)
    with Engine(tmp_path / "replica", min_free_bytes=0) as rep:
        p = Puller(rep, SiteClient(site.url, TOKEN), limit=7)  # 15 changes: pages of 7, 7, 1
        try:
            assert p.catch_up().applied == 15
        finally:
            p.close()
        data = rep.data_dir
    recs = records(data, "instances-transferred")
    # per page, one record per study it touched (pages of 7 of 3 studies of 5), never per object
    a, b, c = (study_of(files[i]) for i in (0, 5, 10))
    assert [(r["study"], r["detail"]["completed"]) for r in recs] == [(a, 5), (b, 2), (b, 3), (c, 4), (c, 1)]
    for r in recs:
        assert (r["client"], r["detail"]["source"], r["detail"]["direction"], r["outcome"]) == (
            site.url, site.url, "received", "success")
    assert all(r["patient"] for r in recs)
    # a study deleted on the primary: one Data Deletion record on the replica, once applied
    eng.delete("study", b)
    with Engine(tmp_path / "replica", min_free_bytes=0) as rep:
        p = Puller(rep, SiteClient(site.url, TOKEN))
        try:
            p.catch_up()
        finally:
            p.close()
    (gone,) = records(data, "data-deletion")
    assert (gone["study"], gone["code"], gone["detail"]["completed"], gone["client"]) == (
        b, "DCM 110105", 5, site.url)
    assert len(records(data, "instances-transferred")) == 5  # the deletion transferred nothing
    verify(data)


def test_failback_discarding_divergent_objects_is_a_data_deletion(primary, tmp_path: Path) -> None:
    eng, site = primary
    files = synth_files(2, slices=3, seed=11)
    eng.store_buffers(files[:3])  # the new primary holds the first study
    with Engine(tmp_path / "old", min_free_bytes=0) as old:
        old.store_buffers(files)  # the old primary holds both: the second never reached the other
        client = SiteClient(site.url, TOKEN)
        try:
            rep = failback(old, client, discard_divergent=True)
        finally:
            client.close()
        assert rep.discarded == 3
        data = old.data_dir
    (gone,) = records(data, "data-deletion")
    assert (gone["study"], gone["detail"]["completed"], gone["user"], gone["detail"]["reason"]) == (
        study_of(files[3]), 3, "dicomvault:failback", "dr failback --discard-divergent")
    verify(data)
