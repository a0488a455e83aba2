"""Local audit records as DICOM audit messages (PS3.15 A.5.1): well-formed XML, the element order
and cardinality the schema requires, the codes of A.5.3 for each event the archive writes."""

from __future__ import annotations

import base64
import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from dicomvault.audit import log as ev
from dicomvault.audit.atna import AuditSource, render
from dicomvault.audit.log import EVENTS, FAILURE, SUCCESS, AuditLog, build_event

SOURCE = AuditSource("ARCHIVE_AE", site="Radiology West", hostname="pacs1.example.org")

# The schema's content models (A.5.1): per element, its children in order as (tag, min, max).
# Name|Query is optional as in the current standard (an older text of the schema had it required;
# the log holds no patient names to put there).
MANY = 10**9
CONTENT = {
    "AuditMessage": [("EventIdentification", 1, 1), ("ActiveParticipant", 1, MANY),
                     ("AuditSourceIdentification", 1, 1), ("ParticipantObjectIdentification", 0, MANY)],
    "EventIdentification": [("EventID", 1, 1), ("EventTypeCode", 0, MANY), ("EventOutcomeDescription", 0, 1)],
    "ActiveParticipant": [("RoleIDCode", 0, MANY), ("MediaIdentifier", 0, 1)],
    "AuditSourceIdentification": [("AuditSourceTypeCode", 0, MANY)],
    "ParticipantObjectIdentification": [
        ("ParticipantObjectIDTypeCode", 1, 1), ("ParticipantObjectName|ParticipantObjectQuery", 0, 1),
        ("ParticipantObjectDetail", 0, MANY), ("ParticipantObjectDescription", 0, MANY)],
    "ParticipantObjectDescription": [("MPPS", 0, MANY), ("Accession", 0, MANY), ("SOPClass", 0, MANY),
                                     ("ParticipantObjectContainsStudy", 0, 1), ("Encrypted", 0, 1),
                                     ("Anonymized", 0, 1)],
}
REQUIRED_ATTRS = {
    "EventIdentification": {"EventDateTime", "EventOutcomeIndicator"},
    "ActiveParticipant": {"UserID", "UserIsRequestor"},
    "AuditSourceIdentification": {"AuditSourceID"},
    "ParticipantObjectIdentification": {"ParticipantObjectID"},
    "SOPClass": {"NumberOfInstances"},
}
CODED = {"EventID", "EventTypeCode", "RoleIDCode", "ParticipantObjectIDTypeCode"}


def check_schema(el: ET.Element) -> None:
    """Asserts `el` and its descendants follow the content models above."""
    missing = REQUIRED_ATTRS.get(el.tag, set()) - set(el.attrib)
    assert not missing, f"{el.tag} lacks {missing}"
    if el.tag in CODED:
        assert {"csd-code", "codeSystemName", "originalText"} <= set(el.attrib), el.tag
    model = CONTENT.get(el.tag)
    children = list(el)
    if model is not None:
        i = 0
        for names, lo, hi in model:
            n = 0
            while i < len(children) and children[i].tag in names.split("|"):
                i, n = i + 1, n + 1
            assert lo <= n <= hi, f"{el.tag}: {n} x {names}, schema wants {lo}..{hi}"
        assert i == len(children), f"{el.tag}: {children[i].tag} out of order or not allowed"
    for child in children:
        check_schema(child)


def message(event: str, outcome: str = SUCCESS, **kw: object) -> ET.Element:
    rec = build_event(event, outcome, when=1_700_000_000.5, **{"user": "wendy", "client": "10.1.2.3", **kw})
    rec.update(seq=7, prev="0" * 64)
    root = ET.fromstring(render(rec, SOURCE))  # well-formed, or this raises
    assert root.tag == "AuditMessage"
    check_schema(root)
    return root


def code(el: ET.Element | None) -> tuple[str | None, str | None]:
    assert el is not None
    return el.get("csd-code"), el.get("codeSystemName")


@pytest.mark.parametrize("event", sorted(EVENTS))
def test_every_event_renders_to_a_schema_valid_message(event: str) -> None:
    root = message(event, patient="PAT-1", study="1.2.3.4")
    ident = root.find("EventIdentification")
    assert ident is not None
    designator, value = ev.CODES[event].split()
    assert code(ident.find("EventID")) == (value, designator)
    assert ident.get("EventDateTime") == "2023-11-14T22:13:20.500+00:00"
    assert ident.get("EventOutcomeIndicator") == "0"
    objects = {o.get("ParticipantObjectID"): o for o in root.iter("ParticipantObjectIdentification")}
    patient, study = objects["PAT-1"], objects["1.2.3.4"]
    roles = "ParticipantObjectTypeCode", "ParticipantObjectTypeCodeRole"
    assert [patient.get(a) for a in roles] == ["1", "1"]  # a person, the patient
    assert code(patient.find("ParticipantObjectIDTypeCode")) == ("2", "RFC-3881")
    assert [study.get(a) for a in roles] == ["2", "3"]  # a system object, a report
    assert code(study.find("ParticipantObjectIDTypeCode")) == ("110180", "DCM")
    src = root.find("AuditSourceIdentification")
    assert src is not None and src.get("AuditSourceID") == "ARCHIVE_AE"
    assert src.get("AuditEnterpriseSiteID") == "Radiology West"


@pytest.mark.parametrize(("event", "action", "etype"), [
    (ev.APPLICATION_START, "E", "110120"), (ev.APPLICATION_STOP, "E", "110121"),
    (ev.LOGIN, "E", "110122"), (ev.LOGOUT, "E", "110123"), (ev.DATA_DELETION, "D", None),
    (ev.EXPORT, "R", None), (ev.SHARE_USED, "R", None), (ev.QUERY, "E", None),
    (ev.INSTANCES_TRANSFERRED, "C", None), (ev.SHARE_SCOPE_REFUSED, "E", "110132"),
    (ev.SECURITY_ALERT, "E", "110129"), (ev.BEGIN_TRANSFERRING, "E", None),
    (ev.INSTANCES_ACCESSED, "R", None), (ev.ASSOCIATION_REFUSED, "E", "110126"),
    (ev.TLS_REFUSED, "E", "110126"),
])
def test_action_and_event_type_codes_follow_a53(event: str, action: str, etype: str | None) -> None:
    ident = message(event).find("EventIdentification")
    assert ident is not None and ident.get("EventActionCode") == action
    types = [t.get("csd-code") for t in ident.findall("EventTypeCode")]
    assert types == ([etype] if etype else [])


def test_participants_name_who_asked_from_where_and_the_archive() -> None:
    root = message(ev.LOGIN, FAILURE, detail={"reason": "bad password"})
    ident = root.find("EventIdentification")
    assert ident is not None and ident.get("EventOutcomeIndicator") == "4"
    assert ident.findtext("EventOutcomeDescription") == "bad password"
    user, archive = root.findall("ActiveParticipant")
    assert user.attrib == {"UserID": "wendy", "UserIsRequestor": "true", "NetworkAccessPointID": "10.1.2.3",
                           "NetworkAccessPointTypeCode": "2"}
    assert archive.get("UserID") == "ARCHIVE_AE" and archive.get("UserIsRequestor") == "false"
    assert archive.get("NetworkAccessPointID") == "pacs1.example.org"
    # The CLI's records come from this host: the archive's own name is the access point.
    cli_user = message(ev.EXPORT, user="cli:root", client="local").findall("ActiveParticipant")[0]
    assert cli_user.get("NetworkAccessPointID") == "pacs1.example.org"
    assert cli_user.get("NetworkAccessPointTypeCode") == "1"


def test_dimse_transfer_and_query_carry_roles_counts_and_the_query(tmp_path: Path) -> None:
    root = message(ev.INSTANCES_TRANSFERRED, user="MODALITY1", client="MODALITY1", study="1.2.9",
                   detail={"direction": "received", "protocol": "DIMSE C-STORE", "instances": 12})
    sender, archive = root.findall("ActiveParticipant")
    assert sender.get("AlternativeUserID") == "AETITLES=MODALITY1"
    assert "NetworkAccessPointID" not in sender.attrib  # an AE title is not a network address
    assert code(sender.find("RoleIDCode")) == ("110153", "DCM")  # source
    assert code(archive.find("RoleIDCode")) == ("110152", "DCM")  # destination
    sop = root.find("ParticipantObjectIdentification/ParticipantObjectDescription/SOPClass")
    assert sop is not None and sop.get("NumberOfInstances") == "12"

    model = "1.2.840.10008.5.1.4.1.2.1.1"
    root = message(ev.QUERY, user="VIEWER", client="VIEWER", patient="PAT-9",
                   detail={"protocol": "DIMSE C-FIND", "model": model, "level": "STUDY",
                           "keys": {"PatientID": "PAT-9"}, "matches": 2})
    query = [o for o in root.iter("ParticipantObjectIdentification") if o.get("ParticipantObjectID") == model]
    assert len(query) == 1 and query[0].get("ParticipantObjectTypeCodeRole") == "24"
    assert code(query[0].find("ParticipantObjectIDTypeCode")) == ("110181", "DCM")
    sent = json.loads(base64.b64decode(query[0].findtext("ParticipantObjectQuery") or ""))
    assert sent == {"level": "STUDY", "keys": {"PatientID": "PAT-9"}}


def test_records_as_the_log_holds_them_render(tmp_path: Path) -> None:
    """What AuditLog writes (seq, prev, text with XML's special characters) renders as is."""
    log = AuditLog(tmp_path)
    log.record(ev.LOGIN, FAILURE, user='<script>"&', client="::1", detail={"reason": "a < b & c"})
    rec = json.loads((tmp_path / "audit" / "audit.jsonl").read_text().splitlines()[0])
    root = ET.fromstring(render(rec, SOURCE))
    check_schema(root)
    assert root.findall("ActiveParticipant")[0].get("UserID") == '<script>"&'
    with pytest.raises(ValueError, match="seq 1"):
        render({**rec, "code": "DCM 999999"}, SOURCE)
