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

import hashlib
import select
import socket
import ssl
import struct
import threading
import time
from collections.abc import Callable

from ..audit.dimse import Refusals
from .admission import RJ_CALLING_AE, Admit, RelayOrigins, edge_verdict, log_refusal, reject_pdu
from .common import log
from .limits import count_admission_refusal

RELAY_BUF = 256 << 10
MAX_FIRST_PDU = 1 << 20  # an A-ASSOCIATE-RQ with every context a workstation proposes: ~20 KiB
_RECORD = 16 << 10  # the largest TLS record's plaintext


def with_shutdown(sock: socket.socket, how: int) -> None:
    try:
        sock.shutdown(how)
    except OSError:
        pass  # already closed by the other side


def relay_tls(client: ssl.SSLSocket, scp_addr: tuple[str, int], first: bytes = b"",
              origin: tuple[RelayOrigins, str, str | None] | None = None) -> None:
    """Relays one DICOM TLS association, decrypted, to our plain SCP on loopback. `first`: bytes
    already read from the client (its A-ASSOCIATE-RQ); `origin`: where to tell an SCP in this
    process that the connection came from (registry, caller's address, certificate sha256)."""
    try:
        upstream = socket.create_connection(scp_addr, timeout=10)
    except OSError as exc:
        log.error("cannot reach the SCP behind the TLS port at %s:%d: %s", *scp_addr, exc)
        client.close()
        return
    upstream.settimeout(None)
    upstream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if origin is not None:
        origin[0].register(upstream, origin[1], origin[2])
    if first:
        try:
            upstream.sendall(first)
        except OSError as exc:
            log.warning("TLS relay: the SCP closed before the association request: %s", exc)
            upstream.close()
            client.close()
            return
    pump_tls(client, upstream)


def read_first_pdu(sock: ssl.SSLSocket) -> bytes:
    """The client's first PDU (its A-ASSOCIATE-RQ), read whole (up to MAX_FIRST_PDU; what is
    larger, or ends early, is returned as far as it came and left to the SCP to refuse)."""
    data = b""
    need = 6
    while len(data) < need:
        chunk = sock.recv(need - len(data))
        if not chunk:
            break
        data += chunk
        if len(data) == 6 and need == 6:
            need = min(6 + struct.unpack_from(">I", data, 2)[0], MAX_FIRST_PDU)
    return data


def admit_tls(tls_sock: ssl.SSLSocket, admit: Admit, address: str,
              timeout: float, audit: Refusals | None = None) -> tuple[bytes, str | None] | None:
    """Reads the A-ASSOCIATE-RQ and decides on the caller with its real address and certificate:
    (the bytes read, the certificate's sha256) to relay, or None when refused (A-ASSOCIATE-RJ sent)."""
    der = tls_sock.getpeercert(binary_form=True)
    cert = hashlib.sha256(der).hexdigest() if der else None
    tls_sock.settimeout(timeout)
    try:
        first = read_first_pdu(tls_sock)
    except (OSError, ValueError) as exc:
        log.warning("DICOM TLS connection from %s: no association request: %s", address, exc)
        return None
    tls_sock.settimeout(None)
    verdict = edge_verdict(admit, first, address, cert)
    if verdict is not None and verdict.refused is not None:
        log_refusal(verdict, address, audit)
        count_admission_refusal(verdict.refused)
        try:
            tls_sock.sendall(reject_pdu(*RJ_CALLING_AE))
        except OSError:
            pass  # gone already; refused either way
        return None
    return first, cert


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
                         handshake_timeout: float, admit: Admit | None = None,
                         origins: RelayOrigins | None = None, audit: Refusals | None = None) -> None:
    """One connection to the TLS port: handshake (mutual, when the context asks for a client
    certificate), the caller admitted or refused (`admit`, with its real address and
    certificate), then the association is relayed to the plain SCP (told where it came from
    through `origins` when that SCP is in this process). Refusals go to `audit` too."""
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
        if audit is not None:
            audit.tls_refused(host, why)
        return
    tls_sock.settimeout(None)
    log.debug("DICOM TLS connection from %s (%s, %s)", peer, tls_sock.version(), tls_sock.cipher()[0])
    if admit is None:
        relay_tls(tls_sock, scp_addr)
        return
    admitted = admit_tls(tls_sock, admit, host, handshake_timeout, audit)
    if admitted is None:
        with_shutdown(tls_sock, socket.SHUT_RDWR)
        tls_sock.close()
        return
    first, cert = admitted
    relay_tls(tls_sock, scp_addr, first, (origins, host, cert) if origins is not None else None)


def tls_acceptor(listen: socket.socket, ctx: ssl.SSLContext, scp_addr: tuple[str, int],
                 handshake_timeout: float, stop: threading.Event, active: list[int],
                 lock: threading.Lock, reload: Callable[[], ssl.SSLContext] | None = None, *,
                 admit: Admit | None = None, origins: RelayOrigins | None = None,
                 audit: Refusals | None = None) -> None:
    """Accepts on the TLS listener until `stop` (non-blocking: with receiver processes, another
    may win a connection); each connection in a thread of its own, counted in `active` until it
    ends, relayed to the plain SCP at `scp_addr`. `reload` (tls_policy.CertificateReloader's
    `context`) gives the context for each connection: a renewed certificate is served from the
    next handshake on. `audit`: told of every refused handshake and caller (Security Alerts)."""
    listen.setblocking(False)

    def run(conn: socket.socket, ctx: ssl.SSLContext) -> None:
        try:
            serve_tls_connection(conn, ctx, scp_addr, handshake_timeout, admit, origins, audit)
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
