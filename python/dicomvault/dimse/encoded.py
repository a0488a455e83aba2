"""DIMSE messages our associations encode themselves, and the DIMSE provider that sends them.

Why: for every C-STORE sub-operation of a C-GET or C-MOVE that pynetdicom serves (and forwarding)
pynetdicom builds the command set as a pydicom Dataset and encodes it, cuts the 512 KB data set
into PDV fragments (a copy), encodes each P-DATA-TF PDU in Python (another copy) and sends it
with a loop that re-slices the unsent rest after every partial write: ~35-45 % of the server's
time in a C-GET of CT slices (profiled with py-spy, bench/README.md). And every plain C-STORE-RSP
we answer costs a pydicom Dataset built and encoded twice (~15-25 % of a receiver's GIL time per
object, profiled).

`ArchiveDIMSEProvider.send_msg` (the DIMSE provider of our associations, association.py) therefore
- frames a C-STORE-RQ natively: command set packed with `struct`, command and data set framed into
  PDUs by `_native.frame_message`, the whole message handed to the DUL as one `EncodedPData`
  primitive, which the DUL's state machine (dul.py) writes with one `sendall`;
- packs a plain C-STORE-RSP, or a C-GET/C-MOVE-RSP with only status and counts, with `struct`;
- substitutes the stored bytes of a `PreEncodedDataset` (retrieve.StoredInstance) for pynetdicom's
  encoding of it (see `ArchiveAssociation.send_c_store`);
- queues each message's PDUs under a per-association lock.
Each encoder is checked once against pynetdicom's own encoding of the same messages before it is
used (`encoders_verified`); anything unusual (an EVT_DIMSE_SENT handler bound, a field these
encoders do not know) takes pynetdicom's path. The DUL still sends everything, in order, and the
state machine still sees its Evt9 and transitions; only the encoding is skipped.
"""

from __future__ import annotations

import functools
import logging
import threading
from io import BytesIO
from typing import TYPE_CHECKING, Any

from pydicom.dataset import Dataset
from pynetdicom import evt
from pynetdicom.dimse import DIMSEServiceProvider
from pynetdicom.dimse_messages import C_GET_RSP, C_MOVE_RSP, C_STORE_RQ, C_STORE_RSP
from pynetdicom.dimse_primitives import C_GET, C_MOVE, C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu_primitives import P_DATA

from .. import _native
from . import command_set as cs
from .limits import bound_message

if TYPE_CHECKING:
    from pynetdicom.association import Association

log = logging.getLogger("dicomvault.dimse")

DATASET_PRESENT = 0x0001  # pynetdicom's Command Data Set Type when a data set follows


class EncodedPData(P_DATA):
    """A P-DATA request whose P-DATA-TF PDUs are already encoded (one whole DIMSE message)."""

    def __init__(self, encoded: bytes) -> None:
        super().__init__()
        self.encoded = encoded


class PreEncodedDataset(Dataset):
    """A data set on its way out that knows its own bytes (retrieve.StoredInstance): only the
    UIDs pynetdicom looks at are elements, `encoded()` gives what is sent."""

    def encoded(self, implicit: bool, little: bool, deflated: bool) -> bytes | None:
        """The data set in the given encoding, or None if it cannot be had (logged)."""
        raise NotImplementedError


# -- C-STORE-RQ ------------------------------------------------------------------------------------

def store_rq_command(primitive: Any) -> bytes | None:
    """The encoded command set of a C-STORE request with a data set, or None if it is not one
    this encoder knows exactly."""
    if type(primitive) is not C_STORE or primitive.MessageID is None:
        return None
    if primitive.MessageIDBeingRespondedTo is not None or primitive.Status is not None:
        return None  # a response
    if not isinstance(primitive.DataSet, BytesIO):
        return None
    if primitive.AffectedSOPClassUID is None or primitive.AffectedSOPInstanceUID is None:
        return None
    elements = [
        (0x0002, cs.ui(primitive.AffectedSOPClassUID)),
        (0x0100, cs.us(0x0001)),  # CommandField: C-STORE-RQ
        (0x0110, cs.us(primitive.MessageID)),
        (0x0700, cs.us(primitive.Priority or 0)),
        (0x0800, cs.us(DATASET_PRESENT)),
        (0x1000, cs.ui(primitive.AffectedSOPInstanceUID)),
    ]
    originator = primitive.MoveOriginatorApplicationEntityTitle
    if originator:
        elements.append((0x1030, cs.ae(originator)))
    if primitive.MoveOriginatorMessageID is not None:
        elements.append((0x1031, cs.us(primitive.MoveOriginatorMessageID)))
    return cs.pack(elements)


def _pynetdicom_store_rq(primitive: Any) -> bytes:
    msg = C_STORE_RQ()
    msg.primitive_to_message(primitive)
    return bytes(encode(msg.command_set, True, True))


def store_rq_matches_pynetdicom() -> bool:
    """True if `store_rq_command` gives pynetdicom's bytes for every shape it handles."""
    for sop_uid, originator, originator_id, priority in (("1.2.3", None, None, 0),  # odd-length UID
                                                         ("1.2.34", "MOVESCU", 7, 2),  # odd-length AE
                                                         ("1.2.3.4", "ANY_SCU_AE", 65535, 1)):
        req = C_STORE()
        req.MessageID = 5
        req.AffectedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
        req.AffectedSOPInstanceUID = sop_uid
        req.Priority = priority
        if originator:
            req.MoveOriginatorApplicationEntityTitle = originator
            req.MoveOriginatorMessageID = originator_id
        req.DataSet = BytesIO(b"\x08\x00\x18\x00\x00\x00\x00\x00")
        if store_rq_command(req) != _pynetdicom_store_rq(req):
            return False
    return True


# -- C-STORE-RSP, C-GET-RSP, C-MOVE-RSP --------------------------------------------------------------

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


def pynetdicom_rsp(primitive: Any) -> bytes:
    """pynetdicom's own encoding of the command set of a response primitive (for comparisons)."""
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
    return all(fast_rsp(rsp) == pynetdicom_rsp(rsp) for rsp in _sample_responses())


@functools.cache
def encoders_verified() -> tuple[bool, bool]:
    """(C-STORE-RQ encoder, response encoder) each give pynetdicom's bytes: checked once per
    process; an encoder that does not is left unused (pynetdicom encodes), with a warning."""
    rq, rsp = store_rq_matches_pynetdicom(), fast_rsp_matches_pynetdicom()
    if not rq:
        log.warning("native C-STORE-RQ framing disabled: its command set differs from pynetdicom's")
    if not rsp:
        log.warning("fast C-STORE-RSP encoding disabled: it differs from pynetdicom's")
    return rq, rsp


# -- the DIMSE provider ------------------------------------------------------------------------------

class ArchiveDIMSEProvider(DIMSEServiceProvider):
    """pynetdicom's DIMSE provider; `send_msg` as described in the module docstring. With
    `fast_encoding` False (`tuned_reactor = false`) only the pre-encoded data sets and the send
    lock differ from pynetdicom's."""

    def __init__(self, assoc: Association, *, fast_encoding: bool = True) -> None:
        super().__init__(assoc)
        self.fast_encoding = fast_encoding
        # One message's P-DATA PDUs are queued together: stock pynetdicom lets two threads sending
        # on one association (the reactor answering an N-ACTION, our storage commitment thread
        # sending its N-EVENT-REPORT) interleave their fragments, which the peer cannot decode
        # (seen in tests/dimse: "Received an invalid DIMSE message").
        self._send_lock = threading.Lock()
        # SOP Instance UID -> the bytes to send for a PreEncodedDataset, set by
        # ArchiveAssociation.send_c_store just before pynetdicom builds the request.
        self.pre_encoded: dict[str, bytes] = {}

    def receive_primitive(self, primitive: Any) -> None:
        # `[dimse] max_object_size` on the path pynetdicom reads (limits.OversizeDataSet)
        super().receive_primitive(primitive)
        limit = getattr(self.assoc.ae, "max_object_size", 0) if self.assoc.is_acceptor else 0
        if limit:
            bound_message(self.message, limit)

    def send_msg(self, primitive: Any, context_id: int) -> None:
        if type(primitive) is C_STORE and primitive.MessageIDBeingRespondedTo is None and self.pre_encoded:
            raw = self.pre_encoded.pop(str(primitive.AffectedSOPInstanceUID), None)
            if raw is not None:
                primitive.DataSet = BytesIO(raw)
        if not self.fast_encoding or self.assoc.get_handlers(evt.EVT_DIMSE_SENT):
            with self._send_lock:
                super().send_msg(primitive, context_id)
            return
        fast_rq, fast_rsp_ok = encoders_verified()
        max_pdu = self.maximum_pdu_size
        if fast_rq and (command := store_rq_command(primitive)) is not None:
            # a C-STORE sub-operation or forward: command and data set framed natively, one primitive
            pdus = _native.frame_message(context_id, command, primitive.DataSet.getvalue(), max_pdu or 0)
            with self._send_lock:
                self.dul.send_pdu(EncodedPData(pdus))
            return
        rsp = fast_rsp(primitive) if fast_rsp_ok else None
        with self._send_lock:
            if rsp is None or (max_pdu and len(rsp) + 6 > max_pdu):
                super().send_msg(primitive, context_id)
                return
            pdata = P_DATA()
            pdata.presentation_data_value_list.append((context_id, b"\x03" + rsp))  # last command fragment
            self.dul.send_pdu(pdata)
