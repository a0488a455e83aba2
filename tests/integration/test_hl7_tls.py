"""HL7 over MLLP/TLS with Python ssl clients and openssl-made certificates: with `tls_ca` only a
client with a certificate the CA signed gets its order applied (no certificate, a self-signed
one, plain MLLP: closed without an ACK, audited as a TLS refusal, the listener unharmed); with
no CA any TLS client may send; `serve` reads [hl7] tls_* from its config file. Each applied
message is audited (Procedure Record)."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from dicomvault.bench.pki import Pki, make_pki
from dicomvault.config_values import ConfigError
from dicomvault.engine import Engine
from dicomvault.errors import DicomVaultError
from dicomvault.integration.hl7.mllp import MllpServer
from dicomvault.integration.hl7.service import start_hl7
from dicomvault.integration.hl7.settings import Hl7Config, parse_hl7
from dicomvault.integration.worklist_store import WorklistStore
from dicomvault.tls_policy import client_context
from seaweed_server import free_ports

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dimse"))
from dimse_helpers import CLI, wait_port  # noqa: E402

HOST = "127.0.0.1"
SB, EB = b"\x0b", b"\x1c\x0d"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("hl7-pki"))


def order(n: int) -> bytes:
    return ("\r".join([
        f"MSH|^~\\&|RIS|HOSP|PACS|HOSP|20260310||ORM^O01|TLS{n}|P|2.3.1",
        f"PID|||TLSP{n}^^^HOSP||Secure^Sam||19700101|M",
        f"ORC|NW|PO{n}|FO{n}",
        f"OBR|1|PO{n}|FO{n}|CTH^CT Head^L||||||||||||||ACCT{n}|RPT{n}|SPST{n}||||CT",
    ]) + "\r").encode()


def exchange(port: int, ctx: ssl.SSLContext | None, message: bytes) -> bytes | None:
    """Sends one framed message; the ACK, or None when the connection failed or closed first."""
    try:
        with socket.create_connection((HOST, port), timeout=10) as raw:
            sock: socket.socket = ctx.wrap_socket(raw, server_hostname=HOST) if ctx is not None else raw
            sock.sendall(SB + message + EB)
            buf = b""
            while EB not in buf:
                chunk = sock.recv(65536)
                if not chunk:
                    return None
                buf += chunk
            return buf[1:buf.index(EB)]
    except (ssl.SSLError, OSError):
        return None


def client(pki: Pki, who: str | None) -> ssl.SSLContext:
    """A client trusting the site CA, offering `who`'s certificate (none if None)."""
    if who is None:
        return client_context(pki["ca"][1])
    key, crt = pki[who]
    return client_context(pki["ca"][1], crt, key)


def audit(data: Path) -> list[dict[str, Any]]:
    path = data / "audit" / "audit.jsonl"
    return [json.loads(x) for x in path.read_text().splitlines()] if path.exists() else []


@pytest.fixture
def listener(tmp_path: Path, pki: Pki, request: pytest.FixtureRequest) -> Iterator[tuple[MllpServer, Engine]]:
    (port,) = free_ports(1)
    ca = pki["ca"][1] if getattr(request, "param", True) else None
    key, crt = pki["server"]
    with Engine(tmp_path / "data") as eng:
        server = start_hl7(eng.index, str(eng.data_dir), Hl7Config(port=port, idle_timeout=5, tls_cert=crt,
                                                                    tls_key=key, tls_ca=ca))
        assert server is not None
        try:
            yield server, eng
        finally:
            server.stop()


def test_mutual_tls_admits_only_a_client_the_ca_signed(listener: tuple[MllpServer, Engine], pki: Pki) -> None:
    server, eng = listener
    port = server.address[1]
    assert exchange(port, None, order(1)) is None  # plain MLLP on a TLS port
    assert exchange(port, client(pki, None), order(2)) is None  # TLS without a certificate
    assert exchange(port, client(pki, "rogue"), order(3)) is None  # self-signed
    assert exchange(port, client(pki, "expired"), order(4)) is None  # the CA's, expired
    ack = exchange(port, client(pki, "client"), order(5))
    assert ack is not None and b"MSA|AA|TLS5" in ack, ack
    store = WorklistStore(eng.index)
    assert [e.accession for e in store.entries()] == ["ACCT5"]  # only the admitted client's order
    lines = audit(eng.data_dir)
    refused = [r for r in lines if r["event"] == "tls-refused"]
    assert refused and all(r["client"] == HOST and "HL7 MLLP/TLS" in r["detail"]["reason"] for r in refused)
    applied = [r for r in lines if r["event"] == "procedure-record"]
    assert [(r["patient"], r["detail"]["control_id"], r["detail"]["action"]) for r in applied] == [
        ("TLSP5", "TLS5", "C")]
    assert applied[0]["user"] == "hl7:RIS@HOSP" and applied[0]["client"] == HOST


@pytest.mark.parametrize("listener", [False], indirect=True)
def test_tls_without_a_ca_takes_any_tls_client_but_not_plain(listener: tuple[MllpServer, Engine],
                                                           pki: Pki) -> None:
    server, eng = listener
    port = server.address[1]
    ack = exchange(port, client(pki, None), order(6))
    assert ack is not None and b"MSA|AA|TLS6" in ack
    assert exchange(port, None, order(7)) is None
    # the client checks the archive's certificate: one not trusting the site CA refuses it
    assert exchange(port, client_context(pki["rogue"][1]), order(8)) is None
    assert [e.accession for e in WorklistStore(eng.index).entries()] == ["ACCT6"]


def test_settings(tmp_path: Path, pki: Pki) -> None:
    key, crt = pki["server"]
    c = parse_hl7({"tls_cert": crt.name, "tls_key": key.name, "tls_ca": "ca.crt"}, "t", crt.parent)
    assert (c.tls_cert, c.tls_key, c.tls_ca) == (crt, key, crt.parent / "ca.crt")
    assert parse_hl7({}, "t").tls_cert is None  # plain MLLP stays the default
    for bad in ({"tls_key": str(key)}, {"tls_ca": str(crt)}, {"tls_cert": str(tmp_path / "none.crt")}):
        with pytest.raises(ConfigError):
            parse_hl7(bad, "t")
    # a key that does not match the certificate: refused at start, saying which files
    (port,) = free_ports(1)
    with Engine(tmp_path / "data") as eng, pytest.raises(DicomVaultError, match="tls_cert"):
        start_hl7(eng.index, str(eng.data_dir), Hl7Config(port=port, tls_cert=crt, tls_key=pki["client"][0]))


def test_serve_reads_hl7_tls_from_its_config(tmp_path: Path, pki: Pki) -> None:
    for name in ("server", "ca"):
        for f in pki[name]:
            shutil.copy(f, tmp_path / f.name)  # named relative to the config file below
    dimse_port, http_port, hl7_port = free_ports(3)
    cfg = tmp_path / "dicomvault.toml"
    cfg.write_text(f"""\
data = "{tmp_path / 'data'}"
[dimse]
port = {dimse_port}
[hl7]
port = {hl7_port}
tls_cert = "server.crt"
tls_key = "server.key"
tls_ca = "ca.crt"
""")
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CLI, "serve", "--config", str(cfg), "--host", HOST, "--http-port",
                                 str(http_port)], stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_port(hl7_port, proc, log)
        ack = exchange(hl7_port, client(pki, "client"), order(9))
        assert ack is not None and b"MSA|AA|TLS9" in ack, log.read_text()
        assert exchange(hl7_port, client(pki, None), order(10)) is None
        assert exchange(hl7_port, None, order(11)) is None
    finally:
        proc.terminate()
        rc = proc.wait(40)
    assert rc == 0, log.read_text()[-3000:]
    assert "HL7 MLLP/TLS listener" in log.read_text()
    with Engine(tmp_path / "data", read_only=True) as eng:
        assert [e.accession for e in WorklistStore(eng.index).entries()] == ["ACCT9"]


def test_applied_messages_as_atna_messages(listener: tuple[MllpServer, Engine], pki: Pki) -> None:
    """The records of an order and its cancel, as the audit repository receives them."""
    from dicomvault.audit.atna import AuditSource, audit_message

    server, eng = listener
    port = server.address[1]
    for msg in (order(20), order(20).replace(b"ORC|NW", b"ORC|CA").replace(b"|TLS20|", b"|TLS21|")):
        ack = exchange(port, client(pki, "client"), msg)
        assert ack is not None and b"MSA|AA" in ack, ack
    recs = [r for r in audit(eng.data_dir) if r["event"] == "procedure-record"]
    assert [r["detail"]["action"] for r in recs] == ["C", "D"]
    for rec, action in zip(recs, ("C", "D"), strict=True):
        root = audit_message(rec, AuditSource("DICOMVAULT"))
        ident = root.find("EventIdentification")
        assert ident is not None and ident.get("EventActionCode") == action
        event_id = ident.find("EventID")
        assert event_id is not None and event_id.get("csd-code") == "110111"
        patient = root.find("ParticipantObjectIdentification")
        assert patient is not None and patient.get("ParticipantObjectID") == "TLSP20"
    assert WorklistStore(eng.index).entries() == []  # canceled
