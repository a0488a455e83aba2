"""The audit records of DIMSE traffic, written off the request path.

- ATNA "DICOM Instances Transferred" (DCM 110104) for objects received: one record per burst of
  one caller sending one study, written when nothing more of that (caller, study) arrived for
  `quiet` seconds, or at stop, with the number of instances. Why bursts: an ATNA record describes
  a transfer of a study, not each object, and one fsync'd line per object would cost the ingest
  path a disk flush per image.
- ATNA "Query" (DCM 110112) for each C-FIND answered: who, the level, the keys given, how many
  matches.

The request paths only count or queue under a lock; a thread of its own writes, one fsync for
all that is due.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from .log import INSTANCES_TRANSFERRED, QUERY, SUCCESS, AuditLog, Record


@dataclass
class _Burst:
    first: float
    last: float
    count: int
    sample_sop: str


class DimseAudit:
    """`stored(caller, study, sop)` per object acknowledged, `queried(...)` per C-FIND answered;
    `close()` writes what is left. `patient_of(sop)` names the patient of a study in its transfer
    record (looked up once per record)."""

    def __init__(self, log: AuditLog, patient_of: Callable[[str], str | None], *, quiet: float = 10.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.log = log
        self.patient_of = patient_of
        self.quiet = quiet
        self.clock = clock
        self._lock = threading.Lock()
        self._bursts: dict[tuple[str, str], _Burst] = {}
        self._queries: list[Record] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="dv-audit-dimse", daemon=True)
        self._thread.start()

    def stored(self, caller: str, study: str, sop: str) -> None:
        now = self.clock()
        with self._lock:
            b = self._bursts.get((caller, study))
            if b is None:
                self._bursts[(caller, study)] = _Burst(now, now, 1, sop)
            else:
                b.last, b.count = now, b.count + 1

    def queried(self, caller: str, level: str, keys: dict[str, str], matches: int,
                model: str | None = None) -> None:
        given = {k: str(v) for k, v in keys.items() if v not in ("", None)}
        rec = self.log.event(QUERY, SUCCESS, user=caller, client=caller, patient=given.get("PatientID"),
                             study=given.get("StudyInstanceUID"),
                             detail={"protocol": "DIMSE C-FIND", "model": model, "level": level,
                                     "keys": given, "matches": matches})
        if rec is not None:
            with self._lock:
                self._queries.append(rec)

    def flush(self, *, everything: bool = False) -> int:
        """Writes the bursts that went quiet (all of them with `everything`); how many."""
        now = self.clock()
        with self._lock:
            due = [(k, b) for k, b in self._bursts.items() if everything or now - b.last >= self.quiet]
            for k, _ in due:
                del self._bursts[k]
            records, self._queries = self._queries, []
        for (caller, study), b in due:
            rec = self.log.event(INSTANCES_TRANSFERRED, SUCCESS, user=caller, client=caller, study=study,
                                 patient=self.patient_of(b.sample_sop),
                                 detail={"direction": "received", "protocol": "DIMSE C-STORE",
                                         "instances": b.count, "first": round(b.first, 3),
                                         "last": round(b.last, 3)})
            if rec is not None:
                records.append(rec)
        self.log.write(records)  # one fsync for every record due
        return len(records)

    def _run(self) -> None:
        while not self._stop.wait(min(2.0, max(0.05, self.quiet / 2))):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.flush(everything=True)
