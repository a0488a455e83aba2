"""`[dimse]` limits against a real `dicomvault serve` over real sockets: associations per calling AE
title, object size (native fast path, pynetdicom's reader, and the receiver processes of
`workers`), C-FIND result count, stalled callers dropped by the ACSE and network timeouts; each
refusal logged and counted in /metrics."""

from __future__ import annotations

import socket
import struct
import time
from pathlib import Path

import pytest
from dimse_helpers import ARCHIVE_AE, HOST
from limits_helpers import Served, fresh_copy, serving
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from dicomvault.engine import Engine


def _ae(title: str, *contexts: str) -> AE:
    ae = AE(ae_title=title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 15
    for uid in contexts:
        ae.add_requested_context(uid, ExplicitVRLittleEndian)
    return ae


def test_per_peer_limit_refuses_one_caller_while_another_gets_in(tmp_path: Path) -> None:
    with serving(tmp_path, {"max_associations_per_peer": 2}) as srv:
        modality = _ae("MODALITY1", Verification)
        held = [modality.associate(HOST, srv.port, ae_title=ARCHIVE_AE) for _ in range(2)]
        try:
            assert all(a.is_established for a in held)
            third = modality.associate(HOST, srv.port, ae_title=ARCHIVE_AE)
            assert third.is_rejected
            rj = third.acceptor.primitive  # A-ASSOCIATE-RJ: transient, service provider (ACSE 2 / pres. 3)
            assert (rj.result, rj.result_source, rj.diagnostic) == (0x02, 0x03, 0x02)
            other = _ae("MODALITY2", Verification).associate(HOST, srv.port, ae_title=ARCHIVE_AE)
            assert other.is_established, "another AE must still get in"
            assert other.send_c_echo().Status == 0
            other.release()
        finally:
            for a in held:
                a.release()
        # a slot freed by a release is usable again by the same caller; the acceptor marks itself
        # released just after sending A-RELEASE-RP, so a request right after may still see it
        again = modality.associate(HOST, srv.port, ae_title=ARCHIVE_AE)
        retries = 0
        while not again.is_established and retries < 20:
            time.sleep(0.1)
            retries += 1
            again = modality.associate(HOST, srv.port, ae_title=ARCHIVE_AE)
        assert again.is_established
        again.release()
        assert srv.refused("association", "max_associations_per_peer") == 1 + retries
        assert "'MODALITY1' active, [dimse] max_associations_per_peer = 2" in srv.log_text()


@pytest.mark.parametrize("mode", [
    {},  # the native fast path reads the data set
    {"fast_path": False},  # pynetdicom's reader (limits.OversizeDataSet)
    {"workers": 2},  # receiver processes (pynetdicom's reader), refusals counted in the writer
], ids=["fast-path", "pynetdicom", "workers"])
def test_oversize_object_refused_and_the_next_one_stored(tmp_path: Path, mode: dict[str, object]) -> None:
    # max_pdu 16 KiB: the 39 KB CT arrives in several PDUs, so the limit bites mid-stream
    with serving(tmp_path, {"max_object_size": 20_000, "max_pdu": 16384, **mode}) as srv:
        big, small = fresh_copy("CT_small.dcm"), fresh_copy("MR_small.dcm")
        sender = _ae("BIGSENDER", CTImageStorage, MRImageStorage)
        assoc = sender.associate(HOST, srv.port, ae_title=ARCHIVE_AE)
        assert assoc.is_established
        try:
            refused = assoc.send_c_store(big)
            assert refused.Status == 0xA700, refused
            assert "larger than 20000 bytes" in str(refused.get("ErrorComment", ""))
            stored = assoc.send_c_store(small)  # same association: it survived the refusal
            assert stored.Status == 0x0000, stored
        finally:
            assoc.release()
        deadline = time.monotonic() + 10  # a receiver's report reaches the writer asynchronously
        while srv.refused("store", "max_object_size") < 1 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert srv.refused("store", "max_object_size") == 1
        assert f"of {big.SOPInstanceUID} refused (0xA700): object of " in srv.log_text()
    with Engine(srv.data, read_only=True) as eng:
        assert eng.instance(str(small.SOPInstanceUID)) is not None
        assert eng.instance(str(big.SOPInstanceUID)) is None, "nothing of the refused object is stored"


def test_cfind_stops_at_max_query_results(tmp_path: Path) -> None:
    with serving(tmp_path, {"max_query_results": 2}) as srv:
        sender = _ae("SENDER", MRImageStorage).associate(HOST, srv.port, ae_title=ARCHIVE_AE)
        for _ in range(3):  # three studies
            assert sender.send_c_store(fresh_copy("MR_small.dcm")).Status == 0
        sender.release()
        from pydicom.dataset import Dataset
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ""
        assoc = _ae("FINDER", StudyRootQueryRetrieveInformationModelFind).associate(
            HOST, srv.port, ae_title=ARCHIVE_AE)
        statuses = [int(status.Status) for status, _ in
                    assoc.send_c_find(query, StudyRootQueryRetrieveInformationModelFind)]
        assoc.release()
        assert statuses == [0xFF00, 0xFF00, 0xA700]
        assert srv.refused("query", "max_query_results") == 1
        assert "cut after 2 matches" in srv.log_text()


def _closed_within(sock: socket.socket, seconds: float) -> float:
    """Seconds until the server closed `sock` (reads what it sends first, e.g. an A-ABORT)."""
    t0 = time.monotonic()
    sock.settimeout(seconds)
    while True:
        try:
            if not sock.recv(65536):
                return time.monotonic() - t0
        except ConnectionResetError:
            return time.monotonic() - t0
        except TimeoutError:
            raise AssertionError(f"not dropped within {seconds} s") from None


def _associate_rq_head() -> bytes:
    """The first bytes of an A-ASSOCIATE-RQ announcing far more than is sent (half a PDU)."""
    return struct.pack(">BBI", 0x01, 0, 4096) + b"\x00\x01\x00\x00" + ARCHIVE_AE.ljust(16).encode()


def test_stalled_callers_are_dropped(tmp_path: Path) -> None:
    with serving(tmp_path, {"acse_timeout": 1, "network_timeout": 1.5}) as srv:
        silent = socket.create_connection((HOST, srv.port))
        half = socket.create_connection((HOST, srv.port))
        half.sendall(_associate_rq_head())
        with silent, half:
            assert 0.8 < _closed_within(silent, 10) < 5
            assert _closed_within(half, 10) < 5
        # established, then silent: the network timeout drops it (A-ABORT, then close)
        assoc = _ae("IDLER", Verification).associate(HOST, srv.port, ae_title=ARCHIVE_AE)
        assert assoc.is_established
        deadline = time.monotonic() + 10
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert assoc.is_aborted, "an idle association must be dropped"
        # and the server keeps serving
        echo = _ae("AFTER", Verification).associate(HOST, srv.port, ae_title=ARCHIVE_AE)
        assert echo.is_established and echo.send_c_echo().Status == 0
        echo.release()
        assert srv.refused("association", "acse_timeout") == 2
        assert srv.refused("association", "network_timeout") == 1
        log = srv.log_text()
        assert "no A-ASSOCIATE-RQ within [dimse] acse_timeout = 1 s" in log  # the silent one
        assert "in the middle of a PDU (20 of 4096 bytes), [dimse] acse_timeout = 1 s" in log  # the half one
        assert "dropped: nothing received for [dimse] network_timeout = 1.5 s" in log


def test_stalled_mid_pdu_on_an_established_association(tmp_path: Path) -> None:
    """A caller that sends half a P-DATA PDU and stops holds no worker past the network timeout."""
    with serving(tmp_path, {"network_timeout": 1}) as srv:
        assoc = _ae("HALFPDU", CTImageStorage).associate(HOST, srv.port, ae_title=ARCHIVE_AE)
        assert assoc.is_established
        sock = assoc.dul.socket.socket
        sock.sendall(struct.pack(">BBI", 0x04, 0, 100_000) + b"\x00" * 100)  # P-DATA-TF, 100 of 100,000
        deadline = time.monotonic() + 10
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not assoc.is_established
        assert srv.refused("association", "network_timeout") == 1


def _serve_up(srv: Served) -> None:
    echo = _ae("CHECK", Verification).associate(HOST, srv.port, ae_title=ARCHIVE_AE)
    assert echo.is_established
    echo.release()


@pytest.mark.parametrize("mode", [{}, {"fast_path": False}], ids=["fast-path", "pynetdicom"])
def test_pdu_claiming_gigabytes_is_refused_at_once(tmp_path: Path, mode: dict[str, object]) -> None:
    """A PDU header announcing 4 GiB: the connection is dropped at once (no buffer of the claimed
    size, no wait for the ACSE or network timeout), before and after the association."""
    with serving(tmp_path, mode) as srv:
        with socket.create_connection((HOST, srv.port)) as s:
            s.sendall(struct.pack(">BBI", 0x01, 0, 0xFFFFFFF0))  # A-ASSOCIATE-RQ of 4 GiB
            assert _closed_within(s, 10) < 5  # the ACSE timeout is the default 30 s
        assoc = _ae("HUGEPDU", CTImageStorage).associate(HOST, srv.port, ae_title=ARCHIVE_AE)
        assert assoc.is_established
        assoc.dul.socket.socket.sendall(struct.pack(">BBI", 0x04, 0, 0xFFFFFFF0))  # P-DATA-TF of 4 GiB
        deadline = time.monotonic() + 10
        while assoc.is_established and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not assoc.is_established
        _serve_up(srv)
        assert "a PDU of 4294967280 bytes announced" in srv.log_text()


@pytest.mark.parametrize("mode", [{}, {"workers": 2}], ids=["in-process", "workers"])
def test_admission_refusals_are_counted(tmp_path: Path, mode: dict[str, object]) -> None:
    """An unknown caller refused by the admission (dimse/peers.py) moves /metrics too, also when
    a receiver process answers the A-ASSOCIATE-RJ itself (relayed services are decided there)."""
    with serving(tmp_path, {"accept_unknown_callers": False, **mode}) as srv:
        for contexts in ((Verification,), (StudyRootQueryRetrieveInformationModelFind,)):
            assoc = _ae("STRANGER", *contexts).associate(HOST, srv.port, ae_title=ARCHIVE_AE)
            assert assoc.is_rejected
        deadline = time.monotonic() + 10  # a receiver's report reaches the writer asynchronously
        while srv.refused("association", "unknown_calling_ae") < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert srv.refused("association", "unknown_calling_ae") == 2
