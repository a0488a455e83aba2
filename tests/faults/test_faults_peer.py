"""A DIMSE peer that stalls or resets mid-PDU, on raw sockets: it associates, sends a C-STORE
whose last P-DATA-TF PDU stops half-way, then either says nothing more (stall) or closes with a
TCP RST (SO_LINGER 0). The server must free the association (the stall after its configured
[dimse] network_timeout), keep serving other callers meanwhile, and store nothing of the cut
object; `dicomvault verify` is clean afterwards."""

from __future__ import annotations

import io
import random
import socket
import struct
import sys
import time
from pathlib import Path

import pydicom
import pytest
from fault_kit import Acked, Tally, check_restart, part10_digest, seed
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_context
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.sop_class import CTImageStorage

from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.engine import Engine
from dv_corpus import split_part10

sys.path.insert(0, str(Path(__file__).parents[1] / "dimse"))
from dimse_helpers import ARCHIVE_AE, HOST, Archive, free_port, start_archive, stop_archive  # noqa: E402

NETWORK_TIMEOUT = 2.0
MAX_PDU = 16384
SLOTS = 3


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate_rq(calling: str) -> bytes:
    """An A-ASSOCIATE-RQ (PS3.8 9.3.2) proposing CT Image Storage in explicit VR little endian."""
    pc = (
        bytes([1, 0, 0, 0])
        + _item(0x30, CTImageStorage.encode())
        + _item(0x40, ExplicitVRLittleEndian.encode())
    )
    user = _item(0x51, struct.pack(">I", MAX_PDU)) + _item(0x52, b"1.2.826.0.1.3680043.9.7433.1")
    body = (
        struct.pack(">HH", 1, 0)
        + ARCHIVE_AE.ljust(16).encode()
        + calling.ljust(16).encode()
        + bytes(32)
        + _item(0x10, b"1.2.840.10008.3.1.1.1")
        + _item(0x20, pc)
        + _item(0x50, user)
    )
    return struct.pack(">BBI", 1, 0, len(body)) + body


def store_pdus(buf: bytes, message_id: int = 1) -> list[bytes]:
    """The P-DATA-TF PDUs of a C-STORE-RQ of this Part-10 file on presentation context 1."""
    ds = pydicom.dcmread(io.BytesIO(buf), stop_before_pixels=True)
    prim = C_STORE()
    prim.MessageID = message_id
    prim.AffectedSOPClassUID = ds.SOPClassUID
    prim.AffectedSOPInstanceUID = ds.SOPInstanceUID
    prim.Priority = 2
    prim.DataSet = io.BytesIO(split_part10(buf)[1])
    msg = C_STORE_RQ()
    msg.primitive_to_message(prim)
    out = []
    for p in msg.encode_msg(1, MAX_PDU):
        pdu = P_DATA_TF()
        pdu.from_primitive(p)
        out.append(pdu.encode())
    return out


def read_pdu(sock: socket.socket) -> tuple[int, bytes]:
    head = _recv(sock, 6)
    kind, _, length = struct.unpack(">BBI", head)
    return kind, _recv(sock, length)


def _recv(sock: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError(f"closed after {len(data)} of {n} bytes")
        data += chunk
    return data


def cut_store(arch: Archive, buf: bytes, rng: random.Random) -> socket.socket:
    """Associates and sends the C-STORE of `buf` up to a random point inside its last PDUs."""
    sock = socket.create_connection((HOST, arch.port), timeout=30)
    sock.sendall(associate_rq("CUTPEER"))
    kind, _ = read_pdu(sock)
    assert kind == 0x02, f"association not accepted (PDU type {kind:#x})"
    pdus = store_pdus(buf)
    last = rng.randrange(1, len(pdus))  # at least the command and one data fragment go whole
    for pdu in pdus[:last]:
        sock.sendall(pdu)
    cut = pdus[last]
    sock.sendall(cut[: rng.randrange(7, len(cut) - 1)])  # the header and part of the body
    return sock


def _associate(arch: Archive, ae_title: str) -> object:
    """An association from `ae_title`. A slot released by an earlier association (or a port
    probe) is given back by the server's thread a moment later, which a loaded machine can
    stretch: a refusal is retried for a few seconds."""
    ae = AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    ctx = [build_context(CTImageStorage, ExplicitVRLittleEndian)]
    deadline = time.monotonic() + 10
    while True:
        assoc = ae.associate(HOST, arch.port, contexts=ctx, ae_title=ARCHIVE_AE)
        if assoc.is_established or time.monotonic() > deadline:
            return assoc
        time.sleep(0.3)


def store_whole(arch: Archive, files: list[bytes], acked: Acked) -> None:
    assoc = _associate(arch, "GOODPEER")
    assert assoc.is_established, "a well-behaved caller was refused for 10 s while the other one was cut"
    try:
        for buf in files:
            ds = pydicom.dcmread(io.BytesIO(buf))
            assert assoc.send_c_store(ds).Status == 0x0000
            acked[str(ds.SOPInstanceUID)] = part10_digest(buf)
    finally:
        assoc.release()


def all_slots_free(arch: Archive) -> bool:
    """max_associations = SLOTS: that many at once are accepted only when no other association
    holds a slot."""
    ae = AE(ae_title="SLOTPROBE")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    ctx = [build_context(CTImageStorage, ExplicitVRLittleEndian)]
    held = [ae.associate(HOST, arch.port, contexts=ctx, ae_title=ARCHIVE_AE) for _ in range(SLOTS)]
    ok = all(a.is_established for a in held)
    for a in held:
        if a.is_established:
            a.release()
    return ok


def closed_by_server(sock: socket.socket, within: float) -> float | None:
    """Seconds until the server closes (or aborts) the connection, None if it did not within `within`."""
    t0 = time.monotonic()
    sock.settimeout(within)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                break
            if data[0] == 0x07:  # A-ABORT
                break
    except TimeoutError:
        return None
    except ConnectionError:
        pass
    return time.monotonic() - t0


@pytest.mark.parametrize("mode", ["stall", "reset"])
def test_peer_cut_mid_pdu(tmp_path: Path, mode: str) -> None:
    s = seed()
    rng, tally = random.Random(f"{s}-{mode}"), Tally(f"peer {mode} mid-PDU", s)
    arch = start_archive(
        tmp_path, free_port(), free_port(), max_associations=SLOTS, network_timeout=NETWORK_TIMEOUT
    )
    files = list(ct_series(SeriesSpec(slices=8, rows=256, columns=256, seed=s % 100000, patient_id="CUT")))
    cut_uid = str(pydicom.dcmread(io.BytesIO(files[0]), stop_before_pixels=True).SOPInstanceUID)
    acked: Acked = {}
    try:
        sock = cut_store(arch, files[0], rng)
        if mode == "reset":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.close()  # RST, not FIN
            freed_after = 0.0
            deadline = time.monotonic() + 5
            while not all_slots_free(arch):
                assert time.monotonic() < deadline, "the reset association still holds its slot after 5 s"
                time.sleep(0.2)
        else:
            # Meanwhile another caller is served (one slot is the stalled peer's, one is free).
            store_whole(arch, files[1:4], acked)
            freed_after = closed_by_server(sock, NETWORK_TIMEOUT + 10)
            sock.close()
            assert freed_after is not None, (
                f"the stalled association was not dropped in {NETWORK_TIMEOUT + 10} s"
            )
            deadline = time.monotonic() + 5
            while not all_slots_free(arch):
                assert time.monotonic() < deadline, "the dropped association still holds its slot"
                time.sleep(0.2)
        store_whole(arch, files[4:], acked)
        assert arch.proc.poll() is None, "the server died"
    finally:
        assert stop_archive(arch) == 0
    with Engine(arch.data, read_only=True) as engine:
        assert engine.instance(cut_uid) is None, "the cut object was stored"
    tally.trials, tally.acked = 1, len(acked)
    check_restart(arch.data, acked, tally, cli=False)
    what = (
        f"dropped {freed_after:.1f} s after the stall (network_timeout {NETWORK_TIMEOUT} s); another caller "
        "stored meanwhile"
        if mode == "stall"
        else "slot freed at once after the RST"
    )
    tally.notes.append(f"{what}; the cut object absent; all slots usable after")
    tally.report()
