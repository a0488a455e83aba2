"""DICOM TLS against dcmtk: echoscu/storescu into our TLS listener (mutual authentication by a site
CA), refusal of plain and untrusted callers without harm to the service, and C-MOVE into a dcmtk
storescp that only speaks TLS. Certificates are made by openssl for each test session."""

from __future__ import annotations

import logging
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dimse_helpers import (
    CLI,
    Archive,
    dataset_bytes,
    free_port,
    pynetdicom_options_kept,
    run,
    stop_archive,
    wait_port,
)
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, StoragePresentationContexts, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomvault.bench.pki import dcmtk_tls_args, make_pki
from dicomvault.config import Config, ConfigError, DimseConfig, PeerConfig, load_config
from dicomvault.dimse import DimseServer
from dicomvault.engine import Engine

pytestmark = pytest.mark.interop
HOST = "127.0.0.1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory,
            pki: dict[str, tuple[Path, Path]]) -> Iterator[dict[str, Any]]:
    data = tmp_path_factory.mktemp("tls") / "data"
    tls_port, peer_port = free_port(), free_port()
    key, crt = pki["server"]
    dimse = DimseConfig(port=0, accept_unknown_callers=True,
                        tls_port=tls_port, tls_cert=crt, tls_key=key, tls_ca=pki["ca"][1])
    peers = (PeerConfig("TLSSCP", HOST, peer_port, tls=True),)
    with pynetdicom_options_kept(), Engine(data) as engine:
        srv = DimseServer(engine, Config(data_dir=data, dimse=dimse, peers=peers))
        _, port = srv.start()
        try:
            yield {"port": port, "tls_port": tls_port, "peer_port": peer_port, "engine": engine}
        finally:
            assert srv.stop(10)


def _tls_args(pki: dict[str, tuple[Path, Path]], who: str = "client") -> list[str]:
    return dcmtk_tls_args(pki, who)


def test_echo_and_store_over_tls(archive: dict[str, Any], pki: dict[str, tuple[Path, Path]]) -> None:
    port = str(archive["tls_port"])
    run(["echoscu", *_tls_args(pki), "-aec", "DICOMVAULT", HOST, port])
    path = Path(get_testdata_file("CT_small.dcm"))
    run(["storescu", *_tls_args(pki), "-aec", "DICOMVAULT", HOST, port, str(path)])
    sent = pydicom.dcmread(path)
    got = pydicom.dcmread(BytesIO(archive["engine"].read_file(str(sent.SOPInstanceUID))))
    # storescu re-encodes what it sends (trailing padding of this file dropped): same content
    assert (got.PixelData, got.PatientName, got.file_meta.TransferSyntaxUID) == \
        (sent.PixelData, sent.PatientName, sent.file_meta.TransferSyntaxUID)


def test_plain_and_untrusted_callers_are_refused_and_service_goes_on(
        archive: dict[str, Any], pki: dict[str, tuple[Path, Path]]) -> None:
    port = str(archive["tls_port"])
    quick = ["-aec", "DICOMVAULT", "-to", "5", "-ta", "5", HOST, port]
    plain = run(["echoscu", *quick], check=False, timeout=30)
    assert plain.returncode != 0
    rogue = run(["echoscu", *_tls_args(pki, "rogue"), *quick], check=False, timeout=30)
    assert rogue.returncode != 0, "a certificate the site CA did not sign was accepted"
    run(["echoscu", *_tls_args(pki), "-aec", "DICOMVAULT", HOST, port])
    run(["echoscu", "-aec", "DICOMVAULT", HOST, str(archive["port"])])  # the plain listener too


def test_expired_and_missing_client_certificates_are_refused_with_the_reason(
        archive: dict[str, Any], pki: dict[str, tuple[Path, Path]], caplog: pytest.LogCaptureFixture) -> None:
    port = str(archive["tls_port"])
    # Timeouts for a loaded CI machine: a client that gives up before its handshake also exits
    # non-zero, but the server then has nothing to refuse (failed once in CI with 5 s).
    quick = ["-aec", "DICOMVAULT", "-to", "20", "-ta", "20", HOST, port]

    def refused(reason: str) -> bool:
        deadline = time.monotonic() + 20
        while reason not in caplog.text and time.monotonic() < deadline:
            time.sleep(0.05)
        return reason in caplog.text

    with caplog.at_level(logging.WARNING, logger="dicomvault.dimse"):
        expired = run(["echoscu", *_tls_args(pki, "expired"), *quick], check=False, timeout=60)
        assert expired.returncode != 0
        assert refused("certificate refused: certificate has expired"), \
            (caplog.text, expired.stdout, expired.stderr)
        # +tla: TLS without a certificate of our own
        anonymous = run(["echoscu", "+tla", "+cf", str(pki["ca"][1]), *quick], check=False, timeout=60)
        assert anonymous.returncode != 0
        assert refused("peer did not return a certificate"), (caplog.text, anonymous.stdout, anonymous.stderr)
    run(["echoscu", *_tls_args(pki), "-aec", "DICOMVAULT", HOST, port])


def test_c_move_to_a_tls_peer(archive: dict[str, Any], pki: dict[str, tuple[Path, Path]],
                              tmp_path: Path) -> None:
    path = Path(get_testdata_file("MR_small.dcm"))
    run(["storescu", "-aec", "DICOMVAULT", HOST, str(archive["port"]), str(path)])
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out = tmp_path / "received"
    out.mkdir()
    key, crt = pki["peer"]
    scp = subprocess.Popen(["storescp", "+tls", str(key), str(crt), "-pw", "+cf", str(pki["ca"][1]),
                            "-aet", "TLSSCP", "-od", str(out), str(archive["peer_port"])],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(archive["peer_port"], scp, None)
        run(["movescu", "-S", "-aec", "DICOMVAULT", "-aem", "TLSSCP", "-k", "QueryRetrieveLevel=STUDY",
             "-k", f"StudyInstanceUID={ds.StudyInstanceUID}", HOST, str(archive["port"])])
    finally:
        scp.terminate()
        scp.wait(10)
    [got] = list(out.iterdir())
    # what left over TLS is exactly what we keep
    assert dataset_bytes(got) == archive["engine"].read_dataset(str(ds.SOPInstanceUID))


def test_tls_config_is_checked(tmp_path: Path, pki: dict[str, tuple[Path, Path]]) -> None:
    key, crt = pki["server"]
    ok = tmp_path / "ok.toml"
    ok.write_text(f'[dimse]\ntls_port = 2762\ntls_cert = "{crt}"\ntls_key = "{key}"\n'
                  f'[[peers]]\nae_title = "X"\nhost = "h"\nport = 1\ntls = true\n')
    cfg = load_config(ok)
    assert (cfg.dimse.tls_port, cfg.dimse.tls_cert, cfg.peers[0].tls) == (2762, crt, True)
    files = f'tls_cert = "{crt}"\ntls_key = "{key}"\n'
    # TLS and receiver processes go together (the receivers terminate TLS)
    both = tmp_path / "both.toml"
    both.write_text(f"[dimse]\ntls_port = 2762\nworkers = 2\n{files}")
    assert load_config(both).dimse.workers == 2
    for body, error in (('tls_port = 2762\n', "needs tls_cert and tls_key"),
                        (f'tls_cert = "{crt}"\n', "go together"),
                        ('tls_port = 2762\ntls_cert = "no.crt"\ntls_key = "no.key"\n', "no such file"),
                        (f'tls_port = 104\nport = 104\n{files}', "must differ")):
        bad = tmp_path / "bad.toml"
        bad.write_text(f"[dimse]\n{body}")
        with pytest.raises(ConfigError, match=error):
            load_config(bad)


# -- TLS with receiver processes ([dimse] workers = 2: the receivers terminate TLS) ----------------

@pytest.fixture(scope="module")
def workers_archive(tmp_path_factory: pytest.TempPathFactory,
                    pki: dict[str, tuple[Path, Path]]) -> Iterator[tuple[Archive, int]]:
    """`dicomvault serve` with workers = 2 and a TLS port: (archive, TLS port)."""
    tmp = tmp_path_factory.mktemp("tls-workers")
    key, crt = pki["server"]
    peer_port, tls_port = free_port(), free_port()
    cfg = tmp / "dicomvault.toml"
    cfg.write_text(f'''data = "{tmp / 'data'}"
[dimse]
ae_title = "DICOMVAULT"
accept_unknown_callers = true
workers = 2
tls_port = {tls_port}
tls_cert = "{crt}"
tls_key = "{key}"
tls_ca = "{pki['ca'][1]}"
[[peers]]
ae_title = "TLSSCP"
host = "{HOST}"
port = {peer_port}
tls = true
''')
    port = free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CLI, "serve", "--config", str(cfg), "--dimse-port", str(port),
                                 "--host", HOST, "--http-port", "0"], stdout=out, stderr=subprocess.STDOUT)
    arch = Archive(proc, port, tmp / "data", log, peer_port, 0)
    try:
        wait_port(port, proc, log)
        deadline = time.monotonic() + 60
        while "receivers" not in log.read_text() or "serving DIMSE" not in log.read_text():
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()[-3000:]
            time.sleep(0.05)
        yield arch, tls_port
    finally:
        rc = stop_archive(arch)
        assert rc == 0, f"dicomvault serve exited {rc} on SIGTERM\n{arch.log_text()[-4000:]}"


def _client_tls(pki: dict[str, tuple[Path, Path]]) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki["ca"][1]))
    ctx.check_hostname = False  # DICOM nodes are authenticated by chain (dimse/tls.py)
    ctx.load_cert_chain(str(pki["client"][1]), str(pki["client"][0]))
    return ctx


def test_tls_with_workers_store_find_get(workers_archive: tuple[Archive, int],
                                         pki: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """Four storescu over TLS at once (spread over the receivers), then C-FIND and C-GET over TLS:
    the objects come back with the pixels and names that were sent."""
    arch, tls_port = workers_archive
    port = str(tls_port)
    assert "DICOM TLS listening" in arch.log_text()
    files = [Path(get_testdata_file(n))
             for n in ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm", "SC_rgb.dcm")]
    procs = [subprocess.Popen(["storescu", *_tls_args(pki), "-aec", "DICOMVAULT", HOST, port, str(f)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for f in files]
    for p in procs:
        out, _ = p.communicate(timeout=60)
        assert p.returncode == 0, out.decode(errors="replace")
    ct = pydicom.dcmread(files[0])
    study = ["-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={ct.StudyInstanceUID}"]
    found = run(["findscu", *_tls_args(pki), "-v", "-S", "-aec", "DICOMVAULT", *study, "-k", "PatientName",
                 HOST, port])
    assert str(ct.PatientName) in found.stdout + found.stderr
    # dcmtk's getscu has no TLS: pynetdicom retrieves, with the client certificate
    got: list[Dataset] = []

    def on_store(event: Any) -> int:
        got.append(event.dataset)
        return 0x0000

    ae = AE(ae_title="TLSGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    for cx in StoragePresentationContexts[:120]:
        ae.add_requested_context(cx.abstract_syntax, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    roles = [build_role(cx.abstract_syntax, scp_role=True) for cx in StoragePresentationContexts[:120]]
    assoc = ae.associate(HOST, tls_port, ae_title="DICOMVAULT", ext_neg=roles,
                         tls_args=(_client_tls(pki), None),
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    try:
        q = Dataset()
        q.QueryRetrieveLevel = "STUDY"
        q.StudyInstanceUID = ct.StudyInstanceUID
        statuses = [s.Status for s, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet) if s]
    finally:
        assoc.release()
    assert statuses[-1] == 0x0000
    [back] = [d for d in got if d.SOPInstanceUID == ct.SOPInstanceUID]
    assert (back.PixelData, back.PatientName) == (ct.PixelData, ct.PatientName)


def test_tls_with_workers_refuses_clearly_and_goes_on(workers_archive: tuple[Archive, int],
                                                      pki: dict[str, tuple[Path, Path]]) -> None:
    arch, tls_port = workers_archive
    port = str(tls_port)
    quick = ["-aec", "DICOMVAULT", "-to", "5", "-ta", "5", HOST, port]
    assert run(["echoscu", *quick], check=False, timeout=30).returncode != 0
    assert run(["echoscu", *_tls_args(pki, "rogue"), *quick], check=False, timeout=30).returncode != 0
    deadline = time.monotonic() + 10
    while "certificate refused" not in arch.log_text():
        assert time.monotonic() < deadline, arch.log_text()[-3000:]
        time.sleep(0.1)
    log = arch.log_text()
    assert "DICOM TLS connection from 127.0.0.1:" in log, log[-3000:]
    assert "refused: certificate refused: self-signed certificate" in log, log[-3000:]
    assert "refused: not a TLS client hello (plain DICOM sent to the TLS port?)" in log, log[-3000:]
    run(["echoscu", *_tls_args(pki), "-aec", "DICOMVAULT", HOST, port])
    run(["echoscu", "-aec", "DICOMVAULT", HOST, str(arch.port)])


def test_tls_with_workers_c_move_to_a_tls_peer(workers_archive: tuple[Archive, int],
                                               pki: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    """C-MOVE asked over TLS (relayed by a receiver), its sub-association to a TLS-only storescp."""
    path = Path(get_testdata_file("MR_small.dcm"))
    arch, tls_port = workers_archive
    port = str(tls_port)
    run(["storescu", *_tls_args(pki), "-aec", "DICOMVAULT", HOST, port, str(path)])
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    out = tmp_path / "received"
    out.mkdir()
    key, crt = pki["peer"]
    scp = subprocess.Popen(["storescp", "+tls", str(key), str(crt), "-pw", "+cf", str(pki["ca"][1]),
                            "-aet", "TLSSCP", "-od", str(out), str(arch.storescp_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        wait_port(arch.storescp_port, scp, None)
        # dcmtk's movescu has no TLS: pynetdicom asks
        ae = AE(ae_title="TLSMOVE")
        ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
        assoc = ae.associate(HOST, tls_port, ae_title="DICOMVAULT", tls_args=(_client_tls(pki), None))
        assert assoc.is_established
        try:
            q = Dataset()
            q.QueryRetrieveLevel = "STUDY"
            q.StudyInstanceUID = ds.StudyInstanceUID
            move = assoc.send_c_move(q, "TLSSCP", StudyRootQueryRetrieveInformationModelMove)
            rsps = [s for s, _ in move if s]
        finally:
            assoc.release()
        assert rsps[-1].Status == 0x0000 and rsps[-1].NumberOfCompletedSuboperations == 1
    finally:
        scp.terminate()
        scp.wait(10)
    [got] = list(out.iterdir())
    assert pydicom.dcmread(got).SOPInstanceUID == ds.SOPInstanceUID


def test_a_renewed_certificate_is_served_without_a_restart(
        tmp_path: Path, pki: dict[str, tuple[Path, Path]]) -> None:
    import shutil

    from dicomvault.bench.pki import issue

    renewed = issue(tmp_path, "renewed", pki["ca"])
    key, crt = tmp_path / "live.key", tmp_path / "live.crt"
    shutil.copy(pki["server"][0], key)
    shutil.copy(pki["server"][1], crt)
    tls_port = free_port()
    dimse = DimseConfig(port=0, accept_unknown_callers=True,
                        tls_port=tls_port, tls_cert=crt, tls_key=key, tls_ca=pki["ca"][1])
    client = ssl.create_default_context(cafile=str(pki["ca"][1]))
    client.check_hostname = False
    client.load_cert_chain(str(pki["client"][1]), str(pki["client"][0]))

    def served_cn() -> str:
        with socket.create_connection((HOST, tls_port), timeout=5) as raw:
            with client.wrap_socket(raw) as tls:
                return dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]

    with pynetdicom_options_kept(), Engine(tmp_path / "data") as engine:
        srv = DimseServer(engine, Config(data_dir=tmp_path / "data", dimse=dimse))
        srv.start()
        try:
            assert served_cn() == "server"
            shutil.copy(renewed[0], key)
            shutil.copy(renewed[1], crt)
            deadline = time.monotonic() + 10  # looked at every 2 s
            while served_cn() != "renewed":
                assert time.monotonic() < deadline, "the renewed certificate was never served"
                time.sleep(0.2)
        finally:
            assert srv.stop(10)
