"""Our pynetdicom associations: `ArchiveAE` makes every association it requests or accepts an
`ArchiveAssociation`, with our DUL (dul.py), DIMSE provider (encoded.py) and socket (transport.py).

How they get in, per association and without touching pynetdicom's classes or modules:
- acceptors: `ArchiveAE.make_server` (which `start_server` calls, and workers_proc.py calls with
  its own server class) passes `request_handler=ArchiveRequestHandler` to pynetdicom's
  `AssociationServer`; its `_create_association` takes the association pynetdicom configured and
  makes it ours (`ArchiveAssociation.adopt`) before it starts, and its `handle` starts the DUL
  thread before the association thread (the A-ASSOCIATE-RQ is read sooner). For a non-blocking
  `start_server` the server class is `InlineHandlerServer`: the handler runs in the accepting
  thread, not in a thread of its own.
- requestors (our SCUs, forwarding, storage commitment reports, pynetdicom's C-MOVE
  sub-associations, which it requests through the serving AE): `AE.associate` builds a plain
  `Association` inline and hands it, unstarted, to `AE._create_socket`; `ArchiveAE._create_socket`
  adopts it there and returns our socket.
Adopting (switching the unstarted association's class to `ArchiveAssociation` and giving it our
providers) is the seam because pynetdicom names `Association` directly in both places; the
alternative was copying `AE.associate` (~70 lines) and `RequestHandler._create_association`.

`ArchiveAssociation` differs from pynetdicom's `Association` in:
- `_run_reactor`, with `tuned` (`[dimse] tuned_reactor`, the default): waits on its DIMSE message
  queue's condition (woken by the DUL when a message or an ACSE primitive arrives, or by a
  send_*() pausing it: `_CheckpointEvent`) instead of sleeping 1 ms per loop; it still loops at
  least every `ASSOC_IDLE_WAIT` seconds to check timeouts and the DUL thread. Without `tuned`,
  pynetdicom's 1 ms poll. Either way with the pause fix below.
- `send_c_store` sends a `PreEncodedDataset` (retrieve.StoredInstance) as its stored bytes.
- with `tuned`, the event-driven DUL (dul.py), and large socket reads (transport.py); the DIMSE
  provider (encoded.py) encodes C-STORE requests and plain responses itself.

The pause fix (a bug fix, not tuning, so in both modes): `_run_reactor` re-checks the pause
checkpoint after passing it. pynetdicom's handshake (a `send_*()` clears `_reactor_checkpoint`,
then spins until `_is_paused`) is racy: `_is_paused` stays True from the reactor's previous pass
until the reactor thread runs again, so a `send_*()` issued right after the previous exchange
ended (which set the checkpoint) sees a stale True, sends its request, and the reactor, finishing
that pass, takes the response off the queue and drops it ("Received unexpected C-ECHO service
message"); the requestor then waits out its DIMSE timeout. That is the stall of a pynetdicom SCU
running many requests back to back on one association (bench/find_dv.py: 60 s), with either
reactor; bench/dimse_stress.py hits it within seconds. Upstream: pydicom/pynetdicom#875 (closed
as a question). tests/dimse/test_dimse_reactor_pause.py forces the interleaving.

Every pynetdicom private name these classes override or use is listed in pynetdicom_private.py
and checked by tests/dimse/test_pynetdicom_private.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from ssl import SSLContext
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AddressInformation, RequestHandler, ThreadedAssociationServer

from ..refusals import REFUSALS
from .accept_memo import clone_context
from .admission import ArchiveACSE
from .dul import EventDrivenDUL
from .encoded import ArchiveDIMSEProvider, PreEncodedDataset
from .transport import ArchiveSocket

# the logger pynetdicom's association logs to: the messages of the copied loop keep their name
_ASSOC_LOG = logging.getLogger("pynetdicom.assoc")
_DV_LOG = logging.getLogger("dicomvault.dimse")

# Upper bound of the tuned reactor's idle wait (seconds). Events end it at once; this only bounds
# how late a network timeout or a silently dead DUL thread is noticed.
ASSOC_IDLE_WAIT = 0.05
POLL_DELAY = 0.001  # pynetdicom's own wait before every look at the message queue


class _CheckpointEvent(threading.Event):
    """pynetdicom's reactor checkpoint, whose clear() (a send_*() pausing the reactor before it
    sends a request: every C-MOVE sub-operation, every `dicomvault send`) also wakes the reactor's
    idle wait, so the pause takes effect at once instead of after the next ASSOC_IDLE_WAIT."""

    def __init__(self, assoc: Association, is_set: bool) -> None:
        super().__init__()
        self._assoc = assoc
        if is_set:
            self.set()

    def clear(self) -> None:
        super().clear()
        cond = self._assoc.dimse.msg_queue.not_empty
        with cond:
            cond.notify_all()


class ArchiveAssociation(Association):
    """See the module docstring. Made by `ArchiveAE` (adopted), or directly."""

    tuned: bool

    def __init__(self, ae: ApplicationEntity, mode: str, *, tuned: bool = True) -> None:
        super().__init__(ae, mode)
        self._use_archive_providers(tuned)

    @classmethod
    def adopt(cls, assoc: Association, *, tuned: bool) -> ArchiveAssociation:
        """`assoc` (just made by pynetdicom, not started, no socket yet) becomes ours."""
        if assoc.is_alive() or assoc.dul.is_alive() or assoc.dul.socket is not None:
            raise RuntimeError("only an association that has not started can be adopted")
        assoc.__class__ = cls
        adopted: ArchiveAssociation = assoc  # type: ignore[assignment]
        adopted._use_archive_providers(tuned)
        return adopted

    def _use_archive_providers(self, tuned: bool) -> None:
        self.tuned = tuned
        # A fresh DUL either way: one made before adoption may hold an acceptor's transport event.
        self.dul = EventDrivenDUL(self) if tuned else DULServiceProvider(self)
        self.dimse = ArchiveDIMSEProvider(self, fast_encoding=tuned)
        # who gets in and which contexts they keep (admission.py): the same in both modes
        self.acse = ArchiveACSE(self)
        # pynetdicom's setters pass these on to the DUL's timers, set on its own DUL in __init__
        self.acse_timeout = self.acse_timeout
        self.network_timeout = self.network_timeout

    # -- sending stored objects as they are -----------------------------------------------------------

    def send_c_store(self, dataset: str | Path | Dataset, msg_id: int = 1, priority: int = 2,
                     originator_aet: str | None = None, originator_id: int | None = None) -> Dataset:
        """pynetdicom's send_c_store; a `PreEncodedDataset` goes out as its own bytes in the
        context pynetdicom picks (its encoding of the placeholder is replaced by the DIMSE
        provider). A data set that cannot be had raises ValueError before anything is sent, as
        pynetdicom does for one it cannot encode (a C-GET/C-MOVE counts a failed sub-operation)."""
        if isinstance(dataset, PreEncodedDataset) and self.is_established:
            context = self._get_valid_context(dataset.SOPClassUID, dataset.file_meta.TransferSyntaxUID, "scu",
                                              allow_conversion=True)
            ts = context.transfer_syntax[0]
            raw = dataset.encoded(ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated)
            if raw is None:
                raise ValueError("Failed to encode the supplied dataset")
            uid = str(dataset.SOPInstanceUID)
            provider: ArchiveDIMSEProvider = self.dimse  # type: ignore[assignment]
            provider.pre_encoded[uid] = raw
            try:
                return super().send_c_store(dataset, msg_id, priority, originator_aet, originator_id)
            finally:
                provider.pre_encoded.pop(uid, None)  # not sent (an exception before send_msg)
        return super().send_c_store(dataset, msg_id, priority, originator_aet, originator_id)

    # -- the reactor --------------------------------------------------------------------------------

    def _run_reactor(self) -> None:
        if self.tuned:
            # Swapped before the loop runs: a send_*() reads the attribute each time it pauses us.
            self._reactor_checkpoint = _CheckpointEvent(self, self._reactor_checkpoint.is_set())
            self._reactor_loop(self._idle_wait)
        else:
            self._reactor_loop(lambda: time.sleep(POLL_DELAY))

    def _idle_wait(self) -> None:
        """pynetdicom: time.sleep(0.001) before every look at the message queue. Here: until a
        DIMSE message is queued, the DUL hands up an ACSE primitive, a send_*() pauses the reactor
        (_CheckpointEvent), or ASSOC_IDLE_WAIT passes."""
        q = self.dimse.msg_queue
        acse = self.dul.to_user_queue
        with q.not_empty:
            # The DUL's ACSE queue (A-RELEASE, A-ABORT) is looked at under the same lock as the
            # DIMSE queue: dul._NotifyingQueue puts its primitive first and then notifies under
            # this lock, so a primitive put after the loop's last release/abort check is seen here
            # or wakes the wait. Without it, ~8 % of releases waited the whole ASSOC_IDLE_WAIT
            # (50 ms) for an A-RELEASE already queued (measured with echoscu's request replayed).
            if not q._qsize() and not acse.qsize() and self._reactor_checkpoint.is_set():
                q.not_empty.wait(ASSOC_IDLE_WAIT)
            if q._qsize():
                # Queue.put wakes one waiter. If that was us but a send_*() in another thread waits
                # for this message (we are about to stop at the checkpoint), pass the wake-up on,
                # or it would sleep until its DIMSE timeout (measured: exactly that, without it).
                q.not_empty.notify()

    def _reactor_loop(self, idle_wait: Callable[[], None]) -> None:
        """pynetdicom 3.0.4's Association._run_reactor, copied (no smaller seam: the sleep and the
        checkpoint are inline in its loop); the per-loop sleep is `idle_wait`, and the loop goes
        back to its checkpoint if a send_*() paused it after it had passed (the pause fix)."""
        self._is_paused = False
        while not self._kill:
            # dicomvault: wait for an event (tuned), or sleep 1 ms (pynetdicom's poll)
            idle_wait()

            # A race condition may occur if the Acceptor uses the send_*()
            #   methods as the received DIMSE message may be taken off the
            #   queue before the send_*() method gets to it, so we allow
            #   the reactor to be paused
            # We also need to be careful that the reactor actually stops
            #   before attempting DIMSE or ACSE messaging
            # Will block until `_reactor_checkpoint` is set()
            self._is_paused = True
            self._reactor_checkpoint.wait()
            self._is_paused = False
            # dicomvault (pause fix): a send_*() that cleared the checkpoint after it was set for
            # this pass may have read the `_is_paused = True` just above, before this thread ran
            # again, and gone on to send its request: it owns the queues now, and the response it
            # waits for must not be taken (and dropped as unexpected) by _serve_request below.
            # `_is_paused` is False from here on, so a send_*() clearing the checkpoint later waits
            # for the next pass; one clearing it earlier is seen by this check.
            if not self._reactor_checkpoint.is_set():
                continue

            # Check with the DIMSE provider to see if a completely decoded
            #   message is available
            context_id, msg = self.dimse.get_msg(block=False)
            if msg:
                self._serve_request(msg, context_id)  # type: ignore[arg-type]

            # Check for release request from the peer
            if self.is_established and self.acse.is_release_requested():
                # Send A-RELEASE response
                self.acse.send_release(is_response=True)
                _ASSOC_LOG.info("Association Released")
                self.is_released = True
                self.is_established = False
                evt.trigger(self, evt.EVT_RELEASED, {})
                self.kill()
                return

            # Check for abort from either locally or the peer
            if self.acse.is_aborted():
                log_msg = "Association Aborted"
                if self.acse.is_aborted("a-p-abort"):
                    log_msg += " (A-P-ABORT)"
                _ASSOC_LOG.info(log_msg)
                # Ensure that EVT_ASCE_RECV fires for subscribers
                self.dul.receive_pdu(wait=False)
                self.is_aborted = True
                self.is_established = False
                evt.trigger(self, evt.EVT_ABORTED, {})
                self.kill()
                return

            # Check if the DULServiceProvider thread is still running
            #   DUL.is_alive() is inherited from threading.thread
            if not self.dul.is_alive():
                self.kill()
                return

            # Check if network_timeout has expired
            if self.dul.idle_timer_expired():
                _ASSOC_LOG.error("Network timeout reached")
                # dicomvault: said with the peer and the setting, and counted (/metrics)
                network_timeout_reached(self)
                if self.network_timeout_response == "A-RELEASE":
                    self._is_paused = True
                    self._reactor_checkpoint.wait()
                    self.release()
                    self._is_paused = False
                else:
                    self.abort()

                self.kill()
                return


def network_timeout_reached(assoc: Association) -> None:
    remote = assoc.requestor if assoc.is_acceptor else assoc.acceptor
    _DV_LOG.warning("association with %s@%s:%s dropped: nothing received for [dimse] network_timeout = %g s",
                    str(remote.ae_title).strip() or "?", remote.address, remote.port, assoc.network_timeout)
    if assoc.is_acceptor:
        REFUSALS.count("association", "network_timeout")


class ArchiveRequestHandler(RequestHandler):
    """pynetdicom's request handler; the association it configures becomes an ArchiveAssociation
    (tuned as the serving AE says) with our socket around the accepted connection."""

    def _create_association(self) -> Association:
        assoc = super()._create_association()  # configured, handlers bound, pynetdicom's socket set
        tuned = bool(getattr(self.ae, "tuned", True))
        # The socket pynetdicom set goes with the DUL adopt() replaces (its transport connection
        # event is on that DUL's queue); ours, around the same connection, queues it on the new one.
        assoc.dul.socket = None
        adopted = ArchiveAssociation.adopt(assoc, tuned=tuned)
        adopted.set_socket(ArchiveSocket(adopted, client_socket=self.request, big_reads=tuned))
        return adopted

    def handle(self) -> None:
        """pynetdicom's RequestHandler.handle (make the association, EVT_CONN_OPEN, start it),
        with the DUL thread started here, before the association thread, instead of by it: the
        A-ASSOCIATE-RQ, usually sent right after the connection, is read one thread start sooner."""
        assoc = self._create_association()
        evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
        assoc.dul.start()
        assoc._started_dul = True
        assoc.start()


class InlineHandlerServer(ThreadedAssociationServer):
    """pynetdicom's threaded association server whose request handler runs in the accepting
    thread, as in its blocking server, instead of in a thread started for it. The handler only
    configures the association and starts its thread (RequestHandler.handle): a thread more per
    association, and one more hand-over before the A-ASSOCIATE-RQ is read, for nothing (on a
    loaded 2-core machine each hand-over waits its turn for a core)."""

    def process_request(self, request: Any, client_address: Any) -> None:
        self.process_request_thread(request, client_address)


class SupportedContexts(list):  # type: ignore[type-arg]
    """An acceptor's supported presentation contexts whose deep copy (one per association, made by
    pynetdicom's RequestHandler) copies each context's fields and shares its UIDs (immutable str)."""

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return [clone_context(cx) for cx in self]


class ArchiveAE(ApplicationEntity):
    """pynetdicom's AE whose associations, requested or accepted, are ArchiveAssociations.

    `tuned`: event-driven reactors, native reads and message encoding (`[dimse] tuned_reactor`);
    False keeps pynetdicom's polling reactors and encoding (with the pause fix).
    `fast_handlers`: set by fastpath.enable(): the archive's native C-STORE/C-FIND/C-GET/C-MOVE
    handlers for acceptor associations (tuned only)."""

    def __init__(self, ae_title: str = "PYNETDICOM", *, tuned: bool = True) -> None:
        super().__init__(ae_title)
        self.tuned = tuned
        self.fast_handlers: tuple[Any, ...] | None = None
        # `[dimse] max_object_size` for C-STOREs we accept (0 = none): limits.py, fastpath.py
        self.max_object_size = 0

    def make_server(self, address: Any, *args: Any, **kwargs: Any) -> Any:
        # pynetdicom passes keyword arguments it does not know on to the server class, and its
        # AssociationServer takes the request handler class (start_server calls this method).
        kwargs.setdefault("request_handler", ArchiveRequestHandler)
        if kwargs.get("server_class") is ThreadedAssociationServer:  # start_server(block=False)
            kwargs["server_class"] = InlineHandlerServer
        server = super().make_server(address, *args, **kwargs)
        # pynetdicom's request handler deep-copies these for every association (0.8 ms for ours:
        # each UID rebuilt and re-validated); the copy is the same with the UIDs shared.
        server.contexts = SupportedContexts(server.contexts)
        return server

    def _create_socket(self, assoc: Association, address: AddressInformation,
                       tls_args: tuple[SSLContext, str] | None) -> ArchiveSocket:
        # AE.associate's one factory hook, called with its new, unstarted association.
        ArchiveAssociation.adopt(assoc, tuned=self.tuned)
        sock = ArchiveSocket(assoc, address=address, big_reads=self.tuned)
        sock.tls_args = tls_args
        return sock


def requestor_ae(title: str) -> ArchiveAE:
    """An AE for associations we request to other nodes (forwarding): our event-driven
    associations, C-STORE responses read natively, pynetdicom's reactor pause fixed."""
    return ArchiveAE(title, tuned=True)
