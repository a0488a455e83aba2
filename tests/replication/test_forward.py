"""Forwarding by C-STORE to a real DICOM peer on loopback (a pynetdicom storage SCP): rules by
modality, the durable per-destination cursor, retries after the peer was down, `forward status`."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from pathlib import Path

import pydicom
import pytest
from procs import CLI, free_port
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage
from repl_helpers import synth_files

from dicomvault.bench.pki import dcmtk_tls_args, make_pki
from dicomvault.config import DimseConfig
from dicomvault.dimse.association import requestor_ae
from dicomvault.dimse.tls import client_context
from dicomvault.engine import Engine
from dicomvault.replication.forward import Forwarder
from dicomvault.replication.settings import ForwardRule, SettingsError, parse_forward


class Peer:
    def __init__(self, port: int) -> None:
        self.port = port
        self.received: dict[str, bytes] = {}
        self._lock = threading.Lock()
        self.ae = AE(ae_title="PEER")
        self.ae.add_supported_context(CTImageStorage, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
        self.server = None

    def _on_store(self, event: evt.Event) -> int:
        with self._lock:
            self.received[str(event.request.AffectedSOPInstanceUID)] = bytes(event.request.DataSet.getvalue())
        return 0x0000

    def start(self) -> None:
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False,
                                           evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None


def test_forward_queue_survives_peer_down_and_restart(tmp_path: Path) -> None:
    data = tmp_path / "site"
    port = free_port()
    rule = ForwardRule(name="peer", ae_title="PEER", host="127.0.0.1", port=port,
                       modalities=frozenset({"CT"}))
    peer = Peer(port)
    files = synth_files(2, slices=4)
    with Engine(data, min_free_bytes=0) as eng:
        eng.store_buffers(files[:4])
        fwd = Forwarder(eng, rule, make_ae=requestor_ae)
        assert fwd.step() == 0  # peer down: nothing consumed, error recorded, backoff
        assert "association" in fwd.status["last_error"]
    st = json.loads(subprocess.run([CLI, "forward", "status", "--json", "--data", str(data)],
                                   capture_output=True, text=True, check=True).stdout)
    assert st[0]["pending"] == 4 and st[0]["last_error"]
    peer.start()
    try:
        with Engine(data, min_free_bytes=0) as eng:  # a restart: the cursor is durable
            eng.store_buffers(files[4:])
            fwd = Forwarder(eng, rule, make_ae=requestor_ae)
            while fwd.step():
                pass
            sent = {r.sop_uid: eng.read_dataset(r.sop_uid)[1] for r in eng.index.instances()}
    finally:
        peer.stop()
    assert peer.received == sent  # every object, as stored, bit for bit
    st = json.loads(subprocess.run([CLI, "forward", "status", "--json", "--data", str(data)],
                                   capture_output=True, text=True, check=True).stdout)
    assert st[0]["pending"] == 0 and st[0]["sent"] == 8 and st[0]["last_error"] is None


def test_rules() -> None:
    r = parse_forward([{"name": "x", "ae_title": "X", "host": "h", "port": 104, "modalities": ["mr"],
                        "calling_aes": ["CT1"]}], "cfg")[0]
    assert r.matches("MR", "CT1") and not r.matches("CT", "CT1") and not r.matches("MR", "OTHER")
    with pytest.raises(SettingsError, match="unknown key"):
        parse_forward([{"name": "x", "ae_title": "X", "host": "h", "port": 104, "typo": 1}], "cfg")


def test_forward_by_calling_ae_of_dimse_objects(tmp_path: Path) -> None:
    """A rule by calling AE forwards what that modality sent over DIMSE, and nothing else."""
    from dicomvault import _native

    port = free_port()
    rule = ForwardRule(name="peer", ae_title="PEER", host="127.0.0.1", port=port,
                       calling_aes=frozenset({"CT_ROOM_3"}))
    peer = Peer(port)
    files = synth_files(1, slices=4, seed=5)
    peer.start()
    try:
        with Engine(tmp_path / "site", min_free_bytes=0) as eng:
            sent_by: dict[str, str] = {}
            for i, buf in enumerate(files):
                parsed = _native.parse(buf)
                ae = "CT_ROOM_3" if i % 2 == 0 else "OTHER_AE"
                out = eng.store_dataset(buf[parsed["dataset_offset"] :], parsed["transfer_syntax"],
                                        calling_ae=ae)
                sent_by[out.sop_instance_uid] = ae
            fwd = Forwarder(eng, rule, make_ae=requestor_ae)
            while fwd.step():
                pass
    finally:
        peer.stop()
    assert set(peer.received) == {uid for uid, ae in sent_by.items() if ae == "CT_ROOM_3"}
    assert len(peer.received) == 2


def test_forward_over_tls_to_dcmtk(tmp_path: Path) -> None:
    """A rule with tls = true sends over DICOM TLS (our certificate, the peer's checked against
    the site CA) to dcmtk's storescp +tls; a peer whose certificate the CA did not sign gets
    nothing and the error says why the association failed."""
    pki = make_pki(tmp_path / "pki")
    key, crt = pki["client"]
    ctx = client_context(DimseConfig(tls_cert=crt, tls_key=key, tls_ca=pki["ca"][1]))
    files = synth_files(1, slices=3, seed=9)
    out = tmp_path / "received"
    out.mkdir()
    for who, expect in (("rogue", 0), ("peer", 3)):
        port = free_port()
        scp = subprocess.Popen(["storescp", *dcmtk_tls_args(pki, who), "-aet", "PEER", "-od", str(out),
                                str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            wait_listening(port, scp)
            rule = ForwardRule(name=f"tls-{who}", ae_title="PEER", host="127.0.0.1", port=port, tls=True)
            with Engine(tmp_path / "site", min_free_bytes=0) as eng:
                if who == "rogue":
                    eng.store_buffers(files)
                fwd = Forwarder(eng, rule, ctx, requestor_ae)
                while fwd.step():
                    pass
                if who == "rogue":
                    assert "TLS handshake" in fwd.status["last_error"]
                sent = {r.sop_uid: eng.read_dataset(r.sop_uid)[1] for r in eng.index.instances()}
        finally:
            scp.terminate()
            scp.wait(10)
        assert len(list(out.iterdir())) == expect
    got = {str(pydicom.dcmread(p).SOPInstanceUID): dataset_bytes(p) for p in out.iterdir()}
    assert got == sent  # bit for bit, over TLS
    with pytest.raises(SettingsError, match="tls = true needs"):
        with Engine(tmp_path / "site", min_free_bytes=0) as eng:
            Forwarder(eng, rule, make_ae=requestor_ae)
    assert parse_forward([{"name": "x", "ae_title": "X", "host": "h", "port": 104, "tls": True}], "c")[0].tls
    with pytest.raises(SettingsError, match="true or false"):
        parse_forward([{"name": "x", "ae_title": "X", "host": "h", "port": 104, "tls": "yes"}], "c")


def wait_listening(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while True:
        assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            assert time.monotonic() < deadline, f"storescp not listening on {port}"
            time.sleep(0.05)


def dataset_bytes(path: Path) -> bytes:
    """A Part-10 file's data set bytes (after the file meta group)."""
    raw = path.read_bytes()
    meta_len = int.from_bytes(raw[140:144], "little")  # (0002,0000) group length value
    return raw[144 + meta_len:]


def test_forward_run_cli_over_tls(tmp_path: Path) -> None:
    """`dicomvault forward run --once --config` with a tls = true rule: the TLS files come from
    the same file's [dimse] table."""
    pki = make_pki(tmp_path / "pki")
    key, crt = pki["client"]
    port = free_port()
    cfg = tmp_path / "dv.toml"
    cfg.write_text(f'[dimse]\ntls_cert = "{crt}"\ntls_key = "{key}"\ntls_ca = "{pki["ca"][1]}"\n'
                   f'[[forward]]\nname = "tls"\nae_title = "PEER"\nhost = "127.0.0.1"\nport = {port}\n'
                   'tls = true\n')
    data = tmp_path / "site"
    with Engine(data, min_free_bytes=0) as eng:
        eng.store_buffers(synth_files(1, slices=2, seed=4))
    out = tmp_path / "received"
    out.mkdir()
    scp = subprocess.Popen(["storescp", *dcmtk_tls_args(pki, "peer"), "-aet", "PEER", "-od", str(out),
                            str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_listening(port, scp)
        run = subprocess.run([CLI, "forward", "run", "--once", "--config", str(cfg), "--data", str(data)],
                             capture_output=True, text=True, timeout=120)
    finally:
        scp.terminate()
        scp.wait(10)
    assert run.returncode == 0, run.stdout + run.stderr
    assert len(list(out.iterdir())) == 2


def test_forwarded_objects_carry_the_patient_corrections(tmp_path: Path) -> None:
    port = free_port()
    rule = ForwardRule(name="peer", ae_title="PEER", host="127.0.0.1", port=port)
    peer = Peer(port)
    peer.start()
    try:
        with Engine(tmp_path / "site", min_free_bytes=0) as eng:
            eng.store_buffers(synth_files(1, slices=3))
            (pid,) = {r.patient_id for r in eng.index.instances()}
            eng.index.update_patient(pid, {"PatientName": "Forwarded^Fixed"})
            fwd = Forwarder(eng, rule, make_ae=requestor_ae)
            while fwd.step():
                pass
            stored = {r.sop_uid: eng.read_dataset(r.sop_uid, as_received=True)[1]
                      for r in eng.index.instances()}
    finally:
        peer.stop()
    assert set(peer.received) == set(stored)
    for uid, data in peer.received.items():
        ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data), force=True)
        assert str(ds.PatientName) == "Forwarded^Fixed"
        assert data != stored[uid] and ds.PixelData == pydicom.dcmread(
            pydicom.filebase.DicomBytesIO(stored[uid]), force=True).PixelData
