"""DICOM TLS against dcmtk: echoscu/storescu into our TLS listener (mutual authentication by a site
CA), refusal of plain and untrusted callers without harm to the service, and C-MOVE into a dcmtk
storescp that only speaks TLS. Certificates are made by openssl for each test session."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from io import BytesIO
from pathlib import Path
from typing import Any

import pydicom
import pytest
from dimse_helpers import dataset_bytes, free_port, run, wait_port
from pydicom.data import get_testdata_file
from pynetdicom import _config

from dicomvault.config import Config, ConfigError, DimseConfig, PeerConfig, load_config
from dicomvault.dimse import DimseServer
from dicomvault.engine import Engine

pytestmark = pytest.mark.interop
HOST = "127.0.0.1"


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def _issue(folder: Path, name: str, ca: tuple[Path, Path] | None) -> tuple[Path, Path]:
    """(key, certificate) for `name`, signed by `ca` (key, cert), or self-signed if None."""
    key, crt = folder / f"{name}.key", folder / f"{name}.crt"
    if ca is None:
        _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(crt),
                 "-days", "2", "-subj", f"/CN={name}")
        return key, crt
    csr, ext = folder / f"{name}.csr", folder / f"{name}.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(csr),
             "-subj", f"/CN={name}")
    _openssl("x509", "-req", "-in", str(csr), "-CA", str(ca[1]), "-CAkey", str(ca[0]), "-CAcreateserial",
             "-out", str(crt), "-days", "2", "-extfile", str(ext))
    return key, crt


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificates (Debian package openssl)")
    d = tmp_path_factory.mktemp("pki")
    ca = _issue(d, "ca", None)
    return {"ca": ca, "server": _issue(d, "server", ca), "client": _issue(d, "client", ca),
            "peer": _issue(d, "peer", ca), "rogue": _issue(d, "rogue", None)}


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory,
            pki: dict[str, tuple[Path, Path]]) -> Iterator[dict[str, Any]]:
    saved = {k: getattr(_config, k) for k in ("UNRESTRICTED_STORAGE_SERVICE", "LOG_HANDLER_LEVEL",
                                               "LOG_REQUEST_IDENTIFIERS", "LOG_RESPONSE_IDENTIFIERS")}
    data = tmp_path_factory.mktemp("tls") / "data"
    tls_port, peer_port = free_port(), free_port()
    key, crt = pki["server"]
    dimse = DimseConfig(port=0, tls_port=tls_port, tls_cert=crt, tls_key=key, tls_ca=pki["ca"][1])
    peers = (PeerConfig("TLSSCP", HOST, peer_port, tls=True),)
    with Engine(data) as engine:
        srv = DimseServer(engine, Config(data_dir=data, dimse=dimse, peers=peers))
        _, port = srv.start()
        try:
            yield {"port": port, "tls_port": tls_port, "peer_port": peer_port, "engine": engine}
        finally:
            assert srv.stop(10)
            for k, v in saved.items():
                setattr(_config, k, v)


def _tls_args(pki: dict[str, tuple[Path, Path]], who: str = "client") -> list[str]:
    key, crt = pki[who]
    return ["+tls", str(key), str(crt), "-pw", "+cf", str(pki["ca"][1])]


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
    for body, error in (('tls_port = 2762\n', "needs tls_cert and tls_key"),
                        (f'tls_cert = "{crt}"\n', "go together"),
                        ('tls_port = 2762\ntls_cert = "no.crt"\ntls_key = "no.key"\n', "no such file"),
                        (f'tls_port = 2762\nworkers = 2\n{files}', "workers")):
        bad = tmp_path / "bad.toml"
        bad.write_text(f"[dimse]\n{body}")
        with pytest.raises(ConfigError, match=error):
            load_config(bad)
