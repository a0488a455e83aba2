"""Modality Worklist SCP (PS3.4 K.6): C-FIND on the Modality Worklist Information Find model.

The identifier is matched against the worklist entries that are still scheduled (completed,
discontinued and canceled ones have left the list) by integration/worklist_store.py and
worklist_match.py; each match goes back as a pending response built by pydicom (a worklist
answers tens of entries, not the archive's thousands, so the C-FIND fast path is not needed).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from pydicom.dataset import Dataset

from ..audit.dimse import DimseAudit
from ..errors import DicomVaultError
from ..integration.worklist_store import WorklistStore
from .common import calling_ae, log, status
from .status import CANCEL, PENDING, SUCCESS, UNABLE_TO_PROCESS

UTF8 = "ISO_IR 192"


def _charset(identifier: Dataset, match: Dataset) -> Any:
    """The request's character set when every value is ASCII (all DICOM sets encode ASCII as
    ASCII), else UTF-8, which carries whatever the entry holds."""
    texts = [str(e.value) for e in match.iterall() if e.VR not in ("SQ",) and e.value is not None]
    if all(t.isascii() for t in texts):
        return identifier.get("SpecificCharacterSet")
    return UTF8


def handle_worklist_find(event: Any, store: WorklistStore,
                         audit: DimseAudit | None = None) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """EVT_C_FIND handler for ModalityWorklistInformationFind."""
    caller = calling_ae(event)
    identifier = event.identifier
    n = 0
    try:
        for match in store.find(identifier):
            if event.is_cancelled:
                log.info("worklist C-FIND from %s cancelled after %d matches", caller, n)
                yield CANCEL, None
                return
            charset = _charset(identifier, match)
            if charset:
                match.SpecificCharacterSet = charset
            n += 1
            yield PENDING, match
    except (DicomVaultError, ValueError) as exc:
        log.error("worklist C-FIND from %s failed: %s", caller, exc)
        yield status(UNABLE_TO_PROCESS, f"worklist: {exc}"), None
        return
    log.info("worklist C-FIND from %s: %d matches", caller, n)
    if audit is not None:
        # the step's keys (station, modality, dates) sit in its sequence item: flattened for the record
        items = [identifier] + list(identifier.get("ScheduledProcedureStepSequence", None) or [])[:1]
        query = {e.keyword: str(e.value) for ds in items for e in ds
                 if e.VR != "SQ" and e.keyword and e.keyword != "SpecificCharacterSet"}
        audit.queried(caller, "WORKLIST", query, n, model=str(event.request.AffectedSOPClassUID))
    yield SUCCESS, None
