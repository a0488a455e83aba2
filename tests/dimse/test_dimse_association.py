"""dimse/association.py and its parts: our associations do what stock pynetdicom does, without the
polling, and nothing of pynetdicom's is changed for the rest of the process."""

from __future__ import annotations

import socket
import socketserver
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from typing import Any

import pynetdicom.acse
import pynetdicom.association
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt, fsm, utils
from pynetdicom.acse import ACSE
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_primitives import C_GET, C_STORE
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.sop_class import CTImageStorage, Verification
from pynetdicom.transport import AssociationSocket, RequestHandler, ThreadedAssociationServer

from dicomvault.dimse import association, dul, encoded
from dicomvault.dimse.association import ArchiveAE, ArchiveAssociation
from dicomvault.dimse.dul import EventDrivenDUL
from dicomvault.dimse.encoded import ArchiveDIMSEProvider
from dicomvault.dimse.transport import ArchiveSocket, recv_exactly, recv_pdu


def test_fast_rsp_is_pynetdicoms_encoding() -> None:
    assert encoded.fast_rsp_matches_pynetdicom() and encoded.store_rq_matches_pynetdicom()
    assert encoded.encoders_verified() == (True, True)
    for uid in (generate_uid(), "1.2.3", "1.23"):
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = 7
        rsp.AffectedSOPClassUID = CTImageStorage
        rsp.AffectedSOPInstanceUID = uid
        rsp.Status = 0x0000
        assert encoded.fast_rsp(rsp) == encoded.pynetdicom_rsp(rsp)
        rsp.Status = 0xA700  # anything but plain success goes the stock way
        assert encoded.fast_rsp(rsp) is None
    get = C_GET()
    get.MessageIDBeingRespondedTo = 3
    get.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.3"
    get.Status = 0xFF00
    get.NumberOfRemainingSuboperations, get.NumberOfCompletedSuboperations = 4, 1
    assert encoded.fast_rsp(get) == encoded.pynetdicom_rsp(get)
    get.Status = 0xB000
    get.Identifier = BytesIO(b"")  # a final response listing failed instances goes the stock way
    assert encoded.fast_rsp(get) is None


def test_recv_reads_whole_pdus_and_stops_at_eof() -> None:
    a, b = socket.socketpair()
    try:
        payload = bytes(range(256)) * 4096  # 1 MiB, more than one kernel buffer
        t = threading.Thread(target=a.sendall, args=(payload,))
        t.start()
        got = recv_exactly(b, len(payload))
        t.join()
        assert isinstance(got, bytearray) and got == payload
        a.sendall(b"abc")
        a.close()
        assert recv_exactly(b, 10) == b"abc"  # the peer closed: what there was
    finally:
        b.close()


@pytest.fixture(params=[True, False], ids=["tuned", "polling"])
def scp(request: pytest.FixtureRequest) -> Iterator[tuple[int, list[bytes], list[Any]]]:
    """An in-process storage SCP on an ArchiveAE (tuned or not)."""
    received: list[bytes] = []
    acceptors: list[Any] = []

    def on_store(event: Any) -> int:
        received.append(event.request.DataSet.getvalue())
        acceptors.append(event.assoc)
        return 0x0000

    ae = ArchiveAE("TUNED", tuned=request.param)
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    try:
        yield server.server_address[1], received, acceptors
    finally:
        server.shutdown()


def _ct(rows: int = 512) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows = ds.Columns = rows
    ds.BitsAllocated = 16
    ds.PixelData = bytes(range(256)) * (rows * rows * 2 // 256)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


@pytest.mark.parametrize("client", ["stock", "tuned", "polling"])
def test_store_echo_release(scp: tuple[int, list[bytes], list[Any]], client: str) -> None:
    port, received, acceptors = scp
    ae = AE(ae_title="SCU") if client == "stock" else ArchiveAE("SCU", tuned=client == "tuned")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="TUNED", max_pdu=16384)  # many PDUs per object
    assert assoc.is_established
    assert isinstance(assoc, ArchiveAssociation) == (client != "stock")
    sent = [_ct() for _ in range(5)]
    t0 = time.monotonic()
    for ds in sent:
        assert assoc.send_c_store(ds).Status == 0x0000
    assert assoc.send_c_echo().Status == 0x0000
    assoc.release()
    assert assoc.is_released
    elapsed = time.monotonic() - t0
    assert len(received) == 5
    assert all(r.find(ds.SOPInstanceUID.encode()) > 0 for r, ds in zip(received, sent, strict=True))
    assert all(len(r) > 512 * 512 * 2 for r in received)
    assert elapsed < 5, f"5 stores + echo + release took {elapsed:.1f} s"
    acceptor = acceptors[0]
    assert isinstance(acceptor, ArchiveAssociation) and isinstance(acceptor.dimse, ArchiveDIMSEProvider)
    assert isinstance(acceptor.dul.socket, ArchiveSocket)
    assert isinstance(acceptor.dul, EventDrivenDUL) == acceptor.tuned


def test_pynetdicom_itself_is_left_alone(scp: tuple[int, list[bytes], list[Any]]) -> None:
    """With our server running in this process, pynetdicom's classes, modules and tables are its
    own, and a plain pynetdicom AE gets plain pynetdicom associations."""
    port, _, _ = scp
    for cls, names in ((Association, ("_run_reactor", "send_c_store", "__init__")),
                       (DULServiceProvider, ("run_reactor", "send_pdu", "kill_dul", "stop_dul", "__init__",
                                             "_decode_pdu")),
                       (DIMSEServiceProvider, ("send_msg",)), (AssociationSocket, ("recv",)),
                       (ACSE, ("_negotiate_as_acceptor", "send_accept")),
                       (RequestHandler, ("handle", "_create_association")),
                       (ThreadedAssociationServer, ("process_request_thread",)),
                       (A_ASSOCIATE_RQ, ("to_primitive",))):
        for name in names:
            assert getattr(cls, name).__module__.startswith("pynetdicom."), f"{cls.__name__}.{name}"
    assert fsm.ACTIONS["DT-1"][1] is fsm.DT_1 and fsm.ACTIONS["AR-7"][1] is fsm.AR_7
    assert fsm.ACTIONS["AE-6"][1] is fsm.AE_6 and fsm.ACTIONS["AE-7"][1] is fsm.AE_7
    assert pynetdicom.acse.negotiate_unrestricted.__module__ == "pynetdicom.presentation"
    assert ThreadedAssociationServer.process_request is socketserver.ThreadingMixIn.process_request
    assert pynetdicom.association.encode.__module__ == "pynetdicom.dsutils"
    assert utils.set_uid.__module__ == "pynetdicom.utils"
    ae = AE(ae_title="PLAIN")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="TUNED")
    try:
        assert assoc.is_established
        assert type(assoc) is Association and type(assoc.dul) is DULServiceProvider
        assert type(assoc.dimse) is DIMSEServiceProvider and type(assoc.dul.socket) is AssociationSocket
        assert type(assoc.dul.state_machine) is fsm.StateMachine
    finally:
        assoc.release()


def test_adopting_a_started_association_is_refused() -> None:
    assoc = Association(AE(ae_title="X"), "requestor")
    assoc.dul.socket = object()  # type: ignore[assignment]
    with pytest.raises(RuntimeError):
        ArchiveAssociation.adopt(assoc, tuned=True)


def test_idle_association_does_not_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    """Stock pynetdicom wakes each reactor ~1000 times a second; ours, on an idle association,
    about 1 / IDLE_WAIT times a second (timers), and at once on an event."""
    waits = {"dul": 0, "assoc": 0}
    dul_wait, assoc_wait = EventDrivenDUL._idle_wait, ArchiveAssociation._idle_wait

    def counting_dul(self: EventDrivenDUL) -> None:
        waits["dul"] += 1
        dul_wait(self)

    def counting_assoc(self: ArchiveAssociation) -> None:
        waits["assoc"] += 1
        assoc_wait(self)

    monkeypatch.setattr(EventDrivenDUL, "_idle_wait", counting_dul)
    monkeypatch.setattr(ArchiveAssociation, "_idle_wait", counting_assoc)
    server_ae = ArchiveAE("TUNED", tuned=True)
    server_ae.add_supported_context(Verification)
    server = server_ae.start_server(("127.0.0.1", 0), block=False)
    assert server is not None
    try:
        ae = ArchiveAE("SCU", tuned=True)
        ae.add_requested_context(Verification)
        assoc = ae.associate("127.0.0.1", server.server_address[1], ae_title="TUNED")
        assert assoc.is_established
        before = dict(waits)
        time.sleep(1.0)
        idle = {k: waits[k] - before[k] for k in waits}
        t0 = time.monotonic()
        assert assoc.send_c_echo().Status == 0x0000
        echo = time.monotonic() - t0
        assoc.release()
    finally:
        server.shutdown()
    # both sides of the association run in this process: 2 DUL and 2 association reactors
    limit = 2 * (1 / min(dul.DUL_IDLE_WAIT, association.ASSOC_IDLE_WAIT)) * 2
    assert idle["dul"] < limit and idle["assoc"] < limit, idle
    assert echo < 0.25, f"an echo took {echo * 1000:.0f} ms on an idle association"



def test_a_release_is_answered_without_waiting_out_the_idle_wait(monkeypatch: pytest.MonkeyPatch) -> None:
    """An A-RELEASE queued by the DUL between the reactor's release check and its idle wait was
    missed until the wait ran out (~8 % of releases took ASSOC_IDLE_WAIT, 50 ms, when the
    A-RELEASE-RQ followed the A-ASSOCIATE-AC at once, as a scanner's one-image association does).
    With the wait made 2 s, a release that misses its wake-up takes 2 s: none may."""
    from dimse_helpers import associate_rq

    monkeypatch.setattr(association, "ASSOC_IDLE_WAIT", 2.0)
    server_ae = ArchiveAE("TUNED", tuned=True)
    server_ae.add_supported_context(Verification)
    server = server_ae.start_server(("127.0.0.1", 0), block=False)
    assert server is not None
    slow = []
    try:
        for _ in range(100):
            with socket.create_connection(("127.0.0.1", server.server_address[1]), timeout=10) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.sendall(associate_rq("SCU", "TUNED"))
                assert recv_pdu(s)[0] == 0x02, "association not accepted"
                t0 = time.monotonic()
                s.sendall(bytes([5, 0, 0, 0, 0, 4, 0, 0, 0, 0]))  # A-RELEASE-RQ
                assert recv_pdu(s)[0] == 0x06, "no A-RELEASE-RP"
                took = time.monotonic() - t0
            if took > 1.0:
                slow.append(round(took, 2))
    finally:
        server.shutdown()
    assert not slow, f"releases that waited out the reactor's idle wait: {slow}"


def test_a_connection_closed_before_its_request_frees_its_slot_at_once(tmp_path: Any) -> None:
    """A TCP probe (health check, scanner) that closes without an A-ASSOCIATE-RQ used to count
    against max_associations for the whole ACSE timeout (30 s)."""
    from dimse_helpers import pynetdicom_options_kept

    from dicomvault.config import Config, DimseConfig
    from dicomvault.dimse import DimseServer
    from dicomvault.engine import Engine

    with pynetdicom_options_kept(), Engine(tmp_path / "data") as eng:
        config = Config(data_dir=tmp_path / "data", dimse=DimseConfig(port=0, max_associations=1,
                                                                            accept_unknown_callers=True))
        srv = DimseServer(eng, config)
        host, port = srv.start()
        try:
            for _ in range(3):
                socket.create_connection((host, port)).close()
            time.sleep(0.3)  # the server has taken them in (each would linger 30 s before)
            deadline = time.monotonic() + 2
            while [a for a in srv.ae.active_associations if a.is_acceptor]:
                assert time.monotonic() < deadline, "a closed probe still holds an association slot"
                time.sleep(0.02)
            ae = AE()
            ae.add_requested_context(Verification)
            assoc = ae.associate(host, port, ae_title="DICOMVAULT")
            assert assoc.is_established
            assoc.release()
        finally:
            assert srv.stop(5)


@pytest.mark.parametrize("cap", [8192, 0])
def test_the_listening_socket_caps_the_tcp_segment(tmp_path: Any, cap: int) -> None:
    """`[dimse] tcp_max_segment`: callers send (and get) segments no larger than it, so a slow
    reader's window (~64 KB) holds several; 0 leaves loopback's 64 KB."""
    from dimse_helpers import announced_segment, pynetdicom_options_kept

    from dicomvault.config import Config, DimseConfig
    from dicomvault.dimse import DimseServer
    from dicomvault.engine import Engine

    with pynetdicom_options_kept(), Engine(tmp_path / "data") as eng:
        srv = DimseServer(eng, Config(data_dir=tmp_path / "data",
                                      dimse=DimseConfig(port=0, tcp_max_segment=cap)))
        host, port = srv.start()
        try:
            mss = announced_segment(host, port)
        finally:
            assert srv.stop(5)
    if cap:
        assert mss <= cap
    else:
        assert mss > 16384  # loopback's own (64 KB, halved until the window grows)
