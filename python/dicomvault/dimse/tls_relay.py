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

from .common import log

RELAY_BUF = 256 << 10
_RECORD = 16 << 10  # the largest TLS record's plaintext


def with_shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass  # already closed by the other side


def relay_tls(client: ssl.SSLSocket, scp_addr: tuple[str, int]) -> None:
    """Relays one DICOM TLS association, decrypted, to our plain SCP on loopback. One thread
    for both directions: an OpenSSL connection must not be read and written by two threads at
    once (the plain relay uses two). DIMSE sends in one direction at a time plus short
    responses, which the socket buffers absorb while a send blocks."""
    try:
        upstream = socket.create_connection(scp_addr, timeout=10)
    except OSError as exc:
        log.error("cannot reach the SCP behind the TLS port at %s:%d: %s", *scp_addr, exc)
        return
    upstream.settimeout(None)
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    quickack = hasattr(socket, "TCP_QUICKACK")
    buf = bytearray(RELAY_BUF)
    view = memoryview(buf)
    client_open = True
    try:
        while True:
            if client_open and client.pending():
                ready = [client]  # decrypted bytes already buffered: select would not see them
            else:
                ready, _, _ = select.select([client, upstream] if client_open else [upstream], [], [])
            for s in ready:
                if s is client:
                    n, eof = _read_records(client, view)
                    if quickack:
                        client.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
                    if n:
                        upstream.sendall(view[:n])
                    if eof:
                        client_open = False  # the peer is done sending; let the SCP finish
                        with_shutdown(upstream, socket.SHUT_WR)
                else:
                    n = upstream.recv_into(buf)
                    if not n:
                        return  # the SCP ended the association
                    client.sendall(view[:n])
    except OSError as exc:  # ssl.SSLError is one: a peer that vanished or broke the record layer
        log.debug("TLS relay ended: %s", exc)
    finally:
        view.release()
        upstream.close()
        with_shutdown(client, socket.SHUT_RDWR)
        client.close()


def _read_records(client: ssl.SSLSocket, view: memoryview) -> tuple[int, bool]:
    """Reads what the peer has sent, up to the buffer: (bytes read, end of stream). Why more
    than one read: a TLS read returns one record (16 KiB at most), and a send to the SCP per
    record cost a third of TLS ingest; this gathers what has arrived into one send."""
    got = 0
    room = len(view) - _RECORD
    while True:
        n = client.recv_into(view[got:])
        if not n:
            return got, True
        got += n
        if got >= room or not (client.pending() or select.select([client], [], [], 0)[0]):
            return got, False


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
                         handshake_timeout: float) -> None:
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
        log.warning("DICOM TLS connection from %s refused: %s", peer, tls_failure(exc))
        conn.close()
        return
    tls_sock.settimeout(None)
    log.debug("DICOM TLS connection from %s (%s, %s)", peer, tls_sock.version(), tls_sock.cipher()[0])
    relay_tls(tls_sock, scp_addr)


def tls_acceptor(listen: socket.socket, ctx: ssl.SSLContext, scp_addr: tuple[str, int],
                 handshake_timeout: float, stop: threading.Event, active: list[int],
                 lock: threading.Lock) -> None:
    """Accepts on the TLS listener until `stop` (non-blocking: with receiver processes, another
    may win a connection); each connection in a thread of its own, counted in `active` until it
    ends, relayed to the plain SCP at `scp_addr`."""
    listen.setblocking(False)

    def run(conn: socket.socket) -> None:
        try:
            serve_tls_connection(conn, ctx, scp_addr, handshake_timeout)
        finally:
            with lock:
                active[0] -= 1

    while not stop.is_set():
        try:
            ready, _, _ = select.select([listen], [], [], 0.5)
            if not ready:
                continue
            conn, _addr = listen.accept()
        except BlockingIOError:
            continue  # another receiver took it
        except OSError:
            if stop.is_set():
                return
            raise
        conn.setblocking(True)
        with lock:
            active[0] += 1
        threading.Thread(target=run, args=(conn,), name="dv-tls-relay", daemon=True).start()
