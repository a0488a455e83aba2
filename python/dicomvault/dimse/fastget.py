"""C-GET on the native path of an established acceptor association (dimse/fastpath.py).

Why: through pynetdicom every C-STORE sub-operation of a C-GET cost ~0.5 ms of Python (the
request as a Dataset primitive, its message queue, the reactor's hand-offs, the response decoded
into another Dataset), which made a study retrieve slower than Orthanc's. Here the association's
reader thread, which already owns the socket, runs the whole operation: it resolves the
identifier from the index, frames each C-STORE-RQ natively and writes it, reads its C-STORE-RSP
through the native reader (GIL released), and reports progress with pending C-GET-RSPs. The next
objects are read, decoded from their stored codec and, if need be, transcoded by a read-ahead
pool while the current one is on the wire.

The semantics are PS3.4 C.4.3's: one sub-operation at a time (no asynchronous operations are
negotiated); a pending response after each with the remaining, completed, failed and warning
counts; C-CANCEL honoured between sub-operations (final status Cancel, with the counts); a final
Success, 0xB000 when some sub-operations failed or warned, 0xA702 when all failed, with the Failed
SOP Instance UID List. A sub-operation fails, and the others go on, when the object cannot be read
or the requestor accepted no transfer syntax it can be sent in: the stored one, or an uncompressed
one it is converted (decompressed) to.
"""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from io import BytesIO
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filebase import DicomBytesIO
from pydicom.filereader import read_dataset
from pydicom.filewriter import write_dataset
from pydicom.uid import (
    UID,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
)
from pynetdicom.dsutils import encode
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)

from .. import _native
from ..engine import Engine
from ..errors import DicomVaultError
from ..readahead import read_ahead
from . import command_set as cs
from .common import log
from .find import decode_identifier
from .retrieve import Match, RetrieveError, resolve
from .status import CANCEL, CANNOT_DECODE_IDENTIFIER, PENDING, PROCESSING_FAILURE, SUCCESS

GET_MODELS = (PatientRootQueryRetrieveInformationModelGet, StudyRootQueryRetrieveInformationModelGet)
C_GET_RQ, C_GET_RSP = 0x0010, 0x8010
C_STORE_RQ, C_STORE_RSP = 0x0001, 0x8001
C_CANCEL_RQ = 0x0FFF
SUB_OPERATIONS_FAILED = 0xB000  # complete, one or more failures or warnings
ALL_FAILED = 0xA702  # out of resources: unable to perform sub-operations
WARNING_STATUSES = frozenset({0x0001, 0xB000, 0xB006, 0xB007})
DATASET_PRESENT = 0x0001
NO_DATASET = 0x0101
# Uncompressed syntaxes an object can be converted to, in the order we prefer them.
UNCOMPRESSED = (ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian)


@dataclass(slots=True)
class Outgoing:
    """One sub-operation, ready to send: its context and data set, or why it cannot be sent."""

    sop_uid: str
    sop_class: str
    context_id: int = 0
    data: bytes | None = None
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
    """What the requestor accepted us to send: storage contexts on which we are the SCU (it
    proposed the SCP role), by SOP Class, with their transfer syntax."""

    def __init__(self, contexts: dict[int, Any]) -> None:
        self.by_class: dict[str, list[tuple[int, str]]] = {}
        for cid, cx in sorted(contexts.items()):
            if getattr(cx, "as_scu", False) and cx.abstract_syntax not in GET_MODELS:
                entry = (cid, str(cx.transfer_syntax[0]))
                self.by_class.setdefault(str(cx.abstract_syntax), []).append(entry)

    def choose(self, sop_class: str, stored: str) -> tuple[int, str] | None:
        """(context id, transfer syntax to send in): the stored syntax if accepted, else an
        accepted uncompressed one; None if neither was."""
        offered = self.by_class.get(sop_class, [])
        for cid, ts in offered:
            if ts == stored:
                return cid, ts
        for want in UNCOMPRESSED:
            for cid, ts in offered:
                if ts == want:
                    return cid, ts
        return None


def convert(raw: bytes, stored: str, target: str) -> bytes:
    """The data set `raw` (in `stored`) in the uncompressed syntax `target`: decoded by pydicom,
    its pixel data decompressed (pydicom's decoders: pylibjpeg, Pillow) when `stored` is a
    compressed syntax, and encoded again. Raises on anything that cannot be converted."""
    ts = UID(stored)
    data = zlib.decompress(raw, -zlib.MAX_WBITS) if ts.is_deflated else raw
    ds = read_dataset(BytesIO(data), ts.is_implicit_VR, ts.is_little_endian)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ts
    if ts.is_compressed:
        # the same instance in another transfer syntax: its SOP Instance UID stays (PS3.5 10)
        ds.decompress(generate_instance_uid=False)
    out = UID(target)
    if ts.is_little_endian != out.is_little_endian:
        _swap_words(ds)
    encoded = encode(ds, out.is_implicit_VR, out.is_little_endian)
    if encoded is None:
        raise ValueError(f"pydicom cannot encode the data set in {out.name}")
    return encoded


# Binary VRs pydicom keeps as raw bytes, with their word size: what a change of byte order must
# swap itself (numbers in US, SS, FL, ... are decoded values, which pydicom writes either way).
_WORD_SIZES = {"OW": 2, "OF": 4, "OL": 4, "OD": 8, "OV": 8}


def _swap_words(ds: Dataset) -> None:
    for elem in ds.iterall():
        size = _WORD_SIZES.get(str(elem.VR))
        if size and isinstance(elem.value, bytes | bytearray) and len(elem.value) % size == 0:
            elem.value = np.frombuffer(elem.value, dtype=f"u{size}").byteswap().tobytes()


def prepare(engine: Engine, offer: Offer, m: Match) -> Outgoing:
    """Reads one matched object (its blob decoded and hash-checked) and makes it sendable."""
    try:
        rec, ts, raw = engine.read_instance(m.sop_uid)
    except DicomVaultError as exc:
        log.error("C-GET: cannot read %s: %s", m.sop_uid, exc)
        return Outgoing(m.sop_uid, m.sop_class, error=str(exc))
    sop_class = m.sop_class or rec.sop_class_uid
    choice = offer.choose(sop_class, ts)
    if choice is None:
        why = f"no accepted transfer syntax for {sop_class} that {UID(ts).name} can be sent in"
        log.warning("C-GET: %s not sent: %s", m.sop_uid, why)
        return Outgoing(m.sop_uid, sop_class, error=why)
    cid, target = choice
    if target != ts:
        try:
            raw = convert(raw, ts, target)
        except Exception as exc:  # noqa: BLE001 - any decoder failure fails this sub-operation only
            log.warning("C-GET: %s cannot be converted from %s to %s: %s", m.sop_uid, UID(ts).name,
                        UID(target).name, exc)
            return Outgoing(m.sop_uid, sop_class, error=f"conversion to {UID(target).name} failed: {exc}")
        log.info("C-GET: %s converted from %s to %s for the requestor", m.sop_uid, UID(ts).name,
                 UID(target).name)
    return Outgoing(m.sop_uid, sop_class, cid, raw)


def store_rq(sop_class: str, sop_uid: str, message_id: int) -> bytes:
    """A C-STORE-RQ command set with a data set (medium priority), as pynetdicom encodes it."""
    return cs.pack([(0x0002, cs.ui(sop_class)), (0x0100, cs.us(C_STORE_RQ)), (0x0110, cs.us(message_id)),
                    (0x0700, cs.us(0)), (0x0800, cs.us(DATASET_PRESENT)), (0x1000, cs.ui(sop_uid))])


def get_rsp(sop_class: str, message_id: int, status: int, counts: Counts, *, remaining: bool,
            data_set: bool, comment: str | None = None) -> bytes:
    """A C-GET-RSP command set (PS3.7 9.3.3.2): the sub-operation counts, Remaining only in
    pending and cancel responses."""
    elements = [(0x0002, cs.ui(sop_class)), (0x0100, cs.us(C_GET_RSP)), (0x0120, cs.us(message_id)),
                (0x0800, cs.us(DATASET_PRESENT if data_set else NO_DATASET)), (0x0900, cs.us(status))]
    if comment:
        text = "".join(c for c in comment if c.isascii())[:64].rstrip()
        elements.append((0x0902, text.encode("ascii") + (b" " if len(text) % 2 else b"")))
    if remaining:
        elements.append((0x1020, cs.us(counts.remaining)))
    elements += [(0x1021, cs.us(counts.completed)), (0x1022, cs.us(counts.failed)),
                 (0x1023, cs.us(counts.warning))]
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


class NativeGet:
    """One C-GET, run by the association's reader thread. `io` is the FastPath: its socket
    writes (`send`), reader (`reader`), the messages kept for after (`queue_later`)."""

    def __init__(self, io: Any, engine: Engine, cx: Any, message_id: int, model: str, raw: bytes) -> None:
        self.io = io
        self.engine = engine
        self.cx = cx
        self.context_id = int(cx.context_id)
        self.message_id = message_id
        self.model = model
        self.raw = raw
        self.implicit = str(cx.transfer_syntax[0]) == ImplicitVRLittleEndian
        self.cancelled = False
        self.gone = False  # the association ended (closed or aborted) during the operation
        self.unsent = b""  # the last pending response, sent with the final one

    def _final(self, status: int, counts: Counts, comment: str | None = None, *,
               remaining: bool = False) -> None:
        ident = failed_list(counts.failed_uids, self.implicit) if counts.failed_uids else None
        command = get_rsp(self.model, self.message_id, status, counts, remaining=remaining,
                          data_set=ident is not None, comment=comment)
        final = _native.frame_message(self.context_id, command, ident, self.io.peer_max_pdu)
        self.io.send(self.unsent + final, "C-GET")
        self.unsent = b""

    def run(self) -> None:
        caller = self.io.caller()
        try:
            identifier = decode_identifier(self.raw, self.implicit)
            identifier.get("QueryRetrieveLevel")  # pydicom decodes lazily: fail here
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the peer's bad identifier
            log.warning("C-GET from %s: identifier cannot be decoded: %s", caller, exc)
            self._final(CANNOT_DECODE_IDENTIFIER, Counts(0), f"cannot decode identifier: {exc}")
            return
        try:
            matches = resolve(self.engine, identifier, self.model, syntaxes=False)
        except RetrieveError as exc:
            log.warning("C-GET from %s refused (0x%04X): %s", caller, exc.code, exc)
            self._final(exc.code, Counts(0), str(exc))
            return
        log.info("C-GET from %s: %d instances", caller, len(matches))
        counts = Counts(len(matches))
        offer = Offer(self.io.contexts)
        loads = read_ahead(lambda m: prepare(self.engine, offer, m), matches)
        try:
            self._sub_operations(loads, counts)
        except Exception as exc:  # noqa: BLE001 - answer the requestor, keep the association
            log.exception("C-GET from %s failed", caller)
            if not self.gone:
                self._final(PROCESSING_FAILURE, counts, f"retrieve failed: {exc}")
            return
        finally:
            loads.close()
        if self.gone:
            return
        if self.cancelled:
            log.info("C-GET from %s cancelled: %d sent, %d left", caller, counts.completed, counts.remaining)
            self._final(CANCEL, counts, remaining=True)
            return
        status = SUCCESS
        if counts.failed and not (counts.completed or counts.warning):
            status = ALL_FAILED
        elif counts.failed or counts.warning:
            status = SUB_OPERATIONS_FAILED
        log.info("C-GET from %s: %d sent, %d failed, %d warnings", caller, counts.completed, counts.failed,
                 counts.warning)
        self._final(status, counts)

    def _sub_operations(self, loads: Any, counts: Counts) -> None:
        for _, fut in loads:
            if self.cancelled or self.gone:
                return
            out: Outgoing = fut.result()
            counts.remaining -= 1
            if out.data is None:
                counts.fail(out.sop_uid)
            else:
                msg_id = self.io.next_message_id()
                frames = _native.frame_message(out.context_id, store_rq(out.sop_class, out.sop_uid, msg_id),
                                               out.data, self.io.peer_max_pdu)
                # the previous pending response leaves with this request: one write
                if not self.io.send(self.unsent + frames, out.sop_uid):
                    self.gone = True
                    return
                self.unsent = b""
                status = self._await_response(msg_id, out.sop_uid)
                if status is None:
                    return  # gone: nobody to answer
                if status == SUCCESS:
                    counts.completed += 1
                elif status in WARNING_STATUSES:
                    counts.warning += 1
                else:
                    log.warning("C-GET: the requestor refused %s with status 0x%04X", out.sop_uid, status)
                    counts.fail(out.sop_uid)
            # a pending response after every sub-operation, the last one too (as pynetdicom and
            # dcmtk do); it leaves with the next request, or with the final response
            self.unsent += _native.frame_message(
                self.context_id, get_rsp(self.model, self.message_id, PENDING, counts, remaining=True,
                                         data_set=False), None, self.io.peer_max_pdu)

    def _await_response(self, msg_id: int, sop_uid: str) -> int | None:
        """The status of the C-STORE-RSP to `msg_id` (None if the association ended or timed
        out: then it is aborted). A C-CANCEL for this C-GET is noted; anything else read
        meanwhile is kept, in order, for after the operation."""
        timeout = self.io.dimse_timeout()
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = 1.0 if deadline is None else max(0.0, deadline - time.monotonic())
            outs, state, reason = self.io.reader.next(None, left)
            status = None
            for out in outs:
                if out[0] == "msg" and out[2] == C_STORE_RSP and out[7] == msg_id:
                    status = int(out[8]) if out[8] is not None else PROCESSING_FAILURE
                elif out[0] == "msg" and out[2] == C_CANCEL_RQ and out[7] == self.message_id:
                    self.cancelled = True
                else:
                    if out[0] != "msg":
                        self.gone = True  # A-ABORT, A-RELEASE-RQ or a protocol error mid-operation
                    self.io.queue_later(out)
            if state == "closed":
                self.io.closed_during(reason or "")
                self.gone = True
                return None
            if self.gone:
                return None
            if status is not None:
                return status
            if deadline is not None and time.monotonic() >= deadline:
                self.io.abort(f"no C-STORE-RSP for {sop_uid} within {timeout:g} s (C-GET sub-operation)")
                self.gone = True
                return None


def fast_get(engine: Engine) -> Callable[[Any, Any, int, str, bytes], None]:
    """The C-GET handler of dimse/fastpath.py: (fast path, context, message id, model, identifier)."""

    def get(io: Any, cx: Any, message_id: int, model: str, raw: bytes) -> None:
        NativeGet(io, engine, cx, message_id, model, raw).run()

    return get
