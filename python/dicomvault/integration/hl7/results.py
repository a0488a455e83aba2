"""ORU^R01: the report text of each OBR (its OBX segments of type TX, FT, ST, repeats joined) kept
beside the study it names (Study Instance UID from ZDS-1 or an OBX of type HD/RP/ST whose
observation identifier is 113014, else the accession number OBR-18 or the filler order OBR-3)."""

from __future__ import annotations

import time
from typing import Any

from ..reports import ReportStore
from .message import Hl7Error, Message

Fields = dict[int, list[str]]
TEXT_TYPES = ("TX", "FT", "ST")
STUDY_UID_CODES = ("113014", "STUDY INSTANCE UID", "STUDYINSTANCEUID")


def _reports(msg: Message) -> list[tuple[Fields, list[Fields], Fields | None]]:
    out: list[tuple[Fields, list[Fields], Fields | None]] = []
    for name, fields in msg.segments:
        if name == "OBR":
            out.append((fields, [], None))
        elif out and name == "OBX":
            out[-1][1].append(fields)
        elif out and name == "ZDS":
            out[-1] = (out[-1][0], out[-1][1], fields)
    if not out:
        raise Hl7Error("an ORU^R01 needs an OBR segment", "100")
    return out


def _interpreter(msg: Message, obr: Fields) -> str:
    """OBR-32 Principal Result Interpreter (NDL): its first component is id&family&given."""
    raw = (obr.get(32) or [""])[0].split(msg.separators[1])[0]
    sub = [msg.unescape(p) for p in raw.split(msg.separators[4])] + ["", "", ""]
    return "^".join(p for p in (sub[1], sub[2]) if p) or sub[0]


def apply_result(msg: Message, reports: ReportStore) -> str:
    pid = next(iter(msg.all("PID")), {})
    done = []
    for obr, obxs, zds in _reports(msg):
        lines: list[str] = []
        obx_status = ""
        study_uid = msg.get(zds, 1) if zds else ""
        for obx in obxs:
            kind = msg.get(obx, 2).upper()
            ident = msg.get(obx, 3).upper()
            ident_text = msg.get(obx, 3, comp=2).upper()
            if (ident in STUDY_UID_CODES or ident_text in STUDY_UID_CODES) and not study_uid:
                study_uid = msg.get(obx, 5)
            elif kind in TEXT_TYPES:
                # FT/TX repeats are lines of one text; \.br\ escapes became newlines on reading
                lines += [msg.unescape(r) for r in obx.get(5, [])]
                obx_status = msg.get(obx, 11) or obx_status
        accession = msg.get(obr, 18) or msg.get(obr, 3)
        if not study_uid and not accession:
            raise Hl7Error("the report names no study: no ZDS-1 / OBX 113014 Study Instance UID, no "
                           "OBR-18 accession number nor OBR-3 filler order number", "101")
        if not lines:
            raise Hl7Error(f"report for {study_uid or accession}: no OBX text (TX, FT or ST)", "101")
        record: dict[str, Any] = {
            "control_id": msg.control_id + (f"/{len(done)}" if done else ""), "study_uid": study_uid,
            "accession": accession, "patient_id": msg.get(pid, 3) if pid else "",
            # OBR-25 result status, else the text's OBX-11 (F final, P preliminary, C corrected)
            "status": msg.get(obr, 25) or obx_status, "observed": msg.get(obr, 7) or msg.get(obr, 22),
            "procedure": msg.get(obr, 4, comp=2) or msg.get(obr, 4),
            "author": _interpreter(msg, obr), "text": "\n".join(lines),
            "sender": f"{msg.get('MSH', 3)}@{msg.get('MSH', 4)}", "received": time.time()}
        reports.put(record)
        done.append(f"report for {study_uid or 'accession ' + accession}")
    return "; ".join(done)
