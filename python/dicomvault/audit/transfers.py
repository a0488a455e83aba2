"""Records of a batch that several studies share: Instances Transferred (DCM 110104) of
forwarding pages and replication pulls, Data Deletion (DCM 110105) of deletions a replica
applies or a failback discards. One record per study of the batch, never one per object: ATNA
describes the transfer of a study, and a batch holds up to hundreds of objects."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from .log import FAILURE, INSTANCES_TRANSFERRED, SUCCESS, AuditLog, Record


def per_study(log: AuditLog, objects: Iterable[tuple[str, str | None, bool]], *, user: str | None,
              client: str | None, detail: dict[str, Any], event: str = INSTANCES_TRANSFERRED
              ) -> list[Record]:
    """The records of a batch: `objects` is (study, patient, transferred) per object; each study's
    record counts its objects `completed` and `failed` (outcome failure when any failed), plus
    `detail`. Built, not written: the caller writes them with one fsync."""
    studies: dict[str, list[Any]] = {}
    for study, patient, ok in objects:
        row = studies.setdefault(study, [patient, 0, 0])
        row[1 if ok else 2] += 1
    return [r for r in (log.event(event, FAILURE if failed else SUCCESS, user=user,
                                  client=client, study=study, patient=patient or None,
                                  detail={**detail, "completed": done, "failed": failed})
                        for study, (patient, done, failed) in studies.items()) if r is not None]
