"""C-STORE SCP: the received dataset bytes go to the engine as they arrived (no pydicom decode).

Success (0x0000) is answered only after `Engine.store_dataset` returned, i.e. after the bytes and
the index record are durable (DESIGN.md §3.1). Every failure is a status the peer can act on, a
log line naming the calling AE and the SOP Instance UID, and the association stays up.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset

from .. import _native  # type: ignore[attr-defined]
from ..audit.dimse import DimseAudit
from ..engine import Engine
from ..errors import DicomVaultError, ReplicaWriteError
from .common import calling_ae, log, status
from .limits import oversize, refused_size
from .status import DOES_NOT_MATCH_SOP_CLASS, OUT_OF_RESOURCES_IO, SUCCESS
from .status import store_status as status_of


def _refused(code: int, caller: str, sop_uid: str, why: str) -> tuple[int, str]:
    log.warning("C-STORE from %s of %s refused (0x%04X): %s", caller, sop_uid or "?", code, why)
    return code, why


def store_status(engine: Engine, dataset: bytes | memoryview | _native.ReceivedDataSet, ts: str, *,
                 sop_uid: str, sop_class: str, caller: str,
                 audit: DimseAudit | None = None) -> tuple[int, str | None]:
    """Stores one received dataset; (C-STORE status, error comment or None).

    Used by the in-process handler below and by the writer side of workers.py (which receives
    the same four facts from a receiver process), so both answer exactly alike.
    """
    try:
        outcome = engine.store_dataset(
            bytes(dataset) if isinstance(dataset, memoryview) else dataset, ts, calling_ae=caller
        )
    except DicomVaultError as exc:
        code, what = status_of(exc)
        if code == OUT_OF_RESOURCES_IO and not isinstance(exc, ReplicaWriteError):
            log.error("C-STORE from %s of %s failed: %s", caller, sop_uid, exc)
            return code, f"{what}: {exc}"
        return _refused(code, caller, sop_uid, f"{what} ({ts}): {exc}")

    if audit is not None:
        audit.stored(caller, outcome.study_instance_uid, outcome.sop_instance_uid)
    # The object is durable now. A request whose command set disagrees with its dataset is a
    # broken sender: tell it (A900), but the stored object stays (it is valid and durable; it
    # may also be a duplicate of an earlier good send, which must not be lost).
    if sop_uid and outcome.sop_instance_uid != sop_uid:
        return _refused(DOES_NOT_MATCH_SOP_CLASS, caller, sop_uid,
                        f"dataset SOP Instance UID is {outcome.sop_instance_uid}")
    if sop_class and outcome.sop_class_uid and outcome.sop_class_uid != sop_class:
        return _refused(DOES_NOT_MATCH_SOP_CLASS, caller, sop_uid,
                        f"dataset SOP Class UID is {outcome.sop_class_uid}, request says {sop_class}")
    # DEBUG: at hundreds of objects a second one line each would drown the log; the fast path
    # logs one summary per association (fastpath.py), the change feed records every object.
    log.debug("C-STORE from %s: %s %s (%d bytes)", caller, outcome.sop_instance_uid,
             "duplicate" if outcome.duplicate else "stored", outcome.logical_len)
    return SUCCESS, None


def request_facts(event: Any) -> tuple[memoryview, str, str, str]:
    """(dataset bytes, transfer syntax, SOP Instance UID, SOP Class UID) of an EVT_C_STORE."""
    req = event.request
    # The request's Data Set is the reassembled P-DATA payload (a BytesIO): the dataset exactly
    # as encoded by the sender, in the context's transfer syntax. A view, not a copy.
    dataset = req.DataSet.getbuffer() if req.DataSet is not None else memoryview(b"")
    return (dataset, str(event.context.transfer_syntax), str(req.AffectedSOPInstanceUID or ""),
            str(req.AffectedSOPClassUID or ""))


def as_response(code: int, comment: str | None) -> Dataset | int:
    return SUCCESS if code == SUCCESS else status(code, comment)


def fast_store(engine: Engine, audit: DimseAudit | None = None
               ) -> Callable[[Any, Any, str, str, Any], tuple[int, str | None]]:
    """The store handler of dimse/fastpath.py: same answers as `handle_store`, from the facts
    the native reader hands over instead of a pynetdicom event."""

    def store(assoc: Any, context: Any, sop_class: str, sop_uid: str,
              dataset: bytes | _native.ReceivedDataSet) -> tuple[int, str | None]:
        return store_status(engine, dataset, str(context.transfer_syntax[0]), sop_uid=sop_uid,
                            sop_class=sop_class, caller=str(assoc.requestor.ae_title).strip(), audit=audit)

    return store


def handle_store(event: Any, engine: Engine, audit: DimseAudit | None = None) -> Dataset | int:
    """EVT_C_STORE handler."""
    limit = getattr(event.assoc.ae, "max_object_size", 0)
    if (dropped := refused_size(event.request.DataSet, limit)) is not None:
        return as_response(*oversize(calling_ae(event), str(event.request.AffectedSOPInstanceUID or ""),
                                     dropped, limit))
    dataset, ts, sop_uid, sop_class = request_facts(event)
    return as_response(*store_status(engine, dataset, ts, sop_uid=sop_uid, sop_class=sop_class,
                                     caller=calling_ae(event), audit=audit))
