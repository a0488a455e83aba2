"""Node access control: who may call (AE title bound to an address and, over TLS, to a
certificate), what each peer may do (store, query, retrieve, commit; C-MOVE destinations), kept
in `<data>/auth/peers.json` by `dicomvault peers` and applied by a running server without a
restart. Real dcmtk tools and pynetdicom against a real server."""

from __future__ import annotations

import hashlib
import logging
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dimse_helpers import (
    ARCHIVE_AE,
    HOST,
    free_port,
    pynetdicom_options_kept,
    run,
    start_archive,
    stop_archive,
    wait_port,
)
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)

from dicomvault.audit.log import search
from dicomvault.auth.peer_settings import SERVICES
from dicomvault.bench.pki import dcmtk_tls_args, make_pki
from dicomvault.config import Config, DimseConfig, PeerConfig
from dicomvault.dimse import DimseServer
from dicomvault.dimse.admission import context_allowed, service_of
from dicomvault.dimse.peers import Peers
from dicomvault.engine import Engine

pytestmark = pytest.mark.interop

CT = Path(get_testdata_file("CT_small.dcm"))
DEST_AE = "DESTSCP"


def peers_cli(data: Path, *args: str) -> None:
    subprocess.run([sys.executable, "-m", "dicomvault.cli", "peers", *args, "--data", str(data)],
                   check=True, capture_output=True, text=True)


def fingerprint(crt: Path) -> str:
    return hashlib.sha256(ssl.PEM_cert_to_DER_cert(crt.read_text())).hexdigest()


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[int, Path]]:
    """A dcmtk storescp: the C-MOVE destination."""
    out = tmp_path_factory.mktemp("dest")
    port = free_port()
    proc = subprocess.Popen(["storescp", "-aet", DEST_AE, "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, None)
        yield port, out
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, pki: dict[str, tuple[Path, Path]],
            dest: tuple[int, Path]) -> Iterator[dict[str, Any]]:
    """An archive that refuses unknown callers, with a plain and a DICOM TLS listener; the only
    configured peer is the C-MOVE destination (a callee, never a caller)."""
    data = tmp_path_factory.mktemp("peers") / "data"
    tls_port = free_port()
    key, crt = pki["server"]
    dimse = DimseConfig(port=0, accept_unknown_callers=False, tls_port=tls_port, tls_cert=crt, tls_key=key,
                        tls_ca=pki["ca"][1])
    peers = (PeerConfig(DEST_AE, HOST, dest[0], allow=frozenset()),)
    with pynetdicom_options_kept(), Engine(data) as engine:
        srv = DimseServer(engine, Config(data_dir=data, dimse=dimse, peers=peers))
        _, port = srv.start()
        try:
            yield {"port": str(port), "tls_port": str(tls_port), "data": data, "engine": engine}
        finally:
            assert srv.stop(10)


def quick(port: str) -> list[str]:
    return ["-aec", ARCHIVE_AE, "-to", "5", "-ta", "5", "-td", "5", HOST, port]


def find_args(ae: str, port: str) -> list[str]:
    return ["findscu", "-S", "-aet", ae, "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID",
            *quick(port)]


def wait_for(caplog: pytest.LogCaptureFixture, text: str) -> None:
    deadline = time.monotonic() + 5
    while text not in caplog.text and time.monotonic() < deadline:
        time.sleep(0.05)
    assert text in caplog.text, caplog.text


def test_an_unknown_caller_is_refused_with_the_command_that_admits_it_which_works_without_restart(
        archive: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    port = archive["port"]
    with caplog.at_level(logging.WARNING, logger="dicomvault.dimse"):
        refused = run(["echoscu", "-aet", "MODALITY", *quick(port)], check=False, timeout=30)
        wait_for(caplog, "calling AE title 'MODALITY' is not a known peer")
    assert refused.returncode != 0
    assert ("admit it with `dicomvault peers add MODALITY 127.0.0.1 "
            "--allow store,query,retrieve,commit,worklist,mpps`") in caplog.text
    # as the log line says (store only), on the running server
    peers_cli(archive["data"], "add", "MODALITY", "127.0.0.1", "--allow", "store")
    run(["echoscu", "-aet", "MODALITY", *quick(port)])
    run(["storescu", "-aet", "MODALITY", *quick(port), str(CT)])
    assert archive["engine"].instance(str(pydicom.dcmread(CT).SOPInstanceUID)) is not None
    with caplog.at_level(logging.WARNING, logger="dicomvault.dimse"):
        query = run(find_args("MODALITY", port), check=False, timeout=30)
        wait_for(caplog, "refused: query not allowed for this peer")
    assert query.returncode != 0 or "No Acceptable Presentation Contexts" in query.stderr + query.stdout
    peers_cli(archive["data"], "remove", "MODALITY")
    assert run(["echoscu", "-aet", "MODALITY", *quick(port)], check=False, timeout=30).returncode != 0
    # each change is a configuration change in the audit trail, by the CLI's user
    changes = [(r["detail"]["change"], r["detail"].get("ae_title")) for r in
               search(archive["data"], event="security-alert") if r["user"].startswith("cli:")]
    assert ("peer-added", "MODALITY") in changes and ("peer-removed", "MODALITY") in changes


def test_a_known_title_calling_from_another_address_is_refused(
        archive: dict[str, Any], caplog: pytest.LogCaptureFixture) -> None:
    port = archive["port"]
    peers_cli(archive["data"], "add", "FARAWAY", "10.9.9.9")
    with caplog.at_level(logging.WARNING, logger="dicomvault.dimse"):
        refused = run(["echoscu", "-aet", "FARAWAY", *quick(port)], check=False, timeout=30)
        wait_for(caplog, "peer 'FARAWAY' may call from 10.9.9.9, not from 127.0.0.1")
    assert refused.returncode != 0
    peers_cli(archive["data"], "add", "FARAWAY", "10.9.9.9", "--from", "10.9.9.0/24,127.0.0.0/8", "--replace")
    run(["echoscu", "-aet", "FARAWAY", *quick(port)])


def test_a_query_only_peer_cannot_store_and_can_query(archive: dict[str, Any]) -> None:
    port = archive["port"]
    peers_cli(archive["data"], "add", "READER", "127.0.0.1", "--allow", "query")
    mr = Path(get_testdata_file("MR_small.dcm"))
    stored = run(["storescu", "-aet", "READER", *quick(port), str(mr)], check=False, timeout=30)
    assert stored.returncode != 0
    assert archive["engine"].instance(str(pydicom.dcmread(mr).SOPInstanceUID)) is None
    # something to find whether or not an earlier test of this module stored anything
    archive["engine"].store_buffers([Path(get_testdata_file("CT_small.dcm")).read_bytes()])
    found = run(find_args("READER", port), timeout=30)
    assert "StudyInstanceUID" in found.stderr + found.stdout


def _scu(title: str) -> AE:
    ae = AE(ae_title=title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    return ae


def test_retrieve_only_peer_gets_by_c_get_and_moves_only_where_allowed(
        archive: dict[str, Any], dest: tuple[int, Path]) -> None:
    engine, port = archive["engine"], int(archive["port"])
    ct = pydicom.dcmread(CT, stop_before_pixels=True)
    if engine.instance(str(ct.SOPInstanceUID)) is None:
        peers_cli(archive["data"], "add", "LOADER", "127.0.0.1", "--allow", "store")
        run(["storescu", "-aet", "LOADER", *quick(archive["port"]), str(CT)])
    peers_cli(archive["data"], "add", "WS", "127.0.0.1", "--allow", "retrieve")
    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = ct.StudyInstanceUID

    # C-GET: the storage context on which WS only receives (SCP role) stays; the one it proposes
    # to send on (default roles) is refused
    ae = _scu("WS")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    got: list[str] = []

    def on_store(event: Any) -> int:
        got.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    assoc = ae.associate(HOST, port, ae_title=ARCHIVE_AE, ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        statuses = [s.Status for s, _ in assoc.send_c_get(ident, StudyRootQueryRetrieveInformationModelGet)
                    if s is not None and "Status" in s]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000 and str(ct.SOPInstanceUID) in got
    ae = _scu("WS")
    contexts = [build_context(Verification), build_context(CTImageStorage, ExplicitVRLittleEndian)]
    assoc = ae.associate(HOST, port, contexts=contexts, ae_title=ARCHIVE_AE)
    assert assoc.is_established
    try:
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [Verification]
    finally:
        assoc.release()

    def move() -> int:
        ae = _scu("WS")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        a = ae.associate(HOST, port, ae_title=ARCHIVE_AE)
        assert a.is_established
        try:
            rsps = a.send_c_move(ident, DEST_AE, StudyRootQueryRetrieveInformationModelMove)
            return [s.Status for s, _ in rsps if s is not None and "Status" in s][-1]
        finally:
            a.release()

    assert move() == 0xA801  # DESTSCP is a known peer, but not one WS may send to
    before = len(list(dest[1].iterdir()))
    peers_cli(archive["data"], "add", "WS", "127.0.0.1", "--allow", "retrieve", "--move-to", DEST_AE,
              "--replace")
    assert move() == 0x0000
    assert len(list(dest[1].iterdir())) == before + 1


def test_a_peer_bound_to_its_certificate(archive: dict[str, Any], pki: dict[str, tuple[Path, Path]],
                                         caplog: pytest.LogCaptureFixture) -> None:
    tls_port = archive["tls_port"]
    peers_cli(archive["data"], "add", "CERTAE", "127.0.0.1", "--cert", fingerprint(pki["client"][1]))
    run(["echoscu", *dcmtk_tls_args(pki, "client"), "-aet", "CERTAE", *quick(tls_port)])
    with caplog.at_level(logging.WARNING, logger="dicomvault.dimse"):
        other = run(["echoscu", *dcmtk_tls_args(pki, "peer"), "-aet", "CERTAE", *quick(tls_port)],
                    check=False, timeout=30)
        wait_for(caplog, f"peer 'CERTAE' must present its certificate over DICOM TLS; it presented "
                         f"certificate sha256 {fingerprint(pki['peer'][1])}")
        plain = run(["echoscu", "-aet", "CERTAE", *quick(archive["port"])], check=False, timeout=30)
        wait_for(caplog, "it presented no certificate (plain DICOM)")
    assert other.returncode != 0, "another certificate of the same CA was accepted for CERTAE"
    assert plain.returncode != 0


def test_receiver_processes_decide_at_the_edge(tmp_path: Path) -> None:
    """workers = 2: associations a receiver serves itself and those it relays to the writer's
    SCP (which sees only loopback) are both decided with the caller's real address."""
    arch = start_archive(tmp_path, free_port(), free_port(), accept_unknown_callers=False, workers=2)
    try:
        port = str(arch.port)
        assert run(["echoscu", "-aet", "NOBODY", *quick(port)], check=False, timeout=30).returncode != 0
        assert run(find_args("NOBODY", port), check=False, timeout=30).returncode != 0
        peers_cli(arch.data, "add", "FARAWAY", "10.9.9.9")
        assert run(find_args("FARAWAY", port), check=False, timeout=30).returncode != 0
        peers_cli(arch.data, "add", "NEAR", "127.0.0.1")
        run(find_args("NEAR", port))
        run(["storescu", "-aet", "NEAR", *quick(port), str(CT)])
    finally:
        assert stop_archive(arch) == 0
    log = arch.log_text()
    assert "association rejected: NOBODY@127.0.0.1: calling AE title 'NOBODY' is not a known peer" in log
    assert "peer 'FARAWAY' may call from 10.9.9.9, not from 127.0.0.1" in log


# -- the decision itself ---------------------------------------------------------------------------


def test_admission_rules(tmp_path: Path) -> None:
    peers = Peers([PeerConfig("CT1", "10.0.0.5", 104), PeerConfig("LAPTOP", "x", 0, from_hosts=("*",)),
                   PeerConfig("LOCAL", "localhost", 0, allow=frozenset({"query"}))], tmp_path)
    assert peers.admit("CT1", "10.0.0.5", None, False).allow == frozenset(SERVICES)
    assert peers.admit("CT1", "::ffff:10.0.0.5", None, False).refused is None  # IPv4-mapped
    assert peers.admit("CT1", "10.0.0.6", None, False).refused is not None
    assert peers.admit("CT1", "10.0.0.6", None, True).refused is None  # checked at the edge
    assert peers.admit("LAPTOP", "192.168.7.7", None, False).refused is None
    assert peers.admit("LOCAL", "127.0.0.1", None, False).allow == frozenset({"query"})
    assert peers.admit("OTHER", "10.0.0.5", None, False).refused is not None
    # accept_unknown_callers: strangers get in, a declared title stays bound to its address
    open_door = Peers([PeerConfig("CT1", "10.0.0.5", 104)], accept_unknown=True)
    assert open_door.admit("OTHER", "1.2.3.4", None, False).refused is None
    assert open_door.admit("CT1", "1.2.3.4", None, False).refused is not None
    assert open_door.may_move_to("OTHER", "CT1") and not peers.may_move_to("CT1", "LOCAL")
    assert peers.may_move_to("CT1", "CT1")


def test_contexts_are_classified_by_service() -> None:
    assert service_of(Verification) == "echo"
    assert service_of(StudyRootQueryRetrieveInformationModelFind) == "query"
    assert service_of(StudyRootQueryRetrieveInformationModelMove) == "retrieve"
    assert service_of(CTImageStorage) == "store"
    assert service_of("1.2.3.4.5.6.7") == "store"  # private classes are storage (unrestricted)
    only_retrieve = frozenset({"retrieve"})
    assert not context_allowed(CTImageStorage, True, only_retrieve)  # it would store to us
    assert context_allowed(CTImageStorage, False, only_retrieve)  # C-GET sub-operations to it
    assert context_allowed(Verification, True, frozenset())
