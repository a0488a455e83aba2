"""DICOM TLS in front of a plain SCP: each connection to the TLS port is handshaken here
(mutually, when the context asks for a client certificate) and its association relayed,
decrypted, to our own plain listener on loopback.

Why a relay rather than pynetdicom on a TLS socket: the plain listener serves associations
through the native fast path (dimse/fastpath.py reads a plain socket's file descriptor), while
pynetdicom's own reader on a TLS socket ran ingest at 0.44 of plain (bench/tls_bench.py,
workers = 1). The relay costs a loopback copy; OpenSSL's record work runs with the GIL released.
The receiver processes of workers.py run the same relay, to the writer's SCP.
"""

from __future__ import annotations

import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from .common import log

RELAY_BUF = 256 << 10
# (host, port) of a relay's connection to the plain SCP -> the TLS peer's host: an association
# relayed from the TLS port is seen coming from loopback, the audit trail names the real peer.
_relayed: dict[tuple[str, int], str] = {}
OnRefused = Callable[[str, str], None]
_RECORD = 16 << 10  # the largest TLS record's plaintext


def with_shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass  # already closed by the other side


def relay_tls(client: ssl.SSLSocket, scp_addr: tuple[str, int], peer_host: str | None = None) -> None:
    """Relays one DICOM TLS association, decrypted, to our plain SCP on loopback."""
    try:
        upstream = socket.create_connection(scp_addr, timeout=10)
    except OSError as exc:
        log.error("cannot reach the SCP behind the TLS port at %s:%d: %s", *scp_addr, exc)
        client.close()
        return
    upstream.settimeout(None)
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    local = upstream.getsockname()[:2]
    if peer_host is not None:
        _relayed[local] = peer_host
    try:
        pump_tls(client, upstream)
    finally:
        _relayed.pop(local, None)


def client_host(address: str | None, port: int | None) -> str | None:
    """The host of the peer behind a connection to our plain SCP: the TLS peer's when the
    connection is one of this process's relays, else `address` itself."""
    if address is None or port is None:
        return address
    return _relayed.get((address, int(port)), address)


def requestor_host(assoc: Any) -> str | None:
    """`client_host` of the peer that requested `assoc` (an acceptor association of ours)."""
    r = assoc.requestor
    return client_host(getattr(r, "address", None), getattr(r, "port", None))


def pump_tls(secure: ssl.SSLSocket, plain: socket.socket) -> None:
    """Copies between a TLS connection and its plain side until the plain side ends (then both
    are closed). One thread for both directions: an OpenSSL connection must not be read and
    written by two threads at once. DIMSE sends in one direction at a time plus short responses,
    which the socket buffers absorb while a send blocks. The end of the TLS side's stream is
    passed on as a half-close, so the plain side can still finish (an A-RELEASE-RP)."""
    secure.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    quickack = hasattr(socket, "TCP_QUICKACK")
    buf = bytearray(RELAY_BUF)
    view = memoryview(buf)
    secure_open = True
    # poll, not select: a server with its index and volumes open can hold descriptors past 1024
    poller = select.poll()
    poller.register(secure, select.POLLIN)
    poller.register(plain, select.POLLIN)
    fds = {secure.fileno(): secure, plain.fileno(): plain}
    try:
        while True:
            if secure_open and secure.pending():
                ready = [secure]  # decrypted bytes already buffered: poll would not see them
            else:
                ready = [fds[fd] for fd, _ in poller.poll()]
            for s in ready:
                if s is secure and not secure_open:
                    continue
                if s is secure:
                    n, eof = _read_records(secure, view)
                    if quickack:
                        secure.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                    if n:
                        plain.sendall(view[:n])
                    if eof:
                        secure_open = False  # the TLS peer is done sending; let the plain side finish
                        poller.unregister(secure)
                        with_shutdown(plain, socket.SHUT_WR)
                else:
                    n = plain.recv_into(buf)
                    if not n:
                        return  # the plain side ended the association
                    secure.sendall(view[:n])
    except OSError as exc:  # ssl.SSLError is one: a peer that vanished or broke the record layer
        log.debug("TLS relay ended: %s", exc)
    finally:
        view.release()
        plain.close()
        with_shutdown(secure, socket.SHUT_RDWR)
        secure.close()


def _read_records(secure: ssl.SSLSocket, view: memoryview) -> tuple[int, bool]:
    """Reads what the TLS peer has sent, up to the buffer: (bytes read, end of stream).
    Non-blocking: records that carry no data (TLS 1.3 session tickets after the handshake, a key
    update) must not leave this thread waiting in a read while the other side waits for us. And
    more than one record: a read returns one record (16 KiB at most), and a send per record cost
    a third of TLS ingest; this gathers what has arrived into one send."""
    got = 0
    room = len(view) - _RECORD
    secure.settimeout(0.0)
    try:
        while got < room:
            try:
                n = secure.recv_into(view[got:])
            except (ssl.SSLWantReadError, BlockingIOError):
                break  # nothing more decrypted yet (or only records without data)
            if not n:
                return got, True
            got += n
        return got, False
    finally:
        secure.settimeout(None)


def tls_failure(exc: BaseException) -> str:
    """What went wrong in a TLS handshake, in the words an operator acts on."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"certificate refused: {exc.verify_message} (verify code {exc.verify_code})"
    if isinstance(exc, ssl.SSLError):
        if exc.reason in ("WRONG_VERSION_NUMBER", "HTTP_REQUEST", "UNKNOWN_PROTOCOL"):
            return "not a TLS client hello (plain DICOM sent to the TLS port?)"
        return f"{exc.reason or exc}".replace("_", " ").lower()
    if isinstance(exc, TimeoutError | socket.timeout):
        return "no TLS handshake within the ACSE timeout"
    return str(exc) or type(exc).__name__


def serve_tls_connection(conn: socket.socket, ctx: ssl.SSLContext, scp_addr: tuple[str, int],
                         handshake_timeout: float, on_refused: OnRefused | None = None) -> None:
    """One connection to the TLS port: handshake (mutual, when the context asks for a client
    certificate), then the association is relayed to the plain SCP."""
    try:
        host, port = conn.getpeername()[:2]
        peer = f"{host}:{port}"
    except OSError:
        conn.close()
        return
    conn.settimeout(handshake_timeout)
    try:
        tls_sock = ctx.wrap_socket(conn, server_side=True)
    except (OSError, ValueError) as exc:
        why = tls_failure(exc)
        log.warning("DICOM TLS connection from %s refused: %s", peer, why)
        conn.close()
        if on_refused is not None:
            on_refused(host, why)
        return
    tls_sock.settimeout(None)
    log.debug("DICOM TLS connection from %s (%s, %s)", peer, tls_sock.version(), tls_sock.cipher()[0])
    relay_tls(tls_sock, scp_addr, host)


def tls_acceptor(listen: socket.socket, ctx: ssl.SSLContext, scp_addr: tuple[str, int],
                 handshake_timeout: float, stop: threading.Event, active: list[int],
                 lock: threading.Lock, reload: Callable[[], ssl.SSLContext] | None = None,
                 on_refused: OnRefused | None = None) -> None:
    """Accepts on the TLS listener until `stop` (non-blocking: with receiver processes, another
    may win a connection); each connection in a thread of its own, counted in `active` until it
    ends, relayed to the plain SCP at `scp_addr`. `reload` (tls_policy.CertificateReloader's
    `context`) gives the context for each connection: a renewed certificate is served from the
    next handshake on. `on_refused(host, reason)`: told of every failed handshake (the audit
    trail's Security Alert)."""
    listen.setblocking(False)

    def run(conn: socket.socket, ctx: ssl.SSLContext) -> None:
        try:
            serve_tls_connection(conn, ctx, scp_addr, handshake_timeout, on_refused)
        finally:
            with lock:
                active[0] -= 1

    poller = select.poll()
    poller.register(listen, select.POLLIN)
    while not stop.is_set():
        if reload is not None:
            ctx = reload()
        try:
            if not poller.poll(500):
                continue
            conn, _addr = listen.accept()
        except BlockingIOError:
            continue  # another receiver took it
        except OSError as exc:
            if stop.is_set():
                return
            # out of descriptors, a connection reset before it was accepted: the port stays served
            log.warning("DICOM TLS port: accept failed: %s", exc)
            time.sleep(0.1)
            continue
        conn.setblocking(True)
        with lock:
            active[0] += 1
        try:
            threading.Thread(target=run, args=(conn, ctx), name="dv-tls-relay", daemon=True).start()
        except RuntimeError as exc:  # no thread to be had: refuse this one, not the port
            log.warning("DICOM TLS port: connection refused: %s", exc)
            conn.close()
            with lock:
                active[0] -= 1
