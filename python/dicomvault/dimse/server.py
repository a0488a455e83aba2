"""The DIMSE SCP: AE setup, start, graceful stop, and `serve()` behind `dicomvault serve`.

Services: Verification; Storage (every storage SOP class, any transfer syntax the caller proposes:
pynetdicom's unrestricted storage mode accepts the first proposed syntax of every storage-like
abstract syntax, private ones included, which is what an archive wants); Patient Root and Study
Root Query/Retrieve FIND/MOVE/GET; Storage Commitment Push Model; Modality Worklist FIND
(worklist.py) and Modality Performed Procedure Step N-CREATE/N-SET (mpps.py).
"""

from __future__ import annotations

import gc
import logging
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from typing import Any

from pynetdicom import _config, evt
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StorageCommitmentPushModel,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
    Verification,
)
from pynetdicom.transport import ThreadedAssociationServer

from ..audit.dimse import DimseAudit, Refusals
from ..audit.log import APPLICATION_START, APPLICATION_STOP, SUCCESS, AuditLog
from ..audit.sender import start_sender
from ..config import Config, DimseConfig, PeerConfig
from ..engine import Engine
from ..integration.mpps import MppsService
from ..integration.worklist_store import WorklistStore
from ..refusals import REFUSALS
from . import fastpath, tls
from .admission import relay_origins
from .association import ArchiveAE
from .commitment import CommitmentService
from .common import calling_ae, cap_segment, listen_socket, log, peer_desc, requestor_host, set_nodelay
from .dul import acse_expired, stalled
from .encoded import encoders_verified
from .fastretrieve import fast_get, fast_move
from .find import fast_find, handle_find
from .limits import association_reason, per_peer_limit
from .mpps import MppsHandlers
from .negotiation_cache import memoise_ui_validation
from .peers import Peers
from .retrieve import handle_get, handle_move
from .store import fast_store, handle_store
from .tls_relay import tls_acceptor
from .worklist import handle_worklist_find

SERVICE_CONTEXTS = (
    Verification,
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
    StorageCommitmentPushModel,
    ModalityWorklistInformationFind,
    ModalityPerformedProcedureStep,
)
DEFAULT_SHUTDOWN_TIMEOUT = 30.0
# ids of acceptor associations that got established (set.add/discard are atomic under the GIL)
_established: set[int] = set()


def configure_pynetdicom() -> None:
    """Process-wide pynetdicom settings the server relies on (its documented `_config` options)."""
    # Storage: accept every storage-like context without listing ~170 SOP classes x ~40
    # syntaxes, which pynetdicom deep-copies per association (~110 ms each, measured).
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    # Negotiating storescu's ~120 proposed contexts re-validated each UID several times: the
    # verdicts are remembered (negotiation_cache.py).
    memoise_ui_validation()
    # Our own encoders are checked against pynetdicom's once, now, not in the first association.
    encoders_verified()
    # pynetdicom's standard handlers format every PDU and DIMSE message for its log, and the
    # identifier logging decodes identifiers a second time: CPU on the ingest path for nothing.
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


def build_ae(d: DimseConfig, peers: Peers, contexts: tuple[str, ...]) -> ArchiveAE:
    """The AE every DIMSE listener of ours uses (the server, and the receiver processes of
    workers.py): same title, limits, timeouts and caller policy."""
    configure_pynetdicom()
    # Our associations, requested or accepted (association.py): event-driven reactors and the
    # native paths with tuned_reactor (the default), pynetdicom's polling reactors without;
    # pynetdicom's reactor pause fixed either way.
    ae = ArchiveAE(d.ae_title, tuned=d.tuned_reactor)
    ae.maximum_pdu_size = d.max_pdu
    ae.maximum_associations = d.max_associations
    ae.max_object_size = d.max_object_size  # read by the C-STORE paths (limits.py, fastpath.py)
    ae.acse_timeout = d.acse_timeout
    ae.dimse_timeout = d.dimse_timeout
    ae.network_timeout = d.network_timeout  # an idle association is dropped (aborted)
    # every caller is checked against the peers (admission.py), unknown ones too: a declared
    # peer's title is bound to its address whatever accept_unknown_callers says
    ae.admission = peers.admit
    for uid in contexts:
        ae.add_supported_context(uid)
    return ae


def limit_handlers(d: DimseConfig) -> list[tuple[Any, Callable[..., Any]]]:
    """The event handlers of the limits every listener of ours applies (server and receivers)."""
    return [(evt.EVT_REQUESTED, per_peer_limit(d.max_associations_per_peer))]


def drain(server: ThreadedAssociationServer, deadline: float, extra: Callable[[], int] = lambda: 0) -> bool:
    """After `server.shutdown()`: waits until no established association (and no `extra()` work)
    is left or the deadline passes, then aborts what remains. True if nothing was aborted."""

    def in_flight() -> list[Any]:
        # Only established associations carry work. An acceptor thread whose connection
        # never became an association (a port probe, garbage) lingers until pynetdicom's
        # ACSE timeout fires (a daemon thread whose DUL has already stopped: it does not hold
        # up the exit); waiting for it would only delay the shutdown.
        return [a for a in server.active_associations if a.is_established]

    active = in_flight()
    if active or extra():
        log.info("waiting up to %.0f s for %d active association(s)",
                 max(0.0, deadline - time.monotonic()), len(active) + extra())
    while (active or extra()) and time.monotonic() < deadline:
        time.sleep(0.05)
        active = in_flight()
    clean = not active and not extra()
    for assoc in active:
        log.warning("aborting association with %s at shutdown", str(assoc.requestor.ae_title).strip())
        assoc.abort()
    return clean


class DimseServer:
    """One listening AE on an open engine. `start()` returns once the port is bound."""

    def __init__(self, engine: Engine, config: Config, *, trust_relays: bool = False) -> None:
        self.engine = engine
        self.config = config
        d = config.dimse
        self.peers = Peers(config.peers, config.data_dir, accept_unknown=d.accept_unknown_callers,
                           our_title=d.ae_title)
        ae = build_ae(d, self.peers, SERVICE_CONTEXTS)
        # behind worker processes (an internal loopback listener only they use): they checked
        # each caller's address and certificate at the edge
        ae.trust_relays = trust_relays
        # ATNA records of stores (one per caller's burst of a study) and queries (audit/dimse.py)
        self.audit = DimseAudit(AuditLog(config.data_dir), self._patient_of)
        if d.fast_path and d.tuned_reactor:
            fastpath.enable(ae, fast_store(engine, self.audit),
                            fast_find(engine, d.ae_title, self.audit, max_results=d.max_query_results),
                            fast_get(engine, self.audit, d.pending_interval),
                            fast_move(engine, self.peers, d.ae_title, self._tls_client, self.audit,
                                      d.pending_interval))
        self.ae = ae
        self.commitment = CommitmentService(engine, ae, self.peers, d.ae_title, self._connect)
        self.worklist = WorklistStore(engine.index)
        self.mpps = MppsHandlers(MppsService(self.worklist), engine.ensure_writable)
        self._server: ThreadedAssociationServer | None = None
        self._tls_listen: socket.socket | None = None
        self._tls_thread: threading.Thread | None = None
        self._tls_stop = threading.Event()
        self._tls_active = [0]  # TLS relays in progress
        self._tls_lock = threading.Lock()
        self._tls_ctx: ssl.SSLContext | None = None

    def _patient_of(self, sop_uid: str) -> str | None:
        rec = self.engine.instance(sop_uid)
        return (rec.patient_id or None) if rec is not None else None

    def _tls_client(self) -> ssl.SSLContext:
        """Our client side of DICOM TLS, made once (peers verified against tls_ca, else the
        system's roots, as tls.associate_args does for pynetdicom's associations)."""
        if self._tls_ctx is None:
            self._tls_ctx = tls.client_context(self.config.dimse)
        return self._tls_ctx

    def _connect(self, peer: PeerConfig) -> dict[str, Any]:
        return tls.associate_args(peer, self.config.dimse)

    def _find(self, d: DimseConfig) -> Callable[[Any], Any]:
        """The C-FIND handler: the worklist's for its model, the archive's for the others."""
        archive = partial(handle_find, engine=self.engine, our_ae=d.ae_title, audit=self.audit,
                          max_results=d.max_query_results)

        def find(event: Any) -> Any:
            if str(event.request.AffectedSOPClassUID) == ModalityWorklistInformationFind:
                return handle_worklist_find(event, self.worklist, self.audit)
            return archive(event)

        return find

    def _handlers(self) -> list[tuple[Any, Callable[..., Any]]]:
        d = self.config.dimse
        return [
            (evt.EVT_CONN_OPEN, set_nodelay),
            (evt.EVT_C_STORE, partial(handle_store, engine=self.engine, audit=self.audit)),
            (evt.EVT_C_FIND, self._find(d)),
            (evt.EVT_C_GET, partial(handle_get, engine=self.engine, audit=self.audit)),
            (evt.EVT_C_MOVE, partial(handle_move, engine=self.engine, peers=self.peers, max_pdu=d.max_pdu,
                                     connect=self._connect, audit=self.audit)),
            (evt.EVT_N_ACTION, self.commitment.handle_n_action),
            (evt.EVT_N_CREATE, self.mpps.n_create),
            (evt.EVT_N_SET, self.mpps.n_set),
            (evt.EVT_ESTABLISHED, _on_established),
            (evt.EVT_CONN_CLOSE, _log_close),
            (evt.EVT_REJECTED, partial(_log_rejected, audit=self.audit)),
            (evt.EVT_ABORTED, _log_event("association aborted", logging.WARNING)),
            *limit_handlers(d),
        ]

    def start(self) -> tuple[str, int]:
        d = self.config.dimse
        server = self.ae.start_server((d.host, d.port), block=False, evt_handlers=self._handlers())
        assert server is not None  # non-blocking start returns the server
        cap_segment(server.socket, d.tcp_max_segment)  # read at each SYN: in time for every caller
        self._server = server
        host, port = server.server_address[:2]
        log.info("DIMSE SCP %s listening on %s:%d (max PDU %d, max %d associations, %d per peer, %s callers)",
                 d.ae_title, host, port, d.max_pdu, d.max_associations, d.max_associations_per_peer,
                 "any" if d.accept_unknown_callers else f"only the {len(self.peers)} known")
        if d.tls_port:
            # TLS is terminated in front of the plain listener and relayed to it (tls_relay.py),
            # so TLS associations take the same native path as plain ones.
            self._tls_listen = listen_socket(d.host, d.tls_port, d.tcp_max_segment)
            self._tls_stop.clear()
            scp = ("127.0.0.1" if host in ("0.0.0.0", "") else "::1" if host == "::" else host, port)
            reloader = tls.listener_contexts(d)
            self._tls_thread = threading.Thread(
                target=tls_acceptor, name="dv-tls-accept", daemon=True,
                args=(self._tls_listen, reloader.context(), scp, float(self.ae.acse_timeout or 30),
                      self._tls_stop, self._tls_active, self._tls_lock, reloader.context),
                kwargs={"admit": self.peers.admit, "origins": relay_origins, "audit": self.audit})
            self._tls_thread.start()
            log.info("DICOM TLS listening on %s:%d (%s)", d.host, d.tls_port,
                     "callers need a certificate signed by " + str(d.tls_ca) if d.tls_ca
                     else "no client certificate required")
        return str(host), int(port)

    def _stop_tls(self, deadline: float) -> bool:
        """Stops accepting TLS connections and waits (until `deadline`) for the relays to end:
        their associations end through the plain listener's drain."""
        if self._tls_thread is None:
            return True
        self._tls_stop.set()
        self._tls_thread.join(2.0)
        self._tls_thread = None
        if self._tls_listen is not None:
            self._tls_listen.close()
            self._tls_listen = None
        while self._tls_active[0] and time.monotonic() < deadline:
            time.sleep(0.05)
        return not self._tls_active[0]

    def stop(self, timeout: float = DEFAULT_SHUTDOWN_TIMEOUT) -> bool:
        """Stops accepting, lets active associations finish (up to `timeout`), aborts the rest,
        waits for pending commitment reports. True if nothing had to be aborted."""
        server = self._server
        if server is None:
            return True
        self._server = None
        deadline = time.monotonic() + timeout
        self._tls_stop.set()  # no new TLS connections; the relays end with their associations
        server.shutdown()  # stops accepting and closes the listening socket; associations go on
        clean = drain(server, deadline)
        clean = self._stop_tls(deadline) and clean
        self.commitment.join(max(1.0, deadline - time.monotonic()))
        self.audit.close()
        return clean


def _log_event(what: str, level: int) -> Callable[[Any], None]:
    def handler(event: Any) -> None:
        log.log(level, "%s: %s", what, peer_desc(event))

    return handler


def rejection_reason(event: Any) -> str:
    """Why our AE rejected an association, in the words an operator acts on. pynetdicom keeps no
    record of the A-ASSOCIATE-RJ reason on the acceptor's side: a refused caller carries our
    admission verdict (admission.py); otherwise it is worked out again from the checks its ACSE
    made, the association limit last (it overrides the others)."""
    assoc = event.assoc
    verdict = getattr(assoc, "verdict", None)
    if verdict is not None and verdict.refused is not None:
        return f"{verdict.refused}; {verdict.hint}"
    ae = assoc.ae
    active = sum(1 for a in ae.active_associations if a.is_acceptor)
    if active > ae.maximum_associations:
        return (f"local limit exceeded: {active - 1} associations active, [dimse] max_associations = "
                f"{ae.maximum_associations}")
    return "the request could not be accepted (no acceptable presentation context or negotiation item)"


def _log_rejected(event: Any, audit: Refusals | None = None) -> None:
    reason = rejection_reason(event)
    REFUSALS.count("association", association_reason(reason))
    log.warning("association rejected: %s: %s", peer_desc(event), reason)
    if audit is not None:
        audit.refused(calling_ae(event), requestor_host(event.assoc), reason)


def _on_established(event: Any) -> None:
    _established.add(id(event.assoc))
    log.debug("association established: %s", peer_desc(event))


def _log_close(event: Any) -> None:
    """A connection that closes without ever carrying an association was refused at the PDU
    level (garbage bytes, a malformed A-ASSOCIATE-RQ, a port scanner): worth one line."""
    assoc = event.assoc
    was_established = id(assoc) in _established
    _established.discard(id(assoc))
    if assoc.is_acceptor and not was_established and not assoc.is_rejected and acse_expired(assoc):
        REFUSALS.count("association", "acse_timeout")
        log.warning("connection from %s dropped: no A-ASSOCIATE-RQ within [dimse] acse_timeout = %g s",
                    peer_desc(event), assoc.acse_timeout)
    elif assoc.is_acceptor and not was_established and not assoc.is_rejected and not stalled(assoc):
        log.warning("connection from %s closed without an association (malformed or no PDU)",
                    peer_desc(event))
    else:
        log.debug("connection closed: %s", peer_desc(event))


def _tune_gc() -> None:
    """Once everything long-lived exists: move it out of the collector's sight (gc.freeze) and
    collect the young generation less often. Why: every stored object allocates a few hundred
    short-lived containers (index records, rows), so CPython's cyclic collector ran every ~700
    allocations and re-walked the whole heap on its older generations: 4.7 % of the CPU of a
    4-thread ingest (perf, engine only), ~0 % after this. Reference counting still frees
    everything non-cyclic at once; cycles are still collected, in larger batches."""
    gc.freeze()
    gc.set_threshold(10_000, 50, 50)


def serve(config: Config, *, shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
          ready: Callable[[str, int], None] | None = None,
          services: Callable[[Engine], Callable[[], None]] | None = None) -> int:
    """Runs the archive until SIGTERM/SIGINT; returns the process exit code (0 = clean).

    `services(engine)` starts what shares the engine (HTTP, replication, forwarding) and returns
    the function that stops them; they stop before the DIMSE SCP."""
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s received, shutting down", signal.Signals(signum).name)
        stop.set()

    if not log.isEnabledFor(logging.DEBUG):
        # pynetdicom narrates every association at INFO; its warnings and errors still show.
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)
    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        tiers = config.tiering.tiers if config.tiering.configured else None
        with Engine(config.data_dir, tiers=tiers, reserve=config.reserve, verify_reads=config.verify_reads,
                    delete_on_retention_expired=config.iocm.delete_on_retention_expired) as engine:
            audit = AuditLog(config.data_dir)
            # Started before this run's first record and stopped after its last (application-stop),
            # so a repository that is up gets the whole run. On an exception the process ends and
            # what was not confirmed is sent again by the next start.
            sender = start_sender(config.data_dir, config.audit, config.dimse.ae_title)
            who = {"user": f"dicomvault:{config.dimse.ae_title}", "client": "local"}
            detail = {"pid": os.getpid(), "dimse_port": config.dimse.port, "workers": config.dimse.workers}
            audit.record(APPLICATION_START, SUCCESS, **who, detail=detail)
            workers = config.dimse.workers
            if workers > 1:
                # The full SCP listens on loopback only; receiver processes own the public port
                # and relay to it whatever is not C-STORE/C-ECHO (see workers.py).
                from .workers import run_with_workers

                # The receivers terminate TLS too (tls_port), and relay its associations here.
                internal = replace(config.dimse, host="127.0.0.1", port=0, tls_port=0)
                server = DimseServer(engine, replace(config, dimse=internal), trust_relays=True)
            else:
                server = DimseServer(engine, config)
            stop_services = services(engine) if services is not None else None
            if workers > 1:
                clean = run_with_workers(engine, config, server, shutdown_timeout=shutdown_timeout,
                                         ready=ready, stop=stop, before_stop=stop_services)
            else:
                host, port = server.start()
                _tune_gc()
                if ready is not None:
                    ready(host, port)
                try:
                    while not stop.wait(0.5):
                        pass
                finally:
                    if stop_services is not None:
                        stop_services()
                    clean = server.stop(shutdown_timeout)
            log.info("DIMSE SCP stopped%s; closing the engine", "" if clean else " (associations aborted)")
            audit.record(APPLICATION_STOP, SUCCESS, **who, detail={"pid": os.getpid(), "clean": clean})
            if sender is not None:
                sender.stop()
        return 0
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
