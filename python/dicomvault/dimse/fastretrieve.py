"""C-GET and C-MOVE on the native path of an established acceptor association (dimse/fastpath.py).

Why: through pynetdicom every C-STORE sub-operation of a retrieve cost ~0.5 ms of Python (the
request as a Dataset primitive, its message queue, the reactor's hand-offs, the response decoded
into another Dataset), which made a study retrieve slower than Orthanc's. Here the association's
reader thread, which already owns the socket, runs the whole operation: it resolves the
identifier from the index and sends the first object at once. The rest go a batch (BATCH) at a
time through one native call each (_native.retrieve_batch, core/src/net/retrieve.rs): the batch's
index records are looked up in one multi-get (Engine.blobs_for_sending), then, with the GIL
released, a native reader thread reads and decodes the objects a few ahead while this thread
frames each C-STORE-RQ, writes it with its data set, reads its C-STORE-RSP and makes the pending
response. Python sees a sub-operation again only when it needs more than a plain Success: a
warning or failure status, a C-CANCEL or anything else read meanwhile, an association that ends,
a slow response, an object not readable as a local blob. An object in an object-store tier goes
in a batch too: its stored bytes, fetched by the engine's cold read-ahead
(Engine.stored_for_sending), are decoded in the batch on two threads (the dense cold codec is
decode-bound). Objects sent otherwise than as stored (converted, patient-corrected) or that
cannot be fetched now are read here by the read-ahead reader (readahead.py) with prepare(), a
data set going out from the native buffer it was decoded into (Engine.read_for_sending), not
through a bytes copy. Measured: server CPU per
300-slice CT C-GET 0.26 -> 0.20 s, C-MOVE 0.29 -> 0.22 s (bench/RESULTS.md, "Native retrieve loop").

- C-GET: the sub-operations go back on the same association, on the storage contexts the
  requestor proposed with the SCP role.
- C-MOVE: on a sub-association to the destination (a configured peer) that this module opens
  itself: pynetdicom's own PDU classes encode the A-ASSOCIATE-RQ and decode the answer, then the
  socket is read natively like any other. A TLS destination gets a TLS connection whose
  decrypted side is one end of a socket pair (tls_relay.pump_tls), so the same code reads it.
  For one study by its UID the contexts come from the study's (SOP class, syntax) pairs kept in
  its index record (retrieve.move_plan): the sub-association is negotiated while the first
  object is read, and the study is listed while that object is on the wire. Otherwise (another
  level, several keys, a study indexed before the pairs were kept) every match is listed with
  its class and syntax first. An object whose pair was not proposed (stored into the study
  between the study record's read and the listing) goes out converted to an uncompressed syntax
  the destination accepted, or fails with the others going on, as for a destination that
  refused its stored syntax.

The semantics are PS3.4 C.4.2/C.4.3's: one sub-operation at a time (no asynchronous operations
are negotiated); a pending response after each with the remaining, completed, failed and warning
counts; C-CANCEL honoured between sub-operations (final status Cancel, with the counts); a final
Success, 0xB000 when some sub-operations failed or warned, 0xA702 when all failed, with the Failed
SOP Instance UID List. A sub-operation fails, and the others go on, when the object cannot be read
or the other side accepted no transfer syntax it can be sent in: the stored one, or an
uncompressed one it is converted (decompressed) to.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    UID,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom import PYNETDICOM_IMPLEMENTATION_UID, PYNETDICOM_IMPLEMENTATION_VERSION
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RJ, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    ImplementationVersionNameNotification,
    MaximumLengthNotification,
)
from pynetdicom.presentation import PresentationContext
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from .. import _native
from ..audit.dimse import DimseAudit
from ..config import PeerConfig
from ..engine import Engine
from ..errors import DicomVaultError
from ..readahead import DECODE_BOUND_READERS, in_background, read_ahead
from ..transfer.transcode import can_transcode, transcode
from . import command_set as cs
from .command_set import C_CANCEL_RQ, C_GET_RSP, C_MOVE_RSP, C_STORE_RQ, C_STORE_RSP
from .common import log, requestor_host
from .find import decode_identifier
from .peers import Peers
from .retrieve import (
    Match,
    RetrieveError,
    move_contexts,
    move_plan,
    resolve,
    resolve_keys,
    retrieve_keys,
    unique_keys,
)
from .status import (
    ALL_FAILED,
    CANCEL,
    CANNOT_DECODE_IDENTIFIER,
    MOVE_DESTINATION_UNKNOWN,
    PENDING,
    PROCESSING_FAILURE,
    SUB_OPERATIONS_FAILED,
    SUCCESS,
    WARNING_STATUSES,
)
from .tls_relay import pump_tls

GET_MODELS = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)
MOVE_MODELS = (PatientRootQueryRetrieveInformationModelMove, StudyRootQueryRetrieveInformationModelMove)
DATASET_PRESENT = 0x0001
NO_DATASET = 0x0101
US_MAX = 0xFFFF  # the counts are US: a retrieve of more objects reports the most a US holds
# Syntaxes an object can be converted to, in the order we prefer them.
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
APPLICATION_CONTEXT = "1.2.840.10008.3.1.1.1"  # PS3.7 A.2.1, the DICOM application context
A_RELEASE_RQ = b"\x05\x00\x00\x00\x00\x04\x00\x00\x00\x00"
A_ABORT_RQ = b"\x07\x00\x00\x00\x00\x04\x00\x00\x00\x00"  # service user, no reason
PDU_ASSOCIATE_AC, PDU_ASSOCIATE_RJ, PDU_RELEASE_RP, PDU_ABORT = 0x02, 0x03, 0x06, 0x07


# -- what is sent --------------------------------------------------------------------------------

@dataclass(slots=True)
class Outgoing:
    """One sub-operation, ready to send: its context and data set, or why it cannot be sent."""

    sop_uid: str
    sop_class: str
    context_id: int = 0
    data: bytes | _native.DecodedObject | None = None  # the native buffer: sent without a copy
    error: str = ""


@dataclass(slots=True)
class Counts:
    remaining: int
    completed: int = 0
    failed: int = 0
    warning: int = 0
    failed_uids: list[str] = field(default_factory=list)

    def fail(self, uid: str) -> None:
        self.failed += 1
        self.failed_uids.append(uid)


class Offer:
    """What the other side accepted us to send: (context id, SOP Class, transfer syntax)."""

    def __init__(self, accepted: list[tuple[int, str, str]]) -> None:
        self.by_class: dict[str, list[tuple[int, str]]] = {}
        for cid, sop_class, ts in sorted(accepted):
            self.by_class.setdefault(sop_class, []).append((cid, ts))

    @classmethod
    def as_scu_on(cls, contexts: dict[int, Any]) -> Offer:
        """The storage contexts of an acceptor association on which we are the SCU (the
        requestor of a C-GET proposed the SCP role for them)."""
        return cls([(cid, str(cx.abstract_syntax), str(cx.transfer_syntax[0])) for cid, cx in contexts.items()
                    if getattr(cx, "as_scu", False) and cx.abstract_syntax not in GET_MODELS])

    def choose(self, sop_class: str, stored: str) -> tuple[int, str] | None:
        """(context id, transfer syntax to send in): the stored syntax if accepted, else an
        accepted little-endian uncompressed one the stored syntax converts to without loss
        (transfer/transcode.py); None if neither was."""
        offered = self.by_class.get(sop_class, [])
        for cid, ts in offered:
            if ts == stored:
                return cid, ts
        for want in UNCOMPRESSED:
            for cid, ts in offered:
                if ts == want and can_transcode(stored, ts):
                    return cid, ts
        return None


class PendingOffer:
    """The offer of a C-MOVE sub-association still being negotiated: the read-ahead reads its
    first objects meanwhile and waits here, once read, to choose their context (set() when the
    association is up; abandon() when there will be none)."""

    def __init__(self) -> None:
        self._offer: Offer | None = None
        self._ready = threading.Event()
        self.abandoned = False

    def set(self, offer: Offer) -> None:
        self._offer = offer
        self._ready.set()

    def abandon(self) -> None:
        """No sub-association: the reads under way end without a context, and are dropped."""
        if not self._ready.is_set():
            self.abandoned = True
            self.set(Offer([]))

    def known(self) -> bool:
        return self._ready.is_set()

    def choose(self, sop_class: str, stored: str) -> tuple[int, str] | None:
        self._ready.wait()
        assert self._offer is not None  # set before the event
        return self._offer.choose(sop_class, stored)


def chunks(start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) of each batch of sub-operations start..end-1: FIRST_BATCH, then BATCH each."""
    out: list[tuple[int, int]] = []
    while start < end:
        stop = min(end, start + (FIRST_BATCH if not out else BATCH))
        out.append((start, stop))
        start = stop
    return out


def _unsendable(m: Match, sop_class: str, ts: str, what: str) -> Outgoing:
    why = f"no accepted transfer syntax for {sop_class} that {UID(ts).name} can be sent in"
    log.warning("%s: %s not sent: %s", what, m.sop_uid, why)
    return Outgoing(m.sop_uid, sop_class, error=why)


def prepare(engine: Engine, offer: Offer | PendingOffer, m: Match, what: str) -> Outgoing:
    """Reads one matched object (its blob decoded and hash-checked) and makes it sendable. A
    match that already names its class and syntax (C-MOVE) is checked against the offer first,
    if it is known yet, so nothing is read for an object that cannot be sent."""
    if (m.sop_class and m.transfer_syntax and (not isinstance(offer, PendingOffer) or offer.known())
            and offer.choose(m.sop_class, m.transfer_syntax) is None):
        return _unsendable(m, m.sop_class, m.transfer_syntax, what)
    try:
        rec, ts, raw = engine.read_for_sending(m.sop_uid)
    except Exception as exc:  # noqa: BLE001 - an unreadable object fails its sub-operation only
        log.error("%s: cannot read %s: %s", what, m.sop_uid, exc)
        return Outgoing(m.sop_uid, m.sop_class, error=str(exc))
    sop_class = m.sop_class or rec.sop_class_uid
    choice = offer.choose(sop_class, ts)
    if choice is None:
        if isinstance(offer, PendingOffer) and offer.abandoned:
            return Outgoing(m.sop_uid, sop_class, error="no sub-association")
        return _unsendable(m, sop_class, ts, what)
    cid, target = choice
    if target != ts:
        try:
            raw = transcode(ts, raw if isinstance(raw, bytes) else raw.bytes(), target)
        except Exception as exc:  # noqa: BLE001 - any decoder failure fails this sub-operation only
            log.warning("%s: %s cannot be converted from %s to %s: %s", what, m.sop_uid, UID(ts).name,
                        UID(target).name, exc)
            return Outgoing(m.sop_uid, sop_class, error=f"conversion to {UID(target).name} failed: {exc}")
        log.info("%s: %s converted from %s to %s", what, m.sop_uid, UID(ts).name, UID(target).name)
    return Outgoing(m.sop_uid, sop_class, cid, raw)


# -- command sets ----------------------------------------------------------------------------------

def store_rq(sop_class: str, sop_uid: str, message_id: int,
             originator: tuple[str, int] | None = None) -> bytes:
    """A C-STORE-RQ command set with a data set (medium priority), as pynetdicom encodes it; a
    C-MOVE sub-operation names the Move Originator AE and message."""
    elements = [(0x0002, cs.ui(sop_class)), (0x0100, cs.us(C_STORE_RQ)), (0x0110, cs.us(message_id)),
                (0x0700, cs.us(0)), (0x0800, cs.us(DATASET_PRESENT)), (0x1000, cs.ui(sop_uid))]
    if originator is not None:
        elements += [(0x1030, cs.ae(originator[0])), (0x1031, cs.us(originator[1]))]
    return cs.pack(elements)


def retrieve_rsp(field: int, sop_class: str, message_id: int, status: int, counts: Counts, *,
                 remaining: bool, data_set: bool, comment: str | None = None) -> bytes:
    """A C-GET-RSP or C-MOVE-RSP command set (PS3.7 9.3.3.2, 9.3.4.2): the sub-operation counts,
    Remaining only in pending and cancel responses."""
    elements = [(0x0002, cs.ui(sop_class)), (0x0100, cs.us(field)), (0x0120, cs.us(message_id)),
                (0x0800, cs.us(DATASET_PRESENT if data_set else NO_DATASET)), (0x0900, cs.us(status))]
    if comment:
        text = "".join(c for c in comment if c.isascii())[:64].rstrip()
        elements.append((0x0902, text.encode("ascii") + (b" " if len(text) % 2 else b"")))
    if remaining:
        elements.append((0x1020, cs.us(min(counts.remaining, US_MAX))))
    elements += [(0x1021, cs.us(min(counts.completed, US_MAX))), (0x1022, cs.us(min(counts.failed, US_MAX))),
                 (0x1023, cs.us(min(counts.warning, US_MAX)))]
    return cs.pack(elements)


def failed_list(uids: list[str], implicit: bool) -> bytes:
    """The identifier of a final response: the Failed SOP Instance UID List (0008,0058)."""
    ds = Dataset()
    ds.FailedSOPInstanceUIDList = uids
    fp = DicomBytesIO()
    fp.is_little_endian = True
    fp.is_implicit_VR = implicit
    write_dataset(fp, ds)
    return fp.getvalue()


# -- where the C-STOREs go -------------------------------------------------------------------------

class SameAssociation:
    """C-GET: the requestor's own association (the FastPath `io`). A C-CANCEL arrives on the
    stream the responses are read from."""

    def __init__(self, io: Any, op: NativeRetrieve) -> None:
        self.io = io
        self.op = op
        self.offer = io.get_offer or Offer.as_scu_on(io.contexts)
        self.originator: tuple[str, int] | None = None

    def send_store(self, prefix: bytes, context_id: int, command: bytes, data: bytes | _native.DecodedObject,
                   what: str) -> bool:
        return bool(self.io.send_message(prefix, context_id, command, data, what))

    def next_message_id(self) -> int:
        return int(self.io.next_message_id())

    def last_message_id(self) -> int:
        return int(self.io.last_message_id())

    def set_last_message_id(self, message_id: int) -> None:
        self.io.set_last_message_id(message_id)

    def await_response(self, msg_id: int, sop_uid: str) -> int | None:
        return self.op.read_until(self.io.reader, msg_id, sop_uid)

    def close(self, clean: bool) -> None:
        pass


class SubAssociation:
    """C-MOVE: an association we open to the destination, on a socket read natively."""

    def __init__(self, sock: socket.socket, reader: Any, offer: Offer, max_pdu: int, op: NativeRetrieve,
                 originator: tuple[str, int], pump: threading.Thread | None) -> None:
        self.sock = sock
        self.reader = reader
        self.offer = offer
        self.max_pdu = max_pdu
        self.op = op
        self.originator: tuple[str, int] | None = originator
        self._pump = pump
        self._msg = 0

    def send_store(self, prefix: bytes, context_id: int, command: bytes, data: bytes | _native.DecodedObject,
                   what: str) -> bool:
        try:
            _native.send_message(self.sock.fileno(), prefix, context_id, command, data, self.max_pdu,
                                 self.op.io.dimse_timeout())
            return True
        except OSError as exc:
            log.warning("C-MOVE: %s not delivered to the destination: %s", what, exc)
            return False

    def next_message_id(self) -> int:
        self._msg = self._msg % 0xFFFF + 1
        return self._msg

    def last_message_id(self) -> int:
        return self._msg

    def set_last_message_id(self, message_id: int) -> None:
        self._msg = message_id

    def await_response(self, msg_id: int, sop_uid: str) -> int | None:
        status = self.op.read_until(self.reader, msg_id, sop_uid, destination=True)
        if status is not None and not self.op.cancelled:
            self.op.poll_cancel()
        return status

    def close(self, clean: bool) -> None:
        """A-RELEASE (and wait for its answer) after a clean run, else A-ABORT; then close."""
        try:
            if clean:
                self.sock.sendall(A_RELEASE_RQ)
                deadline = time.monotonic() + 10
                while time.monotonic() < deadline:
                    outs, state, _ = self.reader.next(None, max(0.0, deadline - time.monotonic()))
                    if state == "closed" or any(o[0] == "pdu" and o[1][0] == PDU_RELEASE_RP for o in outs):
                        break
            else:
                self.sock.sendall(A_ABORT_RQ)
        except OSError:
            pass  # gone already
        finally:
            self.sock.close()
            if self._pump is not None:
                self._pump.join(5)


def _proposal(calling: str, called: str, contexts: list[PresentationContext], max_pdu: int) -> bytes:
    """An A-ASSOCIATE-RQ PDU, encoded by pynetdicom's PDU classes."""
    prim = A_ASSOCIATE()
    prim.application_context_name = APPLICATION_CONTEXT
    prim.calling_ae_title = calling
    prim.called_ae_title = called
    prim.presentation_context_definition_list = contexts
    length = MaximumLengthNotification()
    length.maximum_length_received = max_pdu
    impl = ImplementationClassUIDNotification()
    impl.implementation_class_uid = PYNETDICOM_IMPLEMENTATION_UID
    version = ImplementationVersionNameNotification()
    version.implementation_version_name = PYNETDICOM_IMPLEMENTATION_VERSION
    prim.user_information = [length, impl, version]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(prim)
    return bytes(pdu.encode())


class AssociationRefused(DicomVaultError):
    pass


def open_sub_association(peer: PeerConfig, calling: str, contexts: list[PresentationContext], max_pdu: int,
                         tls_context: ssl.SSLContext | None, timeout: float, op: NativeRetrieve,
                         originator: tuple[str, int]) -> SubAssociation:
    """Connects (with TLS if the peer wants it), proposes `contexts` (retrieve.move_contexts), and
    returns the established association; raises AssociationRefused with the reason."""
    for i, cx in enumerate(contexts):
        cx.context_id = 2 * i + 1
    where = f"{peer.ae_title}@{peer.host}:{peer.port}"
    try:
        raw = socket.create_connection((peer.host, peer.port), timeout=timeout)
    except OSError as exc:
        raise AssociationRefused(f"cannot connect to {where}: {exc}") from exc
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    pump = None
    sock = raw
    if peer.tls:
        if tls_context is None:
            raw.close()
            raise AssociationRefused(f"{where} wants TLS and [dimse] has no TLS settings")
        try:
            secure = tls_context.wrap_socket(raw, server_hostname=None)
        except (OSError, ValueError) as exc:
            raw.close()
            raise AssociationRefused(f"TLS with {where} failed: {exc}") from exc
        secure.settimeout(None)
        sock, inner = socket.socketpair()
        pump = threading.Thread(target=pump_tls, args=(secure, inner), name="dv-move-tls", daemon=True)
        pump.start()
    sock.settimeout(None)
    ids = [int(cx.context_id) for cx in contexts]
    reader = _native.PduReader(sock.fileno(), max_pdu, {cid: [C_STORE_RSP] for cid in ids}, ids)
    try:
        sock.sendall(_proposal(calling, peer.ae_title, contexts, max_pdu))
        answer = _first_pdu(reader, timeout)
    except (OSError, AssociationRefused) as exc:
        sock.close()
        raise AssociationRefused(f"association with {where} failed: {exc}") from exc
    try:
        accepted, peer_max = _accepted(answer, contexts, where)
    except AssociationRefused:
        sock.close()
        raise
    except Exception as exc:  # noqa: BLE001 - whatever a malformed answer makes the decoder raise
        sock.close()
        raise AssociationRefused(f"{where} sent an association answer that does not decode: {exc}") from exc
    return SubAssociation(sock, reader, Offer(accepted), peer_max, op, originator, pump)


def _accepted(answer: bytes, contexts: list[PresentationContext], where: str
              ) -> tuple[list[tuple[int, str, str]], int]:
    """(accepted (context id, SOP Class, syntax), the peer's maximum PDU length) of an
    A-ASSOCIATE-AC; AssociationRefused for a rejection or another PDU."""
    if answer[0] == PDU_ASSOCIATE_RJ:
        rj = A_ASSOCIATE_RJ()
        rj.decode(answer)
        raise AssociationRefused(f"{where} rejected the association ({rj.reason_str})")
    if answer[0] != PDU_ASSOCIATE_AC:
        raise AssociationRefused(f"{where} answered the association request with PDU type 0x{answer[0]:02X}")
    ac = A_ASSOCIATE_AC()
    ac.decode(answer)
    prim = ac.to_primitive()
    by_id = {int(cx.context_id): cx for cx in contexts}
    accepted = [(int(r.context_id), str(by_id[int(r.context_id)].abstract_syntax), str(r.transfer_syntax[0]))
                for r in prim.presentation_context_definition_results_list
                if r.result == 0 and int(r.context_id) in by_id and r.transfer_syntax]
    peer_max = next((int(i.maximum_length_received or 0) for i in prim.user_information
                     if isinstance(i, MaximumLengthNotification)), 0)
    return accepted, peer_max


def _first_pdu(reader: Any, timeout: float) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        outs, state, reason = reader.next(None, max(0.0, deadline - time.monotonic()))
        for out in outs:
            if out[0] == "pdu":
                return bytes(out[1])
            if out[0] == "error":
                raise AssociationRefused(f"unreadable answer ({out[1]})")
        if state == "closed":
            raise AssociationRefused(f"connection closed ({reason or 'no answer'})")
        if time.monotonic() >= deadline:
            raise AssociationRefused(f"no answer within {timeout:g} s")


# -- the operation ---------------------------------------------------------------------------------

WAKE_S = 0.5  # longest wait between looks at whether the association is being killed
# Sub-operations per native batch: what is looked up in the index at once, and how many go by
# before a kill of the association (a server shutdown) is looked at again (~0.2 s of CT).
BATCH = 100
# The first batch after the first object is smaller: its lookup is the one the wire waits for.
FIRST_BATCH = 16
UNREAD: Any = object()  # _finish: the response is still to be read
# (blob hash, stored transfer syntax, context id, SOP Class UID, SOP Instance UID)
NativeItem = tuple[bytes, str, int, str, str]


def ends_association(out: tuple[Any, ...]) -> bool:
    """A reader output that ends the association: a protocol error, an A-ABORT or an
    A-RELEASE-RQ (any other PDU, a P-DATA for pynetdicom included, is acted on afterwards)."""
    return out[0] == "error" or (out[0] == "pdu" and bytes(out[1][:1]) in (b"\x05", b"\x07"))


class NativeRetrieve:
    """One C-GET or C-MOVE, run by the requestor association's reader thread. `io` is its
    FastPath: socket writes (`send`), reader (`reader`), messages kept for after
    (`queue_later`)."""

    def __init__(self, io: Any, engine: Engine, cx: Any, message_id: int, model: str, raw: bytes,
                 move_to: str | None = None, peers: Peers | None = None,
                 tls_context: Callable[[], ssl.SSLContext | None] | None = None, our_ae: str = "",
                 audit: DimseAudit | None = None, pending_interval: float = 0.0) -> None:
        self.io = io
        self.engine = engine
        self.context_id = int(cx.context_id)
        self.message_id = message_id
        self.model = model
        self.raw = raw
        self.move_to = move_to
        self.peers = peers
        self.tls_context = tls_context
        self.our_ae = our_ae
        self.what = "C-MOVE" if move_to is not None else "C-GET"
        self.rsp_field = C_MOVE_RSP if move_to is not None else C_GET_RSP
        self.implicit = str(cx.transfer_syntax[0]) == ImplicitVRLittleEndian
        self.cancelled = False
        self.gone = False  # the requestor's association ended during the operation
        self.dest_failed = False  # C-MOVE: the destination went away or stopped answering
        self.counts: Counts | None = None
        self._open_error = ""  # C-MOVE: why there is no sub-association
        self.unsent = b""  # the last pending response, sent with the next write on the association
        # a pending response once this many seconds passed since the last one ([dimse]
        # pending_interval; 0: after every sub-operation)
        self.pending_interval = pending_interval
        self._last_pending: float | None = None  # time.monotonic() of the last one made
        self.audit = audit
        self._audit_key: Any = None  # the audit burst this operation counts in, once it started

    # responses on the requestor's association
    def _rsp(self, status: int, counts: Counts, *, remaining: bool, ident: bytes | None = None,
             comment: str | None = None) -> bytes:
        command = retrieve_rsp(self.rsp_field, self.model, self.message_id, status, counts,
                               remaining=remaining, data_set=ident is not None, comment=comment)
        return bytes(_native.frame_message(self.context_id, command, ident, self.io.peer_max_pdu))

    def _final(self, status: int, counts: Counts, comment: str | None = None, *,
               remaining: bool = False) -> None:
        ident = failed_list(counts.failed_uids, self.implicit) if counts.failed_uids else None
        final = self._rsp(status, counts, remaining=remaining, ident=ident, comment=comment)
        self.io.send(self.unsent + final, self.what)
        self.unsent = b""

    def run(self) -> None:
        """The whole operation; whatever fails, the requestor gets a final response (unless its
        association is gone) and the reader thread goes on."""
        try:
            self._run(Counts(0))
        except Exception as exc:  # noqa: BLE001 - answer the requestor, keep the association
            log.exception("%s from %s failed", self.what, self.io.caller())
            if not self.gone:
                self._final(PROCESSING_FAILURE, self.counts or Counts(0), f"retrieve failed: {exc}")
        finally:
            if self._audit_key is not None and self.audit is not None:
                c = self.counts or Counts(0)
                self.audit.retrieve_ended(self._audit_key, c.completed, c.failed, c.warning,
                                          self.cancelled or self.gone)

    def _audit_start(self, caller: str, identifier: Dataset | None, matches: list[Match],
                     peer: PeerConfig | None) -> None:
        """Counts this operation in the audit trail: once per operation, never per object. An
        identifier read without pydicom (retrieve_keys) is decoded here, after the first send."""
        if self.audit is None:
            return
        if identifier is None:
            try:
                identifier = decode_identifier(self.raw, self.implicit)
            except Exception:  # noqa: BLE001 - retrieve_keys read it: the audit goes without its names
                identifier = Dataset()
        dest = None if peer is None else f"{peer.ae_title}@{peer.host}:{peer.port}"
        self._audit_key = self.audit.retrieve_started(
            id(self.io), caller, requestor_host(self.io.assoc), self.what,
            str(identifier.get("StudyInstanceUID", "") or "") or None,
            str(identifier.get("PatientID", "") or "") or None, matches[0].sop_uid, len(matches), dest)

    def _run(self, counts: Counts) -> None:
        caller = self.io.caller()
        if self.move_to is None:
            try:
                keys = retrieve_keys(self.raw, self.implicit, self.model)
            except RetrieveError as exc:
                self._refuse(caller, exc)
                return
            if keys is not None:
                self._get(caller, None, keys, counts)
                return
        try:
            identifier = decode_identifier(self.raw, self.implicit)
            identifier.get("QueryRetrieveLevel")  # pydicom decodes lazily: fail here
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the peer's bad identifier
            log.warning("%s from %s: identifier cannot be decoded: %s", self.what, caller, exc)
            self._final(CANNOT_DECODE_IDENTIFIER, counts, f"cannot decode identifier: {exc}")
            return
        peer = None
        if self.move_to is not None:
            peer = self.peers.get(self.move_to) if self.peers is not None else None
            if peer is None:
                log.warning("C-MOVE from %s refused: unknown move destination %r", caller, self.move_to)
                self._final(MOVE_DESTINATION_UNKNOWN, counts, f"unknown move destination {self.move_to}")
                return
            if self.peers is not None and not self.peers.may_move_to(caller, self.move_to):
                log.warning("C-MOVE from %s refused: move destination %r not allowed for it "
                            "(peers add --move-to)", caller, self.move_to)
                self._final(MOVE_DESTINATION_UNKNOWN, counts, f"move destination {self.move_to} not allowed")
                return
        if peer is None:
            try:
                keys = unique_keys(identifier, self.model)
            except RetrieveError as exc:
                self._refuse(caller, exc)
                return
            self._get(caller, identifier, keys, counts)
        else:
            self._move(caller, identifier, peer, counts)

    def _refuse(self, caller: str, exc: RetrieveError) -> None:
        log.warning("%s from %s refused (0x%04X): %s", self.what, caller, exc.code, exc)
        self._final(exc.code, Counts(0), str(exc))

    def _get(self, caller: str, identifier: Dataset | None, keys: tuple[str, dict[str, str]],
             counts: Counts) -> None:
        """C-GET of an identifier's (level, unique keys) (retrieve_keys; the identifier itself
        when pydicom decoded it, for the audit): the first object is read and its C-STORE-RQ
        sent as soon as the first match is listed; the rest of the study is listed once that
        object's C-STORE-RSP is read. The total, which the pending responses need (remaining), is
        known before the first pending response is made."""
        dest = SameAssociation(self.io, self)
        try:
            found = resolve_keys(self.engine, *keys, syntaxes=False)
            first = next(found, None)
        except RetrieveError as exc:
            self._refuse(caller, exc)
            return
        if first is None:
            self._final(SUCCESS, counts)
            return
        # Read in this thread, with nothing else running for this retrieve: on 2 cores, a listing
        # or read-ahead competing for the GIL held the first send back by up to a switch
        # interval (5 ms) under load (measured, bench/RESULTS.md "Ceiling of the same work").
        out = self._first_out(dest, first)
        sent = self._start(dest, out)
        # The rest is listed once the first object was answered, not while it is on the wire: on
        # 2 busy cores that listing (~1 ms of Python) took the requestor's core, which had yet to
        # read the object (first image ~0.5 ms later, measured); the retrieve as a whole waits
        # about as long as before, the listing having become cheaper than the overlap it lost.
        status: Any = UNREAD
        if sent is not None:
            status = dest.await_response(sent[0], out.sop_uid) if sent[1] else None
        matches, counts = self._listed(dest, out, sent, first, found, caller, identifier, None, status)
        log.info("C-GET from %s: %d instances", caller, len(matches))
        if self._finish(dest, out, sent, 0, matches, counts, status=status):
            self._sub_operations(dest, matches, counts, 1)
        self._conclude(caller, counts)

    def _first_out(self, dest: SameAssociation, first: Match) -> Outgoing:
        """The first sub-operation's object: a local blob sent as stored is read straight by
        its hash, without building its index record (~0.05 ms of the first image); anything else,
        and any failure (reported there), by prepare()."""
        blob = self.engine.blobs_for_sending([first.sop_uid])[0]
        if blob is not None:
            blob_hash, ts, stored_class = blob
            sop_class = first.sop_class or stored_class
            choice = dest.offer.choose(sop_class, ts)
            if choice is not None and choice[1] == ts:
                try:
                    _, data = self.engine.vault.read_decoded(blob_hash)
                    return Outgoing(first.sop_uid, sop_class, choice[0], data)
                except Exception:  # noqa: BLE001 - prepare() reads it again and says what failed
                    pass
        return prepare(self.engine, dest.offer, first, self.what)

    def _move(self, caller: str, identifier: Dataset, peer: PeerConfig, counts: Counts) -> None:
        """C-MOVE. One study by its UID (the usual one): proposed from the study's (SOP class,
        syntax) pairs (retrieve.move_plan), the first object read meanwhile and sent as soon as
        the destination accepts, the rest of the study listed while it is on the wire (a C-GET
        waits for its first response instead). Otherwise the whole match is listed first, its
        pairs being the contexts."""
        try:
            plan = move_plan(self.engine, identifier, self.model)
            if plan is None:
                self._move_listed(caller, identifier, peer, counts,
                                  resolve(self.engine, identifier, self.model, syntaxes=True))
                return
            first = next(plan.matches, None)
        except RetrieveError as exc:
            log.warning("%s from %s refused (0x%04X): %s", self.what, caller, exc.code, exc)
            self._final(exc.code, counts, str(exc))
            return
        if first is None:
            self._final(SUCCESS, counts)
            return
        offer = PendingOffer()
        # read (pool thread) while this one waits for the destination's answer
        head = read_ahead(lambda m: prepare(self.engine, offer, m, self.what), [first])
        dest: SubAssociation | None = None
        try:
            _, first_load = next(head)
            dest = self._open(caller, peer, plan.contexts)
            if dest is None:
                matches = [first, *plan.matches]
                counts = self.counts = Counts(len(matches))
                self._audit_start(caller, identifier, matches, peer)
                self._fail_rest(matches, 0, counts)
                self._final(ALL_FAILED, counts, self._open_error)
                return
            offer.set(dest.offer)
            out: Outgoing = first_load.result()
            sent = self._start(dest, out)
            matches, counts = self._listed(dest, out, sent, first, plan.matches, caller, identifier, peer)
            log.info("C-MOVE from %s: %d instances to %s (%s:%d)", caller, len(matches), peer.ae_title,
                     peer.host, peer.port)
            if self._finish(dest, out, sent, 0, matches, counts):
                self._sub_operations(dest, matches, counts, 1)
        finally:
            offer.abandon()  # whatever ended it: no read may wait for an offer forever
            head.close()
            if dest is not None:
                dest.close(not (self.gone or self.dest_failed))
        self._conclude(caller, counts)

    def _open(self, caller: str, peer: PeerConfig, contexts: list[PresentationContext]
              ) -> SubAssociation | None:
        """The sub-association to the destination; None (logged) if there is none."""
        try:
            # made on first use only: loading the trust roots costs ~30 ms
            tls_context = self.tls_context() if peer.tls and self.tls_context else None
            return open_sub_association(peer, self.our_ae, contexts, int(self.io.local_max_pdu), tls_context,
                                        float(self.io.acse_timeout()), self, (caller, self.message_id))
        except (AssociationRefused, OSError, ValueError) as exc:
            log.warning("C-MOVE from %s: %s", caller, exc)
            self._open_error = str(exc)
            return None

    def _move_listed(self, caller: str, identifier: Dataset, peer: PeerConfig, counts: Counts,
                     matches: list[Match]) -> None:
        """C-MOVE of matches listed with their SOP class and syntax: those pairs are the contexts
        proposed on the sub-association."""
        counts = self.counts = Counts(len(matches))
        if not matches:
            self._final(SUCCESS, counts)
            return
        self._audit_start(caller, identifier, matches, peer)
        log.info("C-MOVE from %s: %d instances to %s (%s:%d)", caller, len(matches), peer.ae_title,
                 peer.host, peer.port)
        # The first objects are read while the sub-association is negotiated (a few ms with the
        # destination's answer): they wait for its offer to choose their context.
        offer = PendingOffer()
        head = read_ahead(lambda m: prepare(self.engine, offer, m, self.what), matches[:1])
        try:
            _, first = next(head)
            dest = self._open(caller, peer, move_contexts(matches))
            if dest is None:
                self._fail_rest(matches, 0, counts)
                self._final(ALL_FAILED, counts, self._open_error)
                return
            offer.set(dest.offer)
            try:
                out: Outgoing = first.result()
                if self._finish(dest, out, self._start(dest, out), 0, matches, counts):
                    self._sub_operations(dest, matches, counts, 1)
            finally:
                dest.close(not (self.gone or self.dest_failed))
        finally:
            offer.abandon()  # whatever ended it: no read may wait for an offer forever
            head.close()
        self._conclude(caller, counts)

    def _listed(self, dest: SameAssociation | SubAssociation, out: Outgoing, sent: tuple[int, bool] | None,
                first: Match, rest: Iterable[Match], caller: str, identifier: Dataset | None,
                peer: PeerConfig | None, status: Any = UNREAD
                ) -> tuple[list[Match], Counts]:
        """The matches after the first (listed while the first object is on the wire, or, for a
        C-GET, once its response, `status`, was read), counted and audited. If listing them
        fails, the first object's response is read (unless it was) before the failure is
        reported."""
        try:
            matches = [first, *rest]
        except Exception:
            self.counts = Counts(1)
            self._finish(dest, out, sent, 0, [first], self.counts, status=status)
            raise
        counts = self.counts = Counts(len(matches))
        self._audit_start(caller, identifier, matches, peer)
        return matches, counts

    def _conclude(self, caller: str, counts: Counts) -> None:
        """The final response, after the sub-operations ran (or stopped)."""
        if self.gone:
            return
        if self.cancelled:
            log.info("%s from %s cancelled: %d sent, %d left", self.what, caller, counts.completed,
                     counts.remaining)
            self._final(CANCEL, counts, remaining=True)
            return
        status = SUCCESS
        if counts.failed and not (counts.completed or counts.warning):
            status = ALL_FAILED
        elif counts.failed or counts.warning:
            status = SUB_OPERATIONS_FAILED
        log.info("%s from %s: %d sent, %d failed, %d warnings", self.what, caller, counts.completed,
                 counts.failed, counts.warning)
        self._final(status, counts)

    def _sub_operations(self, dest: SameAssociation | SubAssociation, matches: list[Match], counts: Counts,
                        start: int) -> None:
        """Sub-operations `start`, `start` + 1, ... of `matches`, a chunk at a time (chunks()),
        those sent as stored from a local blob by _native.retrieve_batch, the others (converted,
        patient-corrected, from an object-store tier, not indexed) read here as before. Each
        chunk after the first is planned (looked up in the index) on a read-ahead thread while
        the one before it is on the wire: in this thread that lookup left the wire idle between
        batches (~0.5-0.9 ms per hundred objects, measured in a running serve)."""
        spans = chunks(start, len(matches))
        ahead: Future[list[NativeItem | None]] | None = None
        for i, (lo, hi) in enumerate(spans):
            plan = self._plan(dest.offer, matches[lo:hi]) if ahead is None else ahead.result()
            ahead = None
            if i + 1 < len(spans):  # looked up while this chunk is on the wire
                nlo, nhi = spans[i + 1]
                ahead = in_background(lambda a=nlo, b=nhi: self._plan(dest.offer, matches[a:b]))
            if not self._chunk(dest, matches, counts, lo, plan):
                return

    def _chunk(self, dest: SameAssociation | SubAssociation, matches: list[Match], counts: Counts,
               chunk_start: int, plan: list[NativeItem | None]) -> bool:
        """The sub-operations of one planned chunk; False when the operation cannot go on."""
        k = 0
        while k < len(plan):  # runs of native items and of items read here, in order
            if self.cancelled or self.gone:
                return False
            if self.io.killed():
                self.gone = True
                return False
            native = plan[k] is not None
            end = next((j for j in range(k, len(plan)) if (plan[j] is not None) != native), len(plan))
            if native:
                items = [p for p in plan[k:end] if p is not None]
                nxt = self._batch(dest, items, matches, counts, chunk_start + k)
            else:
                nxt = self._read_here(dest, matches, counts, chunk_start + k, chunk_start + end)
            if nxt is None:
                return False
            k = nxt - chunk_start
        return True

    def _plan(self, offer: Offer | PendingOffer, chunk: list[Match]) -> list[NativeItem | None]:
        """The native sub-operation of each match, None for one read here."""
        plan: list[NativeItem | None] = []
        for m, blob in zip(chunk, self.engine.blobs_for_sending([m.sop_uid for m in chunk]), strict=True):
            if blob is None:
                plan.append(None)
                continue
            blob_hash, ts, stored_class = blob
            sop_class = m.sop_class or stored_class
            choice = offer.choose(sop_class, ts)
            # sent as stored, or else (converted, or refused and failed) read here
            plan.append((blob_hash, ts, choice[0], sop_class, m.sop_uid)
                        if choice is not None and choice[1] == ts else None)
        return plan

    def _read_here(self, dest: SameAssociation | SubAssociation, matches: list[Match], counts: Counts,
                   start: int, end: int) -> int | None:
        """Sub-operations start..end-1 read by prepare() with the read-ahead; the next index, None
        when the operation cannot go on."""
        loads = read_ahead(lambda m: prepare(self.engine, dest.offer, m, self.what), matches[start:end])
        try:
            for i, (_, fut) in enumerate(loads, start):
                if self.cancelled or self.gone:
                    return None
                out: Outgoing = fut.result()
                if not self._finish(dest, out, self._start(dest, out), i, matches, counts):
                    return None
        finally:
            loads.close()
        return end

    def _batch(self, dest: SameAssociation | SubAssociation, items: list[NativeItem], matches: list[Match],
               counts: Counts, start: int, stored: list[tuple[int, bytes, int]] | None = None) -> int | None:
        """Sub-operations start.. of `items` natively, until one needs more than a plain Success
        (acted on here, as any other); the next index, None when the operation cannot go on.
        `stored`: the items are in an object-store tier, and these are their stored bytes
        (Engine.stored_for_sending), decoded by the batch."""
        io = self.io
        same = isinstance(dest, SameAssociation)
        if same:
            fd, reader, max_pdu, requestor = io.sock.fileno(), io.reader, io.peer_max_pdu, None
        else:
            assert isinstance(dest, SubAssociation)
            fd, reader, max_pdu, requestor = dest.sock.fileno(), dest.reader, dest.max_pdu, io.reader
        last = self._last_pending
        (done, stop, msg_id, status, outs, closed, req_outs, req_closed, error, unsent,
         (remaining, completed, since)) = _native.retrieve_batch(
            self.engine.vault, fd, reader, items, max_pdu, io.dimse_timeout(), dest.originator,
            (io.sock.fileno(), self.context_id, self.rsp_field, self.model, self.message_id, io.peer_max_pdu),
            same, requestor, dest.last_message_id(),
            (counts.remaining, counts.completed, counts.failed, counts.warning), self.unsent, WAKE_S,
            self.pending_interval, None if last is None else time.monotonic() - last, stored,
            # the dense cold codec decodes at a fifth of the hot one's speed: one core of it
            # would pace the retrieve (readahead.py, decode_bound)
            DECODE_BOUND_READERS if stored and any(c == _native.CODEC_COLD for c, _, _ in stored) else 1)
        dest.set_last_message_id(msg_id)
        counts.remaining, counts.completed = remaining, completed
        self._last_pending = None if since is None else time.monotonic() - since
        self.unsent = bytes(unsent)
        i = start + done
        if stop == "end":
            return i
        if stop == "respond":
            log.warning("response about %s to %s not delivered: %s", self.what, io.caller(), error)
            self.gone = True
            return None
        if stop == "load":
            # Not readable as a local blob: most likely the study went to an object-store tier.
            # Those objects go through a batch too, decoded there from the stored bytes the cold
            # read-ahead fetched, rather than read here one by one with Python per object. One
            # not in an object store, or that cannot be fetched or decoded now, is read here
            # (prepare logs why it cannot be read), and the next go on natively.
            if stored is None:
                rest = items[done:]
                cold = self.engine.stored_for_sending([item[4] for item in rest])
                if cold:
                    return self._batch(dest, rest[:len(cold)], matches, counts, i, cold)
            return self._read_here(dest, matches, counts, i, i + 1)
        _, _, cid, sop_class, sop_uid = items[done]
        out = Outgoing(sop_uid, sop_class, cid)
        if stop == "send":
            log.warning("%s: %s not delivered: %s", self.what, sop_uid, error)
            return i + 1 if self._finish(dest, out, (msg_id, False), i, matches, counts) else None
        status = self._awaited(dest, msg_id, sop_uid, status, outs, closed, req_outs, req_closed)
        return i + 1 if self._finish(dest, out, (msg_id, True), i, matches, counts, status=status) else None

    def _awaited(self, dest: SameAssociation | SubAssociation, msg_id: int, sop_uid: str, status: int | None,
                 outs: list[tuple[Any, ...]], closed: str | None, req_outs: list[tuple[Any, ...]],
                 req_closed: str | None) -> int | None:
        """The status of a sub-operation a native batch stopped at (see retrieve_batch): what it
        read besides is acted on as read_until and poll_cancel act on it, and the response read
        here if it had not come."""
        if isinstance(dest, SameAssociation):
            for out in outs:
                self._from_requestor(out)
            if closed is not None:
                self._requestor_closed(closed)
                return None
            if self.gone:
                return None
            return status if status is not None else dest.await_response(msg_id, sop_uid)
        if outs:
            log.warning("C-MOVE: the destination ended the association during %s", sop_uid)
            return None
        if closed is not None:
            log.warning("C-MOVE: the destination closed the connection during %s", sop_uid)
            return None
        if status is None:
            return dest.await_response(msg_id, sop_uid)
        if status == SUCCESS:  # the batch looked at the requestor's association after it
            for out in req_outs:
                self._from_requestor(out)
            if req_closed is not None:
                self._requestor_closed(req_closed)
        elif not self.cancelled:
            self.poll_cancel()
        return status

    def _start(self, dest: SameAssociation | SubAssociation, out: Outgoing) -> tuple[int, bool] | None:
        """Sends one sub-operation's C-STORE-RQ: (message id, delivered), None if it had nothing
        to send (its object could not be read or sent)."""
        if out.data is None:
            return None
        same = isinstance(dest, SameAssociation)
        msg_id = dest.next_message_id()
        command = store_rq(out.sop_class, out.sop_uid, msg_id, dest.originator)
        # on the same association, the previous pending response leaves with this request
        sent = dest.send_store(self.unsent if same else b"", out.context_id, command, out.data, out.sop_uid)
        if sent and same:
            self.unsent = b""
        return msg_id, sent

    def _finish(self, dest: SameAssociation | SubAssociation, out: Outgoing, started: tuple[int, bool] | None,
                i: int, matches: list[Match], counts: Counts, status: Any = UNREAD) -> bool:
        """Reads the response to sub-operation `i` (started by _start) unless its `status` was
        read already (None: there will be none), counts it, and queues or sends its pending
        response; False when the operation cannot go on."""
        same = isinstance(dest, SameAssociation)
        counts.remaining -= 1
        if started is None:
            counts.fail(out.sop_uid)
        else:
            msg_id, sent = started
            if status is UNREAD:
                status = dest.await_response(msg_id, out.sop_uid) if sent else None
            if status is None:
                if same:
                    self.gone = True
                else:  # the destination failed: this one and the rest, none of them read
                    self.dest_failed = True
                    counts.fail(out.sop_uid)
                    self._fail_rest(matches, i + 1, counts)
                if self.gone:
                    return False
            elif status == SUCCESS:
                counts.completed += 1
            elif status in WARNING_STATUSES:
                counts.warning += 1
            else:
                log.warning("%s: %s refused with status 0x%04X", self.what, out.sop_uid, status)
                counts.fail(out.sop_uid)
        # a pending response once pending_interval has passed since the last one (0: after every
        # sub-operation, the last one too, as pynetdicom and dcmtk do); on a C-GET it leaves with
        # the next request, or with the final response
        if not self._pending_due():
            return not self.dest_failed
        self.unsent += self._rsp(PENDING, counts, remaining=True)
        if not same:
            if not self.io.send(self.unsent, self.what):
                self.gone = True
                return False
            self.unsent = b""
        return not self.dest_failed

    def _pending_due(self) -> bool:
        """Whether a pending response is due now (then it counts as made)."""
        now = time.monotonic()
        if self._last_pending is not None and now - self._last_pending < self.pending_interval:
            return False
        self._last_pending = now
        return True

    @staticmethod
    def _fail_rest(matches: list[Match], start: int, counts: Counts) -> None:
        for m in matches[start:]:
            counts.remaining -= 1
            counts.fail(m.sop_uid)

    # reading
    def read_until(self, reader: Any, msg_id: int, sop_uid: str, *, destination: bool = False) -> int | None:
        """The status of the C-STORE-RSP to `msg_id` from `reader` (None if that association
        ended, timed out, or the requestor's association is being killed). On the requestor's own
        association a C-CANCEL for this operation is noted, an A-ABORT or A-RELEASE-RQ ends it,
        and anything else is kept, in order, for after the operation."""
        timeout = self.io.dimse_timeout()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if self.io.killed():
                self.gone = True
                return None
            left = WAKE_S if deadline is None else min(WAKE_S, max(0.0, deadline - time.monotonic()))
            outs, state, reason = reader.next(None, left)
            status = None
            for out in outs:
                if out[0] == "msg" and out[2] == C_STORE_RSP and out[7] == msg_id:
                    status = int(out[8]) if out[8] is not None else PROCESSING_FAILURE
                elif destination:
                    if ends_association(out):
                        log.warning("C-MOVE: the destination ended the association during %s", sop_uid)
                        return None
                else:
                    self._from_requestor(out)
            if state == "closed":
                if destination:
                    log.warning("C-MOVE: the destination closed the connection during %s", sop_uid)
                else:
                    self._requestor_closed(reason)
                return None
            if self.gone:
                return None
            if status is not None:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                if destination:
                    log.warning("C-MOVE: no C-STORE-RSP for %s within %g s", sop_uid, timeout)
                else:
                    self.io.abort(f"no C-STORE-RSP for {sop_uid} within {timeout:g} s ({self.what})")
                    self.gone = True
                return None

    def poll_cancel(self) -> None:
        """C-MOVE: a C-CANCEL (or the end of the association) read from the requestor's
        association without waiting."""
        outs, state, reason = self.io.reader.next(None, 0.0)
        for out in outs:
            self._from_requestor(out)
        if state == "closed":
            self._requestor_closed(reason)

    def _from_requestor(self, out: tuple[Any, ...]) -> None:
        """Something the requestor's association delivered during the operation: its C-CANCEL is
        noted; an A-ABORT or A-RELEASE-RQ ends the operation; the rest waits, in order, for after."""
        if out[0] == "msg" and out[2] == C_CANCEL_RQ and out[7] == self.message_id:
            self.cancelled = True
            return
        if ends_association(out):
            self.gone = True
        self.io.queue_later(out)

    def _requestor_closed(self, reason: str | None) -> None:
        self.io.closed_during(reason or "")
        self.gone = True


Handler = Callable[..., None]


def fast_get(engine: Engine, audit: DimseAudit | None = None, pending_interval: float = 0.0) -> Handler:
    """The C-GET handler of dimse/fastpath.py: (fast path, context, message id, model, identifier)."""

    def get(io: Any, cx: Any, message_id: int, model: str, raw: bytes) -> None:
        NativeRetrieve(io, engine, cx, message_id, model, raw, audit=audit,
                       pending_interval=pending_interval).run()

    return get


def fast_move(engine: Engine, peers: Peers, our_ae: str,
              tls_context: Callable[[], ssl.SSLContext | None], audit: DimseAudit | None = None,
              pending_interval: float = 0.0) -> Handler:
    """The C-MOVE handler of dimse/fastpath.py: (fast path, context, message id, model, identifier,
    move destination AE)."""

    def move(io: Any, cx: Any, message_id: int, model: str, raw: bytes, destination: str) -> None:
        NativeRetrieve(io, engine, cx, message_id, model, raw, move_to=destination, peers=peers,
                       tls_context=tls_context, our_ae=our_ae, audit=audit,
                       pending_interval=pending_interval).run()

    return move
