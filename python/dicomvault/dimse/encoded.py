"""C-STORE requests framed natively and sent through pynetdicom's DUL as ready bytes.

Why: for every C-STORE sub-operation of a C-GET or C-MOVE (and `dicomvault send`) pynetdicom
builds the command set as a pydicom Dataset and encodes it, cuts the 512 KB data set into PDV
fragments (a copy), encodes each P-DATA-TF PDU in Python (another copy) and sends it with a loop
that re-slices the unsent rest after every partial write: ~35-45 % of the server's time in a
C-GET of CT slices (profiled with py-spy, bench/README.md). Here the command set is packed with
`struct` (checked at install against pynetdicom's own encoding of the same request), command and
data set are framed into PDUs natively (`_native.frame_message`) and the whole message goes to the
DUL as one `EncodedPData` primitive, which the patched P-DATA actions write with one `sendall`.

The DUL still sends it (so the order of everything queued on the association holds) and the state
machine still sees its Evt9 and transitions; only the encoding is skipped. Anything unusual (an
EVT_DIMSE_SENT handler bound, a field this encoder does not know) takes pynetdicom's path.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from pynetdicom import fsm
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF
from pynetdicom.pdu_primitives import P_DATA

from . import command_set as cs

DATASET_PRESENT = 0x0001  # pynetdicom's Command Data Set Type when a data set follows


class EncodedPData(P_DATA):
    """A P-DATA request whose P-DATA-TF PDUs are already encoded (one whole DIMSE message)."""

    def __init__(self, encoded: bytes) -> None:
        super().__init__()
        self.encoded = encoded


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


# -- the DUL's P-DATA actions ----------------------------------------------------------------------

_ORIGINAL_ACTIONS = {name: fsm.ACTIONS[name] for name in ("DT-1", "AR-7")}
ORIGINAL_FUNCTIONS = {"fsm.DT_1": fsm.DT_1, "fsm.AR_7": fsm.AR_7}


def _send_p_data(dul: Any) -> None:
    """pynetdicom's DT-1/AR-7 (send the P-DATA request at the head of the queue), writing an
    EncodedPData's bytes as they are."""
    primitive = dul.to_provider_queue.get(False)
    if not isinstance(primitive, EncodedPData):
        dul._send(P_DATA_TF(primitive))
        return
    sock = getattr(dul.socket, "socket", None)
    if sock is None:
        return  # closed under us: pynetdicom's _send logs and drops likewise
    try:
        sock.sendall(primitive.encoded)
    except OSError:
        dul.socket.event_queue.put("Evt17")  # transport connection closed, as AssociationSocket.send


def _dt_1(dul: Any) -> str:
    _send_p_data(dul)
    return "Sta6"


def _ar_7(dul: Any) -> str:
    _send_p_data(dul)
    return "Sta8"


def install() -> None:
    """Routes P-DATA requests through `_send_p_data` (process-wide; idempotent)."""
    fsm.ACTIONS["DT-1"] = (_ORIGINAL_ACTIONS["DT-1"][0], _dt_1, _ORIGINAL_ACTIONS["DT-1"][2])
    fsm.ACTIONS["AR-7"] = (_ORIGINAL_ACTIONS["AR-7"][0], _ar_7, _ORIGINAL_ACTIONS["AR-7"][2])


def uninstall() -> None:
    fsm.ACTIONS.update(_ORIGINAL_ACTIONS)
