"""The event-driven DICOM Upper Layer of our associations (the tuned reactor).

Why (profiles of `dicomvault serve` under dcmtk storescu, bench/README.md): pynetdicom's DUL
reactor sleeps 1 ms whenever it has nothing to do and only then looks at its socket and its queue
of primitives to send. With four associations its threads (and the association reactors, see
association.py) wake ~8000 times a second, each wake-up re-taking the GIL from the threads doing
real work, and on one association the polls add ~2 ms of latency per object (received -> noticed
-> response noticed -> sent).

`EventDrivenDUL` differs from pynetdicom's `DULServiceProvider` in:
- `run_reactor` waits with `select()` on its socket and a wake-up socket pair instead of sleeping;
  `send_pdu`, `kill_dul` and `stop_dul` poke the wake-up socket, so an outgoing primitive (our
  C-STORE-RSP) leaves at once. Timers are still checked at least every `DUL_IDLE_WAIT` seconds.
- once the association is established (and between two DIMSE messages), the socket is read by
  fastpath.py's native reader instead of pynetdicom's (see that module);
- its `to_user_queue` wakes the association reactor when an ACSE primitive (A-RELEASE, A-ABORT)
  is put on it;
- its state machine (`EncodedPDataStateMachine`) writes encoded.py's pre-framed P-DATA as is, an
  A-ASSOCIATE-AC as accept_memo.py remembers it (encoded once per distinct answer), and hands the
  association a copy of the A-ASSOCIATE-RQ's primitive made once per distinct request;
- an A-ASSOCIATE-RQ that arrived before with the same bytes is not decoded again
  (negotiation_cache.py).
"""

from __future__ import annotations

import logging
import queue
import select
import socket
import ssl
import time
from typing import TYPE_CHECKING, Any, cast

from pynetdicom import evt
from pynetdicom.dul import DULServiceProvider
from pynetdicom.fsm import TRANSITION_TABLE, StateMachine
from pynetdicom.pdu import A_ABORT_RQ, A_ASSOCIATE_RQ

from . import fastpath
from .accept_memo import accepts
from .encoded import EncodedPData
from .negotiation_cache import CachedRequest, associate_rq_cache

if TYPE_CHECKING:
    from pynetdicom.association import Association

    from .fastpath import FastPath

# the logger pynetdicom's DUL logs to: the messages of the copied loop keep their name
_DUL_LOG = logging.getLogger("pynetdicom.dul")

# Upper bound of an idle wait (seconds). Events end the wait at once; this only bounds how late a
# timer (ARTIM, network idle timeout) is noticed.
DUL_IDLE_WAIT = 0.05

# The state machine actions that send a P-DATA request (PS3.8 9.2: Sta6 + Evt9 -> DT-1, Sta8 +
# Evt9 -> AR-7), with the state each leaves the machine in.
P_DATA_ACTIONS = {"DT-1": "Sta6", "AR-7": "Sta8"}
# The action that takes a received A-ASSOCIATE-RQ (PS3.8 9.2: Sta2 + Evt6 -> AE-6 -> Sta3), and the
# one that sends the A-ASSOCIATE-AC (Sta3 + Evt7 -> AE-7 -> Sta6).
REQUEST_ACTION = "AE-6"
REQUEST_NEXT_STATE = "Sta3"
ACCEPT_ACTION = "AE-7"
ACCEPT_NEXT_STATE = "Sta6"
# How often an acceptor waiting for its A-ASSOCIATE-RQ looks whether the connection is still there.
CLOSED_CHECK = 0.05


class EncodedPDataStateMachine(StateMachine):
    """pynetdicom's DUL state machine; a P-DATA request that is an `EncodedPData` (a whole DIMSE
    message framed natively) is written as its bytes, where pynetdicom's DT-1/AR-7 actions would
    build and encode a P-DATA-TF PDU from its fragments; a received A-ASSOCIATE-RQ (AE-6) becomes
    a copy of the primitive made when its bytes were first seen, and an A-ASSOCIATE-AC (AE-7) is
    written as accept_memo.accepts has it. Same transitions, same events."""

    def do_action(self, event: str) -> None:
        action = TRANSITION_TABLE.get((event, self.current_state))
        if action == ACCEPT_ACTION:
            self._send_accept(event)
            return
        if action == REQUEST_ACTION and self._receive_request(event):
            return
        next_state = P_DATA_ACTIONS.get(action or "")
        queued = self.dul.to_provider_queue.queue  # the DUL thread alone takes from it
        if next_state is None or not queued or not isinstance(queued[0], EncodedPData):
            super().do_action(event)
            return
        primitive = self.dul.to_provider_queue.get(False)
        sock = getattr(self.dul.socket, "socket", None)
        if sock is not None:  # closed under us: pynetdicom's _send logs and drops likewise
            try:
                sock.sendall(primitive.encoded)
            except OSError:
                self.dul.event_queue.put("Evt17")  # transport connection closed, as AssociationSocket.send
        evt.trigger(self.dul.assoc, evt.EVT_FSM_TRANSITION,
                    {"action": action, "current_state": self.current_state, "fsm_event": event,
                     "next_state": next_state})
        self.transition(next_state)

    def _receive_request(self, event: str) -> bool:
        """pynetdicom's AE-6 (Sta2 + Evt6: an A-ASSOCIATE-RQ received, handed to the association as
        an A-ASSOCIATE indication), with the primitive copied from the one made when these bytes
        were first received (negotiation_cache.py). False (nothing done: pynetdicom's AE-6 does it,
        with its rejection of another protocol version) unless the queued PDU is that request."""
        dul = cast("EventDrivenDUL", self.dul)
        request = dul.associate_rq
        queued = dul._recv_pdu.queue  # the DUL thread alone takes from it
        if request is None or not queued or queued[0] is not request.pdu:
            return False
        if request.pdu.protocol_version != 0x0001:
            return False
        dul.artim_timer.stop()
        dul._recv_pdu.get(False)
        dul.to_user_queue.put(request.primitive())
        evt.trigger(dul.assoc, evt.EVT_FSM_TRANSITION,
                    {"action": REQUEST_ACTION, "current_state": self.current_state, "fsm_event": event,
                     "next_state": REQUEST_NEXT_STATE})
        self.transition(REQUEST_NEXT_STATE)
        return True

    def _send_accept(self, event: str) -> None:
        """pynetdicom's AE-7 (Sta3 + Evt7: send the A-ASSOCIATE-AC), with the PDU and its bytes
        from accept_memo.accepts when an association before got the same answer."""
        primitive = self.dul.to_provider_queue.get(False)
        try:
            pdu, raw = accepts.encoded(primitive)
            if self.dul.socket is not None:
                self.dul.socket.send(raw)
                evt.trigger(self.dul.assoc, evt.EVT_PDU_SENT, {"pdu": pdu})
            else:
                _DUL_LOG.warning("Attempted to send data over closed connection")
        except Exception:
            # as pynetdicom's StateMachine.do_action: logged, the DUL stopped, raised on
            _DUL_LOG.exception("State Machine received an exception attempting to perform the action "
                               "'%s' while in state '%s'", ACCEPT_ACTION, self.current_state)
            self.dul.kill_dul()
            raise
        evt.trigger(self.dul.assoc, evt.EVT_FSM_TRANSITION,
                    {"action": ACCEPT_ACTION, "current_state": self.current_state, "fsm_event": event,
                     "next_state": ACCEPT_NEXT_STATE})
        self.transition(ACCEPT_NEXT_STATE)


class _NotifyingQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's to_user_queue: a put (A-RELEASE, A-ABORT, ... for the association thread) also
    wakes the association reactor waiting on its DIMSE message queue."""

    def __init__(self, dul: DULServiceProvider) -> None:
        super().__init__()
        self._dul = dul

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        dimse = getattr(self._dul.assoc, "dimse", None)
        if dimse is not None:
            cond = dimse.msg_queue.not_empty
            with cond:
                cond.notify_all()


def acse_expired(assoc: Any) -> bool:
    """True if `assoc` (an acceptor) was dropped for want of an A-ASSOCIATE-RQ in time, and its
    socket did not report the drop itself (transport.ArchiveSocket, half a PDU)."""
    dul = assoc.dul
    return bool(getattr(dul, "acse_expired", False)) and not getattr(dul, "stall_reported", False)


def stalled(assoc: Any) -> bool:
    """True if `assoc`'s socket dropped it for a PDU that stopped half way (and said so)."""
    return bool(getattr(assoc.dul, "stall_reported", False))


class EventDrivenDUL(DULServiceProvider):
    """See the module docstring."""

    def __init__(self, assoc: Association) -> None:
        super().__init__(assoc)
        self.to_user_queue = _NotifyingQueue(self)
        self.state_machine = EncodedPDataStateMachine(self)
        self.fast_path: FastPath | None = None  # fastpath.FastPath once established (if enabled)
        self.acse_expired = False  # an acceptor's A-ASSOCIATE-RQ did not come within the ACSE timeout
        self.stall_reported = False  # ... and its socket logged and counted that (transport.py)
        self.associate_rq: CachedRequest | None = None  # the A-ASSOCIATE-RQ received, with its primitive
        # Socket objects (not raw fds): a poke after close fails cleanly instead of writing into
        # whatever file reused the descriptor number.
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)

    def wake_fileno(self) -> int:
        """The descriptor that becomes readable when the reactor should look at its queues."""
        return self._wake_r.fileno()

    def _wake(self) -> None:
        try:
            self._wake_w.send(b"\0")
        except OSError:
            pass  # already full (a wake-up is pending anyway) or closed (the reactor has ended)

    def send_pdu(self, primitive: Any) -> None:
        super().send_pdu(primitive)
        self._wake()

    def kill_dul(self) -> None:
        super().kill_dul()
        self._wake()

    def receive_pdu(self, wait: bool = False, timeout: float | None = None) -> Any:
        """pynetdicom's, except that an acceptor's wait ends as soon as its connection is gone.
        Why: an acceptor waits up to the ACSE timeout (30 s) for the A-ASSOCIATE-RQ, and pynetdicom
        counts it against `max_associations` all that time, so a connection closed without one (a
        port probe, a load balancer's health check, a scanner) held a slot for 30 s: with
        max_associations = 2, one TCP probe left room for a single association (measured)."""
        if not wait or not self.assoc.is_acceptor:
            return super().receive_pdu(wait=wait, timeout=timeout)
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = CLOSED_CHECK if deadline is None else min(CLOSED_CHECK, deadline - time.monotonic())
            item = super().receive_pdu(wait=True, timeout=max(0.0, left))
            if item is not None:
                return item
            if deadline is not None and time.monotonic() >= deadline:
                self.acse_expired = True  # server.py logs and counts the drop by this
                return None
            # The DUL thread ends when the peer closes before an A-ASSOCIATE-RQ (Evt17 in Sta2;
            # its socket object still says connected); it was started before this wait.
            sock = self.socket
            if not self.is_alive() or sock is None or not sock._is_connected:
                return super().receive_pdu(wait=False)  # what came just before the close, if any

    def stop_dul(self) -> bool:
        if self.state_machine.current_state == "Sta1":
            self.kill_dul()  # pynetdicom's stop_dul then waits for the thread: wake it first
        return super().stop_dul()

    def _decode_pdu(self, bytestream: bytearray) -> tuple[Any, str]:
        """pynetdicom's decoding; an A-ASSOCIATE-RQ whose bytes were decoded before is taken from
        the cache (the same events are triggered), and kept as `associate_rq` for AE-6."""
        if bytestream[:1] != b"\x01":
            return super()._decode_pdu(bytestream)
        raw = bytes(bytestream)
        request = associate_rq_cache.get(raw)
        if request is None:
            pdu, event = super()._decode_pdu(bytestream)
            if isinstance(pdu, A_ASSOCIATE_RQ):
                self.associate_rq = CachedRequest(pdu)
                associate_rq_cache.put(raw, self.associate_rq)
            return pdu, event
        self.associate_rq = request
        evt.trigger(self.assoc, evt.EVT_DATA_RECV, {"data": raw})
        evt.trigger(self.assoc, evt.EVT_PDU_RECV, {"pdu": request.pdu})
        return request.pdu, "Evt6"

    def _idle_wait(self) -> None:
        """pynetdicom: time.sleep(_run_loop_delay). Here: until the socket is readable, a primitive
        is queued to send (wake-up poke), or DUL_IDLE_WAIT passes."""
        sock = getattr(self.socket, "socket", None)
        if sock is None or getattr(self.socket, "_is_connected", False) is False:
            time.sleep(self._run_loop_delay)
            return
        if isinstance(sock, ssl.SSLSocket) and sock.pending():
            return  # TLS data already decrypted and buffered: select() would not see it
        try:
            select.select([sock, self._wake_r], [], [], DUL_IDLE_WAIT)
        except (OSError, ValueError):
            time.sleep(self._run_loop_delay)  # the socket closed under us: the loop notices next
            return
        try:
            while self._wake_r.recv(64):
                pass
        except OSError:
            pass  # drained (BlockingIOError) or closed

    def run_reactor(self) -> None:
        try:
            self._run_loop()
        finally:
            for s in (self._wake_r, self._wake_w):
                s.close()

    def _run_loop(self) -> None:
        """pynetdicom 3.0.4's DULServiceProvider.run_reactor, copied (no smaller seam: the sleep
        and the read are inline in its loop); the lines marked dicomvault differ."""
        self._idle_timer.start()
        sleep = False
        # dicomvault: the native C-STORE/C-ECHO path (fastpath.py) while the association is in Sta6
        fast: FastPath | None = None
        fast_tried = False

        while True:
            # Let the assoc reactor off the leash
            if not self.assoc._dul_ready.is_set():
                self.assoc._dul_ready.set()
                # When single-stepping the reactor, sleep between events so that
                # test code has time to run.
                sleep = True

            # dicomvault: once established, the socket is read natively (the wait happens there)
            established = self.state_machine.current_state == "Sta6"
            # A requestor's association thread learns the accepted contexts only after the DUL has
            # reached Sta6 (is_established then); until the native reader takes over, pynetdicom
            # reads, and the switch happens only between two DIMSE messages (dimse.message None:
            # no fragments of a message held by pynetdicom that the native reader would not know).
            if (fast is None and established and not fast_tried
                    and (self.assoc.is_acceptor or self.assoc.is_established)
                    and getattr(self.assoc.dimse, "message", None) is None and self.event_queue.empty()):
                fast_tried = True
                fast = self.fast_path = fastpath.attach(self)
            elif fast is not None and not established:
                # Release or abort under way: pynetdicom reads the rest itself. A conforming peer
                # sends nothing after A-RELEASE-RQ/RP or A-ABORT, so nothing can be left half-read.
                if leftover := fast.leftover():
                    _DUL_LOG.warning("%d bytes after the last whole PDU dropped at association end", leftover)
                fast.summary()
                if fast.closed:
                    fast_tried = True  # the socket is gone: keep pynetdicom's reader off it too
                fast = None

            if sleep and fast is None:
                # dicomvault: wait for an event instead of sleeping a fixed delay
                self._idle_wait()

            if self._kill_thread:
                break

            # Check the ARTIM timer first so its event is placed on the queue
            #   ahead of any other events this loop
            if self.artim_timer.expired:
                self.event_queue.put("Evt18")

            # Check the connection for incoming data
            try:
                # We can either encode and send a primitive **OR**
                #   receive and decode a PDU per loop of the reactor
                if self._process_recv_primitive():  # encode (sent by state machine)
                    pass
                elif fast is not None:  # dicomvault: native read, waiting up to DUL_IDLE_WAIT if idle
                    if fast.pump(DUL_IDLE_WAIT if sleep else 0.0):
                        self._idle_timer.restart()
                elif self._is_transport_event():  # receive and decode PDU
                    self._idle_timer.restart()
            except Exception as exc:  # noqa: BLE001 - pynetdicom's own handling, kept as is
                _DUL_LOG.error("Exception in DUL.run(), aborting association")
                _DUL_LOG.exception(exc)
                # Bypass the state machine and send an A-ABORT
                #   we do it this way because an exception here will mess up
                #   the state machine and we can't guarantee it'll get sent
                #   otherwise
                abort_pdu = A_ABORT_RQ()
                abort_pdu.source = 0x02
                abort_pdu.reason_diagnostic = 0x00
                self.socket.send(abort_pdu.encode())  # type: ignore[union-attr]
                self.assoc.is_aborted = True
                self.assoc.is_established = False
                # Hard shutdown of the Association and DUL reactors
                self.assoc._kill = True
                self._kill_thread = True
                return

            # Check the event queue to see if there is anything to do
            # dicomvault: looked at before taking (this thread alone takes from it); an empty
            # queue, the usual case between two messages, then costs no lock and no raised Empty
            if not self.event_queue.queue:
                sleep = True
                continue
            try:
                event = self.event_queue.get(block=False)
            # If the queue is empty, return to the start of the loop
            except queue.Empty:
                sleep = True
                continue

            self.state_machine.do_action(event)
            sleep = False
