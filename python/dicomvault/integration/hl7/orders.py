"""ORM^O01 (IHE RAD-2/3, v2.3.1) and OMI^O23 (IHE RAD-4/13, v2.5.1) orders into the worklist.
The field mapping is documented in docs/integration.md (HL7 section)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from pydicom.uid import generate_uid

from ..worklist_entry import WorklistEntry, check_entry, make_key
from ..worklist_store import WorklistStore
from .message import Hl7Error, Message

Fields = dict[int, list[str]]
NEW, CHANGE, CANCEL, DISCONTINUE = "NW", "XO", "CA", "DC"


@dataclass
class OrderGroup:
    orc: Fields
    obr: Fields | None = None
    tq1: Fields | None = None
    zds: Fields | None = None
    ipcs: list[Fields] = field(default_factory=list)


def _groups(msg: Message) -> list[OrderGroup]:
    groups: list[OrderGroup] = []
    for name, fields in msg.segments:
        if name == "ORC":
            groups.append(OrderGroup(fields))
        elif groups and name in ("OBR", "TQ1", "ZDS"):
            setattr(groups[-1], name.lower(), fields)
        elif groups and name == "IPC":
            groups[-1].ipcs.append(fields)
    if not groups:
        raise Hl7Error("an order message needs an ORC segment", "100")
    return groups


def person_name(msg: Message, raw: str) -> str:
    """HL7 XPN/XCN (family^given^middle^suffix^prefix) as DICOM PN (family^given^middle^prefix^suffix)."""
    c = msg.components(raw) + [""] * 5
    return "^".join((c[0], c[1], c[2], c[4], c[3])).rstrip("^")


def _xcn(msg: Message, raw: str) -> str:
    """XCN puts the id first: id^family^given^middle^suffix^prefix."""
    c = msg.components(raw) + [""] * 6
    return "^".join((c[1], c[2], c[3], c[5], c[4])).rstrip("^")


def patient_segment(msg: Message, what: str) -> tuple[dict[int, list[str]], str]:
    """(the PID segment, its patient ID: PID-3, first repetition, component 1); Hl7Error if either
    is missing. `what` names the message kind in the error."""
    pid = next(iter(msg.all("PID")), None)
    if pid is None:
        raise Hl7Error(f"{what} needs a PID segment", "100")
    patient_id = msg.get(pid, 3)
    if not patient_id:
        raise Hl7Error("PID-3 (patient identifier) is empty", "101")
    return pid, patient_id


def _patient(msg: Message) -> dict[str, str]:
    pid, patient_id = patient_segment(msg, "an order")
    pv1 = next(iter(msg.all("PV1")), {})
    return {"patient_id": patient_id, "patient_name": person_name(msg, (pid.get(5) or [""])[0]),
            "patient_birth_date": msg.get(pid, 7)[:8], "patient_sex": msg.get(pid, 8).upper()[:1],
            "referring_physician": _xcn(msg, (pv1.get(8) or [""])[0]) if pv1 else ""}


def _start(value: str) -> tuple[str, str]:
    digits = value.split("+")[0].split("-")[0]
    return digits[:8], digits[8:14]


def _entries(msg: Message, group: OrderGroup, stations: dict[str, str]) -> list[WorklistEntry]:
    """The worklist entries (one per IPC, else one per OBR) an order group describes."""
    obr = group.obr or {}
    if not obr:
        raise Hl7Error("an order needs an OBR segment after its ORC", "100")
    patient = _patient(msg)
    if not patient["referring_physician"]:
        patient["referring_physician"] = _xcn(msg, (obr.get(16) or [""])[0])
    code = msg.components((obr.get(4) or [""])[0])
    procedure = code[1] if len(code) > 1 and code[1] else code[0]
    proc_code = [c for c in (code + ["", "", ""])[:3]]
    proc_code = [proc_code[0], proc_code[2] or "L", proc_code[1] or proc_code[0]] if proc_code[0] else []
    start = msg.get(group.tq1, 7) if group.tq1 else ""
    if not start:
        start = msg.get(obr, 27, comp=4) or msg.get(obr, 36)  # TQ-4 start; OBR-36 scheduled date/time
    start_date, start_time = _start(start)
    now = time.time()
    base = {**patient, "procedure": procedure, "procedure_code": proc_code, "step_description": procedure,
            "start_date": start_date, "start_time": start_time, "created": now, "updated": now}
    out = []
    if group.ipcs:
        for ipc in group.ipcs:
            modality = msg.get(ipc, 5).upper()
            out.append(WorklistEntry(
                accession=msg.get(ipc, 1), requested_procedure_id=msg.get(ipc, 2), sps_id=msg.get(ipc, 4),
                study_uid=msg.get(ipc, 3) or generate_uid(), modality=modality,
                station_ae=msg.get(ipc, 9) or stations.get(modality, ""), **base))
    else:
        accession = msg.get(obr, 18)
        modality = msg.get(obr, 24).upper()
        study = msg.get(group.zds, 1) if group.zds else ""
        out.append(WorklistEntry(
            accession=accession, requested_procedure_id=msg.get(obr, 19) or accession,
            sps_id=msg.get(obr, 20) or accession, study_uid=study or generate_uid(), modality=modality,
            station_ae=msg.get(obr, 21) or stations.get(modality, ""), **base))
    for e in out:
        if not e.accession:
            raise Hl7Error("the accession number (IPC-1 / OBR-18) is empty", "101")
        if not e.requested_procedure_id or not e.sps_id:
            raise Hl7Error(f"order {e.accession}: requested procedure id (IPC-2 / OBR-19) or scheduled "
                           f"step id (IPC-4 / OBR-20) is empty", "101")
        try:
            check_entry(e)
        except ValueError as exc:
            raise Hl7Error(f"order {e.key}: {exc}", "102") from exc
    return out


def apply_order(msg: Message, store: WorklistStore, stations: dict[str, str]) -> str:
    """Applies every ORC of the message; returns a summary for the ACK's MSA-3."""
    done = []
    for group in _groups(msg):
        control = msg.get(group.orc, 1).upper()
        entries = _entries(msg, group, stations)
        for e in entries:
            with store.lock:
                old = store.get(e.key)
                if control == NEW:
                    # a resent NW (its ACK was lost) replaces the entry it made, unless the
                    # modality has started it
                    if old is not None and old.status not in ("SCHEDULED",):
                        raise Hl7Error(f"worklist entry {e.key} exists with status {old.status}", "206")
                    if old is not None:
                        # the priors already made ready are not fetched and sent again
                        e.study_uid, e.created, e.priors = old.study_uid, old.created, old.priors
                    store.add(e, replace_existing=True)
                    done.append(f"scheduled {e.key}")
                elif control in (CHANGE, CANCEL, DISCONTINUE):
                    if old is None:
                        raise Hl7Error(f"worklist entry {e.key} is unknown (ORC-1 {control})", "204")
                    if control == CHANGE:
                        changes = {k: v for k, v in e.__dict__.items()
                                   if k not in ("accession", "requested_procedure_id", "sps_id", "created",
                                                "status", "mpps", "performed_series", "updated", "priors")}
                        if not msg.get(group.ipcs[0], 3) if group.ipcs else not group.zds:
                            changes.pop("study_uid")  # none given: keep the one assigned
                        store.update(e.key, **changes)
                        done.append(f"changed {e.key}")
                    else:
                        store.cancel(e.key)
                        done.append(f"canceled {e.key}")
                else:
                    raise Hl7Error(f"order control ORC-1 {control!r} is not supported (NW, XO, CA, DC)",
                                   "207")
    return "; ".join(done)


__all__ = ["apply_order", "make_key", "person_name"]
