"""One local audit record as a DICOM audit message (PS3.15 A.5.1, the schema that extends RFC 3881):
what an audit repository receives over syslog.

The record's `code` ("DCM 110114") is the EventID; the event adds the EventTypeCode and the
EventActionCode A.5.3 gives it. Active participants: the requestor (the record's user, from its
client) and the archive itself (its AE title, on this host), each with the role A.5.3 names for
that event. Participant objects: the patient and the study when the record names them, and the
query of a Query record. Element order follows the schema (EventIdentification, ActiveParticipant+,
AuditSourceIdentification, ParticipantObjectIdentification*), because repositories validate it.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import socket
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any

from . import log as events

# (csd-code, codeSystemName, originalText): PS3.16 CID 400-405 / RFC 3881 codes.
Code = tuple[str, str, str]

EVENT_IDS: dict[str, Code] = {
    "DCM 110100": ("110100", "DCM", "Application Activity"),
    "DCM 110102": ("110102", "DCM", "Begin Transferring DICOM Instances"),
    "DCM 110103": ("110103", "DCM", "DICOM Instances Accessed"),
    "DCM 110104": ("110104", "DCM", "DICOM Instances Transferred"),
    "DCM 110105": ("110105", "DCM", "DICOM Study Deleted"),
    "DCM 110106": ("110106", "DCM", "Export"),
    "DCM 110110": ("110110", "DCM", "Patient Record"),
    "DCM 110111": ("110111", "DCM", "Procedure Record"),
    "DCM 110112": ("110112", "DCM", "Query"),
    "DCM 110113": ("110113", "DCM", "Security Alert"),
    "DCM 110114": ("110114", "DCM", "User Authentication"),
}

_SECURITY_CONFIGURATION: Code = ("110129", "DCM", "Security Configuration")
_RESTRICTED_FUNCTION: Code = ("110132", "DCM", "Use of Restricted Function")
EVENT_TYPES: dict[str, Code] = {
    events.APPLICATION_START: ("110120", "DCM", "Application Start"),
    events.APPLICATION_STOP: ("110121", "DCM", "Application Stop"),
    events.LOGIN: ("110122", "DCM", "Login"),
    events.LOGOUT: ("110123", "DCM", "Logout"),
    # A share link grants access to a study: a change of who may see what.
    events.SHARE_CREATED: _SECURITY_CONFIGURATION,
    events.SHARE_REVOKED: _SECURITY_CONFIGURATION,
    events.SHARE_SCOPE_REFUSED: _RESTRICTED_FUNCTION,
    # A caller turned away in the association or the TLS handshake: its node failed to authenticate.
    events.ASSOCIATION_REFUSED: ("110126", "DCM", "Node Authentication"),
    events.TLS_REFUSED: ("110126", "DCM", "Node Authentication"),
}
# Security Alert needs an EventTypeCode (A.5.3.11): a writer names it in detail["alert"].
ALERT_TYPES: dict[str, Code] = {
    "node-authentication": ("110126", "DCM", "Node Authentication"),
    "network-configuration": ("110128", "DCM", "Network Configuration"),
    "security-configuration": _SECURITY_CONFIGURATION,
    "software-configuration": ("110131", "DCM", "Software Configuration"),
    "restricted-function": _RESTRICTED_FUNCTION,
}

ACTIONS = {
    events.DATA_DELETION: "D",
    events.EXPORT: "R",
    events.SHARE_USED: "R",
    events.INSTANCES_ACCESSED: "R",
    events.INSTANCES_REJECTED: "U",  # IOCM hides instances: an update of what the archive shows
    events.INSTANCES_RESTORED: "U",
    events.PATIENT_RECORD: "U",  # an update, a merge or its undoing: the patient's record changes
}  # every other event is "E" (execute), but instances-transferred (see _action)

# A.5.2: 0 success; 4 minor failure (a refused login, a refused request: the archive goes on).
OUTCOME_INDICATORS = {events.SUCCESS: "0", events.FAILURE: "4"}

ROLE_APPLICATION: Code = ("110150", "DCM", "Application")
ROLE_LAUNCHER: Code = ("110151", "DCM", "Application Launcher")
ROLE_DESTINATION: Code = ("110152", "DCM", "Destination Role ID")
ROLE_SOURCE: Code = ("110153", "DCM", "Source Role ID")

PATIENT_NUMBER: Code = ("2", "RFC-3881", "Patient Number")
STUDY_UID: Code = ("110180", "DCM", "Study Instance UID")
SOP_CLASS_UID: Code = ("110181", "DCM", "SOP Class UID")
APPLICATION_SERVER: Code = ("4", "DCM", "Application Server Process Tier")

# A Query record from before C-FIND records named their information model: Study Root FIND.
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"


@dataclass(frozen=True)
class AuditSource:
    """Who reports: AuditSourceID (the archive's AE title), the optional AuditEnterpriseSiteID,
    and the host name that is the archive's network access point."""

    source_id: str
    site: str | None = None
    hostname: str = field(default_factory=socket.gethostname)


def _coded(parent: ET.Element, tag: str, code: Code) -> ET.Element:
    attrs = {"csd-code": code[0], "codeSystemName": code[1], "originalText": code[2]}
    return ET.SubElement(parent, tag, attrs)


def _b64(value: Any) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, sort_keys=True)
    return base64.b64encode(text.encode("utf-8")).decode("ascii")


def _access_point(client: str | None, source: AuditSource) -> dict[str, str]:
    """NetworkAccessPointID/TypeCode of a record's client: an IP address (2), our own host for the
    CLI (1), nothing for a DIMSE caller (the client is its AE title, not a network address)."""
    if not client:
        return {}
    if client == "local":
        return {"NetworkAccessPointID": source.hostname, "NetworkAccessPointTypeCode": "1"}
    try:
        ipaddress.ip_address(client)
    except ValueError:
        return {}
    return {"NetworkAccessPointID": client, "NetworkAccessPointTypeCode": "2"}


def _action(rec: dict[str, Any]) -> str:
    event = rec.get("event")
    if event == events.INSTANCES_TRANSFERRED:
        return "C" if _detail(rec).get("direction", "received") == "received" else "R"
    if event in (events.PATIENT_RECORD, events.PROCEDURE_RECORD):
        action = _detail(rec).get("action")  # what the HL7 message did to the record
        return action if action in ("C", "R", "U", "D") else "U"
    return ACTIONS.get(str(event), "E")


def _detail(rec: dict[str, Any]) -> dict[str, Any]:
    d = rec.get("detail")
    return d if isinstance(d, dict) else {}


def _roles(event: str, rec: dict[str, Any]) -> tuple[Code | None, Code | None]:
    """(the requestor's role, the archive's role) in an event, as A.5.3 names them."""
    if event in (events.APPLICATION_START, events.APPLICATION_STOP):
        return ROLE_LAUNCHER, ROLE_APPLICATION
    if event == events.INSTANCES_TRANSFERRED and _action(rec) == "C":
        return ROLE_SOURCE, ROLE_DESTINATION
    if event in (events.INSTANCES_TRANSFERRED, events.EXPORT, events.SHARE_USED, events.BEGIN_TRANSFERRING):
        return ROLE_DESTINATION, ROLE_SOURCE
    if event == events.QUERY:
        return ROLE_SOURCE, ROLE_DESTINATION  # the process issuing the query, the one answering
    return None, None


def _participant(root: ET.Element, attrs: dict[str, str], role: Code | None) -> None:
    el = ET.SubElement(root, "ActiveParticipant", attrs)
    if role is not None:
        _coded(el, "RoleIDCode", role)


def _object(root: ET.Element, object_id: str, type_code: str, role: str, id_type: Code,
            *, query: str | None = None, instances: int | None = None) -> None:
    el = ET.SubElement(root, "ParticipantObjectIdentification", {
        "ParticipantObjectID": object_id, "ParticipantObjectTypeCode": type_code,
        "ParticipantObjectTypeCodeRole": role})
    _coded(el, "ParticipantObjectIDTypeCode", id_type)
    if query is not None:
        ET.SubElement(el, "ParticipantObjectQuery").text = query
    if instances is not None:
        desc = ET.SubElement(el, "ParticipantObjectDescription")
        ET.SubElement(desc, "SOPClass", {"NumberOfInstances": str(instances)})


def audit_message(rec: dict[str, Any], source: AuditSource) -> ET.Element:
    """The AuditMessage element of one record (a dict as audit.jsonl holds it). A record with an
    unknown code is a ValueError naming its seq: the writer only writes known codes."""
    code = EVENT_IDS.get(str(rec.get("code")))
    if code is None:
        raise ValueError(f"audit record seq {rec.get('seq')}: no ATNA EventID for code {rec.get('code')!r}")
    event = str(rec.get("event"))
    detail = _detail(rec)
    outcome = str(rec.get("outcome"))
    root = ET.Element("AuditMessage")
    ident = ET.SubElement(root, "EventIdentification", {
        "EventActionCode": _action(rec), "EventDateTime": str(rec.get("time")),
        "EventOutcomeIndicator": OUTCOME_INDICATORS.get(outcome, "4")})
    _coded(ident, "EventID", code)
    etype = EVENT_TYPES.get(event)
    if event == events.SECURITY_ALERT:
        etype = ALERT_TYPES.get(str(detail.get("alert")), _SECURITY_CONFIGURATION)
    if etype is not None:
        _coded(ident, "EventTypeCode", etype)
    if outcome != events.SUCCESS and detail.get("reason"):
        ET.SubElement(ident, "EventOutcomeDescription").text = str(detail["reason"])

    requestor_role, our_role = _roles(event, rec)
    user = str(rec.get("user") or "unknown")
    who = {"UserID": user}
    if str(detail.get("protocol", "")).startswith("DIMSE"):
        who["AlternativeUserID"] = f"AETITLES={user}"
    who["UserIsRequestor"] = "true"
    _participant(root, {**who, **_access_point(rec.get("client"), source)}, requestor_role)
    _participant(root, {"UserID": source.source_id, "AlternativeUserID": f"AETITLES={source.source_id}",
                        "UserIsRequestor": "false", "NetworkAccessPointID": source.hostname,
                        "NetworkAccessPointTypeCode": "1"}, our_role)

    src_attrs = {"AuditSourceID": source.source_id}
    if source.site:
        src_attrs = {"AuditEnterpriseSiteID": source.site, **src_attrs}
    _coded(ET.SubElement(root, "AuditSourceIdentification", src_attrs), "AuditSourceTypeCode",
           APPLICATION_SERVER)

    if rec.get("patient"):
        _object(root, str(rec["patient"]), "1", "1", PATIENT_NUMBER)
    if rec.get("study"):
        n = detail.get("instances")
        _object(root, str(rec["study"]), "2", "3", STUDY_UID,
                instances=n if isinstance(n, int) and not isinstance(n, bool) else None)
    if event == events.QUERY:
        model = str(detail.get("model") or STUDY_ROOT_FIND)
        # The keys as JSON (the query's DICOM data set is not kept), base64 as the schema wants.
        _object(root, model, "2", "24", SOP_CLASS_UID,
                query=_b64({"level": detail.get("level"), "keys": detail.get("keys", {})}))
    return root


def render(rec: dict[str, Any], source: AuditSource) -> bytes:
    """The message as UTF-8 XML on one line, without a declaration: syslog's BOM says UTF-8, and
    a one-line message survives relays that split on newlines."""
    return ET.tostring(audit_message(rec, source), encoding="unicode").encode("utf-8")
