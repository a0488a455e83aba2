"""Event-driven replacements for pynetdicom 3.0's polling loops and 4 KiB socket reads.

Why this exists (profiles of `dicomvault serve` under dcmtk storescu, see the DIMSE throughput
notes in bench/README.md): every association runs two threads that poll. The DUL reactor sleeps
1 ms whenever it has nothing to do and only then looks at the socket, the association reactor
sleeps 1 ms before every look at its message queue, and `AssociationSocket.recv` reads a PDU in
4 KiB pieces. Each wake-up and each 4 KiB read re-takes the GIL, so with four associations eight
threads wake ~8000 times a second and a 512 KiB dataset costs ~130 GIL round trips, all competing
with the threads doing real work; on one association the polls also add up to ~2 ms of latency
per object (receive -> noticed by the reactor -> response noticed by the DUL).

What the patches change, and nothing else:
- `AssociationSocket.recv` reads straight into one buffer of the requested size (`recv_into`,
  as large as the kernel hands over), with the same return value and EOF behaviour.
- `DULServiceProvider.run_reactor` waits with `select()` on its socket and a wake-up socket pair
  instead of sleeping; `send_pdu`, `kill_dul` and `stop_dul` poke the wake-up socket, so an
  outgoing primitive (our C-STORE-RSP) leaves at once. Timers are still checked at least every
  `DUL_IDLE_WAIT` seconds.
- `Association._run_reactor` waits on its DIMSE message queue's condition (woken by the DUL
  when a message or an ACSE primitive such as A-RELEASE arrives, or by a send_*() pausing it:
  `_CheckpointEvent`) instead of sleeping 1 ms per loop; it still loops at least every
  `ASSOC_IDLE_WAIT` seconds to check timeouts and the DUL thread.
- Once the association is established (and between two DIMSE messages), the DUL reactor reads
  the socket through fastpath.py's native reader instead of pynetdicom's; see that module.
- pynetdicom's P-DATA actions (DT-1, AR-7) also send encoded.py's pre-framed messages.

- `DIMSEServiceProvider.send_msg` encodes a plain successful C-STORE-RSP (status 0x0000, no
  optional elements, no EVT_DIMSE_SENT handler bound) with `struct` instead of building and
  encoding a pydicom Dataset twice (~15-25 % of a receiver's GIL time per object, profiled).
  `install()` checks that these bytes equal pynetdicom's own encoding before enabling it. It
  also queues each message's PDUs under a per-association lock (see `_dimse_send_msg`).

One change is a bug fix, not tuning, and is also installed alone (`install_pause_fix()`: the
server with `tuned_reactor = false`, and every SCU of ours):
- `Association._run_reactor` re-checks the pause checkpoint after passing it. pynetdicom's
  handshake (a `send_*()` clears `_reactor_checkpoint`, then spins until `_is_paused`) is racy:
  `_is_paused` stays True from the reactor's previous pass until the reactor thread runs again, so
  a `send_*()` issued right after the previous exchange ended (which set the checkpoint) sees a
  stale True, sends its request, and the reactor, finishing that pass, takes the response off the
  queue and drops it ("Received unexpected C-ECHO service message"); the requestor then waits out
  its DIMSE timeout. That is the stall of a pynetdicom SCU running many requests back to back on
  one association (bench/find_dv.py: 60 s), with either server reactor; bench/dimse_stress.py
  hits it within seconds. Upstream: pydicom/pynetdicom#875 (closed as a question).

The replaced functions are copies of pynetdicom 3.0.4's with only those lines changed. `install()`
checks the source of the originals against the digests recorded below: if a pynetdicom upgrade
changed any of them, it patches nothing, logs a warning and pynetdicom runs stock (correct, only
slower), and tests/dimse/test_dimse_tuning.py fails until someone re-derives the copies.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import queue
import select
import socket
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any

from pynetdicom import evt
from pynetdicom.association import Association
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_GET_RSP, C_MOVE_RSP, C_STORE_RSP
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.transport import AssociationSocket

from .. import _native
from . import command_set as cs
from . import encoded, fastpath
from .fastpath import FastPath

log = logging.getLogger("dicomvault.dimse")
# the loggers the copied pynetdicom code logs to, so its messages keep their names
_DUL_LOG = logging.getLogger("pynetdicom.dul")
_ASSOC_LOG = logging.getLogger("pynetdicom.assoc")

# Upper bounds of an idle wait (seconds). Events end the waits at once; these only bound how late
# a timer (ARTIM, network idle timeout) or a silently dead peer thread is noticed.
DUL_IDLE_WAIT = 0.05
ASSOC_IDLE_WAIT = 0.05

# sha256 of inspect.getsource() of what is replaced, in pynetdicom 3.0.4.
EXPECTED_SOURCES = {
    "AssociationSocket.recv": "6bc20a33b1b7cfe76d4ad4407ca242563bc6206fde4b4e1cf7a2fbb1f11d621d",
    "DULServiceProvider.__init__": "c82dafa9438ddf70685917cb15d2bfbc814aa0ad5233ffb0ae650faedc7570f0",
    "DULServiceProvider.run_reactor": "e3a10eb3a0931e4854af33b9496e92d9679522aca26b0e04da8967559b9e2803",
    "DULServiceProvider.send_pdu": "7cbce5da8594124e9e70c790a68df640d21df11af4220783e752bc607de8dde6",
    "DULServiceProvider.kill_dul": "5ceccf8dd01c2072c377d18bb1be284941a345bd40f03bd1e03a864ab0817842",
    "DULServiceProvider.stop_dul": "28a7e0be126e7b306369cc1b131daec8e907d21d0f5692930133b6599b8c6e5f",
    "Association._run_reactor": "f28838c5559e462a563750cfc9f3790027f4bb7e2223baf42c9f5d682c359dee",
    "DIMSEServiceProvider.send_msg": "a839cf2fb46976d9da29cf06fea41c04416b38d14fab612af12e5d869bd5b3f0",
    # the P-DATA actions encoded.py replaces in the state machine's action table
    "fsm.DT_1": "82e5c5d4114534fa9ac86124c7c7ef11ff2b98bc73069372cbe413af9df19081",
    "fsm.AR_7": "9a8d68182bf5c9fd0762295535a20ef3b1f04d83f22d47dcd55a063dbf806d40",
}

_ORIGINALS: dict[str, Callable[..., Any]] = {
    "AssociationSocket.recv": AssociationSocket.recv,
    "DULServiceProvider.__init__": DULServiceProvider.__init__,
    "DULServiceProvider.run_reactor": DULServiceProvider.run_reactor,
    "DULServiceProvider.send_pdu": DULServiceProvider.send_pdu,
    "DULServiceProvider.kill_dul": DULServiceProvider.kill_dul,
    "DULServiceProvider.stop_dul": DULServiceProvider.stop_dul,
    "Association._run_reactor": Association._run_reactor,
    "DIMSEServiceProvider.send_msg": DIMSEServiceProvider.send_msg,
    **encoded.ORIGINAL_FUNCTIONS,
}
_installed = False
_pause_fixed = False  # Association._run_reactor is ours (the stock loop plus the pause fix)
_fast_rsp = False  # fast C-STORE-RSP encoding verified against pynetdicom's (install())
_fast_rq = False  # C-STORE-RQ framed natively (encoded.py), verified likewise
_install_lock = threading.Lock()


def source_digest(func: Callable[..., Any]) -> str:
    return hashlib.sha256(inspect.getsource(func).encode()).hexdigest()


def mismatches() -> list[str]:
    """Names of replaced pynetdicom functions whose source is not the one the copies came from."""
    return [name for name, func in _ORIGINALS.items() if source_digest(func) != EXPECTED_SOURCES[name]]


def installed() -> bool:
    return _installed


def install_pause_fix() -> bool:
    """Only the reactor pause fix (see the module docstring), with pynetdicom's 1 ms polling kept:
    for every pynetdicom association of this process, requestor or acceptor (idempotent; a no-op
    once `install()` ran, whose reactor has the fix too). False if pynetdicom's reactor is not the
    one the copy came from: then it stays stock, with a warning."""
    global _pause_fixed
    with _install_lock:
        if _installed or _pause_fixed:
            return True
        name = "Association._run_reactor"
        if source_digest(_ORIGINALS[name]) != EXPECTED_SOURCES[name]:
            log.warning("pynetdicom reactor pause fix not installed: %s changed upstream "
                        "(pynetdicom upgraded?); a response may be lost now and then", name)
            return False
        Association._run_reactor = _assoc_run_reactor_polling  # type: ignore[method-assign]
        _pause_fixed = True
        return True


def pause_fixed() -> bool:
    return _installed or _pause_fixed


def install() -> bool:
    """Patches pynetdicom (process-wide, idempotent). False if the installed pynetdicom is not the
    version the replacements were derived from: then nothing is patched."""
    global _installed
    with _install_lock:
        if _installed:
            return True
        bad = mismatches()
        if bad:
            log.warning("pynetdicom reactor tuning disabled: %s changed upstream (pynetdicom upgraded?); "
                        "running stock pynetdicom (slower polling)", ", ".join(bad))
            return False
        AssociationSocket.recv = _recv  # type: ignore[method-assign]
        DULServiceProvider.__init__ = _dul_init  # type: ignore[method-assign]
        DULServiceProvider.run_reactor = _dul_run_reactor  # type: ignore[method-assign]
        DULServiceProvider.send_pdu = _dul_send_pdu  # type: ignore[method-assign]
        DULServiceProvider.kill_dul = _dul_kill_dul  # type: ignore[method-assign]
        DULServiceProvider.stop_dul = _dul_stop_dul  # type: ignore[method-assign]
        Association._run_reactor = _assoc_run_reactor  # type: ignore[method-assign]
        global _fast_rsp
        _fast_rsp = fast_rsp_matches_pynetdicom()
        if not _fast_rsp:
            log.warning("fast C-STORE-RSP encoding disabled: it differs from pynetdicom's")
        global _fast_rq
        _fast_rq = encoded.store_rq_matches_pynetdicom()
        if _fast_rq:
            encoded.install()
        else:
            log.warning("native C-STORE-RQ framing disabled: its command set differs from pynetdicom's")
        DIMSEServiceProvider.send_msg = _dimse_send_msg  # type: ignore[method-assign]
        _installed = True
        return True


def uninstall() -> None:
    """Restores stock pynetdicom, pause fix included (tests, A/B measurements). Only for
    associations created later."""
    global _installed, _pause_fixed
    with _install_lock:
        _pause_fixed = False
        AssociationSocket.recv = _ORIGINALS["AssociationSocket.recv"]  # type: ignore[method-assign]
        DULServiceProvider.__init__ = _ORIGINALS["DULServiceProvider.__init__"]  # type: ignore[method-assign]
        DULServiceProvider.run_reactor = _ORIGINALS["DULServiceProvider.run_reactor"]  # type: ignore[method-assign]
        DULServiceProvider.send_pdu = _ORIGINALS["DULServiceProvider.send_pdu"]  # type: ignore[method-assign]
        DULServiceProvider.kill_dul = _ORIGINALS["DULServiceProvider.kill_dul"]  # type: ignore[method-assign]
        DULServiceProvider.stop_dul = _ORIGINALS["DULServiceProvider.stop_dul"]  # type: ignore[method-assign]
        Association._run_reactor = _ORIGINALS["Association._run_reactor"]  # type: ignore[method-assign]
        DIMSEServiceProvider.send_msg = _ORIGINALS["DIMSEServiceProvider.send_msg"]  # type: ignore[method-assign]
        encoded.uninstall()
        _installed = False


# -- socket reads ----------------------------------------------------------------------------------

def _recv(self: AssociationSocket, nr_bytes: int) -> bytearray:
    """`nr_bytes` from the socket in as few system calls as the kernel allows (stock: 4 KiB each).
    Returns fewer bytes only if the peer closed the connection; socket errors propagate."""
    sock = self.socket
    assert sock is not None
    buf = bytearray(nr_bytes)
    view = memoryview(buf)
    got = 0
    try:
        while got < nr_bytes:
            n = sock.recv_into(view[got:], nr_bytes - got)
            if not n:
                break
            got += n
    finally:
        view.release()  # a bytearray with an exported view cannot be resized
    if got < nr_bytes:
        del buf[got:]
    return buf


# -- DUL reactor -----------------------------------------------------------------------------------

class _NotifyingQueue(queue.Queue):  # type: ignore[type-arg]
    """The DUL's to_user_queue: a put (A-RELEASE, A-ABORT, ... for the association thread) also
    wakes the association reactor waiting on its DIMSE message queue."""

    def __init__(self, dul: DULServiceProvider) -> None:
        super().__init__()
        self._dv_dul = dul

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        super().put(item, block, timeout)
        dimse = getattr(self._dv_dul.assoc, "dimse", None)
        if dimse is not None:
            cond = dimse.msg_queue.not_empty
            with cond:
                cond.notify_all()


def _dul_init(self: DULServiceProvider, assoc: Association) -> None:
    _ORIGINALS["DULServiceProvider.__init__"](self, assoc)
    self.to_user_queue = _NotifyingQueue(self)
    self._dv_fast = None  # fastpath.FastPath once the association is established (if enabled)
    # Socket objects (not raw fds): a poke after close fails cleanly instead of writing into
    # whatever file reused the descriptor number.
    self._dv_wake_r, self._dv_wake_w = socket.socketpair()
    self._dv_wake_r.setblocking(False)
    self._dv_wake_w.setblocking(False)


def _dv_wake(dul: DULServiceProvider) -> None:
    wake = getattr(dul, "_dv_wake_w", None)
    if wake is None:
        return
    try:
        wake.send(b"\0")
    except (BlockingIOError, OSError):
        pass  # already full (a wake-up is pending anyway) or closed (the reactor has ended)


def _dv_idle_wait(dul: DULServiceProvider) -> None:
    """Stock: time.sleep(_run_loop_delay). Here: until the socket is readable, a primitive is
    queued to send (wake-up poke), or DUL_IDLE_WAIT passes."""
    wake_r = dul._dv_wake_r
    sock = getattr(dul.socket, "socket", None)
    if sock is None or getattr(dul.socket, "_is_connected", False) is False:
        time.sleep(dul._run_loop_delay)
        return
    if isinstance(sock, ssl.SSLSocket) and sock.pending():
        return  # TLS data already decrypted and buffered: select() would not see it
    try:
        select.select([sock, wake_r], [], [], DUL_IDLE_WAIT)
    except (OSError, ValueError):
        time.sleep(dul._run_loop_delay)  # the socket closed under us: the loop notices next
        return
    try:
        while wake_r.recv(64):
            pass
    except (BlockingIOError, OSError):
        pass


def _dul_send_pdu(self: DULServiceProvider, primitive: Any) -> None:
    _ORIGINALS["DULServiceProvider.send_pdu"](self, primitive)
    _dv_wake(self)


def _dul_kill_dul(self: DULServiceProvider) -> None:
    self._kill_thread = True
    _dv_wake(self)


def _dul_stop_dul(self: DULServiceProvider) -> bool:
    if self.state_machine.current_state == "Sta1":
        self._kill_thread = True
        _dv_wake(self)
        while self.is_alive():
            time.sleep(self._run_loop_delay)
        return True
    return False


def _dul_run_reactor(self: DULServiceProvider) -> None:
    """pynetdicom 3.0.4's DULServiceProvider.run_reactor; only the idle sleep differs."""
    try:
        self._dv_run_reactor()
    finally:
        for s in (self._dv_wake_r, self._dv_wake_w):
            s.close()


def _dv_run_reactor(self: DULServiceProvider) -> None:
    # Main DUL loop
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
            fast = self._dv_fast = fastpath.attach(self)
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
            _dv_idle_wait(self)

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
        try:
            event = self.event_queue.get(block=False)
        # If the queue is empty, return to the start of the loop
        except queue.Empty:
            sleep = True
            continue

        self.state_machine.do_action(event)
        sleep = False


DULServiceProvider._dv_run_reactor = _dv_run_reactor  # type: ignore[attr-defined]


# -- association reactor ---------------------------------------------------------------------------

class _CheckpointEvent(threading.Event):
    """pynetdicom's reactor checkpoint, whose clear() (a send_*() pausing the reactor before it
    sends a request: every C-MOVE sub-operation, every `dicomvault send`) also wakes the reactor's
    idle wait, so the pause takes effect at once instead of after pynetdicom's next 1 ms poll."""

    def __init__(self, assoc: Association, is_set: bool) -> None:
        super().__init__()
        self._dv_assoc = assoc
        if is_set:
            self.set()

    def clear(self) -> None:
        super().clear()
        cond = self._dv_assoc.dimse.msg_queue.not_empty
        with cond:
            cond.notify_all()


def _assoc_idle_wait(assoc: Association) -> None:
    """Stock: time.sleep(0.001) before every look at the message queue. Here: until a DIMSE
    message is queued, the DUL hands up an ACSE primitive, a send_*() pauses the reactor
    (_CheckpointEvent), or ASSOC_IDLE_WAIT passes."""
    q = assoc.dimse.msg_queue
    with q.not_empty:
        if not q._qsize() and assoc._reactor_checkpoint.is_set():
            q.not_empty.wait(ASSOC_IDLE_WAIT)
        if q._qsize():
            # Queue.put wakes one waiter. If that was us but a send_*() in another thread waits
            # for this message (we are about to stop at the checkpoint), pass the wake-up on, or
            # it would sleep until its DIMSE timeout (measured: exactly that, before this line).
            q.not_empty.notify()


def _assoc_poll_wait(assoc: Association) -> None:
    """pynetdicom's own wait: 1 ms before every look at the message queue."""
    time.sleep(0.001)


def _assoc_run_reactor(self: Association) -> None:
    """pynetdicom 3.0.4's Association._run_reactor, event-driven, with the pause fix."""
    # Swapped before the loop runs: a send_*() reads the attribute each time it pauses us.
    self._reactor_checkpoint = _CheckpointEvent(self, self._reactor_checkpoint.is_set())
    _assoc_reactor_loop(self, _assoc_idle_wait)


def _assoc_run_reactor_polling(self: Association) -> None:
    """pynetdicom 3.0.4's Association._run_reactor with only the pause fix (install_pause_fix)."""
    _assoc_reactor_loop(self, _assoc_poll_wait)


def _assoc_reactor_loop(self: Association, idle_wait: Callable[[Association], None]) -> None:
    """pynetdicom 3.0.4's Association._run_reactor; the per-loop sleep is `idle_wait`, and the
    loop goes back to its checkpoint if a send_*() paused it after it had passed (pause fix)."""
    self._is_paused = False
    while not self._kill:
        # dicomvault: wait for an event instead of sleeping 1 ms (tuned), or sleep 1 ms (stock)
        idle_wait(self)

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
            if self.network_timeout_response == "A-RELEASE":
                self._is_paused = True
                self._reactor_checkpoint.wait()
                self.release()
                self._is_paused = False
            else:
                self.abort()

            self.kill()
            return



# -- C-STORE-RSP -----------------------------------------------------------------------------------

_RSP_FIELDS = {C_STORE: 0x8001, C_GET: 0x8010, C_MOVE: 0x8021}
_COUNTS = ((0x1020, "NumberOfRemainingSuboperations"), (0x1021, "NumberOfCompletedSuboperations"),
           (0x1022, "NumberOfFailedSuboperations"), (0x1023, "NumberOfWarningSuboperations"))


def fast_rsp(primitive: Any) -> bytes | None:
    """The encoded command set of a plain response without a data set: C-STORE-RSP, or a
    C-GET/C-MOVE-RSP with only status and sub-operation counts (the pending responses of a
    retrieve); None if it is anything else."""
    field = _RSP_FIELDS.get(type(primitive))
    if field is None or primitive.MessageIDBeingRespondedTo is None or primitive.Status is None:
        return None
    if primitive.ErrorComment is not None or primitive.OffendingElement is not None:
        return None
    if primitive.AffectedSOPClassUID is None:
        return None
    if field == 0x8001:
        if primitive.Status != 0x0000 or primitive.AffectedSOPInstanceUID is None:
            return None
    elif primitive.Identifier is not None:
        return None
    elements = [
        (0x0002, cs.ui(primitive.AffectedSOPClassUID)),
        (0x0100, cs.us(field)),
        (0x0120, cs.us(primitive.MessageIDBeingRespondedTo)),
        (0x0800, cs.us(0x0101)),  # CommandDataSetType: no data set
        (0x0900, cs.us(primitive.Status)),
    ]
    if field == 0x8001:
        elements.append((0x1000, cs.ui(primitive.AffectedSOPInstanceUID)))
    else:
        elements += [(tag, cs.us(getattr(primitive, name))) for tag, name in _COUNTS
                     if getattr(primitive, name) is not None]
    return cs.pack(elements)


def _pynetdicom_rsp(primitive: Any) -> bytes:
    msg = {C_STORE: C_STORE_RSP, C_GET: C_GET_RSP, C_MOVE: C_MOVE_RSP}[type(primitive)]()
    msg.primitive_to_message(primitive)
    return bytes(encode(msg.command_set, True, True))


def _sample_responses() -> list[Any]:
    out: list[Any] = []
    for sop_class, sop_instance, msg_id in (("1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", 1),  # odd length
                                            ("1.2.840.10008.5.1.4.1.1.4", "1.2.3.45", 65535)):
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = msg_id
        rsp.AffectedSOPClassUID = sop_class
        rsp.AffectedSOPInstanceUID = sop_instance
        rsp.Status = 0x0000
        out.append(rsp)
    for cls, model in ((C_GET, "1.2.840.10008.5.1.4.1.2.2.3"), (C_MOVE, "1.2.840.10008.5.1.4.1.2.1.2")):
        for status, counts in ((0xFF00, (10, 2, 0, 1)), (0x0000, (None, 12, 0, 0))):
            rsp = cls()
            rsp.MessageIDBeingRespondedTo = 7
            rsp.AffectedSOPClassUID = model
            rsp.Status = status
            for (_, name), n in zip(_COUNTS, counts, strict=True):
                if n is not None:
                    setattr(rsp, name, n)
            out.append(rsp)
    return out


def fast_rsp_matches_pynetdicom() -> bool:
    return all(fast_rsp(rsp) == _pynetdicom_rsp(rsp) for rsp in _sample_responses())


def _dimse_send_msg(self: DIMSEServiceProvider, primitive: Any, context_id: int) -> None:
    # One message's P-DATA PDUs are queued together: stock pynetdicom lets two threads sending on
    # one association (the reactor answering an N-ACTION, our storage commitment thread sending
    # its N-EVENT-REPORT) interleave their fragments, which the peer cannot decode (seen in
    # tests/dimse: "Received an invalid DIMSE message"). dict.setdefault is atomic.
    lock = self.__dict__.setdefault("_dv_send_lock", threading.Lock())
    max_pdu = self.maximum_pdu_size
    if _fast_rq and (command := encoded.store_rq_command(primitive)) is not None \
            and not self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
        # a C-STORE sub-operation or send: command and data set framed natively, one primitive
        pdus = _native.frame_message(context_id, command, primitive.DataSet.getvalue(), max_pdu or 0)
        with lock:
            self.dul.send_pdu(encoded.EncodedPData(pdus))
        return
    rsp = fast_rsp(primitive) if _fast_rsp else None
    with lock:
        if (rsp is None or (max_pdu and len(rsp) + 6 > max_pdu)
                or self.assoc.get_handlers(evt.EVT_DIMSE_SENT)):
            _ORIGINALS["DIMSEServiceProvider.send_msg"](self, primitive, context_id)
            return
        pdata = P_DATA()
        pdata.presentation_data_value_list.append((context_id, b"\x03" + rsp))  # last command fragment
        self.dul.send_pdu(pdata)
