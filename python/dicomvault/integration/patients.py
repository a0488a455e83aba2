"""Patient updates and merges as the hospital asks for them (HL7 ADT, `/api/patients`, the CLI):
each applied to the index (index/patients.py) and written to the audit trail as a Patient Record
event, whoever asked. What leaves the archive then carries the new values (coercion.py)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from ..audit.log import FAILURE, PATIENT_RECORD, SUCCESS, AuditLog
from ..errors import DicomVaultError, UnknownObjectError
from ..index import Index
from ..index.patients import MergeRecord, patient_values

log = logging.getLogger("dicomvault.patients")


class PatientUpdates:
    """The one way patient corrections are made, so each is audited the same way."""

    def __init__(self, index: Index, data_dir: str) -> None:
        self.index = index
        self.audit = AuditLog(data_dir)

    def _audit(self, outcome: str, patient: str, detail: dict[str, Any], user: str | None,
               client: str | None) -> None:
        self.audit.record(PATIENT_RECORD, outcome, user=user, client=client, patient=patient, detail=detail)

    def update(self, patient_id: str, values: Mapping[str, str], *, source: str, user: str | None = None,
               client: str | None = None) -> list[str]:
        """Set the patient's attributes; returns the studies whose outgoing objects change."""
        detail: dict[str, Any] = {"action": "update", "source": source, "attributes": sorted(values)}
        try:
            studies = self.index.update_patient(patient_id, values)
        except DicomVaultError as exc:
            self._audit(FAILURE, patient_id, {**detail, "reason": str(exc)}, user, client)
            raise
        self._audit(SUCCESS, patient_id, {**detail, "studies": len(studies)}, user, client)
        log.info("patient %s updated (%s) by %s: %s in %d studies", patient_id, source, user or "?",
                 ", ".join(sorted(values)), len(studies))
        return studies

    def merge(self, prior_id: str, survivor_id: str, values: Mapping[str, str] | None = None, *,
              source: str, user: str | None = None, client: str | None = None) -> MergeRecord | None:
        """Move the prior patient's studies under the survivor; None if already done."""
        detail: dict[str, Any] = {"action": "merge", "source": source, "prior": prior_id,
                                  "attributes": sorted(values or {})}
        try:
            record = self.index.merge_patients(prior_id, survivor_id, values)
        except DicomVaultError as exc:
            self._audit(FAILURE, survivor_id, {**detail, "reason": str(exc)}, user, client)
            raise
        n = len(record.studies) if record is not None else 0
        self._audit(SUCCESS, survivor_id, {**detail, "studies": n, "repeated": record is None}, user, client)
        log.info("patient %s merged into %s (%s) by %s: %d studies moved", prior_id, survivor_id, source,
                 user or "?", n)
        return record

    def unmerge(self, prior_id: str, *, source: str, user: str | None = None,
                client: str | None = None) -> MergeRecord:
        """Undo the merge of the prior patient: its studies go back as they were."""
        detail: dict[str, Any] = {"action": "unmerge", "source": source, "prior": prior_id}
        try:
            record = self.index.unmerge_patients(prior_id)
        except DicomVaultError as exc:
            self._audit(FAILURE, prior_id, {**detail, "reason": str(exc)}, user, client)
            raise
        self._audit(SUCCESS, prior_id, {**detail, "survivor": record.survivor_id,
                                        "studies": len(record.studies)}, user, client)
        log.info("merge of patient %s into %s undone (%s) by %s", prior_id, record.survivor_id, source,
                 user or "?")
        return record


def merge_view(record: MergeRecord) -> dict[str, Any]:
    """A merge as the API and the CLI show it."""
    return {"prior_id": record.prior_id, "survivor_id": record.survivor_id, "at": record.at,
            "studies": sorted(record.studies), "prior_attributes": record.prior_attrs,
            "survivor_created": record.survivor_created}


def patient_summary(index: Index, patient_id: str) -> dict[str, Any]:
    """A patient as the API and the CLI show it: the current values, and for each study the
    attributes corrected on the way out. UnknownObjectError for a patient the index lacks."""
    rec = index.get_patient(patient_id)
    if rec is None:
        raise UnknownObjectError("patient", patient_id)
    studies = [s for s in (index.get_study(u) for u in index.studies_of_patient(patient_id)) if s is not None]
    return {"patient_id": rec.patient_id, "values": patient_values(rec),
            "corrected_at": rec.corrected_at or None,
            "studies": [{"study_uid": s.study_uid, "coerced": s.coerced} for s in studies]}
