"""The C-STORE/C-ECHO/C-FIND/C-GET/C-MOVE fast path of an established acceptor association.

Why: with pynetdicom reading the socket, every 128 KiB P-DATA PDU goes through its Python DUL,
state machine and DIMSE reassembly, and every request and response command set through a pydicom
Dataset: ~2.5 ms of GIL-holding CPU per 512 KB CT slice (profiled, bench/README.md), which capped
ingest at one core's worth of Python whatever the number of associations.

Here the association's DUL thread (dimse/dul.py's event-driven reactor) reads the socket through
`_native.PduReader` with the GIL released: whole PDUs, P-DATA reassembled in Rust. A complete
C-STORE-RQ (on any accepted storage context) or C-ECHO-RQ (on the Verification context) is
answered by this module: the data set bytes go to the archive's store handler, the response
command set is encoded natively and written on the socket by the same thread, in order. So is a
C-FIND-RQ on a FIND context in little-endian syntax (the identifier is decoded with pydicom for
its character set, the matches come from dimse/find.py), with its C-CANCEL-RQ honoured: the
socket is polled between batches of matches. A C-GET-RQ or C-MOVE-RQ on a GET or MOVE context in
little-endian syntax runs here from start to end (dimse/fastretrieve.py: sub-operations sent and
their responses read by this thread, or on the C-MOVE sub-association it opens).
Everything else (N-ACTION, responses to pynetdicom's requests, A-RELEASE, A-ABORT) comes back
as PDUs and is fed to pynetdicom's DUL exactly as its own reader would (decode, state-machine
event, PDU queue), so those services, association release and abort, and the event handlers
behave as stock.

On associations pynetdicom requests (forwarding, storage commitment reports, `dicomvault send`)
the reader is used for one thing only: a C-STORE-RSP that says nothing but Success becomes the
primitive pynetdicom would have made, put straight on the association's message queue for the
waiting send_c_store(); on our acceptors a C-STORE-RSP outside a native retrieve (a C-GET that
pynetdicom serves) becomes that primitive with its status.

Only while the association is in Sta6 (established, no release in progress) and only on a plain
socket; negotiation and release stay pynetdicom's (TLS is terminated in front, dimse/tls_relay.py).
`enable(ae, store, find, get, move)` turns it on for an ArchiveAE's acceptor associations;
requestor associations of an ArchiveAE use it whenever the tuned reactor runs (association.py).
"""

from __future__ import annotations

import logging
import ssl
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.pdu import A_ABORT_RQ
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelFind,
    Verification,
)

from .. import _native
from .command_set import (
    C_CANCEL_RQ,
    C_ECHO_RQ,
    C_ECHO_RSP,
    C_FIND_RQ,
    C_FIND_RSP,
    C_GET_RQ,
    C_MOVE_RQ,
    C_STORE_RQ,
    C_STORE_RSP,
)
from .common import enable_quickack
from .fastretrieve import GET_MODELS, MOVE_MODELS, Offer
from .find import PENDING, FindHandler, PendingResponses, command_set, decode_identifier
from .limits import oversize
from .status import CANNOT_DECODE_IDENTIFIER, PROCESSING_FAILURE, SUCCESS

log = logging.getLogger("dicomvault.dimse")

FIND_MODELS = (PatientRootQueryRetrieveInformationModelFind, StudyRootQueryRetrieveInformationModelFind)
LITTLE_ENDIAN = (ImplicitVRLittleEndian, ExplicitVRLittleEndian)
# C-FIND pending responses per send: FIRST, doubling up to MAX. Why 64 (~18 KB of IMAGE
# responses), not 16: each batch costs a send and a cancel poll, and a 2,000-match answer's server
# CPU fell by about a quarter (bench/find_cpu.py, RESULTS.md) once framing no longer dominated.
FIND_BATCH_FIRST = 4
FIND_BATCH_MAX = 64


def _batch_sizes() -> Iterator[int]:
    size = FIND_BATCH_FIRST
    while True:
        yield size
        size = min(size * 2, FIND_BATCH_MAX)

# (association, accepted context, SOP Class UID, SOP Instance UID, data set: bytes or the
# reader's ReceivedDataSet) -> (status, comment)
StoreHandler = Callable[[Any, Any, str, str, Any], tuple[int, str | None]]


# (fast path, context, message id, SOP Class, identifier bytes): runs one C-GET (dimse/fastretrieve.py)
GetHandler = Callable[[Any, Any, int, str, bytes], None]
# ... and the move destination AE title: runs one C-MOVE
MoveHandler = Callable[[Any, Any, int, str, bytes, str], None]


def enable(ae: Any, store: StoreHandler, find: FindHandler | None = None,
           get: GetHandler | None = None, move: MoveHandler | None = None) -> None:
    """Acceptor associations of `ae` (an association.ArchiveAE) use the fast path once established
    (tuned reactor only); C-FIND too if `find` is given, C-GET if `get` is, C-MOVE if `move` is."""
    ae.fast_handlers = (store, find, get, move)


def attach(dul: Any) -> FastPath | None:
    """The fast path for this DUL's association, or None if it must stay pynetdicom's."""
    assoc = dul.assoc
    sock = getattr(dul.socket, "socket", None)
    if sock is None or isinstance(sock, ssl.SSLSocket):
        return None
    if assoc.is_requestor:
        # Our own associations (C-MOVE sub-operations, forwarding, `dicomvault send`): only the
        # plain-Success C-STORE-RSPs are read natively; every request of ours stays pynetdicom's.
        return FastPath(dul, None, None, None, None, sock)
    handlers = getattr(assoc.ae, "fast_handlers", None)
    return None if handlers is None else FastPath(dul, *handlers, sock)


class FastPath:
    """Driven by one association's DUL thread; see the module docstring."""

    def __init__(self, dul: Any, store: StoreHandler | None, find: FindHandler | None, get: GetHandler | None,
                 move: MoveHandler | None, sock: Any) -> None:
        assoc = dul.assoc
        self.dul = dul
        self.get = get
        self.move = move
        self.assoc = assoc
        self.sock = sock
        self.store = store
        self.find = find
        self.contexts = {cx.context_id: cx for cx in assoc.accepted_contexts}
        fast: dict[int, list[int]] = {}
        for cid, cx in self.contexts.items():
            if store is None:
                fast[cid] = [C_STORE_RSP]  # a requestor: the answers to our C-STOREs
            elif cx.abstract_syntax == Verification:
                fast[cid] = [C_ECHO_RQ]
            elif cx.abstract_syntax in FIND_MODELS:
                if find is not None and cx.transfer_syntax[0] in LITTLE_ENDIAN:
                    fast[cid] = [C_FIND_RQ, C_CANCEL_RQ]
            elif cx.abstract_syntax in GET_MODELS:
                if get is not None and cx.transfer_syntax[0] in LITTLE_ENDIAN:
                    fast[cid] = [C_GET_RQ, C_CANCEL_RQ]
            elif cx.abstract_syntax in MOVE_MODELS:
                if move is not None and cx.transfer_syntax[0] in LITTLE_ENDIAN:
                    fast[cid] = [C_MOVE_RQ, C_CANCEL_RQ]
            else:
                # pynetdicom too serves any C-STORE as storage; C-STORE-RSPs arrive here for the
                # sub-operations of a C-GET we serve on this association
                fast[cid] = [C_STORE_RQ, C_STORE_RSP]
        self._queue: deque[tuple[Any, ...]] = deque()  # read, not yet acted on (in order)
        # The storage contexts a C-GET sends on, worked out now, while the requestor prepares its
        # request, rather than in its first image's time (~0.1-0.2 ms for getscu's contexts).
        self.get_offer = (Offer.as_scu_on(self.contexts) if get is not None and any(
            cx.abstract_syntax in GET_MODELS for cx in self.contexts.values()) else None)
        local, remote = (assoc.acceptor, assoc.requestor) if assoc.is_acceptor else (assoc.requestor,
                                                                                     assoc.acceptor)
        # With C-GET answered here, C-STORE-RSPs on an acceptor come out whatever their status
        # (fastretrieve.py counts failures and warnings; _answer hands strays to pynetdicom).
        any_status = [cid for cid, fields in fast.items() if C_STORE_RSP in fields] if get is not None else []
        self.local_max_pdu = int(local.maximum_length or 0)
        # `[dimse] max_object_size`: the reader drops a bigger C-STORE data set as it arrives
        self.max_object_size = int(getattr(assoc.ae, "max_object_size", 0) or 0) if store is not None else 0
        self.reader = _native.PduReader(sock.fileno(), self.local_max_pdu, fast, any_status,
                                        self.max_object_size)
        self._message_id = 0  # of the requests we send (C-GET sub-operations)
        self.peer_max_pdu = int(remote.maximum_length or 0)  # what our responses must fit
        self.wake_fd = dul.wake_fileno()
        self.closed = False
        self._quickack = False
        self._closed_reason: str | None = None  # the socket closed during a C-FIND
        self.answered = 0  # messages handled here (tests and debugging: proof the path is taken)
        self.passed = 0  # PDUs handed to pynetdicom
        self.stored = self.stored_bytes = self.refused = self.finds = self.gets = 0  # for the summary line

    def ack_promptly(self) -> None:
        """From now on every read is acknowledged at once (common.enable_quickack says why):
        in force before the C-GET's first sub-operation, not from the next pump."""
        enable_quickack(self.assoc)
        if not self._quickack and getattr(self.dul.socket, "quickack", False):
            self.reader.set_quickack(True)
            self._quickack = True

    def pump(self, timeout: float) -> bool:
        """Reads for up to `timeout` seconds and acts on what arrived; True if anything did."""
        if self.closed:
            return False
        quickack = getattr(self.dul.socket, "quickack", False)
        if quickack != self._quickack:
            self.reader.set_quickack(quickack)
            self._quickack = quickack
        outs, state, reason = self.reader.next(self.wake_fd, timeout)
        self._queue.extend(outs)
        got = bool(outs)
        while self._queue:  # a C-FIND may queue what arrives while it answers
            out = self._queue.popleft()
            kind = out[0]
            if kind == "pdu":
                self.passed += 1
                self._to_pynetdicom(out[1])
            elif kind == "msg":
                self.answered += 1
                self._run_events()  # what pynetdicom got before this message is acted on first
                self._answer(*out[1:])
            elif kind == "oversize":
                self.answered += 1
                self._run_events()
                self._refuse_oversize(*out[1:])
            else:
                self._queue.clear()
                self._abort(out[1])
                return True
        self._run_events()
        if state == "closed" or self._closed_reason is not None:
            self._close(reason or self._closed_reason or "")
            return True
        return got

    def _run_events(self) -> None:
        """Runs the state machine on every event the PDUs handed to pynetdicom queued. Why here:
        pynetdicom's DUL loop queues one event and runs one per pass, and it queues an Evt9 for
        the primitive at the head of its send queue on every pass until that event has run; the
        several PDUs of one read would leave a backlog, the same primitive would be queued twice
        and the second DT-1 would find the send queue empty (seen: a failed action, then a DIMSE
        timeout). Running them now keeps the queue empty between passes, as pynetdicom expects."""
        events = self.dul.event_queue
        # Looked at before taking: this runs twice per message and the queue is nearly always
        # empty, where get(block=False) costs a lock and a raised Empty (~2.5 us against 0.2).
        # Only this DUL thread takes from it, so a non-empty queue stays non-empty until the get.
        machine = self.dul.state_machine
        while events.queue:
            event = events.get(block=False)
            # A peer's A-ABORT: AA-3 closes the socket, whose close() queues Evt17 with the
            # machine already in Sta1, where it is invalid. pynetdicom's own loop is normally
            # stopped before it takes that event; drained here it would raise InvalidEventError
            # and log a traceback for every aborted association. Nothing is left to close.
            if event == "Evt17" and machine.current_state == "Sta1":
                continue
            machine.do_action(event)

    def _close(self, reason: str) -> None:
        self.closed = True
        if reason:
            log.warning("association with %s: %s", self._caller(), reason)
        self.dul.event_queue.put("Evt17")  # transport connection closed, as pynetdicom's reader

    def summary(self) -> None:
        """One INFO line for what this association did here (per-object lines are DEBUG)."""
        if self.stored or self.refused or self.finds or self.gets:
            log.info("association from %s: %d object(s) stored (%.1f MB), %d refused, %d C-FIND(s), "
                     "%d C-GET/C-MOVE(s)", self._caller(), self.stored, self.stored_bytes / 1e6, self.refused,
                     self.finds, self.gets)

    def leftover(self) -> int:
        """Bytes read but not yet a whole PDU (checked when pynetdicom takes the socket back)."""
        return 0 if self.closed else self.reader.buffered()

    def _caller(self) -> str:
        return str(self.assoc.requestor.ae_title).strip()

    # -- what a C-GET or C-MOVE run here (fastretrieve.NativeRetrieve) uses -----------------------

    def caller(self) -> str:
        return self._caller()

    def send(self, pdus: bytes, what: str) -> bool:
        return self._send(pdus, what)

    def send_message(self, prefix: bytes, context_id: int, command: bytes,
                     data: bytes | _native.DecodedObject, what: str) -> bool:
        """`prefix` (framed already) and one message with its data set, framed and written natively
        without copying the data set."""
        try:
            _native.send_message(self.sock.fileno(), prefix, context_id, command, data, self.peer_max_pdu,
                                 self.dimse_timeout())
            return True
        except OSError as exc:
            log.warning("%s to %s not delivered: %s", what or "?", self._caller(), exc)
            return False

    def next_message_id(self) -> int:
        self._message_id = self._message_id % 0xFFFF + 1
        return self._message_id

    def last_message_id(self) -> int:
        return self._message_id

    def set_last_message_id(self, message_id: int) -> None:
        """After a native batch of sub-operations (fastretrieve.py) took ids from this one on."""
        self._message_id = message_id

    def killed(self) -> bool:
        """pynetdicom is ending this association (an abort, a server shutdown): stop at once."""
        return bool(self.closed or getattr(self.dul, "_kill_thread", False)
                    or getattr(self.assoc, "_kill", False))

    def acse_timeout(self) -> float:
        return float(self.assoc.acse_timeout or 30)

    def dimse_timeout(self) -> float | None:
        timeout = self.assoc.dimse_timeout
        return None if timeout is None else float(timeout)

    def queue_later(self, out: tuple[Any, ...]) -> None:
        """Something read during an operation that is not for it: acted on after it, in order."""
        self._queue.append(out)

    def closed_during(self, reason: str) -> None:
        self._closed_reason = reason

    def abort(self, why: str) -> None:
        self._abort(why)

    def _to_pynetdicom(self, raw: bytes) -> None:
        """What pynetdicom's DUL does with a PDU it read itself (DULServiceProvider._read_pdu_data)."""
        dul = self.dul
        try:
            pdu, event = dul._decode_pdu(raw)
        except Exception:  # noqa: BLE001 - pynetdicom's own handling of undecodable PDUs
            log.exception("association with %s: undecodable PDU (type 0x%02X)", self._caller(), raw[0])
            dul.event_queue.put("Evt19")
            return
        dul.event_queue.put(event)
        dul._recv_pdu.put(pdu)

    def _answer(self, context_id: int, command_field: int, message_id: int, sop_class: str,
                sop_uid: str, data_set: bytes | _native.ReceivedDataSet | None, responded_to: int,
                rsp_status: int | None, move_destination: str) -> None:
        cx = self.contexts[context_id]
        if command_field == C_STORE_RQ:  # first: nearly every message of an ingest is one
            self._store(cx, context_id, message_id, sop_class, sop_uid, data_set)
            return
        if command_field == C_STORE_RSP:
            # A native retrieve reads its own responses; one arriving here is for a send_c_store()
            # of pynetdicom's (a C-GET it serves on a context the native path does not take).
            self._to_waiting_requestor(context_id, responded_to, sop_class, sop_uid,
                                       SUCCESS if rsp_status is None else rsp_status)
            return
        if command_field == C_GET_RQ:
            assert self.get is not None  # the context is fast for C-GET only with a handler
            self.gets += 1
            self.ack_promptly()  # this association now carries our data
            self.get(self, cx, message_id, sop_class, data_set if isinstance(data_set, bytes) else b"")
            return
        if command_field == C_MOVE_RQ:
            assert self.move is not None  # the context is fast for C-MOVE only with a handler
            self.gets += 1
            self.move(self, cx, message_id, sop_class, data_set if isinstance(data_set, bytes) else b"",
                      move_destination)
            return
        if command_field == C_FIND_RQ:
            self._find(cx, message_id, sop_class, data_set if isinstance(data_set, bytes) else b"")
            return
        if command_field == C_CANCEL_RQ:
            # PS3.7 9.3.2.3: a cancel for a request no longer running is ignored
            log.debug("C-CANCEL from %s for message %d, which is not running", self._caller(), responded_to)
            return
        # C-ECHO-RQ: what is left of the requests the reader hands over on an acceptor
        self._send(_native.encode_response(context_id, C_ECHO_RSP, message_id, sop_class, "", SUCCESS, None,
                                           self.peer_max_pdu), "C-ECHO")

    def _store(self, cx: Any, context_id: int, message_id: int, sop_class: str, sop_uid: str,
               data_set: bytes | _native.ReceivedDataSet | None) -> None:
        """One C-STORE-RQ: the handler stores (durably) and decides the status, then the response."""
        assert self.store is not None  # requests are fast only on acceptors, which have handlers
        comment: str | None = None
        size = len(data_set or b"")  # the engine consumes a ReceivedDataSet
        try:
            code, comment = self.store(self.assoc, cx, sop_class, sop_uid, data_set or b"")
        except Exception as exc:  # noqa: BLE001 - a failing handler must not kill the association
            log.exception("C-STORE of %s from %s: store handler failed", sop_uid, self._caller())
            code, comment = PROCESSING_FAILURE, f"handler failed: {exc}"
        if code == SUCCESS:
            self.stored += 1
            self.stored_bytes += size
        else:
            self.refused += 1
        self._send(_native.encode_response(context_id, C_STORE_RSP, message_id, sop_class, sop_uid, code,
                                           comment, self.peer_max_pdu), sop_uid)

    def _refuse_oversize(self, context_id: int, command_field: int, message_id: int, sop_class: str,
                         sop_uid: str, received: int) -> None:
        """A C-STORE-RQ whose data set the reader dropped for its size: refused, nothing stored."""
        code, comment = oversize(self._caller(), sop_uid, received, self.max_object_size)
        self.refused += 1
        self._send(_native.encode_response(context_id, C_STORE_RSP, message_id, sop_class, sop_uid, code,
                                           comment, self.peer_max_pdu), sop_uid)

    def _to_waiting_requestor(self, context_id: int, responded_to: int, sop_class: str, sop_uid: str,
                              status: int = SUCCESS) -> None:
        """A C-STORE-RSP, as the primitive pynetdicom's DIMSE layer would have made of it (its
        status; an Error Comment the reader does not keep), for the send_c_store() waiting on this
        association's message queue."""
        rsp = C_STORE()
        rsp.MessageIDBeingRespondedTo = responded_to
        rsp.AffectedSOPClassUID = sop_class
        rsp.AffectedSOPInstanceUID = sop_uid
        rsp.Status = status
        self.assoc.dimse.msg_queue.put((context_id, rsp))

    def _send(self, pdus: bytes | bytearray, what: str) -> bool:
        try:
            self.sock.sendall(pdus)
            return True
        except OSError as exc:
            # The peer went away before its response (a stored object is durable all the same);
            # the next read sees the close and pynetdicom winds the association down.
            log.warning("response about %s to %s not delivered: %s", what or "?", self._caller(), exc)
            return False

    def _find(self, cx: Any, message_id: int, model: str, raw: bytes) -> None:
        """One C-FIND: pending responses as the matches come, C-CANCEL checked before each."""
        assert self.find is not None  # the context is fast for C-FIND only with a handler
        self.finds += 1
        context_id = int(cx.context_id)
        implicit = cx.transfer_syntax[0] == ImplicitVRLittleEndian
        try:
            identifier = decode_identifier(raw, implicit)
            identifier.get("QueryRetrieveLevel")  # pydicom decodes lazily: fail here, not mid-answer
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the peer's bad identifier
            log.warning("C-FIND from %s: identifier cannot be decoded: %s", self._caller(), exc)
            self._send(_native.encode_response(context_id, C_FIND_RSP, message_id, model, "",
                                               CANNOT_DECODE_IDENTIFIER, f"cannot decode identifier: {exc}",
                                               self.peer_max_pdu), "C-FIND")
            return
        code, comment = SUCCESS, None
        # Pending responses leave in batches, one send each, and the socket is polled for a
        # C-CANCEL after each batch rather than before every match: a send and a poll per match
        # were a third of a 120-match answer's time. The first batches are small so that the
        # first matches still leave at once; a cancel is honoured within FIND_BATCH_MAX matches.
        # Each batch is framed in one native call (find.PendingResponses).
        out = bytearray()  # framed, not yet sent: what a failure leaves goes out before its status
        cancelled = [False]  # what the last poll saw; asked by the answer before each batch
        try:
            answer = self.find(self.assoc, cx, model, identifier, implicit)
            if answer.encoder is not None:
                pending = command_set(model, message_id, PENDING)
                responses = PendingResponses(answer.encoder, context_id, pending, self.peer_max_pdu)
                for rows in answer.batches(lambda: cancelled[0], _batch_sizes()):
                    responses.frame_into(out, rows)
                    if not self._send(out, "C-FIND"):
                        return
                    out.clear()
                    cancelled[0] = self._cancel_arrived(message_id)
            assert answer.final is not None  # refused, or set when the batches ran out
            code, comment = answer.final
        except Exception as exc:  # noqa: BLE001 - a failing handler must not kill the association
            log.exception("C-FIND from %s: handler failed", self._caller())
            code, comment = PROCESSING_FAILURE, f"handler failed: {exc}"
        out += _native.encode_response(context_id, C_FIND_RSP, message_id, model, "", code, comment,
                                       self.peer_max_pdu)
        self._send(out, "C-FIND")

    def _cancel_arrived(self, message_id: int) -> bool:
        """Reads what has arrived (without waiting): True if it holds a C-CANCEL of `message_id`.
        Anything else is kept, in order, for after this C-FIND."""
        if self._closed_reason is not None:
            return True  # nobody left to answer
        outs, state, reason = self.reader.next(None, 0.0)
        cancelled = False
        for out in outs:
            if out[0] == "msg" and out[2] == C_CANCEL_RQ and out[7] == message_id:
                cancelled = True
            else:
                self._queue.append(out)
        if state == "closed":
            self._closed_reason = reason or ""
            return True
        return cancelled

    def _abort(self, why: str) -> None:
        """The peer broke the P-DATA rules: A-ABORT and end the association, as pynetdicom's DUL
        does when it cannot process what it received."""
        log.error("association with %s aborted: %s", self._caller(), why)
        self.closed = True
        abort = A_ABORT_RQ()
        abort.source = 0x02  # service provider
        abort.reason_diagnostic = 0x00
        try:
            self.sock.sendall(abort.encode())
        except OSError:
            pass  # already gone
        assoc = self.assoc
        assoc.is_aborted = True
        assoc.is_established = False
        assoc._kill = True
        self.dul._kill_thread = True
