"""Syslog to an audit repository: RFC 5424 messages, carried over TLS (RFC 5425) or UDP (RFC 5426),
as IHE ATNA (ITI-20) asks.

A message is `<PRI>1 TIMESTAMP HOSTNAME dicomvault - IHE+RFC-3881 - BOM<AuditMessage/>`: facility 10
(authpriv), severity 5 (notice) for a success and 4 (warning) for a failure; the timestamp is
the event's, not the send's, since a message may go out long after a repository outage.

Over TLS each message is framed by octet counting ("LEN SP MSG", RFC 5425 4.3); the repository's
certificate is checked against the configured CA (host name included), ours is offered when
configured (mutual authentication). Over UDP each message is one datagram and may be lost by
nature: nothing acknowledges a datagram.
"""

from __future__ import annotations

import fcntl
import os
import select
import socket
import ssl
import struct
import termios
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import urlsplit

from ..tls_policy import client_context

FACILITY_AUTHPRIV = 10
SEVERITY_WARNING = 4
SEVERITY_NOTICE = 5
APP_NAME = "dicomvault"
MSGID = "IHE+RFC-3881"
BOM = b"\xef\xbb\xbf"
DEFAULT_PORTS = {"tls": 6514, "udp": 514}
# The largest UDP payload over IPv4; a bigger message cannot be sent as one datagram at all.
MAX_DATAGRAM = 65507


class TargetError(ValueError):
    """A syslog destination that is not tls://HOST[:PORT] or udp://HOST[:PORT]."""


@dataclass(frozen=True)
class Target:
    scheme: str  # "tls" or "udp"
    host: str
    port: int

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"


def parse_target(text: str) -> Target:
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as exc:
        raise TargetError(f"{text!r}: {exc}") from exc
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname or parts.path not in ("", "/") \
            or parts.query or parts.username:
        raise TargetError(f"{text!r} is not tls://HOST[:PORT] or udp://HOST[:PORT]")
    return Target(parts.scheme, parts.hostname, port if port is not None else DEFAULT_PORTS[parts.scheme])


def _timestamp(iso: object) -> str:
    """RFC 5424 TIMESTAMP of a record's ISO time, in UTC ("...Z"); "-" (nil) if it has none."""
    try:
        t = datetime.fromisoformat(str(iso))
    except ValueError:
        return "-"
    t = t.astimezone(UTC) if t.tzinfo is not None else t.replace(tzinfo=UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def _printable(text: str, limit: int) -> str:
    """A header field: printable US-ASCII without spaces (RFC 5424 PRINTUSASCII), at most `limit`."""
    clean = "".join(c for c in text if 33 <= ord(c) <= 126)[:limit]
    return clean or "-"


def message(rec: dict[str, Any], xml: bytes, hostname: str) -> bytes:
    """The RFC 5424 message of one audit record whose DICOM audit message is `xml`."""
    severity = SEVERITY_NOTICE if rec.get("outcome") == "success" else SEVERITY_WARNING
    pri = FACILITY_AUTHPRIV * 8 + severity
    header = f"<{pri}>1 {_timestamp(rec.get('time'))} {_printable(hostname, 255)} {APP_NAME} - {MSGID} -"
    return header.encode("ascii") + b" " + BOM + xml


def octet_counted(msg: bytes) -> bytes:
    """RFC 5425 4.3 framing: "MSG-LEN SP SYSLOG-MSG"."""
    return str(len(msg)).encode("ascii") + b" " + msg


class Transport(Protocol):
    def send(self, msg: bytes) -> None: ...

    def delivered(self) -> bool:
        """Whether all sent so far reached the repository (raises what says it did not)."""

    def open(self) -> bool:
        """Whether the repository still holds the connection."""

    def close(self) -> None: ...


def _unsent_bytes(sock: socket.socket) -> int:
    """Bytes in the socket's send queue the peer's TCP has not acknowledged (Linux SIOCOUTQ);
    0 where the kernel cannot say."""
    try:
        raw = fcntl.ioctl(sock.fileno(), termios.TIOCOUTQ, b"\0\0\0\0")
    except OSError:
        return 0
    return int(struct.unpack("i", raw)[0])


class TlsTransport:
    """One TLS connection to the repository. `delivered()` tells whether everything sent so far
    reached the peer over a connection that is still open: a syslog server never writes to
    us, so anything readable is its close (EOF, a reset) and whatever was in flight may be lost."""

    def __init__(self, target: Target, ctx: ssl.SSLContext, timeout: float) -> None:
        self.target = target
        self.timeout = timeout  # the blocking timeout of sends, put back after each poll
        raw = socket.create_connection((target.host, target.port), timeout=timeout)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=target.host)
        except BaseException:
            raw.close()
            raise

    def send(self, msg: bytes) -> None:
        self.sock.sendall(octet_counted(msg))

    def delivered(self) -> bool:
        if _unsent_bytes(self.sock) > 0:
            return False
        return self.open()

    def open(self) -> bool:
        """Whether the repository has neither closed nor reset the connection."""
        while True:
            readable, _, _ = select.select([self.sock], [], [], 0)
            if not readable and not self.sock.pending():
                return True
            self.sock.setblocking(False)
            try:
                data = self.sock.recv(4096)
            except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
                return True  # a TLS 1.3 session ticket or other handshake record: still open
            except OSError:
                return False
            finally:
                self.sock.settimeout(self.timeout)
            if not data:
                return False

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


class UdpTransport:
    """A connected UDP socket. All UDP can tell is an ICMP "port unreachable" drawn by a datagram,
    which the kernel keeps as the socket's error: `delivered()` reads it, so datagrams sent to a
    closed port are sent again once it is open (when the network lets ICMP through, as on a LAN
    or loopback; a host that is down or a filtering firewall tells nothing and those are lost)."""

    def __init__(self, target: Target, timeout: float) -> None:
        self.target = target
        info = socket.getaddrinfo(target.host, target.port, type=socket.SOCK_DGRAM)[0]
        self.sock = socket.socket(info[0], socket.SOCK_DGRAM)
        self.sock.settimeout(timeout)
        try:
            self.sock.connect(info[4])
        except BaseException:
            self.sock.close()
            raise

    def send(self, msg: bytes) -> None:
        self.sock.send(msg)

    def delivered(self) -> bool:
        err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err:
            raise ConnectionRefusedError(err, f"{os.strerror(err)} (ICMP from {self.target})")
        return True

    def open(self) -> bool:
        return True  # a datagram socket has no connection to lose

    def close(self) -> None:
        self.sock.close()


@dataclass(frozen=True)
class Endpoint:
    """Where and how to connect: the target and, for TLS, the CA file and our own certificate."""

    target: Target
    ca: Path | None = None
    cert: Path | None = None
    key: Path | None = None
    timeout: float = 10.0

    def tls_context(self) -> ssl.SSLContext:
        return client_context(self.ca, self.cert, self.key)

    def connect(self) -> Transport:
        if self.target.scheme == "udp":
            return UdpTransport(self.target, self.timeout)
        # Built per connection: a renewed certificate or CA file is used from the next reconnect.
        return TlsTransport(self.target, self.tls_context(), self.timeout)
