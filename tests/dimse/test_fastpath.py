"""The native C-STORE/C-ECHO path (dimse/fastpath.py): taken when enabled, byte-exact, statuses as
pynetdicom would encode them, pynetdicom's own services still served on the same association, and
a peer breaking the P-DATA rules loses only its own association."""

from __future__ import annotations

import logging
import os
import struct
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset, write_file_meta_info
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import _config, build_context
from pynetdicom.dimse_messages import C_ECHO_RSP, C_STORE_RSP
from pynetdicom.dimse_primitives import C_ECHO, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind, Verification

from dicomvault import _native
from dicomvault.config import Config, DimseConfig
from dicomvault.dimse import DimseServer
from dicomvault.dimse.association import ArchiveAE
from dicomvault.engine import Engine

MAX_PDU = 16384  # small, so every test object spans many P-DATA PDUs


def _ct(study: str, *, pixels: int = 40_000, **attrs: str) -> tuple[str, bytes]:
    ds = Dataset()
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "FAST"
    ds.Modality = "CT"
    for k, v in attrs.items():
        setattr(ds, k, v)
    ds.Rows, ds.Columns, ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, pixels // 2, 16, 16, 15
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.PixelData = os.urandom(pixels)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return str(ds.SOPInstanceUID), fp.getvalue()


@pytest.fixture
def archive(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[tuple[int, DimseServer, Engine]]:
    saved = {k: getattr(_config, k) for k in ("UNRESTRICTED_STORAGE_SERVICE", "LOG_HANDLER_LEVEL",
                                               "LOG_REQUEST_IDENTIFIERS", "LOG_RESPONSE_IDENTIFIERS",
                                               "STORE_SEND_CHUNKED_DATASET")}
    _config.STORE_SEND_CHUNKED_DATASET = True
    fast = getattr(request, "param", True)
    with Engine(tmp_path / "data") as engine:
        srv = DimseServer(engine, Config(data_dir=tmp_path / "data",
                                         dimse=DimseConfig(port=0, max_pdu=MAX_PDU, fast_path=fast,
                                                                         accept_unknown_callers=True)))
        _, port = srv.start()
        try:
            yield port, srv, engine
        finally:
            assert srv.stop(10)
            for k, v in saved.items():
                setattr(_config, k, v)


def _associate(port: int) -> Any:
    ae = ArchiveAE("FASTSCU", tuned=True)  # our requestor side: its native reader is checked too
    contexts = [build_context(CTImageStorage, ExplicitVRLittleEndian), build_context(Verification),
                build_context(StudyRootQueryRetrieveInformationModelFind)]
    assoc = ae.associate("127.0.0.1", port, contexts=contexts, ae_title="DICOMVAULT")
    assert assoc.is_established
    return assoc


def _send(assoc: Any, data: bytes, folder: Path) -> Dataset:
    """C-STORE of already encoded dataset bytes, sent as they are (what a modality does):
    pynetdicom's chunked sending of a file's data set, without decoding it."""
    sop_uid = _uid_of(data)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    fp.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(fp, meta, enforce_standard=True)
    path = folder / f"{sop_uid}-{len(data)}.dcm"  # the same object cut short gets its own file
    path.write_bytes(fp.getvalue() + data)
    return assoc.send_c_store(path)


def _uid_of(data: bytes) -> str:
    return str(dcmread(DicomBytesIO(data), force=True, specific_tags=["SOPInstanceUID"]).SOPInstanceUID)


def _acceptor(srv: DimseServer) -> Any:
    assert srv._server is not None
    [acceptor] = [a for a in srv._server.active_associations if a.is_established]
    return acceptor


@pytest.mark.parametrize(("uid_class", "uid_instance", "msg_id", "status", "comment"), [
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", 1, 0x0000, None),  # odd-length UID, padded with NUL
    ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", 65535, 0x0000, None),
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3", 7, 0xA700, "storage full: /data"),  # odd comment
    ("1.2.840.10008.5.1.4.1.1.2", "1.2.3", 7, 0xC000, "malformed dataset: bad"),
])
def test_store_response_bytes_equal_pynetdicoms(uid_class: str, uid_instance: str, msg_id: int,
                                                 status: int, comment: str | None) -> None:
    rsp = C_STORE()
    rsp.MessageIDBeingRespondedTo = msg_id
    rsp.AffectedSOPClassUID = uid_class
    rsp.AffectedSOPInstanceUID = uid_instance
    rsp.Status = status
    if comment:
        rsp.ErrorComment = comment
    msg = C_STORE_RSP()
    msg.primitive_to_message(rsp)
    want = bytes(encode(msg.command_set, True, True))
    pdu = _native.encode_response(3, 0x8001, msg_id, uid_class, uid_instance, status, comment, 0)
    assert pdu[:2] == b"\x04\x00" and struct.unpack(">I", pdu[2:6])[0] == len(pdu) - 6
    assert pdu[6:12] == struct.pack(">IBB", len(want) + 2, 3, 0x03)  # context 3, last command fragment
    assert pdu[12:] == want


def test_echo_response_bytes_equal_pynetdicoms() -> None:
    rsp = C_ECHO()
    rsp.MessageIDBeingRespondedTo = 12
    rsp.AffectedSOPClassUID = Verification
    rsp.Status = 0x0000
    msg = C_ECHO_RSP()
    msg.primitive_to_message(rsp)
    want = bytes(encode(msg.command_set, True, True))
    assert _native.encode_response(1, 0x8030, 12, Verification, "", 0, None, 0)[12:] == want


def test_response_split_to_the_peers_max_pdu() -> None:
    pdus = _native.encode_response(1, 0x8001, 1, CTImageStorage, "1.2.3", 0xA700, "x" * 60, 40)
    frags, at = [], 0
    while at < len(pdus):
        (n,) = struct.unpack(">I", pdus[at + 2:at + 6])
        assert n <= 40
        frags.append(pdus[at + 6:at + 6 + n])
        at += 6 + n
    assert len(frags) > 2 and all(f[5] == 0x01 for f in frags[:-1]) and frags[-1][5] == 0x03
    command = b"".join(f[6:] for f in frags)
    want = _native.encode_response(1, 0x8001, 1, CTImageStorage, "1.2.3", 0xA700, "x" * 60, 0)[12:]
    assert command == want


def test_store_echo_find_on_one_association(archive: tuple[int, DimseServer, Engine],
                                            tmp_path: Path) -> None:
    port, srv, engine = archive
    study = generate_uid()
    sent = dict(_ct(study) for _ in range(3))
    assoc = _associate(port)
    try:
        for data in sent.values():
            assert _send(assoc, data, tmp_path).Status == 0x0000
        assert assoc.send_c_echo().Status == 0x0000
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = study
        q.NumberOfStudyRelatedInstances = ""
        rows = [ident for status, ident in assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind)
                if status and status.Status in (0xFF00, 0xFF01)]
        assert [int(r.NumberOfStudyRelatedInstances) for r in rows] == [3]
        # the same object again: a duplicate, still Success
        assert _send(assoc, next(iter(sent.values())), tmp_path).Status == 0x0000
        fast = _acceptor(srv).dul.fast_path
        assert fast is not None and fast.answered == 6  # 4 C-STOREs, the C-ECHO and the C-FIND
        assert fast.passed == 0
        # our side too (a tuned ArchiveAE): the 4 plain-Success C-STORE-RSPs were read natively,
        # the C-ECHO-RSP and the C-FIND-RSPs went to pynetdicom
        ours = assoc.dul.fast_path
        assert ours is not None and ours.answered == 4 and ours.passed >= 2
    finally:
        assoc.release()
    assert assoc.is_released
    for uid, data in sent.items():
        assert engine.read_dataset(uid) == (ExplicitVRLittleEndian, data)


def test_refusal_carries_status_and_comment_and_keeps_the_association(
        archive: tuple[int, DimseServer, Engine], tmp_path: Path) -> None:
    port, _, engine = archive
    assoc = _associate(port)
    try:
        uid, data = _ct(generate_uid())
        bad = _send(assoc, data[: len(data) // 2], tmp_path)  # pixel data cut short: cannot be understood
        assert bad.Status == 0xC000 and "malformed" in bad.ErrorComment
        assert engine.instance(uid) is None
        assert _send(assoc, data, tmp_path).Status == 0x0000
    finally:
        assoc.release()


@pytest.mark.parametrize("archive", [False], indirect=True)
def test_fast_path_off_serves_through_pynetdicom(archive: tuple[int, DimseServer, Engine],
                                                 tmp_path: Path) -> None:
    port, srv, engine = archive
    uid, data = _ct(generate_uid())
    assoc = _associate(port)
    try:
        assert _send(assoc, data, tmp_path).Status == 0x0000
        assert getattr(_acceptor(srv).dul, "fast_path", None) is None
    finally:
        assoc.release()
    assert engine.read_dataset(uid)[1] == data


@pytest.mark.parametrize("archive", [False], indirect=True)
@pytest.mark.parametrize("client", ["stock", "ours"])
def test_pynetdicom_c_get_sends_the_stored_bytes(archive: tuple[int, DimseServer, Engine], tmp_path: Path,
                                                 client: str) -> None:
    """C-GET served by pynetdicom (fast_path = false): each sub-operation's data set is the
    stored bytes as they are (retrieve.StoredInstance through ArchiveAssociation.send_c_store),
    and a missing blob fails only its own sub-operation."""
    from pynetdicom import AE, build_role, evt
    from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet as GET

    port, _, engine = archive
    study = generate_uid()
    objects = dict(_ct(study) for _ in range(3))
    assoc = _associate(port)
    try:
        for data in objects.values():
            assert _send(assoc, data, tmp_path).Status == 0x0000
    finally:
        assoc.release()
    got: dict[str, bytes] = {}

    def on_store(event: Any) -> int:
        got[str(event.request.AffectedSOPInstanceUID)] = event.request.DataSet.getvalue()
        return 0x0000

    ae = AE(ae_title="GETSCU") if client == "stock" else ArchiveAE("GETSCU", tuned=False)
    contexts = [build_context(GET), build_context(CTImageStorage, ExplicitVRLittleEndian)]
    getter = ae.associate("127.0.0.1", port, contexts=contexts, ae_title="DICOMVAULT",
                          ext_neg=[build_role(CTImageStorage, scp_role=True)],
                          evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert getter.is_established
    try:
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = study
        final = [st for st, _ in getter.send_c_get(q, GET)][-1]
        assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 3
    finally:
        getter.release()
    assert got == objects


def test_broken_pdata_aborts_only_that_association(archive: tuple[int, DimseServer, Engine]) -> None:
    port, _, _ = archive
    assoc = _associate(port)
    # a data set fragment where a command set must start (context 1, not last, not command)
    fragment = b"\x08\x00\x18\x00"
    pdv = struct.pack(">IBB", len(fragment) + 2, 1, 0x00) + fragment
    assoc.dul.socket.socket.sendall(struct.pack(">BBI", 0x04, 0, len(pdv)) + pdv)
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.02)
    assert assoc.is_aborted
    other = _associate(port)
    try:
        assert other.send_c_echo().Status == 0x0000
    finally:
        other.release()


def test_a_peer_abort_ends_its_association_without_an_error(archive: tuple[int, DimseServer, Engine],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    """A-ABORT from the peer is a normal end (a workstation closing a viewer does it): logged as a
    warning, not as pynetdicom's InvalidEventError traceback for the Evt17 that follows it."""
    port, _, _ = archive
    with caplog.at_level(logging.INFO):
        assoc = _associate(port)
        assert assoc.send_c_echo().Status == 0x0000
        assoc.abort()
        deadline = time.monotonic() + 10
        while "association aborted" not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.02)
        other = _associate(port)
        try:
            assert other.send_c_echo().Status == 0x0000
        finally:
            other.release()
    assert "association aborted: FASTSCU" in caplog.text
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert not errors, [r.getMessage() for r in errors]


def test_a_pdu_beyond_the_negotiated_maximum_is_still_read(archive: tuple[int, DimseServer, Engine]) -> None:
    """Some modalities overshoot the Maximum Length we announce (16 KiB here): the object is
    read and stored all the same (only absurd lengths are refused)."""
    from io import BytesIO

    from dicomvault.dimse.encoded import store_rq_command

    port, _, engine = archive
    uid, data = _ct(generate_uid(), pixels=100_000)
    assoc = _associate(port)
    try:
        [cx] = [c for c in assoc.accepted_contexts if c.abstract_syntax == CTImageStorage]
        req = C_STORE()
        req.MessageID = 1
        req.AffectedSOPClassUID = CTImageStorage
        req.AffectedSOPInstanceUID = uid
        req.Priority = 0
        req.DataSet = BytesIO(data)
        command = store_rq_command(req)
        assert command is not None
        pdu = _native.frame_message(cx.context_id, command, data, 0)  # one ~100 KB PDU
        assert len(pdu) > 6 * MAX_PDU
        assoc.dul.socket.socket.sendall(pdu)
        deadline = time.monotonic() + 10
        while engine.instance(uid) is None and time.monotonic() < deadline:
            time.sleep(0.02)
        assert engine.read_dataset(uid) == (ExplicitVRLittleEndian, data)
    finally:
        assoc.abort()  # our own client did not expect the response it got
