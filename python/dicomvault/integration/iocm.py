"""IHE IOCM administration: listing what rejection notes hide and restoring it.

Detection lives where every store path passes (engine.py reads a stored KOS with
rejection_notes.py; the index moves what it names into its rejected set, index/rejections.py).
This module is what an admin uses afterwards, from the CLI (iocm_commands.py) and over /api
(web/iocm_routes.py): both go through these functions, so they restore and audit alike.
"""

from __future__ import annotations

from typing import Any

from ..audit.log import INSTANCES_RESTORED
from ..engine import Engine
from ..errors import RequestError, UnknownObjectError
from ..index import REJECTION_TITLES, RejectedEntry


def entry_row(e: RejectedEntry) -> dict[str, Any]:
    """One rejected instance as the CLI and /api show it."""
    state = "deleted" if e.deleted else ("hidden" if e.record else "pending")
    return {"SOPInstanceUID": e.sop_uid, "StudyInstanceUID": e.study_uid, "SeriesInstanceUID": e.series_uid,
            "note": e.note_uid, "code": f"DCM {e.code}", "title": REJECTION_TITLES.get(e.code, e.code),
            "rejected_at": e.at, "state": state}


def list_rejected(engine: Engine, study_uid: str | None = None) -> list[dict[str, Any]]:
    """The rejected set, optionally of one study. ``state``: hidden (kept, restorable), pending
    (rejected before it arrived: it will be hidden when it does), deleted (by the 113039 policy:
    a late copy is dropped)."""
    return [entry_row(e) for e in engine.index.rejected(study_uid)]


def restore(engine: Engine, *, instance: str | None = None, note: str | None = None) -> list[RejectedEntry]:
    """Puts back one hidden instance, or everything one note hid; raises UnknownObjectError when
    nothing matches. A replica refuses (its primary restores, the feed carries it there)."""
    if (instance is None) == (note is None):
        raise RequestError("restore needs exactly one of an instance UID or a note UID")
    engine.ensure_writable()
    if instance is not None:
        uid = instance.strip().rstrip("\0")
        uids = [e.sop_uid for e in engine.index.rejected() if e.sop_uid == uid]
    else:
        uids = [e.sop_uid for e in engine.index.rejected(note_uid=note)]
    if not uids:
        what = "rejected instance" if instance else "rejection note"
        raise UnknownObjectError(what, instance or note or "")
    return engine.index.restore(uids)


def restore_audit(entries: list[RejectedEntry]) -> tuple[str, str | None, dict[str, Any]]:
    """(event, study, detail) of the audit record of one restore (DICOM Instances Accessed,
    action U: see docs/integration.md)."""
    study = entries[0].study_uid if entries else None
    return INSTANCES_RESTORED, study, {"instances": [e.sop_uid for e in entries],
                                       "notes": sorted({e.note_uid for e in entries})}
