"""The DIMSE server run in-process (no dcmtk): socket tuning, C-FIND character sets and C-CANCEL."""

from __future__ import annotations

import os
import re
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    generate_uid,
)
from pynetdicom import AE, _config, build_context
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from dicomvault.config import Config, DimseConfig
from dicomvault.dimse import DimseServer
from dicomvault.engine import Engine
from dicomvault.filemeta import file_meta_prefix

SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
N_INSTANCES = 300
# The cancel test's answer: ~5 MB framed, more than loopback lets the server queue for a client
# that reads slowly (~3 MB measured with findscu's 4 KB buffers, tcp_wmem's maximum 4 MB), so
# it cannot all be sent before findscu's C-CANCEL arrives, as 300 small matches were (CI, once).
N_CANCEL = 20000


def _dataset(**attrs: str) -> bytes:
    ds = Dataset()
    ds.SOPClassUID = SECONDARY_CAPTURE
    ds.SOPInstanceUID = generate_uid()
    ds.Modality = "OT"
    for k, v in attrs.items():
        setattr(ds, k, v)
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, False
    write_dataset(fp, ds)
    return fp.getvalue()


def _part10_many(n: int, **attrs: str) -> list[bytes]:
    """`n` Part-10 files alike but for their SOP Instance UID: one data set written by pydicom,
    the others made by replacing its fixed-width UID (pydicom per file took 3.6 s for 4,000)."""
    root = generate_uid()[:40]
    first = f"{root}.{10**9}"
    dataset = _dataset(SOPInstanceUID=first, **attrs)
    uids = [f"{root}.{10**9 + i}" for i in range(n)]
    return [file_meta_prefix(SECONDARY_CAPTURE, uid, ExplicitVRLittleEndian)
            + dataset.replace(first.encode(), uid.encode()) for uid in uids]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, DimseServer]]:
    saved = {k: getattr(_config, k) for k in ("UNRESTRICTED_STORAGE_SERVICE", "LOG_HANDLER_LEVEL",
                                               "LOG_REQUEST_IDENTIFIERS", "LOG_RESPONSE_IDENTIFIERS")}
    data = tmp_path_factory.mktemp("inproc")
    with Engine(data) as engine:
        study, series = generate_uid(), generate_uid()
        for _ in range(N_INSTANCES):
            engine.store_dataset(_dataset(PatientID="MANY", PatientName="Many^Images", StudyInstanceUID=study,
                                          SeriesInstanceUID=series), ExplicitVRLittleEndian)
        study, series = generate_uid(), generate_uid()
        results = engine.store_buffers(_part10_many(N_CANCEL, PatientID="CANCEL", StudyInstanceUID=study,
                                                    SeriesInstanceUID=series))
        assert not [r for r in results if isinstance(r, Exception)]
        engine.store_dataset(_dataset(SpecificCharacterSet="ISO_IR 100", PatientID="LATIN1",
                                      PatientName="Müller^Jürgen", StudyInstanceUID=generate_uid(),
                                      SeriesInstanceUID=generate_uid(), StudyDate="20240131"),
                             ExplicitVRLittleEndian)
        engine.store_dataset(_dataset(SpecificCharacterSet="ISO_IR 192", PatientID="UTF8",
                                      PatientName="Gérard^Żółć", StudyInstanceUID=generate_uid(),
                                      SeriesInstanceUID=generate_uid(), StudyDate="20240201"),
                             ExplicitVRLittleEndian)
        srv = DimseServer(engine, Config(data_dir=data, dimse=DimseConfig(port=0,
                                                                accept_unknown_callers=True)))
        _, port = srv.start()
        try:
            yield port, srv
        finally:
            assert srv.stop(10)
            for k, v in saved.items():
                setattr(_config, k, v)


def _associate(port: int, *contexts: str) -> Any:
    ae = AE(ae_title="INPROC")
    cxs = [build_context(c) for c in contexts]
    assoc = ae.associate("127.0.0.1", port, contexts=cxs, ae_title="DICOMVAULT")
    assert assoc.is_established
    return assoc


def test_accepted_sockets_have_tcp_nodelay(server: tuple[int, DimseServer]) -> None:
    port, srv = server
    assoc = _associate(port, Verification)
    try:
        assert assoc.send_c_echo().Status == 0x0000
        assert srv._server is not None
        [acceptor] = [a for a in srv._server.active_associations if a.is_established]
        sock = acceptor.dul.socket.socket
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) == 1
    finally:
        assoc.release()


@pytest.mark.parametrize(
    ("charset", "name", "want"),
    [("ISO_IR 100", "Müller^J*", ("Müller^Jürgen", "LATIN1", "20240131")),
     ("ISO_IR 192", "Gérard^Ż*", ("Gérard^Żółć", "UTF8", "20240201"))],
)
def test_find_non_ascii_names(server: tuple[int, DimseServer], charset: str, name: str,
                              want: tuple[str, str, str]) -> None:
    port, _ = server
    q = Dataset()
    q.SpecificCharacterSet = charset
    q.QueryRetrieveLevel = "STUDY"
    q.PatientName = name
    q.PatientID = ""
    q.StudyDate = "20240101-20240229"
    q.StudyInstanceUID = ""
    assoc = _associate(port, StudyRootQueryRetrieveInformationModelFind)
    try:
        rsps = list(assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()
    matches = [i for s, i in rsps if s.Status == 0xFF00]
    assert rsps[-1][0].Status == 0x0000
    assert [(str(m.PatientName), m.PatientID, m.StudyDate) for m in matches] == [want]


def test_find_cancel(server: tuple[int, DimseServer]) -> None:
    """dcmtk findscu cancels after the first response; the answer stops short with Cancel and the
    association stays usable. The client is a process of its own: a pynetdicom client in this
    process shares the GIL with the server it cancels. The answer is N_CANCEL matches (~5 MB) and
    findscu's socket buffers are 4 KB (dcmtk's TCP_BUFFER_LENGTH), so the server is held by flow
    control before its last match: with 300 matches and default buffers the whole answer was out
    before the C-CANCEL arrived (CI, once). The cancel is still asked for up to three times, for
    a findscu descheduled on a loaded machine; a server that ignores cancels answers Success to
    all three."""
    port, _ = server
    keys = ["QueryRetrieveLevel=IMAGE", "PatientID=CANCEL", "StudyInstanceUID", "SeriesInstanceUID",
            "SOPInstanceUID"]
    cmd = ["findscu", "-v", "-P", "-aec", "DICOMVAULT", "--cancel", "1",
           *(a for k in keys for a in ("-k", k)), "127.0.0.1", str(port)]
    finals: list[str] = []
    for _ in range(3):
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "TCP_NODELAY": "1", "TCP_BUFFER_LENGTH": "4096"})
        log = out.stdout + out.stderr
        assert out.returncode == 0, log
        final = re.search(r"Received Final Find Response \(([^)]*)\)", log)
        assert final is not None, log
        finals.append(final.group(1))
        if "cancel" in final.group(1).lower():
            assert 1 <= len(re.findall(r"Find Response: \d+ \(Pending", log)) < N_CANCEL, log[-3000:]
            break
    assert "cancel" in finals[-1].lower(), f"no C-FIND was cancelled in {len(finals)} tries: {finals}"
    # the same server answers the next association normally
    assoc = _associate(port, Verification)
    try:
        assert assoc.send_c_echo().Status == 0x0000
    finally:
        assoc.release()


def test_find_many_matches_arrive_whole_and_in_order(server: tuple[int, DimseServer]) -> None:
    """Pending responses leave in batches (dimse/fastpath.py): dcmtk's findscu still reads every
    match once, each a well-formed response, then the final Success."""
    port, _ = server
    keys = ["QueryRetrieveLevel=IMAGE", "PatientID=MANY", "StudyInstanceUID", "SeriesInstanceUID",
            "SOPInstanceUID", "InstanceNumber"]
    cmd = ["findscu", "-v", "-P", "-aec", "DICOMVAULT", *(a for k in keys for a in ("-k", k)),
           "127.0.0.1", str(port)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=60,
                         env={**os.environ, "TCP_NODELAY": "1"})
    log = out.stdout + out.stderr
    assert out.returncode == 0, log
    numbers = [int(n) for n in re.findall(r"Find Response: (\d+) \(Pending", log)]
    assert numbers == list(range(1, N_INSTANCES + 1)), log[-3000:]
    assert len(set(re.findall(r"\(0008,0018\) UI \[([^\]]+)\]", log))) == N_INSTANCES
    final = re.search(r"Received Final Find Response \(([^)]*)\)", log)
    assert final is not None and final.group(1) == "Success", log[-3000:]


def test_find_bad_level(server: tuple[int, DimseServer]) -> None:
    port, _ = server
    q = Dataset()
    q.QueryRetrieveLevel = "PATIENT"  # not in Study Root
    q.PatientID = ""
    assoc = _associate(port, StudyRootQueryRetrieveInformationModelFind)
    try:
        rsps = list(assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()
    assert rsps[-1][0].Status == 0xA900


def test_config_in_file_matches_serve_options(tmp_path: Path) -> None:
    # The README documents this file; it must load as documented.
    from dicomvault.config import load_config

    readme = (Path(__file__).parents[2] / "README.md").read_text()
    block = readme.split("```toml\n", 1)[1].split("```", 1)[0]
    p = tmp_path / "dicomvault.toml"
    p.write_text(block)
    cfg = load_config(p)
    assert cfg.dimse.ae_title == "DICOMVAULT" and cfg.dimse.port == 11112 and cfg.peers


@pytest.mark.parametrize("syntax",
                         [ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian])
def test_find_same_answers_in_every_transfer_syntax(server: tuple[int, DimseServer], syntax: str) -> None:
    """Little endian contexts get our pre-encoded responses, the others pynetdicom's encoding of
    the same identifiers: the answers must not differ."""
    port, _ = server
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.PatientID = ""
    q.PatientName = ""
    q.StudyDate = "20240101-20241231"
    q.StudyInstanceUID = ""
    q.NumberOfStudyRelatedInstances = None
    q.ModalitiesInStudy = ""
    q.ReferencedStudySequence = []
    ae = AE(ae_title="INPROC")
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMVAULT",
                         contexts=[build_context(StudyRootQueryRetrieveInformationModelFind, [syntax])])
    assert assoc.is_established
    try:
        rsps = list(assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()
    assert rsps[-1][0].Status == 0x0000
    got = sorted((m.PatientID, str(m.PatientName), m.StudyDate, m.NumberOfStudyRelatedInstances,
                  m.ModalitiesInStudy, m.QueryRetrieveLevel, list(m.ReferencedStudySequence))
                 for s, m in rsps if s.Status == 0xFF00)
    assert got == [("LATIN1", "Müller^Jürgen", "20240131", 1, "OT", "STUDY", []),
                   ("UTF8", "Gérard^Żółć", "20240201", 1, "OT", "STUDY", [])]
