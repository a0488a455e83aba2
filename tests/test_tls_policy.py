"""The TLS policy of every listener and client (tls_policy.py, BCP 195) and certificate reload
without a restart, against real handshakes on loopback."""

from __future__ import annotations

import logging
import shutil
import socket
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomvault import tls_policy
from dicomvault.bench.pki import issue, make_pki


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, Path]]:
    folder = tmp_path_factory.mktemp("pki")
    made = make_pki(folder)
    made["renewed"] = issue(folder, "renewed", made["ca"])
    return made


class Listener:
    """A TLS server on loopback answering each handshake, in a thread."""

    def __init__(self, ctx: ssl.SSLContext, reload: tls_policy.CertificateReloader | None = None) -> None:
        self.ctx, self.reload = ctx, reload
        if reload is not None:
            reload.install(ctx)  # as HTTPS does: each handshake takes the reloader's context
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.errors: list[str] = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            try:
                with self.ctx.wrap_socket(conn, server_side=True) as tls:
                    tls.sendall(b"ok")
            except (ssl.SSLError, OSError) as exc:
                self.errors.append(str(exc))

    def connect(self, client: ssl.SSLContext) -> tuple[str, str]:
        """(protocol, our peer's common name) of one handshake."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as raw:
            with client.wrap_socket(raw, server_hostname="localhost") as tls:
                assert tls.recv(2) == b"ok"
                subject = dict(x[0] for x in tls.getpeercert()["subject"])
                return str(tls.version()), subject["commonName"]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def served(pki: dict[str, tuple[Path, Path]], tmp_path: Path) -> Iterator[tuple[Listener, Path, Path]]:
    key, crt = tmp_path / "live.key", tmp_path / "live.crt"
    shutil.copy(pki["server"][0], key)
    shutil.copy(pki["server"][1], crt)
    ctx = tls_policy.server_context(crt, key)
    reloader = tls_policy.CertificateReloader(lambda: tls_policy.server_context(crt, key), crt, key,
                                              interval=0)
    listener = Listener(ctx, reloader)
    yield listener, key, crt
    listener.close()


def test_tls_1_3_is_preferred_and_1_2_needs_forward_secrecy_and_aead(
        served: tuple[Listener, Path, Path], pki: dict[str, tuple[Path, Path]]) -> None:
    listener, _, _ = served
    client = tls_policy.client_context(pki["ca"][1])
    assert listener.connect(client) == ("TLSv1.3", "server")
    old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    old.load_verify_locations(str(pki["ca"][1]))
    old.maximum_version = ssl.TLSVersion.TLSv1_2
    old.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    assert listener.connect(old)[0] == "TLSv1.2"
    for weak in ("AES128-GCM-SHA256", "ECDHE-RSA-AES128-SHA256"):  # no forward secrecy / no AEAD
        old.set_ciphers(weak)
        with pytest.raises(ssl.SSLError):
            listener.connect(old)
    ancient = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ancient.load_verify_locations(str(pki["ca"][1]))
    ancient.set_ciphers("ALL:@SECLEVEL=0")
    ancient.minimum_version = ancient.maximum_version = ssl.TLSVersion.TLSv1_1
    with pytest.raises(ssl.SSLError):
        listener.connect(ancient)
    ctx = tls_policy.client_context(pki["ca"][1])
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_2 and ctx.options & ssl.OP_NO_COMPRESSION


def test_a_renewed_certificate_is_served_without_a_restart(
        served: tuple[Listener, Path, Path], pki: dict[str, tuple[Path, Path]],
        caplog: pytest.LogCaptureFixture) -> None:
    listener, key, crt = served
    client = tls_policy.client_context(pki["ca"][1])
    assert listener.connect(client)[1] == "server"
    # A half-copied pair (certificate renewed, key not yet): logged, the old pair still served.
    shutil.copy(pki["renewed"][1], crt)
    with caplog.at_level(logging.ERROR, logger="dicomvault.tls"):
        assert listener.connect(client)[1] == "server"
    assert "does not load" in caplog.text
    shutil.copy(pki["renewed"][0], key)
    assert listener.connect(client)[1] == "renewed"
    assert listener.reload is not None and listener.reload.reloads == 1


def test_clients_are_told_why_a_peer_is_refused(pki: dict[str, tuple[Path, Path]]) -> None:
    for who, why in (("expired", "certificate has expired"), ("rogue", "self-signed certificate")):
        listener = Listener(tls_policy.server_context(pki[who][1], pki[who][0]))
        try:
            with pytest.raises(ssl.SSLCertVerificationError, match=why):
                listener.connect(tls_policy.client_context(pki["ca"][1]))
        finally:
            listener.close()
    listener = Listener(tls_policy.server_context(pki["server"][1], pki["server"][0]))
    try:
        wrong_host = tls_policy.client_context(pki["ca"][1])
        with socket.create_connection(("127.0.0.1", listener.port), timeout=5) as raw:
            with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
                wrong_host.wrap_socket(raw, server_hostname="pacs.example.org")
    finally:
        listener.close()


def test_https_serves_a_renewed_certificate_without_a_restart(
        pki: dict[str, tuple[Path, Path]], tmp_path: Path) -> None:
    from dicomvault.web.server import HttpServer

    async def app(scope, receive, send):  # type: ignore[no-untyped-def]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    key, crt = tmp_path / "https.key", tmp_path / "https.crt"
    shutil.copy(pki["server"][0], key)
    shutil.copy(pki["server"][1], crt)
    srv = HttpServer(app, "127.0.0.1", 0, certfile=str(crt), keyfile=str(key))
    srv.start()
    try:
        assert srv.reloader is not None
        srv.reloader.interval = 0
        client = tls_policy.client_context(pki["ca"][1])

        def served_cn() -> str:
            with socket.create_connection(("127.0.0.1", srv.port), timeout=5) as raw:
                with client.wrap_socket(raw, server_hostname="localhost") as tls:
                    return dict(x[0] for x in tls.getpeercert()["subject"])["commonName"]

        assert served_cn() == "server"
        shutil.copy(pki["renewed"][0], key)
        shutil.copy(pki["renewed"][1], crt)
        assert served_cn() == "renewed"
    finally:
        srv.stop()
