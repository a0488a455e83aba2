"""Audit repositories for the tests: a syslog receiver over TLS (RFC 5425 octet counting, optional
client certificate required) and one over UDP (RFC 5426), each on a loopback port it keeps across
stop and restart, and a parser of the RFC 5424 messages they collect. Written here from the RFCs
with the standard library only, so the sender is checked against an independent reading."""

from __future__ import annotations

import re
import socket
import ssl
import threading
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

HOST = "127.0.0.1"

_HEADER = re.compile(
    rb"<(?P<pri>\d{1,3})>(?P<version>[1-9]\d{0,2}) (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<procid>\S+) "
    rb"(?P<msgid>\S+) (?P<sd>-|\[.*?\]) (?P<msg>.*)", re.DOTALL)


@dataclass
class Syslog:
    pri: int
    version: int
    timestamp: str
    hostname: str
    app: str
    procid: str
    msgid: str
    sd: str
    msg: bytes  # with its BOM

    @property
    def facility(self) -> int:
        return self.pri // 8

    @property
    def severity(self) -> int:
        return self.pri % 8

    def xml(self) -> ET.Element:
        assert self.msg.startswith(b"\xef\xbb\xbf"), "MSG must start with a BOM (RFC 5424 6.4)"
        return ET.fromstring(self.msg[3:])


def parse(raw: bytes) -> Syslog:
    m = _HEADER.fullmatch(raw)
    assert m is not None, f"not an RFC 5424 message: {raw[:120]!r}"
    g = {k: v.decode("ascii") for k, v in m.groupdict().items() if k != "msg"}
    return Syslog(int(g["pri"]), int(g["version"]), g["ts"], g["host"], g["app"], g["procid"], g["msgid"],
                  g["sd"], m["msg"])


def seq_of(msg: Syslog) -> int:
    """The audit log's seq is not in the DICOM message; the tests put it in the user name."""
    for ap in msg.xml().iter("ActiveParticipant"):
        if ap.get("UserIsRequestor") == "true":
            return int(str(ap.get("UserID")).rsplit("#", 1)[1])
    raise AssertionError("no requestor")


class Receiver:
    """Collects messages; `stop()` closes the port and every connection, `start()` opens it again."""

    def __init__(self) -> None:
        self.messages: list[bytes] = []
        self.lock = threading.Lock()
        self.port = 0
        self._threads: list[threading.Thread] = []
        self._socks: list[socket.socket] = []
        self._stopping = threading.Event()

    def received(self) -> list[bytes]:
        with self.lock:
            return list(self.messages)

    def wait_for(self, n: int, timeout: float = 10.0) -> list[bytes]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = self.received()
            if len(got) >= n:
                return got
            time.sleep(0.02)
        raise AssertionError(f"{len(self.received())} message(s) after {timeout} s, wanted {n}")

    def _keep(self, sock: socket.socket) -> None:
        with self.lock:
            self._socks.append(sock)

    def stop(self) -> None:
        self._stopping.set()
        with self.lock:
            socks, self._socks = self._socks, []
        for s in socks:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()
        for t in self._threads:
            t.join(5)
        self._threads = []
        self._stopping.clear()

    def _spawn(self, target: object, *args: object) -> None:
        t = threading.Thread(target=target, args=args, daemon=True)  # type: ignore[arg-type]
        t.start()
        self._threads.append(t)


class TlsReceiver(Receiver):
    """RFC 5425: TLS, octet-counted frames "LEN SP MSG". With `client_ca`, a client certificate
    signed by it is required; the subjects seen are kept in `peers`."""

    def __init__(self, cert: Path, key: Path, client_ca: Path | None = None) -> None:
        super().__init__()
        self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.ctx.load_cert_chain(str(cert), str(key))
        if client_ca is not None:
            self.ctx.load_verify_locations(str(client_ca))
            self.ctx.verify_mode = ssl.CERT_REQUIRED
        self.peers: list[str] = []
        self.framing_errors: list[str] = []

    def start(self) -> TlsReceiver:
        listener = socket.create_server((HOST, self.port))  # SO_REUSEADDR: the same port again
        self.port = listener.getsockname()[1]
        self._keep(listener)
        self._spawn(self._accept, listener)
        return self

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            self._keep(conn)
            self._spawn(self._serve, conn)

    def _serve(self, conn: socket.socket) -> None:
        try:
            tls = self.ctx.wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError):
            return
        self._keep(tls)
        cert = tls.getpeercert()
        if cert:
            self.peers.append(dict(x[0] for x in cert["subject"])["commonName"])
        buf = b""
        while True:
            try:
                data = tls.recv(65536)
            except OSError:
                return
            if not data:
                return
            buf += data
            while True:
                sp = buf.find(b" ")
                if sp < 0:
                    break
                head = buf[:sp]
                if not head.isdigit() or head.startswith(b"0"):
                    self.framing_errors.append(f"bad MSG-LEN {head[:20]!r}")
                    return
                n = int(head)
                if len(buf) < sp + 1 + n:
                    break
                with self.lock:
                    self.messages.append(buf[sp + 1:sp + 1 + n])
                buf = buf[sp + 1 + n:]


class UdpReceiver(Receiver):
    """RFC 5426: one message per datagram."""

    def start(self) -> UdpReceiver:
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        sock.settimeout(0.05)  # closing a socket does not wake a thread blocked in recv
        self.port = sock.getsockname()[1]
        self._keep(sock)
        self._spawn(self._serve, sock)
        return self

    def _serve(self, sock: socket.socket) -> None:
        while not self._stopping.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            except OSError:
                return
            with self.lock:
                self.messages.append(data)
