"""A DIMSE receiver process (`[dimse] workers = N`, started by workers.WorkerPool; the design is
described there). Never opens the data directory: C-STOREs go to the writer over its Unix socket,
associations for other services are relayed to the writer's own SCP.

    python -m dicomvault.dimse.workers_proc '<WorkerSpec as JSON>'
"""

from __future__ import annotations

import json
import logging
import os
import queue
import select
import signal
import socket
import struct
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.sop_class import Verification
from pynetdicom.transport import ThreadedAssociationServer

from .. import _native
from ..audit.dimse import RefusalAudit, Refusals
from ..audit.log import AuditLog
from ..auth.peer_settings import parse_peer
from ..config import DimseConfig
from ..refusals import REFUSALS
from . import fastpath, tls
from .admission import RJ_CALLING_AE, Admit, edge_verdict, log_refusal, reject_pdu
from .common import calling_ae, log, set_nodelay
from .limits import count_admission_refusal, oversize, refused_size
from .peers import Peers
from .server import (
    SERVICE_CONTEXTS,
    _log_close,
    _log_event,
    _log_rejected,
    _on_established,
    build_ae,
    drain,
    limit_handlers,
)
from .status import OUT_OF_RESOURCES_IO
from .store import as_response, request_facts
from .tls_relay import RELAY_BUF, tls_acceptor, with_shutdown
from .workers import WorkerSpec, read_response, send_request

# Associations proposing any of these are relayed to the writer's SCP (it needs the index/blobs).
WRITER_SERVICES = frozenset(str(uid) for uid in SERVICE_CONTEXTS) - {str(Verification)}
MAX_PEEK = 1 << 20  # an A-ASSOCIATE-RQ is a few KiB; anything claiming more is left to pynetdicom
TLS_FILES = ("tls_cert", "tls_key", "tls_ca")
ACCEPT_DEFER = 0.002  # seconds a receiver waits before accepting, per connection it already serves


# -- C-STORE: ask the writer -------------------------------------------------------------------------

class StoreClient:
    """Connections to the writer's store socket, one per concurrent request (idle ones reused)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._idle: queue.SimpleQueue[socket.socket] = queue.SimpleQueue()

    def store(self, header: dict[str, str], dataset: bytes | memoryview) -> tuple[int, str | None]:
        try:
            sock = self._idle.get_nowait()
        except queue.Empty:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.connect(self.path)
            except OSError:
                sock.close()
                raise
        try:
            send_request(sock, header, dataset)
            result = read_response(sock)
        except BaseException:
            sock.close()  # its state is unknown now: never reuse it
            raise
        self._idle.put(sock)
        return result


class RefusalReporter:
    """Passes this receiver's refusals (refusals.py) to the writer, whose /metrics counts them;
    from a thread of its own, so an association thread never waits on the writer for it."""

    def __init__(self, client: StoreClient) -> None:
        self.client = client
        self._queue: queue.SimpleQueue[tuple[str, str, int]] = queue.SimpleQueue()
        threading.Thread(target=self._run, name="dv-refusals", daemon=True).start()

    def __call__(self, kind: str, reason: str, n: int) -> None:
        self._queue.put((kind, reason, n))

    def _run(self) -> None:
        while True:
            kind, reason, n = self._queue.get()
            try:
                self.client.store({"refused": kind, "reason": reason, "n": str(n)}, b"")
            except OSError as exc:  # the writer is going away: the count is lost, nothing else
                log.warning("refusal %s/%s not reported to the writer: %s", kind, reason, exc)


def store_remote(client: StoreClient, dataset: bytes | memoryview, ts: str, sop_uid: str, sop_class: str,
                 caller: str) -> tuple[int, str | None]:
    """One C-STORE's facts to the writer, which stores and decides the status (success only
    from it); (status, comment)."""
    try:
        header = {"ts": ts, "sop": sop_uid, "class": sop_class, "caller": caller}
        return client.store(header, dataset)
    except (OSError, ValueError) as exc:
        log.error("C-STORE from %s of %s: archive writer unavailable: %s", caller, sop_uid or "?", exc)
        return OUT_OF_RESOURCES_IO, "archive writer unavailable"


def handle_store_remote(event: Any, client: StoreClient) -> Dataset | int:
    """EVT_C_STORE in a receiver (the path without the native reader: fast_path = false)."""
    caller = calling_ae(event)
    limit = getattr(event.assoc.ae, "max_object_size", 0)
    if (dropped := refused_size(event.request.DataSet, limit)) is not None:
        return as_response(*oversize(caller, str(event.request.AffectedSOPInstanceUID or ""), dropped, limit))
    dataset, ts, sop_uid, sop_class = request_facts(event)
    return as_response(*store_remote(client, dataset, ts, sop_uid, sop_class, caller))


def fast_store_remote(client: StoreClient) -> Callable[[Any, Any, str, str, Any], tuple[int, str | None]]:
    """The store handler of fastpath.py in a receiver. Why: with pynetdicom reading the socket
    (EVT_C_STORE above) a receiver spent ~2.5 ms of Python per 512 KB slice, more than the
    writer's whole store, so `workers = 2` ingested slower than `workers = 1` (bench/RESULTS.md,
    "DIMSE ingest ceiling"); the native reader hands over the data set whole instead."""

    def store(assoc: Any, context: Any, sop_class: str, sop_uid: str,
              dataset: bytes | _native.ReceivedDataSet) -> tuple[int, str | None]:
        data = dataset.bytes() if isinstance(dataset, _native.ReceivedDataSet) else dataset
        return store_remote(client, data, str(context.transfer_syntax[0]), sop_uid, sop_class,
                            str(assoc.requestor.ae_title).strip())

    return store


# -- which associations are relayed -----------------------------------------------------------------

def proposed_abstract_syntaxes(pdu: bytes) -> list[str] | None:
    """Abstract syntax UIDs of an A-ASSOCIATE-RQ PDU (PS3.8 9.3.2), or None if it is not one."""
    if len(pdu) < 74 or pdu[0] != 0x01:
        return None
    uids = []
    pos, end = 74, min(len(pdu), 6 + struct.unpack_from(">I", pdu, 2)[0])
    while pos + 4 <= end:
        item, length = pdu[pos], struct.unpack_from(">H", pdu, pos + 2)[0]
        body = pdu[pos + 4:pos + 4 + length]
        if item == 0x20:  # presentation context: id, 3 reserved, sub-items
            sub = 4
            while sub + 4 <= len(body):
                stype, slen = body[sub], struct.unpack_from(">H", body, sub + 2)[0]
                if stype == 0x30:
                    uids.append(body[sub + 4:sub + 4 + slen].decode("ascii", "replace").strip("\0 "))
                sub += 4 + slen
        pos += 4 + length
    return uids


def peek_associate_rq(sock: socket.socket, timeout: float) -> bytes:
    """The first PDU as far as it arrived within `timeout`, without consuming anything."""
    deadline = time.monotonic() + timeout
    need = 6
    data = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return data
        ready, _, _ = select.select([sock], [], [], left)
        if not ready:
            return data
        data = sock.recv(need, socket.MSG_PEEK)
        if len(data) >= 6 and need == 6:
            need = 6 + struct.unpack_from(">I", data, 2)[0]
            if need > MAX_PEEK:
                return data
        if len(data) >= need or not data:
            return data
        # Part of the PDU is here: the rest is a round trip away at most.
        time.sleep(0.001)


def wants_writer(first_pdu: bytes) -> bool:
    uids = proposed_abstract_syntaxes(first_pdu)
    return bool(uids) and any(uid in WRITER_SERVICES for uid in uids)


def admitted_at_edge(admit: Admit, sock: socket.socket, first_pdu: bytes, address: str,
                     audit: Refusals | None = None) -> bool:
    """An association relayed to the writer is decided here, where the caller's address is known
    (the writer's SCP sees this process's loopback connection): False when refused, with the
    A-ASSOCIATE-RJ sent and the connection closed."""
    verdict = edge_verdict(admit, first_pdu, address, None)
    if verdict is None or verdict.refused is None:
        return True
    log_refusal(verdict, address, audit)
    count_admission_refusal(verdict.refused)
    try:
        sock.recv(len(first_pdu))  # consume the request we answer (it was only peeked)
        sock.sendall(reject_pdu(*RJ_CALLING_AE))
    except OSError:
        pass  # gone already; refused either way
    with_shutdown(sock, socket.SHUT_RDWR)
    return False


def _pump(src: socket.socket, dst: socket.socket, quickack: bool) -> bool:
    """Copies src to dst until EOF; True at a clean EOF, False on an error."""
    buf = bytearray(RELAY_BUF)
    view = memoryview(buf)
    try:
        while True:
            n = src.recv_into(buf)
            if quickack:
                # As common.enable_quickack: a peer with Nagle on (dcmtk) otherwise waits ~40 ms
                # for our delayed ACK on each response it sends while we send it data (C-GET).
                src.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
            if not n:
                return True
            dst.sendall(view[:n])
    except OSError:
        return False
    finally:
        view.release()


def relay(client: socket.socket, writer_addr: tuple[str, int], active: list[int],
          lock: threading.Lock) -> None:
    """Byte-level relay of one association between the peer and the writer's SCP."""
    with lock:
        active[0] += 1
    try:
        upstream = socket.create_connection(writer_addr, timeout=10)
    except OSError as exc:
        log.error("cannot reach the writer's SCP at %s:%d: %s", *writer_addr, exc)
        with lock:
            active[0] -= 1
        return
    upstream.settimeout(None)
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    quickack = hasattr(socket, "TCP_QUICKACK")

    def down() -> None:
        # The writer ended the association: nothing more the peer says matters.
        _pump(upstream, client, False)
        with_shutdown(client, socket.SHUT_RDWR)

    t = threading.Thread(target=down, name="dv-relay-down", daemon=True)
    t.start()
    try:
        if _pump(client, upstream, quickack):
            with_shutdown(upstream, socket.SHUT_WR)  # the peer is done sending; let the writer finish
        else:
            with_shutdown(upstream, socket.SHUT_RDWR)
        t.join()
    finally:
        upstream.close()
        with lock:
            active[0] -= 1


# -- the receiver's server ------------------------------------------------------------------------

def make_server_class(listen: socket.socket, writer_addr: tuple[str, int], acse_timeout: float,
                      relays: list[int], relays_lock: threading.Lock,
                      relayed: list[int], admit: Admit, audit: Refusals | None = None
                      ) -> type[ThreadedAssociationServer]:
    connections = [0]  # connections this receiver is serving (associations and relays)

    class SharedSocketServer(ThreadedAssociationServer):
        """pynetdicom's threaded server on the inherited listening socket (shared by every
        receiver): accept is non-blocking, since another receiver may win a connection this one
        was woken for; closing does not shut the socket down, which would end it for the others."""

        def server_bind(self) -> None:
            self.socket.close()
            self.socket = listen
            listen.settimeout(0.0)
            self.server_address = listen.getsockname()

        def server_activate(self) -> None:
            pass  # listening already (bound by the writer)

        def get_request(self) -> tuple[socket.socket, Any]:
            # Every receiver is woken for a new connection and the first to accept gets it.
            # Left alone the same one tends to win (measured: 3 of 4 associations on one
            # process); a receiver already serving n connections lets the others go first.
            n = connections[0]
            if n:
                time.sleep(min(ACCEPT_DEFER * n, 10 * ACCEPT_DEFER))
            sock, addr = super().get_request()
            sock.setblocking(True)  # accepted from a non-blocking listener
            return sock, addr

        def process_request(self, request: Any, client_address: Any) -> None:
            with relays_lock:
                connections[0] += 1
            try:
                super().process_request(request, client_address)
            except BaseException:
                with relays_lock:
                    connections[0] -= 1
                raise

        def server_close(self) -> None:
            self.socket.close()

        def finish_request(self, request: Any, client_address: Any) -> None:
            # In the connection's own thread: decide by the proposed contexts.
            try:
                try:
                    first = peek_associate_rq(request, acse_timeout)
                except OSError:
                    first = b""  # gone already: pynetdicom will see it and log it
                to_writer = wants_writer(first)
                if to_writer and not admitted_at_edge(admit, request, first, str(client_address[0]), audit):
                    return
                if to_writer:
                    with relays_lock:
                        relayed[0] += 1
                    relay(request, writer_addr, relays, relays_lock)
                else:
                    super().finish_request(request, client_address)
            finally:
                with relays_lock:
                    connections[0] -= 1

    return SharedSocketServer


def main(argv: list[str]) -> int:
    spec = WorkerSpec(**json.loads(argv[0]))
    logging.basicConfig(level=spec.log_level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s %(name)s[w{spec.index}]: %(message)s")
    if not log.isEnabledFor(logging.DEBUG):
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    parent = os.getppid()

    # the TLS files travel as text in the JSON spec
    d = DimseConfig(**{k: Path(v) if k in TLS_FILES and v is not None else v for k, v in spec.dimse.items()})
    peers = Peers((parse_peer(p, "peer") for p in spec.peers), spec.data_dir or None,
                  accept_unknown=d.accept_unknown_callers, our_title=d.ae_title)
    ae = build_ae(d, peers, (Verification,))
    client = StoreClient(spec.ipc_path)
    if d.fast_path and d.tuned_reactor:
        fastpath.enable(ae, fast_store_remote(client))
    REFUSALS.forward = RefusalReporter(client)
    # Refusals are rare and throttled per caller: written here, at once (the log takes an flock,
    # so the writer and every receiver append to the same chain).
    refusals = RefusalAudit(AuditLog(spec.data_dir)) if spec.data_dir else None
    listen = socket.socket(fileno=spec.listen_fd)
    relays = [0]  # relays in progress
    relays_lock = threading.Lock()
    relayed = [0]  # relays done (for the exit log line)
    writer_addr = (spec.writer_host, spec.writer_port)
    server_class = make_server_class(listen, writer_addr, float(ae.acse_timeout or 30), relays, relays_lock,
                                     relayed, peers.admit, refusals)
    served = [0]

    def on_established(event: Any) -> None:
        with relays_lock:
            served[0] += 1
        _on_established(event)

    handlers = [
        (evt.EVT_CONN_OPEN, set_nodelay),
        (evt.EVT_C_STORE, lambda event: handle_store_remote(event, client)),
        (evt.EVT_ESTABLISHED, on_established),
        (evt.EVT_CONN_CLOSE, _log_close),
        (evt.EVT_REJECTED, partial(_log_rejected, audit=refusals)),
        (evt.EVT_ABORTED, _log_event("association aborted", logging.WARNING)),
        *limit_handlers(d),
    ]
    server = ae.make_server(listen.getsockname(), evt_handlers=handlers, server_class=server_class)
    thread = threading.Thread(target=server.serve_forever, name=f"dv-receiver-{spec.index}", daemon=True)
    thread.start()
    tls_stop = threading.Event()
    tls_thread = None
    if spec.tls_listen_fd >= 0:
        tls_listen = socket.socket(fileno=spec.tls_listen_fd)
        reloader = tls.listener_contexts(d)
        tls_thread = threading.Thread(
            target=tls_acceptor, name=f"dv-tls-accept-{spec.index}",
            args=(tls_listen, reloader.context(), writer_addr, float(ae.acse_timeout or 30), tls_stop,
                  relays, relays_lock, reloader.context),
            kwargs={"admit": peers.admit, "audit": refusals}, daemon=True)
        tls_thread.start()
    ae._servers.append(server)  # as AE.start_server does, so AE.shutdown() would find it
    log.debug("receiver %d accepting (pid %d)", spec.index, os.getpid())
    sys.stdout.write("ready\n")
    sys.stdout.flush()

    while not stop.wait(0.5):
        if os.getppid() != parent:
            log.error("the writer process is gone; receiver %d exiting", spec.index)
            break
    deadline = time.monotonic() + spec.shutdown_timeout
    server.shutdown()  # stops accepting, closes our copy of the listening socket
    if tls_thread is not None:
        tls_stop.set()
        tls_thread.join(2.0)
        tls_listen.close()
    clean = drain(server, deadline, lambda: relays[0])
    log.info("receiver %d stopped: %d association(s) served here, %d relayed to the writer",
             spec.index, served[0], relayed[0])
    return 0 if clean else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
