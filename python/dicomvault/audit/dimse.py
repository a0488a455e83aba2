"""The audit records of DIMSE traffic, written off the request path (audit/background.py).

- ATNA "DICOM Instances Transferred" (DCM 110104) for objects received: one record per burst of
  one caller sending one study, written when nothing more of that (caller, study) arrived for
  `quiet` seconds, or at stop, with the number of instances.
- The same event for C-GET and C-MOVE retrieves: one record per association and study (every
  C-GET a viewer makes of the series of one study on one association sums into it), written
  once its last operation ended and `quiet` seconds passed, with the destination of a C-MOVE
  and the sub-operations completed, failed and warned. Its first operation also writes ATNA
  "Begin Transferring DICOM Instances" (DCM 110102) at once: the transfer started, whatever
  becomes of it.
- ATNA "Query" (DCM 110112) for each C-FIND answered: who, the level, the keys given, how many
  matches.
- Security Alerts (DCM 110113) for refused associations and refused DICOM TLS handshakes, at
  most one line per caller and reason a minute (a flood of refused connections must not fill
  the disk; the next line says how many were left out).

The request paths only count or queue under a lock; a thread of its own writes, one fsync for
all that is due.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from typing import Any, Protocol

from .background import AuditWriter, Burst
from .log import (
    ASSOCIATION_REFUSED,
    BEGIN_TRANSFERRING,
    FAILURE,
    INSTANCES_TRANSFERRED,
    QUERY,
    SUCCESS,
    TLS_REFUSED,
    AuditLog,
    Record,
)

REFUSED_EVERY = 60.0  # seconds between two lines of one refused caller and reason


class Refusals(Protocol):
    """Where a listener reports whom it turned away (DimseAudit, RefusalAudit)."""

    def refused(self, caller: str, client: str | None, reason: str) -> None: ...

    def tls_refused(self, client: str | None, reason: str) -> None: ...


class DimseAudit:
    """`stored(caller, study, sop)` per object acknowledged, `queried(...)` per C-FIND answered,
    `retrieve_started`/`retrieve_ended` around each C-GET and C-MOVE, `refused`/`tls_refused`
    per connection turned away; `close()` writes what is left. `patient_of(sop)` names the
    patient of a study in its records (looked up once per record)."""

    def __init__(self, log: AuditLog, patient_of: Callable[[str], str | None], *, quiet: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.log = log
        self.patient_of = patient_of
        self.writer = AuditWriter(log, quiet=quiet, clock=clock, name="dv-audit-dimse")

    @property
    def quiet(self) -> float:
        return self.writer.quiet

    # -- received --

    def stored(self, caller: str, study: str, sop: str) -> None:
        self.writer.bump(("store", caller, study), self._received, "instances", {"sop": sop})

    def _received(self, key: Any, b: Burst) -> Record | None:
        _, caller, study = key
        return self.log.event(INSTANCES_TRANSFERRED, SUCCESS, user=caller, client=caller, study=study,
                              patient=self.patient_of(b.fields["sop"]),
                              detail={"direction": "received", "protocol": "DIMSE C-STORE",
                                      "instances": b.counts.get("instances", 0), "first": round(b.first, 3),
                                      "last": round(b.last, 3)})

    # -- retrieved --

    def retrieve_started(self, association: int, caller: str, client: str | None, protocol: str,
                         study: str | None, patient: str | None, sample_sop: str, matched: int,
                         destination: str | None = None) -> Hashable:
        """One C-GET or C-MOVE operation with `matched` objects begins; returns the key to hand
        to `retrieve_ended`. The first operation of its (association, study) writes Begin
        Transferring."""
        key = ("retrieve", association, caller, protocol, study, destination)
        fields = {"client": client, "patient": patient, "sop": sample_sop}
        if self.writer.count(key, self._retrieved, {"operations": 1, "matched": matched}, fields=fields,
                             busy=1):
            detail: dict[str, Any] = {"protocol": f"DIMSE {protocol}", "matched": matched}
            if destination is not None:
                detail["destination"] = destination
            self.writer.queue(self.log.event(
                BEGIN_TRANSFERRING, SUCCESS, user=caller, client=client, study=study,
                patient=patient or self.patient_of(sample_sop), detail=detail))
        return key

    def retrieve_ended(self, key: Hashable, completed: int, failed: int, warning: int,
                       cancelled: bool = False) -> None:
        self.writer.count(key, self._retrieved, {"completed": completed, "failed": failed, "warning": warning,
                                                 "cancelled": int(cancelled)}, busy=-1)

    def _retrieved(self, key: Any, b: Burst) -> Record | None:
        _, _, caller, protocol, study, destination = key
        c = b.counts
        detail: dict[str, Any] = {
            "direction": "sent", "protocol": f"DIMSE {protocol}", "operations": c.get("operations", 0),
            "matched": c.get("matched", 0), "completed": c.get("completed", 0), "failed": c.get("failed", 0),
            "warning": c.get("warning", 0), "first": round(b.first, 3), "last": round(b.last, 3)}
        if c.get("cancelled"):
            detail["cancelled"] = c["cancelled"]
        if b.busy > 0:
            detail["unfinished"] = b.busy  # still running when the server stopped
        if destination is not None:
            detail["destination"] = destination
        bad = c.get("failed", 0) or c.get("cancelled", 0) or b.busy > 0
        return self.log.event(INSTANCES_TRANSFERRED, FAILURE if bad else SUCCESS, user=caller,
                              client=b.fields.get("client"), study=study,
                              patient=b.fields.get("patient") or self.patient_of(b.fields["sop"]),
                              detail=detail)

    # -- queried --

    def queried(self, caller: str, level: str, keys: dict[str, str], matches: int,
                model: str | None = None) -> None:
        given = {k: str(v) for k, v in keys.items() if v not in ("", None)}
        self.writer.queue(self.log.event(
            QUERY, SUCCESS, user=caller, client=caller, patient=given.get("PatientID"),
            study=given.get("StudyInstanceUID"),
            detail={"protocol": "DIMSE C-FIND", "model": model, "level": level, "keys": given,
                    "matches": matches}))

    # -- refused --

    def refused(self, caller: str, client: str | None, reason: str) -> None:
        """An association we rejected (unknown caller, limit, nothing acceptable)."""
        self.writer.queue(refused_association(self.log, caller, client, reason))

    def tls_refused(self, client: str | None, reason: str) -> None:
        """A connection to the DICOM TLS port whose handshake failed (no, expired, untrusted
        certificate; not TLS at all)."""
        self.writer.queue(refused_tls(self.log, client, reason))

    def flush(self, *, everything: bool = False) -> int:
        """Writes what is due (everything with `everything`); how many records."""
        return self.writer.flush(everything=everything)

    def close(self) -> None:
        self.writer.close()


def refused_association(log: AuditLog, caller: str, client: str | None, reason: str) -> Record | None:
    """The Security Alert of a rejected association, throttled per caller, host and reason."""
    kind = reason.split(":", 1)[0]
    return log.event(ASSOCIATION_REFUSED, FAILURE, user=caller or None, client=client,
                     detail={"reason": reason},
                     once_per=(f"assoc-refused:{caller}@{client}:{kind}", REFUSED_EVERY))


def refused_tls(log: AuditLog, client: str | None, reason: str) -> Record | None:
    """The Security Alert of a failed DICOM TLS handshake, throttled per host and reason."""
    return log.event(TLS_REFUSED, FAILURE, user=None, client=client, detail={"reason": reason},
                     once_per=(f"tls-refused:{client}:{reason}", REFUSED_EVERY))


class RefusalAudit:
    """Refusals written at once, for a process with no DimseAudit thread (the receiver processes
    of dimse/workers.py): throttled as above, so a flood costs at most a line a minute per
    caller and reason."""

    def __init__(self, log: AuditLog) -> None:
        self.log = log

    def refused(self, caller: str, client: str | None, reason: str) -> None:
        rec = refused_association(self.log, caller, client, reason)
        if rec is not None:
            self.log.write([rec])

    def tls_refused(self, client: str | None, reason: str) -> None:
        rec = refused_tls(self.log, client, reason)
        if rec is not None:
            self.log.write([rec])
