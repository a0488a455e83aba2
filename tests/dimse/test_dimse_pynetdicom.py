"""The archive's DIMSE services driven by a pynetdicom peer where the test needs exact statuses,
raw bytes or a role dcmtk does not play: bit-exact C-STORE, bad input, C-GET contexts and
sub-operation counts, unknown move destinations, storage commitment, garbage on the wire."""

from __future__ import annotations

import socket
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dimse_helpers import ARCHIVE_AE, COMMIT_AE, HOST, Archive, Sent, associate, dataset_bytes, run
from pydicom.dataset import Dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AE, _config, build_context, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StorageCommitmentPushModel,
    StorageCommitmentPushModelInstance,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dv_corpus import corpus_dirs

pytestmark = pytest.mark.interop  # the corpus and the archive's peers come from dcmtk

CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"


@pytest.fixture
def chunked_send() -> Any:
    """pynetdicom's own raw sending: a file's dataset goes out as its bytes, no pydicom decode."""
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = old


# Real files in five transfer syntaxes (distinct SOP Instance UIDs from the dcmtk corpus).
RAW_FILES = ["waveform_ecg.dcm", "liver_1frame.dcm", "gdcm-US-ALOKA-16_big.dcm", "OBXXXX1A_rle.dcm",
             "693_J2KR.dcm"]


def _real(name: str) -> Path:
    for d in corpus_dirs():
        if (d / name).exists():
            return d / name
    raise FileNotFoundError(name)


def test_store_is_bit_exact(stored: Archive, chunked_send: None) -> None:
    files = [_real(n) for n in RAW_FILES]
    sents = [Sent.of(p) for p in files]
    assoc = associate(stored, [build_context(s.sop_class, s.ts) for s in sents])
    try:
        for path, s in zip(files, sents, strict=True):
            rsp = assoc.send_c_store(path)
            assert rsp.Status == 0x0000, f"{path.name}: 0x{rsp.Status:04X}"
            stored.sent[s.sop_uid] = s
    finally:
        assoc.release()
    for path, s in zip(files, sents, strict=True):
        assert stored.stored(s.sop_uid) == dataset_bytes(path), f"{path.name} not stored bit-exact"


def _part10(tmp: Path, name: str, meta_from: Path, dataset: bytes, sop_uid: str | None = None) -> Path:
    """A Part-10 file with `meta_from`'s file meta (optionally another SOP Instance UID) and
    the given dataset bytes: what a broken sender would put on the wire."""
    fm = pydicom.dcmread(meta_from, stop_before_pixels=True).file_meta
    if sop_uid:
        fm.MediaStorageSOPInstanceUID = sop_uid
    out = tmp / name
    with out.open("wb") as f:
        f.write(b"\0" * 128 + b"DICM")
        pydicom.filewriter.write_file_meta_info(f, fm, enforce_standard=True)
        f.write(dataset)
    return out


def test_bad_datasets_get_failure_statuses_and_association_stays(stored: Archive, chunked_send: None,
                                                                 tmp_path: Path) -> None:
    ct = _real("CT_small.dcm")
    _, data = dataset_bytes(ct)
    uid = str(pydicom.dcmread(ct, stop_before_pixels=True).SOPInstanceUID)
    pixel_at = data.index(b"\xe0\x7f\x10\x00")  # (7FE0,0010) tag, explicit VR LE
    cases = {
        "mid-pixel-data": _part10(tmp_path, "a.dcm", ct, data[: pixel_at + 2000]),
        "mid-element-header": _part10(tmp_path, "b.dcm", ct, data[:1003]),
        "garbage": _part10(tmp_path, "c.dcm", ct, b"\x08\x00\x16\x00UI\xff\xff" + b"\xab" * 301),
    }
    assoc = associate(stored, [build_context(CTImageStorage, ExplicitVRLittleEndian)])
    try:
        for why, path in cases.items():
            rsp = assoc.send_c_store(path)
            assert 0xC000 <= rsp.Status <= 0xCFFF, f"{why}: 0x{rsp.Status:04X}"
            assert assoc.is_established, f"{why}: association dropped"
        # Request says one SOP Instance UID, the dataset another: A900 (the dataset is a
        # duplicate of an object already stored, so nothing changes in the archive).
        other = _part10(tmp_path, "d.dcm", ct, data, sop_uid=generate_uid())
        assert assoc.send_c_store(other).Status == 0xA900
        # A real file with that defect (its file meta names another SOP Instance UID).
        rtdose = _real("rtdose_expb_1frame.dcm")
        with_be = associate(stored, [build_context(pydicom.dcmread(rtdose).SOPClassUID, ExplicitVRBigEndian)])
        try:
            assert with_be.send_c_store(rtdose).Status == 0xA900
            stored.sent[Sent.of(rtdose).sop_uid] = Sent.of(rtdose)  # stored under its own UID
        finally:
            with_be.release()
        # ... and the next good object on the same association is stored.
        assert assoc.send_c_store(ct).Status == 0x0000
    finally:
        assoc.release()
    log = stored.log_text()
    assert f"C-STORE from PYSCU of {uid} refused (0xC" in log
    assert "refused (0xA900)" in log


def _get(archive: Archive, contexts: list[Any], study: str) -> tuple[list[tuple[str, str, bytes]], list[Any]]:
    """C-GET of a study; (received (uid, ts, bytes), responses)."""
    got: list[tuple[str, str, bytes]] = []

    def on_store(event: Any) -> int:
        got.append((str(event.request.AffectedSOPInstanceUID), str(event.context.transfer_syntax),
                    event.request.DataSet.getvalue()))
        return 0x0000

    assoc = _get_association(archive, contexts, on_store)
    try:
        rsps = [(s, i) for s, i in assoc.send_c_get(_study(study), StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    return got, rsps


def _get_association(archive: Archive, contexts: list[Any], on_store: Any,
                     get_syntaxes: list[str] | None = None) -> Any:
    """An association for C-GETs of CT: the GET model (in `get_syntaxes`, default pynetdicom's),
    `contexts`, the SCP role for CT, `on_store` answering the sub-operations."""
    get = (build_context(StudyRootQueryRetrieveInformationModelGet, get_syntaxes) if get_syntaxes
           else build_context(StudyRootQueryRetrieveInformationModelGet))
    return associate(archive, [get, *contexts], ext_neg=[build_role(CTImageStorage, scp_role=True)],
                     evt_handlers=[(evt.EVT_C_STORE, on_store)])


def _study(study: str) -> Dataset:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = study
    return q


CT_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian,
               DeflatedExplicitVRLittleEndian, JPEGLSLossless, RLELossless]


def test_get_sends_stored_bytes_in_every_accepted_syntax(stored: Archive) -> None:
    # One context per syntax for the same SOP class: the archive picks the stored one each time.
    got, rsps = _get(stored, [build_context(CTImageStorage, ts) for ts in CT_SYNTAXES], CT_STUDY)
    final = rsps[-1][0]
    assert final.Status == 0x0000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (6, 0)
    assert [r[0].NumberOfRemainingSuboperations for r in rsps[:-1]] == [5, 4, 3, 2, 1, 0]
    assert len(got) == 6
    for uid, ts, data in got:
        assert (ts, data) == stored.stored(uid), f"{uid} not sent as stored"


def test_get_converts_to_what_the_requestor_accepted(stored: Archive) -> None:
    """A requestor that accepted only Explicit VR Little Endian gets every object in it: the
    uncompressed ones converted, the JPEG-LS and RLE ones decompressed; the pixel values are the
    stored object's."""
    got, rsps = _get(stored, [build_context(CTImageStorage, ExplicitVRLittleEndian)], CT_STUDY)
    final = rsps[-1][0]
    assert final.Status == 0x0000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (6, 0)
    by_ts = {s.sop_uid: s.ts for s in stored.sent.values() if s.study_uid == CT_STUDY}
    assert {by_ts[uid] for uid, _, _ in got} >= {ExplicitVRBigEndian, JPEGLSLossless, RLELossless}
    for uid, ts, data in got:
        assert ts == ExplicitVRLittleEndian
        want = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored.stored_file(uid)))
        sent = pydicom.dataset.Dataset(pydicom.filereader.read_dataset(
            pydicom.filebase.DicomBytesIO(data), False, True))
        sent.file_meta = pydicom.dataset.FileMetaDataset()
        sent.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        assert sent.SOPInstanceUID == uid
        assert (sent.pixel_array == want.pixel_array).all(), f"{uid} ({by_ts[uid]}): pixels differ"


def test_get_of_one_object_converts_it_when_its_syntax_was_not_accepted(stored: Archive) -> None:
    """Each object of the study retrieved alone (IMAGE level, the first and only sub-operation,
    which is read before the study is listed) by a requestor that accepted only Explicit VR
    Little Endian: the ones stored in another syntax arrive converted to it, not as stored."""
    study = {s.sop_uid: s.ts for s in stored.sent.values() if s.study_uid == CT_STUDY}
    assert len(set(study.values())) > 2
    got: list[tuple[str, str]] = []
    pixels_equal: list[bool] = []

    def on_store(event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        got.append((uid, str(event.context.transfer_syntax)))
        sent = pydicom.dataset.Dataset(pydicom.filereader.read_dataset(
            pydicom.filebase.DicomBytesIO(event.request.DataSet.getvalue()), False, True))
        sent.file_meta = pydicom.dataset.FileMetaDataset()
        sent.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        want = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored.stored_file(uid)))
        pixels_equal.append(sent.SOPInstanceUID == uid and bool((sent.pixel_array == want.pixel_array).all()))
        return 0x0000

    assoc = _get_association(stored, [build_context(CTImageStorage, ExplicitVRLittleEndian)], on_store)
    try:
        for uid in study:
            q = Dataset()
            q.QueryRetrieveLevel = "IMAGE"
            q.SOPInstanceUID = uid
            rsps = list(assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet))
            assert rsps[-1][0].Status == 0x0000, uid
            assert rsps[-1][0].NumberOfCompletedSuboperations == 1, uid
    finally:
        assoc.release()
    assert got == [(uid, ExplicitVRLittleEndian) for uid in study]
    assert pixels_equal == [True] * len(study)


def test_get_fails_what_no_accepted_syntax_reaches_and_goes_on(stored: Archive) -> None:
    """The requestor accepted only JPEG 2000 for CT, which nothing here is stored in and we do not
    compress to: each sub-operation fails with its UID listed, the operation completes (0xA702:
    all failed) and the association stays usable."""
    got, rsps = _get(stored, [build_context(CTImageStorage, JPEG2000Lossless)], CT_STUDY)
    final, ident = rsps[-1]
    assert final.Status == 0xA702
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 6)
    assert got == []
    study = {s.sop_uid for s in stored.sent.values() if s.study_uid == CT_STUDY}
    assert set(ident.FailedSOPInstanceUIDList) == study
    # some accepted, some not: 0xB000 and the rest delivered
    got, rsps = _get(stored, [build_context(CTImageStorage, ts) for ts in (JPEGLSLossless, RLELossless)],
                     CT_STUDY)
    final, ident = rsps[-1]
    by_ts = {s.sop_uid: s.ts for s in stored.sent.values() if s.study_uid == CT_STUDY}
    assert final.Status == 0xB000
    assert {uid for uid, _, _ in got} == {u for u, ts in by_ts.items() if ts in (JPEGLSLossless, RLELossless)}
    assert set(ident.FailedSOPInstanceUIDList) == study - {uid for uid, _, _ in got}


def test_retrieve_refusals(stored: Archive) -> None:
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = CT_STUDY
    assoc = associate(stored, [build_context(StudyRootQueryRetrieveInformationModelMove),
                               build_context(StudyRootQueryRetrieveInformationModelGet)])
    try:
        rsps = list(assoc.send_c_move(q, "NOWHERE", StudyRootQueryRetrieveInformationModelMove))
        assert rsps[-1][0].Status == 0xA801  # move destination unknown
        bad = Dataset()
        bad.QueryRetrieveLevel = "SERIES"  # without SeriesInstanceUID
        bad.StudyInstanceUID = CT_STUDY
        rsps = list(assoc.send_c_get(bad, StudyRootQueryRetrieveInformationModelGet))
        assert rsps[-1][0].Status == 0xA900
        assert assoc.is_established
    finally:
        assoc.release()
    assert "unknown move destination 'NOWHERE'" in stored.log_text()


def test_storage_commitment(stored: Archive) -> None:
    """N-ACTION from COMMITSCU (a configured peer); the N-EVENT-REPORT comes back on a new
    association to COMMITSCU's SCP, which this test runs."""
    reports: list[tuple[int, Dataset, str]] = []
    arrived = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append((event.event_type, event.event_information, str(event.assoc.requestor.ae_title)))
        arrived.set()
        return 0x0000, None

    scp = AE(ae_title=COMMIT_AE)
    scp.add_supported_context(StorageCommitmentPushModel, scu_role=True, scp_role=True)
    server = scp.start_server((HOST, stored.commit_port), block=False,
                              evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        ct = sorted((s for s in stored.sent.values() if s.study_uid == CT_STUDY), key=lambda s: s.sop_uid)
        bogus = generate_uid()
        refs = [(s.sop_class, s.sop_uid) for s in ct[:2]] + [(CTImageStorage, bogus)]
        req = Dataset()
        req.TransactionUID = tx = generate_uid()
        req.ReferencedSOPSequence = []
        for cls, uid in refs:
            item = Dataset()
            item.ReferencedSOPClassUID = cls
            item.ReferencedSOPInstanceUID = uid
            req.ReferencedSOPSequence.append(item)
        assoc = associate(stored, [build_context(StorageCommitmentPushModel)], ae_title=COMMIT_AE)
        try:
            status, _ = assoc.send_n_action(req, 1, StorageCommitmentPushModel,
                                            StorageCommitmentPushModelInstance)
            assert status.Status == 0x0000
        finally:
            assoc.release()
        assert arrived.wait(15), "no N-EVENT-REPORT"
    finally:
        server.shutdown()
    event_type, info, sender = reports[0]
    assert sender == ARCHIVE_AE
    assert event_type == 2  # complete, failures exist
    assert info.TransactionUID == tx
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [s.sop_uid for s in ct[:2]]
    [failed] = info.FailedSOPSequence
    assert (failed.ReferencedSOPInstanceUID, failed.FailureReason) == (bogus, 0x0112)


def test_garbage_on_the_wire_drops_only_that_connection(stored: Archive) -> None:
    for junk in (b"\x09\x00\x00\x00\x00\x10" + b"garbage!" * 512,  # unknown PDU type
                 b"\x01\x00\x00\x00\x00\x40" + b"\xff" * 64):  # A-ASSOCIATE-RQ with a junk body
        with socket.create_connection((HOST, stored.port), timeout=10) as s:
            s.sendall(junk)
            reply = s.recv(64)  # an A-ABORT (or the connection closes)
            assert reply == b"" or reply[0] == 0x07
    run(["echoscu", "-aet", "ECHOSCU", "-aec", ARCHIVE_AE, *stored.addr])
    deadline = time.monotonic() + 5
    while "closed without an association" not in stored.log_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert "closed without an association" in stored.log_text()


def test_storage_commitment_report_on_same_association(stored: Archive) -> None:
    """A requestor that is not a configured peer gets its report on the association it keeps open."""
    reports: list[Dataset] = []
    arrived = threading.Event()

    def on_report(event: Any) -> tuple[int, None]:
        reports.append(event.event_information)
        arrived.set()
        return 0x0000, None

    uid = next(s for s in stored.sent.values() if s.study_uid == CT_STUDY)
    req = Dataset()
    req.TransactionUID = tx = generate_uid()
    item = Dataset()
    item.ReferencedSOPClassUID = uid.sop_class
    item.ReferencedSOPInstanceUID = uid.sop_uid
    req.ReferencedSOPSequence = [item]
    assoc = associate(stored, [build_context(StorageCommitmentPushModel)], ae_title="UNLISTED",
                      evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report)])
    try:
        status, _ = assoc.send_n_action(req, 1, StorageCommitmentPushModel,
                                        StorageCommitmentPushModelInstance)
        assert status.Status == 0x0000
        assert arrived.wait(15), "no N-EVENT-REPORT on the open association"
    finally:
        assoc.release()
    [info] = reports
    assert info.TransactionUID == tx
    assert [i.ReferencedSOPInstanceUID for i in info.ReferencedSOPSequence] == [uid.sop_uid]
    assert "FailedSOPSequence" not in info


def test_get_cancel_in_the_middle(stored: Archive) -> None:
    """A C-CANCEL after the second object: the operation ends with Cancel and its counts, and
    the association goes on (C-ECHO)."""
    got: list[str] = []

    def on_store(event: Any) -> int:
        got.append(str(event.request.AffectedSOPInstanceUID))
        if len(got) == 2:
            cx = next(c for c in event.assoc.accepted_contexts
                      if c.abstract_syntax == StudyRootQueryRetrieveInformationModelGet)
            event.assoc.send_c_cancel(1, cx.context_id)
        return 0x0000

    contexts = [build_context(CTImageStorage, CT_SYNTAXES), build_context(Verification)]
    assoc = _get_association(stored, contexts, on_store)
    try:
        rsps = list(assoc.send_c_get(_study(CT_STUDY), StudyRootQueryRetrieveInformationModelGet, msg_id=1))
        final = rsps[-1][0]
        assert final.Status == 0xFE00
        assert 2 <= final.NumberOfCompletedSuboperations < 6
        assert final.NumberOfRemainingSuboperations == 6 - final.NumberOfCompletedSuboperations
        assert len(got) == final.NumberOfCompletedSuboperations
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def test_get_counts_what_the_requestor_refuses(stored: Archive) -> None:
    """The requestor answers one sub-operation with a failure and one with a warning: 0xB000,
    the counts, the failed UID listed."""
    answers = iter([0xA700, 0xB007])

    def status_for(_: str) -> int:
        return next(answers, 0x0000)

    got: list[str] = []

    def on_store(event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        got.append(uid)
        return status_for(uid)

    assoc = _get_association(stored, [build_context(CTImageStorage, CT_SYNTAXES)], on_store)
    try:
        final, ident = list(assoc.send_c_get(_study(CT_STUDY), StudyRootQueryRetrieveInformationModelGet))[-1]
    finally:
        assoc.release()
    assert final.Status == 0xB000
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations,
            final.NumberOfWarningSuboperations) == (4, 1, 1)
    failed = ident.FailedSOPInstanceUIDList  # one value: pydicom gives the str itself
    assert (failed if isinstance(failed, str) else list(failed)) == got[0]


def test_get_requestor_that_drops_the_association(stored: Archive, tmp_path: Path) -> None:
    """dcmtk's getscu killed (-9) once the first object has arrived: the server ends that C-GET
    when the connection drops, logs it, and serves the next association in full."""
    out = tmp_path / "got"
    out.mkdir()
    proc = subprocess.Popen(["getscu", "-S", "-aec", ARCHIVE_AE, "-od", str(out),
                             "-k", "QueryRetrieveLevel=STUDY",
                             "-k", f"StudyInstanceUID={CT_STUDY}", HOST, str(stored.port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 30
        while not any(out.iterdir()):
            assert proc.poll() is None and time.monotonic() < deadline, "getscu received nothing"
            time.sleep(0.005)
        proc.kill()
    finally:
        proc.wait(10)
    got, rsps = _get(stored, [build_context(CTImageStorage, CT_SYNTAXES)], CT_STUDY)
    assert rsps[-1][0].Status == 0x0000 and len(got) == 6


class Destination:
    """A pynetdicom storage SCP as the C-MOVE destination (the archive's COMMITSCU peer): it
    accepts CT only in `syntaxes`."""

    def __init__(self, port: int, syntaxes: list[str], refuse: frozenset[str] = frozenset()) -> None:
        self.received: list[str] = []
        self.data: dict[str, tuple[str, bytes]] = {}  # uid -> (syntax, data set) as received
        self.refuse = refuse  # these are answered 0xA700 (out of resources)
        ae = AE(ae_title=COMMIT_AE)
        ae.add_supported_context(CTImageStorage, syntaxes)
        self.server = ae.start_server((HOST, port), block=False,
                                      evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def _on_store(self, event: Any) -> int:
        uid = str(event.request.AffectedSOPInstanceUID)
        self.received.append(uid)
        self.data[uid] = (str(event.context.transfer_syntax), event.request.DataSet.getvalue())
        return 0xA700 if uid in self.refuse else 0x0000

    def stop(self) -> None:
        self.server.shutdown()


def _move(archive: Archive, dest: str, cancel_after: int | None = None) -> list[tuple[Any, Any]]:
    assoc = associate(archive, [build_context(StudyRootQueryRetrieveInformationModelMove)])
    out = []
    try:
        move = assoc.send_c_move(_study(CT_STUDY), dest, StudyRootQueryRetrieveInformationModelMove, msg_id=1)
        for status, ident in move:
            out.append((status, ident))
            if cancel_after is not None and len(out) == cancel_after:
                cx = assoc.accepted_contexts[0]
                assoc.send_c_cancel(1, cx.context_id)
        assert assoc.is_established
    finally:
        assoc.release()
    return out


def test_move_to_a_destination_that_accepts_nothing_we_have(stored: Archive) -> None:
    """The destination accepts CT only in JPEG 2000: every sub-operation fails, listed, 0xA702."""
    dest = Destination(stored.commit_port, [JPEG2000Lossless])
    try:
        final, ident = _move(stored, COMMIT_AE)[-1]
    finally:
        dest.stop()
    study = {s.sop_uid for s in stored.sent.values() if s.study_uid == CT_STUDY}
    assert final.Status == 0xA702
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (0, 6)
    assert set(ident.FailedSOPInstanceUIDList) == study and dest.received == []


def test_move_to_an_unreachable_destination(stored: Archive) -> None:
    final, ident = _move(stored, COMMIT_AE)[-1]  # nothing listens on the peer's port
    assert final.Status == 0xA702 and final.NumberOfFailedSuboperations == 6
    assert "cannot connect" in final.ErrorComment
    assert "C-MOVE from PYSCU: cannot connect to COMMITSCU@" in stored.log_text()


def test_move_converts_for_the_destination_and_can_be_cancelled(stored: Archive) -> None:
    """A destination that takes only Explicit VR Little Endian gets every object converted;
    then a C-CANCEL after the second pending response ends the next move early, with Cancel."""
    dest = Destination(stored.commit_port, [ExplicitVRLittleEndian])
    try:
        rsps = _move(stored, COMMIT_AE)
        assert rsps[-1][0].Status == 0x0000 and len(dest.received) == 6
        assert [r[0].NumberOfRemainingSuboperations for r in rsps[:-1]] == [5, 4, 3, 2, 1, 0]
        _cancelled_move(stored, dest)
    finally:
        dest.stop()


def _cancelled_move(stored: Archive, dest: Destination) -> None:
    """A C-MOVE cancelled after its second pending response ends early, with Cancel and counts
    that add up to the study; the destination got what the counts say was sent."""
    dest.received.clear()
    final = _move(stored, COMMIT_AE, cancel_after=2)[-1][0]
    assert final.Status == 0xFE00
    remaining, completed, failed, _ = _counts(final)
    assert remaining is not None and 2 <= completed + failed < 6 == completed + failed + remaining
    assert len(dest.received) == completed + failed


def test_move_destination_that_drops_the_association(stored: Archive, tmp_path: Path) -> None:
    """The destination (dcmtk storescp) is killed (-9) once the first object has arrived: the
    rest fail, the requestor is told (the failed UIDs) and its association goes on."""
    out = tmp_path / "dest"
    out.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", COMMIT_AE, "-od", str(out), str(stored.commit_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    done: list[list[tuple[Any, Any]]] = []
    try:
        deadline = time.monotonic() + 20
        while True:  # listening
            try:
                socket.create_connection((HOST, stored.commit_port), timeout=0.5).close()
                break
            except OSError:
                assert time.monotonic() < deadline, "storescp did not start"
                time.sleep(0.05)
        mover = threading.Thread(target=lambda: done.append(_move(stored, COMMIT_AE)))
        mover.start()
        while not any(out.iterdir()):
            assert time.monotonic() < deadline + 20 and mover.is_alive(), "nothing arrived"
            time.sleep(0.002)
        scp.kill()
        mover.join(60)
    finally:
        if scp.poll() is None:
            scp.kill()
        scp.wait(10)
    final, ident = done[0][-1]
    done_n, failed = final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations
    assert done_n + failed == 6 and failed >= 1, (done_n, failed)
    assert final.Status == (0xB000 if done_n else 0xA702)
    uids = ident.FailedSOPInstanceUIDList
    assert len([uids] if isinstance(uids, str) else uids) == failed




def test_get_served_by_pynetdicom_counts_a_refused_object(stored: Archive) -> None:
    """A C-GET on a context the native path does not take (the GET model in Explicit VR Big
    Endian) is pynetdicom's; the requestor's failure status for one object still reaches it (the
    native reader hands C-STORE-RSPs outside its own retrieves over, whatever their status)."""
    first = [True]

    def on_store(event: Any) -> int:
        if first[0]:
            first[0] = False
            return 0xA700
        return 0x0000

    assoc = _get_association(stored, [build_context(CTImageStorage, CT_SYNTAXES)], on_store,
                             [ExplicitVRBigEndian])
    t0 = time.monotonic()
    try:
        final = list(assoc.send_c_get(_study(CT_STUDY), StudyRootQueryRetrieveInformationModelGet))[-1][0]
    finally:
        assoc.release()
    assert time.monotonic() - t0 < 20, "a sub-operation waited for a response that was dropped"
    assert final.Status == 0xB000
    # the refused one, and the big endian, JPEG-LS and RLE objects that pynetdicom's path does not
    # convert (it converts between uncompressed little-endian syntaxes only)
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (2, 4)


# -- the native batches of sub-operations (fastretrieve._batch, _native.retrieve_batch) ----------

def _counts(rsp: Any) -> tuple[int | None, int, int, int]:
    """(remaining (None: not sent, as in a final Success), completed, failed, warning)."""
    return (rsp.get("NumberOfRemainingSuboperations"), rsp.NumberOfCompletedSuboperations,
            rsp.NumberOfFailedSuboperations, rsp.NumberOfWarningSuboperations)


def _uids(ident: Any) -> list[str]:
    uids = ident.FailedSOPInstanceUIDList  # one value: pydicom gives the str itself
    return [uids] if isinstance(uids, str) else list(uids)


def test_get_mixes_objects_sent_as_stored_and_converted(stored: Archive) -> None:
    """The requestor accepts Explicit VR Little Endian and JPEG-LS only: the objects stored in
    those go out natively as stored, the four others are converted between them, in study order,
    with one pending response each whose counts step by one."""
    contexts = [build_context(CTImageStorage, ExplicitVRLittleEndian),
                build_context(CTImageStorage, JPEGLSLossless)]
    got, rsps = _get(stored, contexts, CT_STUDY)
    assert rsps[-1][0].Status == 0x0000
    assert [_counts(r[0]) for r in rsps[:-1]] == [(5 - i, i + 1, 0, 0) for i in range(6)]
    assert _counts(rsps[-1][0]) == (None, 6, 0, 0)
    kept = {ExplicitVRLittleEndian, JPEGLSLossless}
    as_stored = [uid for uid, ts, data in got if stored.stored(uid)[0] in kept]
    assert len(as_stored) == 2
    for uid, ts, data in got:
        stored_ts, stored_data = stored.stored(uid)
        if stored_ts in kept:
            assert (ts, data) == (stored_ts, stored_data), f"{uid} not sent as stored"
        else:
            assert ts == ExplicitVRLittleEndian


def test_get_pending_counts_through_failures_in_a_batch(stored: Archive) -> None:
    """The requestor refuses the third and fifth sub-operations: every pending response has the
    counts so far, the final one 0xB000 with both failed UIDs in order, and nothing is skipped."""
    got: list[str] = []

    def on_store(event: Any) -> int:
        got.append(str(event.request.AffectedSOPInstanceUID))
        return 0xA700 if len(got) in (3, 5) else 0x0000

    assoc = _get_association(stored, [build_context(CTImageStorage, ts) for ts in CT_SYNTAXES], on_store)
    try:
        rsps = list(assoc.send_c_get(_study(CT_STUDY), StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    assert [_counts(r[0]) for r in rsps[:-1]] == [(5, 1, 0, 0), (4, 2, 0, 0), (3, 2, 1, 0), (2, 3, 1, 0),
                                                  (1, 3, 2, 0), (0, 4, 2, 0)]
    final, ident = rsps[-1]
    assert final.Status == 0xB000 and _counts(final) == (None, 4, 2, 0)
    assert _uids(ident) == [got[2], got[4]] and len(got) == 6


def test_move_as_stored_counts_a_refused_object_and_can_be_cancelled(stored: Archive) -> None:
    """A destination that accepts every stored syntax gets the objects natively, as stored, one
    pending response each; one it refuses is counted and listed; then a C-CANCEL after the
    second pending response ends the next move early, with Cancel and consistent counts."""
    study = [s.sop_uid for s in stored.sent.values() if s.study_uid == CT_STUDY]
    refused = sorted(study)[3]
    dest = Destination(stored.commit_port, CT_SYNTAXES, refuse=frozenset({refused}))
    try:
        rsps = _move(stored, COMMIT_AE)
        final, ident = rsps[-1]
        assert final.Status == 0xB000 and _counts(final) == (None, 5, 1, 0)
        assert _uids(ident) == [refused]
        pending = [_counts(r[0]) for r in rsps[:-1]]
        assert [p[0] for p in pending] == [5, 4, 3, 2, 1, 0]
        assert [p[1] + p[2] for p in pending] == [1, 2, 3, 4, 5, 6]
        assert sorted(dest.received) == sorted(study)
        for uid, (ts, data) in dest.data.items():
            assert (ts, data) == stored.stored(uid), f"{uid} not sent as stored"
        _cancelled_move(stored, dest)
    finally:
        dest.stop()
