"""Modality Performed Procedure Step (PS3.4 F.7): what the modality reports about the exam it
performs, and the worklist entries that follow it.

N-CREATE makes a step IN PROGRESS (its scheduled steps' worklist entries become STARTED); N-SET
updates it while it is IN PROGRESS and makes it COMPLETED or DISCONTINUED (the entries too: they
leave the worklist, and list the performed series). The rules of Table F.7.2-1 applied here:

* N-CREATE: Performed Procedure Step ID, Performed Station AE Title, Start Date, Start Time,
  Modality and Performed Procedure Step Status (= IN PROGRESS) are type 1, so is the Scheduled
  Step Attributes Sequence (one item at least) and its Study Instance UID: absent -> 0x0120
  Missing Attribute, empty -> 0x0121 Missing Attribute Value, a status other than IN PROGRESS ->
  0x0106 Invalid Attribute Value; an existing SOP Instance UID -> 0x0111 Duplicate SOP Instance.
  Type 2 attributes the modality leaves out are accepted (many modalities do).
* N-SET: an unknown instance -> 0x0112 No Such Object Instance; a step no longer IN PROGRESS ->
  0x0110 Processing Failure, Error ID 0xA710, "Performed Procedure Step Object may no longer be
  updated" (F.7.2.2.4); changing an attribute that N-SET may not change (patient, scheduling,
  station, start, modality) -> 0x0106; a status other than IN PROGRESS, COMPLETED, DISCONTINUED
  -> 0x0106; becoming COMPLETED or DISCONTINUED without End Date, End Time and a non-empty
  Performed Series Sequence -> 0x0120 / 0x0121.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from pydicom.dataset import Dataset

from .worklist_entry import COMPLETED, DISCONTINUED, STARTED, WorklistEntry, make_key
from .worklist_store import WorklistStore

log = logging.getLogger("dicomvault.mpps")

IN_PROGRESS = "IN PROGRESS"
PPS_STATUSES = (IN_PROGRESS, COMPLETED, DISCONTINUED)
FINAL = (COMPLETED, DISCONTINUED)

# statuses (PS3.4 F.7.2.1.2, F.7.2.2.2; PS3.7 C)
INVALID_ATTRIBUTE_VALUE = 0x0106
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NO_SUCH_OBJECT_INSTANCE = 0x0112
MISSING_ATTRIBUTE = 0x0120
MISSING_ATTRIBUTE_VALUE = 0x0121
NO_LONGER_UPDATABLE_ID = 0xA710  # Error ID of F.7.2.2.4
NO_LONGER_UPDATABLE = "Performed Procedure Step Object may no longer be updated"

CREATE_TYPE1 = ("PerformedProcedureStepID", "PerformedStationAETitle", "PerformedProcedureStepStartDate",
                "PerformedProcedureStepStartTime", "PerformedProcedureStepStatus", "Modality")
# Table F.7.2-1: "Not allowed" in N-SET
SET_NOT_ALLOWED = frozenset({
    "ScheduledStepAttributesSequence", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
    "ReferencedPatientSequence", "PerformedProcedureStepID", "PerformedStationAETitle",
    "PerformedStationName", "PerformedLocation", "PerformedProcedureStepStartDate",
    "PerformedProcedureStepStartTime", "Modality", "StudyID", "SOPInstanceUID", "SOPClassUID",
})


# Who hears of a step that went COMPLETED, per index (the analysis pipeline: its series are
# complete at once). Registered by the composition root, called after the record is durable.
CompletionListener = Callable[[dict[str, Any]], None]
_listeners: dict[str, list[CompletionListener]] = {}
_listeners_guard = threading.Lock()


def add_completion_listener(index_path: str, listener: CompletionListener) -> None:
    with _listeners_guard:
        _listeners.setdefault(index_path, []).append(listener)


def remove_completion_listener(index_path: str, listener: CompletionListener) -> None:
    with _listeners_guard:
        if listener in _listeners.get(index_path, []):
            _listeners[index_path].remove(listener)


def _completed(index_path: str, record: dict[str, Any]) -> None:
    with _listeners_guard:
        listeners = list(_listeners.get(index_path, []))
    for listener in listeners:
        try:
            listener(record)
        except Exception:  # noqa: BLE001 - the step is stored and answered whatever a listener does
            log.exception("MPPS %s: a completion listener failed", record.get("uid"))


@dataclass
class MppsRefusal(Exception):
    """An N-CREATE or N-SET refused: the DIMSE status, the Error Comment and Error ID."""

    status: int
    comment: str
    error_id: int | None = None

    def __str__(self) -> str:
        return f"0x{self.status:04X}: {self.comment}"


def _need(ds: Dataset, keyword: str, where: str) -> None:
    if keyword not in ds:
        raise MppsRefusal(MISSING_ATTRIBUTE, f"{where}{keyword} missing")
    value = ds[keyword].value
    if value is None or value == "" or (ds[keyword].VR == "SQ" and not len(value)):
        raise MppsRefusal(MISSING_ATTRIBUTE_VALUE, f"{where}{keyword} empty")


def _text(ds: Dataset, keyword: str) -> str:
    return str(ds.get(keyword, "") or "").strip()


def scheduled_keys(ds: Dataset) -> list[tuple[str, str, str, str]]:
    """(accession, requested procedure ID, step ID, study UID) of each scheduled step item."""
    return [(_text(i, "AccessionNumber"), _text(i, "RequestedProcedureID"),
             _text(i, "ScheduledProcedureStepID"), _text(i, "StudyInstanceUID"))
            for i in ds.get("ScheduledStepAttributesSequence", []) or []]


def performed_series(ds: Dataset) -> list[dict[str, Any]]:
    out = []
    for item in ds.get("PerformedSeriesSequence", []) or []:
        out.append({"series_uid": _text(item, "SeriesInstanceUID"),
                    "description": _text(item, "SeriesDescription"),
                    "retrieve_ae": _text(item, "RetrieveAETitle"),
                    "protocol": _text(item, "ProtocolName"),
                    "images": len(item.get("ReferencedImageSequence", []) or []),
                    "other_objects": len(item.get("ReferencedNonImageCompositeSOPInstanceSequence", [])
                                         or [])})
    return out


class MppsService:
    """N-CREATE and N-SET on a worklist store; each returns the stored record."""

    def __init__(self, store: WorklistStore) -> None:
        self.store = store

    def _linked(self, ds: Dataset) -> list[WorklistEntry]:
        """The worklist entries the step's scheduled items name: by key when the item carries
        all three IDs, else by study UID (and accession, when given)."""
        found: dict[str, WorklistEntry] = {}
        for acc, rp, sps, study in scheduled_keys(ds):
            if acc and rp and sps:
                entry = self.store.get(make_key(acc, rp, sps))
                if entry is not None:
                    found[entry.key] = entry
                    continue
            if study:
                for entry in self.store.entries(active_only=False, study_uid=study):
                    if not acc or entry.accession == acc:
                        found[entry.key] = entry
        return list(found.values())

    def create(self, uid: str, attrs: Dataset, caller: str) -> dict[str, Any]:
        for kw in CREATE_TYPE1:
            _need(attrs, kw, "")
        status = _text(attrs, "PerformedProcedureStepStatus")
        if status != IN_PROGRESS:
            raise MppsRefusal(INVALID_ATTRIBUTE_VALUE, f"N-CREATE status must be IN PROGRESS, not {status!r}")
        _need(attrs, "ScheduledStepAttributesSequence", "")
        for item in attrs.ScheduledStepAttributesSequence:
            _need(item, "StudyInstanceUID", "ScheduledStepAttributesSequence>")
        now = time.time()
        with self.store.lock:
            if self.store.get_mpps(uid) is not None:
                raise MppsRefusal(DUPLICATE_SOP_INSTANCE, f"MPPS {uid} exists")
            entries = []
            for e in self._linked(attrs):
                entries.append(replace(e, status=STARTED if e.active else e.status, mpps=[*e.mpps, uid],
                                       updated=now))
            record = {"uid": uid, "status": IN_PROGRESS, "attrs": attrs.to_json_dict(),
                      "entries": [e.key for e in entries], "caller": caller, "created": now, "updated": now,
                      "performed_series": performed_series(attrs)}
            self.store.put_mpps(record, entries)
        return record

    def set(self, uid: str, mods: Dataset, caller: str) -> dict[str, Any]:
        with self.store.lock:
            record = self.store.get_mpps(uid)
            if record is None:
                raise MppsRefusal(NO_SUCH_OBJECT_INSTANCE, f"no MPPS {uid}")
            if record["status"] != IN_PROGRESS:
                raise MppsRefusal(PROCESSING_FAILURE, NO_LONGER_UPDATABLE, NO_LONGER_UPDATABLE_ID)
            refused = sorted(e.keyword or str(e.tag) for e in mods if e.keyword in SET_NOT_ALLOWED)
            if refused:
                raise MppsRefusal(INVALID_ATTRIBUTE_VALUE, f"N-SET may not change {', '.join(refused)}")
            merged = Dataset.from_json(record["attrs"])
            for elem in mods:
                if elem.tag.element != 0 and elem.tag != 0x00080005:
                    merged[elem.tag] = elem
            status = _text(merged, "PerformedProcedureStepStatus")
            if status not in PPS_STATUSES:
                raise MppsRefusal(INVALID_ATTRIBUTE_VALUE, f"status {status!r} is not one of "
                                                           f"{', '.join(PPS_STATUSES)}")
            if status in FINAL:
                for kw in ("PerformedProcedureStepEndDate", "PerformedProcedureStepEndTime",
                           "PerformedSeriesSequence"):
                    _need(merged, kw, f"{status}: ")
            now = time.time()
            series = performed_series(merged)
            entries = []
            for key in record.get("entries", []):
                entry = self.store.get(key)
                if entry is None:
                    continue  # removed from the worklist since: the step is kept without it
                entries.append(replace(entry, status=status if status in FINAL else entry.status,
                                       performed_series=series, updated=now))
            record = {**record, "status": status, "attrs": merged.to_json_dict(), "updated": now,
                      "performed_series": series, "last_caller": caller}
            self.store.put_mpps(record, entries)
        if status == COMPLETED:
            _completed(self.store.index.path, record)
        return record
