"""Modality Performed Procedure Step SCP (PS3.4 F.7): N-CREATE and N-SET.

The rules and the worklist entries they update are integration/mpps.py's; this module turns its
refusals into DIMSE statuses (with Error Comment and, for a step no longer IN PROGRESS, Error ID
0xA710) and logs what each modality reported.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from ..errors import DicomVaultError
from ..integration.mpps import MppsRefusal, MppsService
from .common import calling_ae, log
from .status import SUCCESS

PROCESSING_FAILURE = 0x0110


def _refusal(exc: MppsRefusal) -> Dataset:
    ds = Dataset()
    ds.Status = exc.status
    ds.ErrorComment = exc.comment[:64]
    if exc.error_id is not None:
        ds.ErrorID = exc.error_id
    return ds


class MppsHandlers:
    """EVT_N_CREATE and EVT_N_SET handlers on one MPPS service. On a replica (whose index
    follows its upstream's) they refuse with 0x0110 and the reason."""

    def __init__(self, service: MppsService, ensure_writable: Callable[[], None]) -> None:
        self.service = service
        self.ensure_writable = ensure_writable

    def n_create(self, event: Any) -> tuple[int | Dataset, Dataset | None]:
        caller = calling_ae(event)
        req = event.request
        given = req.AffectedSOPInstanceUID
        uid = str(given) if given else generate_uid()
        try:
            self.ensure_writable()
            attrs = event.attribute_list
            record = self.service.create(uid, attrs, caller)
        except MppsRefusal as exc:
            log.warning("MPPS N-CREATE %s from %s refused: %s", uid, caller, exc)
            return _refusal(exc), None
        except (DicomVaultError, ValueError) as exc:
            log.error("MPPS N-CREATE %s from %s failed: %s", uid, caller, exc)
            return _refusal(MppsRefusal(PROCESSING_FAILURE, f"MPPS not stored: {exc}")), None
        log.info("MPPS %s IN PROGRESS from %s, worklist entries %s", uid, caller,
                 ", ".join(record["entries"]) or "none (unscheduled)")
        out = Dataset()
        if not given:
            out.AffectedSOPInstanceUID = uid  # pynetdicom moves it into the response's command set
        return SUCCESS, out

    def n_set(self, event: Any) -> tuple[int | Dataset, Dataset | None]:
        caller = calling_ae(event)
        uid = str(event.request.RequestedSOPInstanceUID)
        try:
            self.ensure_writable()
            record = self.service.set(uid, event.modification_list, caller)
        except MppsRefusal as exc:
            log.warning("MPPS N-SET %s from %s refused: %s", uid, caller, exc)
            return _refusal(exc), None
        except (DicomVaultError, ValueError) as exc:
            log.error("MPPS N-SET %s from %s failed: %s", uid, caller, exc)
            return _refusal(MppsRefusal(PROCESSING_FAILURE, f"MPPS not updated: {exc}")), None
        log.info("MPPS %s %s from %s (%d performed series), worklist entries %s", uid, record["status"],
                 caller, len(record["performed_series"]), ", ".join(record["entries"]) or "none")
        return SUCCESS, None
