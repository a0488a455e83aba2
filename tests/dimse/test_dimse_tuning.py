"""dimse/tuning.py: the pynetdicom patches are the ones derived from the installed pynetdicom, and
with them an SCP still does what stock pynetdicom does, without the polling."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from io import BytesIO
from types import SimpleNamespace
from typing import Any

import pynetdicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.sop_class import CTImageStorage, Verification
from pynetdicom.transport import AssociationSocket

from dicomvault.dimse import tuning


def test_patched_pynetdicom_is_the_version_the_copies_came_from() -> None:
    """Fails after a pynetdicom upgrade that touched a replaced function: re-derive the copies in
    tuning.py from the new sources and update EXPECTED_SOURCES (the server falls back to stock
    pynetdicom meanwhile, see the next test)."""
    assert tuning.mismatches() == [], f"pynetdicom {pynetdicom.__version__} changed these"


def test_a_changed_pynetdicom_is_left_stock(monkeypatch: pytest.MonkeyPatch) -> None:
    was_installed = tuning.installed()
    tuning.uninstall()
    try:
        monkeypatch.setitem(tuning.EXPECTED_SOURCES, "DULServiceProvider.run_reactor", "0" * 64)
        assert tuning.install() is False
        assert DULServiceProvider.run_reactor is tuning._ORIGINALS["DULServiceProvider.run_reactor"]
        assert AssociationSocket.recv is tuning._ORIGINALS["AssociationSocket.recv"]
        assert not tuning.installed()
    finally:
        monkeypatch.undo()
        if was_installed:
            assert tuning.install()


def test_fast_rsp_is_pynetdicoms_encoding() -> None:
    from pynetdicom.dimse_primitives import C_GET, C_STORE

    assert tuning.fast_rsp_matches_pynetdicom()
    for uid in (generate_uid(), "1.2.3", "1.23"):
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = 7
        rsp.AffectedSOPClassUID = CTImageStorage
        rsp.AffectedSOPInstanceUID = uid
        rsp.Status = 0x0000
        assert tuning.fast_rsp(rsp) == tuning._pynetdicom_rsp(rsp)
        rsp.Status = 0xA700  # anything but plain success goes the stock way
        assert tuning.fast_rsp(rsp) is None
    get = C_GET()
    get.MessageIDBeingRespondedTo = 3
    get.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.2.2.3"
    get.Status = 0xFF00
    get.NumberOfRemainingSuboperations, get.NumberOfCompletedSuboperations = 4, 1
    assert tuning.fast_rsp(get) == tuning._pynetdicom_rsp(get)
    get.Status = 0xB000
    get.Identifier = BytesIO(b"")  # a final response listing failed instances goes the stock way
    assert tuning.fast_rsp(get) is None


def test_recv_reads_whole_pdus_and_stops_at_eof() -> None:
    a, b = socket.socketpair()
    try:
        payload = bytes(range(256)) * 4096  # 1 MiB, more than one kernel buffer
        t = threading.Thread(target=a.sendall, args=(payload,))
        t.start()
        holder = SimpleNamespace(socket=b)
        got = tuning._recv(holder, len(payload))  # type: ignore[arg-type]
        t.join()
        assert isinstance(got, bytearray) and got == payload
        a.sendall(b"abc")
        a.close()
        assert tuning._recv(holder, 10) == b"abc"  # the peer closed: what there was
    finally:
        b.close()


@pytest.fixture
def scp() -> Iterator[tuple[int, list[bytes]]]:
    """An in-process pynetdicom storage SCP with the patches installed."""
    assert tuning.install()
    received: list[bytes] = []

    def on_store(event: Any) -> int:
        received.append(event.request.DataSet.getvalue())
        return 0x0000

    ae = AE(ae_title="TUNED")
    ae.add_supported_context(Verification)
    ae.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
    server = ae.start_server(("127.0.0.1", 0), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    try:
        yield server.server_address[1], received
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


def test_store_echo_release_with_the_patches(scp: tuple[int, list[bytes]]) -> None:
    port, received = scp
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="TUNED", max_pdu=16384)  # many PDUs per object
    assert assoc.is_established
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


def test_idle_association_does_not_poll(scp: tuple[int, list[bytes]],
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Stock pynetdicom wakes each reactor ~1000 times a second; patched, an idle association's
    DUL reactors and acceptor reactor wake about 1 / IDLE_WAIT times a second (timers), and at
    once on an event."""
    port, _ = scp
    waits = {"dul": 0, "assoc": 0}
    dul_wait, assoc_wait = tuning._dv_idle_wait, tuning._assoc_idle_wait

    def counting_dul(dul: DULServiceProvider) -> None:
        waits["dul"] += 1
        dul_wait(dul)

    def counting_assoc(assoc: Association) -> None:
        waits["assoc"] += assoc.is_acceptor  # a requestor keeps pynetdicom's 1 ms (see tuning.py)
        assoc_wait(assoc)

    monkeypatch.setattr(tuning, "_dv_idle_wait", counting_dul)
    monkeypatch.setattr(tuning, "_assoc_idle_wait", counting_assoc)
    ae = AE(ae_title="SCU")
    ae.add_requested_context(Verification)
    assoc = ae.associate("127.0.0.1", port, ae_title="TUNED")
    assert assoc.is_established
    before = dict(waits)
    time.sleep(1.0)
    idle = {k: waits[k] - before[k] for k in waits}
    t0 = time.monotonic()
    assert assoc.send_c_echo().Status == 0x0000
    echo = time.monotonic() - t0
    assoc.release()
    # both sides of the association run in this process: 2 DUL and 2 association reactors
    limit = 2 * (1 / min(tuning.DUL_IDLE_WAIT, tuning.ASSOC_IDLE_WAIT)) * 2
    assert idle["dul"] < limit and idle["assoc"] < limit, idle
    assert echo < 0.25, f"an echo took {echo * 1000:.0f} ms on an idle association"
