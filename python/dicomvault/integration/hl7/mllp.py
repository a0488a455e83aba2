"""The MLLP listener: frames (0x0B message 0x1C 0x0D) in, one reply frame out per message.

A thread per connection; a connection may carry many messages and a frame may arrive in pieces.
A frame over `max_message` bytes or a peer silent for `idle_timeout` closes the connection (a
sender that lost its framing cannot be resynchronised safely).

With `tls` (a function giving the current server context: tls_policy.CertificateReloader, so a
renewed certificate applies without a restart) every connection is TLS: the handshake runs in
the connection's thread, so a slow or silent client holds up no one else; one that fails it (no
certificate when one is required, an untrusted one, plain MLLP) is closed and reported to
`tls_refused(address, reason)`."""

from __future__ import annotations

import ipaddress
import logging
import socket
import ssl
import threading
from collections.abc import Callable

log = logging.getLogger("dicomvault.hl7")
START, END = b"\x0b", b"\x1c\x0d"
Handler = Callable[[bytes, str], bytes]
Network = ipaddress.IPv4Network | ipaddress.IPv6Network
TlsRefused = Callable[[str, str], None]
HANDSHAKE_TIMEOUT = 10.0


class FrameError(ValueError):
    pass


class FrameReader:
    """Splits a byte stream into MLLP frames, across partial reads."""

    def __init__(self, max_message: int) -> None:
        self.max_message = max_message
        self._buf = bytearray()

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out = []
        while True:
            start = self._buf.find(START)
            if start < 0:
                self._buf.clear()  # bytes between frames carry nothing
                return out
            end = self._buf.find(END, start + 1)
            if end < 0:
                if len(self._buf) - start > self.max_message:
                    raise FrameError(f"message over {self.max_message} bytes")
                del self._buf[:start]
                return out
            if end - start - 1 > self.max_message:
                raise FrameError(f"message over {self.max_message} bytes")
            out.append(bytes(self._buf[start + 1:end]))
            del self._buf[:end + 2]


def frame(payload: bytes) -> bytes:
    return START + payload + END


class MllpServer:
    def __init__(self, host: str, port: int, handler: Handler, *, max_message: int = 1 << 20,
                 idle_timeout: float = 60.0, max_connections: int = 32,
                 allow: tuple[Network, ...] = (), tls: Callable[[], ssl.SSLContext] | None = None,
                 tls_refused: TlsRefused | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.tls_refused = tls_refused
        self.allow = allow  # empty: any sender that reaches the address
        self.max_connections = max_connections
        self.max_message = max_message
        self.idle_timeout = idle_timeout
        self._sock = socket.create_server((host, port), reuse_port=False)
        self._sock.settimeout(0.5)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: set[socket.socket] = set()
        self._guard = threading.Lock()
        self._accept: threading.Thread | None = None

    @property
    def address(self) -> tuple[str, int]:
        host, port = self._sock.getsockname()[:2]
        return host, port

    def start(self) -> None:
        self._accept = threading.Thread(target=self._serve, name="dicomvault-hl7", daemon=True)
        self._accept.start()

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, addr = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            peer = f"{addr[0]}:{addr[1]}"
            if self.allow and not any(ipaddress.ip_address(addr[0]) in net for net in self.allow):
                log.warning("HL7 %s refused: not in [hl7] allow", peer)
                conn.close()
                continue
            with self._guard:
                full = len(self._conns) >= self.max_connections
            if full:
                # a sender opening connections without end must not take a thread each
                log.warning("HL7 %s refused: %d connections open", peer, self.max_connections)
                conn.close()
                continue
            t = threading.Thread(target=self._connection, args=(conn, peer, addr[0]),
                                 name=f"dicomvault-hl7-{peer}", daemon=True)
            with self._guard:
                self._conns.add(conn)
                self._threads = [x for x in self._threads if x.is_alive()] + [t]
            t.start()

    def _handshake(self, conn: socket.socket, peer: str, address: str) -> socket.socket | None:
        """The TLS side of a connection, None (reported, logged) when its handshake fails."""
        assert self.tls is not None
        conn.settimeout(min(self.idle_timeout, HANDSHAKE_TIMEOUT))
        try:
            return self.tls().wrap_socket(conn, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            reason = f"HL7 MLLP/TLS handshake failed: {getattr(exc, 'reason', None) or exc}"
            log.warning("HL7 %s refused: %s", peer, reason)
            if self.tls_refused is not None:
                self.tls_refused(address, reason)
            return None

    def _connection(self, conn: socket.socket, peer: str, address: str) -> None:
        reader = FrameReader(self.max_message)
        try:
            if self.tls is not None:
                secured = self._handshake(conn, peer, address)
                if secured is None:
                    return
                with self._guard:
                    # stop() must shut the TLS socket down, not the raw one it wraps
                    self._conns.discard(conn)
                    self._conns.add(secured)
                conn = secured
            conn.settimeout(self.idle_timeout)
            while not self._stop.is_set():
                data = conn.recv(65536)
                if not data:
                    return
                for message in reader.feed(data):
                    conn.sendall(frame(self.handler(message, peer)))
        except TimeoutError:
            log.info("HL7 %s: idle for %.0f s, closed", peer, self.idle_timeout)
        except FrameError as exc:
            log.warning("HL7 %s: %s, connection closed", peer, exc)
        except OSError as exc:
            log.info("HL7 %s: connection ended: %s", peer, exc)
        finally:
            with self._guard:
                self._conns.discard(conn)
            conn.close()

    def stop(self) -> None:
        self._stop.set()
        self._sock.close()
        if self._accept is not None:
            self._accept.join(5)
        with self._guard:
            conns, threads = list(self._conns), list(self._threads)
        for c in conns:
            try:
                c.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass  # already closed by its peer
        for t in threads:
            t.join(5)
