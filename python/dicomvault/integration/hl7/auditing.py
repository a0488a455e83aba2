"""Audit records of the HL7 messages applied: one per message the archive acknowledged AA.

    ORM^O01, OMI^O23       Procedure Record (DCM 110111): ORC-1 NW -> C, XO -> U, CA/DC -> D
    ORU^R01                Procedure Record, action U (a report on the study)

The requestor is the sending application (`MSH-3@MSH-4`, as the report store names it) from its
network address; the patient is PID-3; `detail` names the message type, its control id and
what was done (the ACK's MSA-3). ADT messages are not audited here: each patient update or merge
they cause is audited where it is applied (integration/patients.py: Patient Record DCM 110110,
naming the survivor of a merge), and one that changes nothing is no event.

The record is written (fsynced) before the ACK goes out, so an acknowledged change always has
its line. A message refused (AE/AR) changed nothing: it is kept in `<data>/hl7/rejected/` with
its reason, not audited here.
"""

from __future__ import annotations

from ...audit.log import PROCEDURE_RECORD, SUCCESS, AuditLog, Record
from .message import Hl7Error, Message, parse
from .mllp import Handler

_ORDER_ACTIONS = {"NW": "C", "XO": "U", "CA": "D", "DC": "D"}


def _ack_code(ack: bytes) -> tuple[str, str]:
    """(MSA-1, MSA-3) of an ACK we built."""
    for line in ack.split(b"\r"):
        if line.startswith(b"MSA"):
            f = line.decode("utf-8", "replace").split(line[3:4].decode() or "|")
            return (f[1] if len(f) > 1 else ""), (f[3] if len(f) > 3 else "")
    return "", ""


def applied_record(log: AuditLog, msg: Message, address: str, summary: str) -> Record | None:
    """The record of one applied message, None for a type that changes no record."""
    kind, trigger = msg.type
    if kind in ("ORM", "OMI"):
        event = PROCEDURE_RECORD
        action = _ORDER_ACTIONS.get(msg.get("ORC", 1).upper(), "U")
    elif kind == "ORU":
        event, action = PROCEDURE_RECORD, "U"
    else:
        return None
    sender = "@".join(p for p in (msg.get("MSH", 3), msg.get("MSH", 4)) if p) or "unknown"
    return log.event(event, SUCCESS, user=f"hl7:{sender}", client=address, patient=msg.get("PID", 3) or None,
                     detail={"protocol": "HL7 v2 MLLP", "message": f"{kind}^{trigger}",
                             "control_id": msg.control_id, "action": action, "summary": summary})


def audited(handler: Handler, log: AuditLog) -> Handler:
    """`handler` with an audit record written for each message it acknowledged AA."""

    def handle(raw: bytes, peer: str) -> bytes:
        ack = handler(raw, peer)
        code, summary = _ack_code(ack)
        if code != "AA":
            return ack
        try:
            msg = parse(raw)
        except Hl7Error:
            return ack  # cannot happen for a message answered AA; nothing to name
        rec = applied_record(log, msg, peer.rsplit(":", 1)[0], summary)
        if rec is not None:
            log.write([rec])
        return ack

    return handle
