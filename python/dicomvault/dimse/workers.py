"""`[dimse] workers = N` (N >= 2): N receiver processes in front of the one process that writes.

Why: in one process, pynetdicom's per-PDU and per-message Python work (PDU decoding, DIMSE
command sets, responses) and the engine's index commit all need the GIL, so one process uses about
one core however many associations arrive (profiled: ~50 % of wall time holds the GIL at four
associations). Receivers in their own processes do the pynetdicom work on the other core.

Design (the simplest one that keeps every service correct and one writer):

- The server process ("writer") opens the Engine (it holds the data directory's lock, and stays
  the only process that writes it), binds the public DIMSE port itself, and starts N receiver
  processes (fresh interpreters, not forks: a fork would inherit the lock and RocksDB's threads)
  that inherit that one listening socket and all accept on it. Binding once in the writer keeps
  the "port already in use" error where it was, lets no unrelated process join the port (as
  SO_REUSEPORT would), and leaves no connection queued on a dead receiver's private backlog: the
  kernel hands each connection to whichever receiver accepts first, so a busy one takes fewer.
- A receiver reads the A-ASSOCIATE-RQ without consuming it (MSG_PEEK). An association that
  proposes only storage and/or verification is served by the receiver's own pynetdicom AE: C-ECHO
  locally; each C-STORE's dataset bytes, transfer syntax, calling AE and the request's SOP
  Instance/Class UIDs go to the writer over a Unix socket (length-prefixed frames, one connection
  per concurrent request), the writer runs exactly the in-process store logic
  (`store.store_status`: durable, hashed, compressed, group-committed with every other writer
  thread) and answers the status, which the receiver returns to the peer. Success therefore still
  means durable (DESIGN.md §3.1): the receiver never answers success on its own.
- Any other association (C-FIND, C-MOVE, C-GET, storage commitment, mixed) is relayed byte for
  byte to the writer's own, complete SCP listening on a loopback port: every query/retrieve
  feature, C-CANCEL and the commitment reports work exactly as with workers = 1, at the price of
  one extra copy through the receiver. (Forwarding those services message by message would mean
  re-implementing C-GET's sub-operations and C-MOVE's pending responses across the IPC.)
- The writer restarts a receiver that dies (kill -9 loses nothing acknowledged: its associations
  drop, the peers' unacknowledged objects are not archived or are archived but unacknowledged,
  which a retry deduplicates). Receivers exit when the writer does (they poll their parent).
  SIGTERM/SIGINT to the server: receivers stop accepting and finish their associations (their
  stores still reach the writer), then the writer stops its SCP and closes the engine.
"""

from __future__ import annotations

import json
import logging
import os
import select
import shutil
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ..audit.dimse import DimseAudit
from ..config import DimseConfig, PeerConfig
from ..engine import Engine
from ..refusals import REFUSALS
from .common import listen_socket, log
from .status import PROCESSING_FAILURE
from .store import store_status

# -- the store protocol between receivers and the writer --------------------------------------------
# request:  REQ (magic, header length, dataset length), header (JSON: ts, sop, class, caller), dataset
#           or, for a refusal counted in the receiver: header (JSON: refused, reason, n), no dataset
# response: RSP (magic, body length), body (JSON: status, comment)
REQ = struct.Struct(">4sIQ")
RSP = struct.Struct(">4sI")
REQ_MAGIC = b"DVS1"
RSP_MAGIC = b"DVR1"


class ProtocolError(OSError):
    """A frame that is not ours, or a connection that ended mid-frame."""


def recv_exact(sock: socket.socket, n: int) -> bytes:
    """Exactly n bytes (one allocation); ProtocolError if the peer closes first."""
    if n == 0:
        return b""
    data = sock.recv(n, socket.MSG_WAITALL)
    if len(data) == n:
        return data
    if not data:
        raise ProtocolError("connection closed")
    # MSG_WAITALL may return early (a signal); gather the rest.
    parts = [data]
    got = len(data)
    while got < n:
        more = sock.recv(n - got, socket.MSG_WAITALL)
        if not more:
            raise ProtocolError("connection closed mid-frame")
        parts.append(more)
        got += len(more)
    return b"".join(parts)


def send_request(sock: socket.socket, header: dict[str, str], dataset: bytes | memoryview) -> None:
    head = json.dumps(header).encode()
    sock.sendall(REQ.pack(REQ_MAGIC, len(head), len(dataset)) + head)
    sock.sendall(dataset)


def read_request(sock: socket.socket) -> tuple[dict[str, str], bytes] | None:
    """The next request, or None at a clean end of the connection."""
    try:
        fixed = recv_exact(sock, REQ.size)
    except ProtocolError:
        return None
    magic, head_len, data_len = REQ.unpack(fixed)
    if magic != REQ_MAGIC:
        raise ProtocolError(f"bad request magic {magic!r}")
    header = json.loads(recv_exact(sock, head_len))
    return header, recv_exact(sock, data_len)


def send_response(sock: socket.socket, code: int, comment: str | None) -> None:
    body = json.dumps({"status": code, "comment": comment}).encode()
    sock.sendall(RSP.pack(RSP_MAGIC, len(body)) + body)


def read_response(sock: socket.socket) -> tuple[int, str | None]:
    magic, body_len = RSP.unpack(recv_exact(sock, RSP.size))
    if magic != RSP_MAGIC:
        raise ProtocolError(f"bad response magic {magic!r}")
    body = json.loads(recv_exact(sock, body_len))
    return int(body["status"]), body["comment"]


# -- writer side -----------------------------------------------------------------------------------

class StoreIpcServer:
    """Unix-socket server in the writer: one thread per receiver connection, each request stored
    with `store_status` (concurrent requests share the engine's group commits)."""

    def __init__(self, engine: Engine, path: Path, audit: DimseAudit | None = None) -> None:
        self.engine = engine
        self.path = path
        self.audit = audit
        outer = self

        class Handler(socketserver.BaseRequestHandler):
            def handle(self) -> None:
                outer._serve_connection(self.request)

        class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
            daemon_threads = True  # a receiver's idle connection must not hold up the exit

        self._server = Server(str(path), Handler)
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, name="dv-store-ipc", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._thread is not None:  # shutdown() waits for serve_forever: only if it runs
            self._server.shutdown()
            self._thread = None
        self._server.server_close()

    def _serve_connection(self, sock: socket.socket) -> None:
        try:
            while True:
                req = read_request(sock)
                if req is None:
                    return
                header, dataset = req
                if "refused" in header:
                    # a receiver's refusal (refusals.py): counted here, where /metrics reads
                    REFUSALS.count(header["refused"], header["reason"], int(header.get("n", 1)))
                    send_response(sock, 0, None)
                    continue
                try:
                    code, comment = store_status(
                        self.engine, dataset, header["ts"], sop_uid=header["sop"],
                        sop_class=header["class"], caller=header["caller"], audit=self.audit,
                    )
                except Exception:  # noqa: BLE001 - answer a status as pynetdicom would, keep serving
                    log.exception("C-STORE from %s of %s: unexpected error", header.get("caller"),
                                  header.get("sop"))
                    code, comment = PROCESSING_FAILURE, "internal error"
                send_response(sock, code, comment)
        except (OSError, ValueError, KeyError) as exc:
            # A receiver died mid-request or sent nonsense: drop that connection only. An object
            # stored but not answered was never acknowledged; a retry deduplicates it.
            log.warning("receiver connection dropped: %s", exc)


@dataclass(frozen=True)
class WorkerSpec:
    """What a receiver process needs; passed as JSON on its command line."""

    index: int
    listen_fd: int
    ipc_path: str
    writer_host: str
    writer_port: int
    dimse: dict[str, Any]
    peers: list[dict[str, Any]]
    shutdown_timeout: float
    log_level: int
    tls_listen_fd: int = -1  # the public DICOM TLS listener (tls_port), or -1 for none
    data_dir: str = ""  # where `dicomvault peers` keeps the peers it admits (auth/peers.json)


class _Worker:
    def __init__(self, index: int) -> None:
        self.index = index
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        self.restarts = 0


class WorkerPool:
    """The receiver processes, from the writer's side: spawn, supervise, stop."""

    READY_TIMEOUT = 60.0
    RESPAWN_INTERVAL = 1.0  # at most one restart per second per slot (a crash loop stays visible)

    def __init__(self, engine: Engine, dimse: DimseConfig, peers: tuple[PeerConfig, ...],
                 writer_addr: tuple[str, int], shutdown_timeout: float,
                 audit: DimseAudit | None = None) -> None:
        """`audit`: where the stores the receivers relay are counted for the audit trail."""
        self.dimse = dimse
        self.peers = peers
        self.data_dir = engine.data_dir
        self.writer_addr = writer_addr
        self.shutdown_timeout = shutdown_timeout
        # A private directory (mkdtemp: mode 0700) so no other user can talk to the writer.
        self._ipc_dir = Path(tempfile.mkdtemp(prefix="dicomvault-ipc-"))
        self.ipc = StoreIpcServer(engine, self._ipc_dir / "store.sock", audit)
        self._listen: socket.socket | None = None
        self._tls_listen: socket.socket | None = None
        self._workers = [_Worker(i) for i in range(dimse.workers)]
        self._stopping = False

    # lifecycle
    def start(self) -> tuple[str, int]:
        """Binds the public port, starts the IPC server and the receivers; returns once every
        receiver is accepting."""
        d = self.dimse
        try:
            self._listen = listen_socket(d.host, d.port, d.tcp_max_segment)
            if d.tls_port:
                self._tls_listen = listen_socket(d.host, d.tls_port, d.tcp_max_segment)
            self.ipc.start()
            for w in self._workers:
                self._spawn(w)
            deadline = time.monotonic() + self.READY_TIMEOUT
            for w in self._workers:
                self._await_ready(w, deadline)
        except BaseException:
            self.stop(5.0)
            raise
        host, port = self._listen.getsockname()[:2]
        log.info("DIMSE %s: %d receiver processes on %s:%d (pids %s), writer SCP on %s:%d",
                 d.ae_title, len(self._workers), host, port,
                 ", ".join(str(w.proc.pid) for w in self._workers if w.proc), *self.writer_addr)
        if self._tls_listen is not None:
            log.info("DICOM TLS listening on %s:%d in the receivers (%s)", host,
                     self._tls_listen.getsockname()[1],
                     "callers need a certificate signed by " + str(d.tls_ca) if d.tls_ca
                     else "no client certificate required")
        return str(host), int(port)

    def supervise(self) -> None:
        """Restarts receivers that died (call periodically from the server's main loop)."""
        if self._stopping:
            return
        for w in self._workers:
            if w.proc is None or w.proc.poll() is None:
                continue
            if time.monotonic() - w.started < self.RESPAWN_INTERVAL:
                continue
            rc = w.proc.returncode
            log.warning("DIMSE receiver %d (pid %d) exited with %s; restarting it", w.index, w.proc.pid,
                        f"signal {-rc}" if rc < 0 else rc)
            w.restarts += 1
            self._spawn(w)
            try:
                self._await_ready(w, time.monotonic() + self.READY_TIMEOUT)
            except RuntimeError as exc:
                log.error("%s", exc)

    def pids(self) -> list[int]:
        return [w.proc.pid for w in self._workers if w.proc is not None and w.proc.poll() is None]

    def stop(self, timeout: float) -> bool:
        """SIGTERM to every receiver (they finish their associations), wait, SIGKILL leftovers;
        then the IPC server stops. True if every receiver exited cleanly in time."""
        self._stopping = True
        deadline = time.monotonic() + timeout
        for listener in (self._listen, self._tls_listen):
            if listener is not None:
                # Our copy of the listening socket; the port closes when the receivers drop theirs.
                listener.close()
        self._listen = self._tls_listen = None
        for w in self._workers:
            if w.proc is not None and w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        clean = True
        for w in self._workers:
            if w.proc is None:
                continue
            try:
                rc = w.proc.wait(max(0.1, deadline - time.monotonic()) + 2.0)
                clean = clean and rc == 0
            except subprocess.TimeoutExpired:
                log.warning("DIMSE receiver %d (pid %d) did not stop; killing it", w.index, w.proc.pid)
                w.proc.kill()
                w.proc.wait()
                clean = False
        self.ipc.stop()
        shutil.rmtree(self._ipc_dir, ignore_errors=True)
        return clean

    # internals
    def _spawn(self, w: _Worker) -> None:
        assert self._listen is not None
        spec = WorkerSpec(
            index=w.index, listen_fd=self._listen.fileno(), ipc_path=str(self.ipc.path),
            writer_host=self.writer_addr[0], writer_port=self.writer_addr[1], dimse=asdict(self.dimse),
            peers=[p.as_dict() for p in self.peers], data_dir=str(self.data_dir),
            shutdown_timeout=self.shutdown_timeout,
            log_level=logging.getLogger().getEffectiveLevel(),
            tls_listen_fd=self._tls_listen.fileno() if self._tls_listen is not None else -1,
        )
        fds = [self._listen.fileno()] + ([spec.tls_listen_fd] if spec.tls_listen_fd >= 0 else [])
        # A new interpreter (not fork): only the listening sockets are inherited; stdout is the
        # readiness pipe, stderr the server's log.
        w.proc = subprocess.Popen(
            [sys.executable, "-m", "dicomvault.dimse.workers_proc", json.dumps(asdict(spec), default=str)],
            pass_fds=fds, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL,
        )
        w.started = time.monotonic()

    def _await_ready(self, w: _Worker, deadline: float) -> None:
        assert w.proc is not None and w.proc.stdout is not None
        out = w.proc.stdout
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or w.proc.poll() is not None:
                raise RuntimeError(f"DIMSE receiver {w.index} (pid {w.proc.pid}) did not start "
                                   f"(exit {w.proc.poll()})")
            ready, _, _ = select.select([out], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(out.fileno(), 64)
                if not chunk:
                    continue  # EOF: the poll above reports the exit
                line += chunk
        out.close()  # a receiver writes only its ready line to stdout
        w.proc.stdout = None


def run_with_workers(engine: Engine, config: Any, server: Any, *, shutdown_timeout: float,
                     ready: Callable[[str, int], None] | None, stop: threading.Event,
                     before_stop: Callable[[], None] | None = None) -> bool:
    """The writer's part of `serve()` with workers: `server` (a DimseServer on loopback, not yet
    started) serves what the receivers relay; `before_stop` (the other services sharing the
    engine) runs first at shutdown, as in-process. Returns True if everything stopped cleanly."""
    try:
        whost, wport = server.start()
        pool = WorkerPool(engine, config.dimse, config.peers, (whost, wport), shutdown_timeout,
                          audit=server.audit)
        try:
            host, port = pool.start()
        except BaseException:
            server.stop(1.0)
            raise
    except BaseException:
        if before_stop is not None:
            before_stop()
        raise
    if ready is not None:
        ready(host, port)
    try:
        while not stop.wait(0.5):
            pool.supervise()
    finally:
        if before_stop is not None:
            before_stop()
        t0 = time.monotonic()
        # Receivers first: their in-flight stores and relayed associations need the writer.
        clean = pool.stop(shutdown_timeout)
        clean = server.stop(max(1.0, shutdown_timeout - (time.monotonic() - t0))) and clean
    return clean

