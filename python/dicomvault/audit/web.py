"""The audit records of HTTP reads and searches, written off the event loop (audit/background.py).

- ATNA "DICOM Instances Accessed" (DCM 110103) for WADO-RS (instances, metadata, frames, bulk
  data, rendered, thumbnails), WADO-URI and the viewer (which reads through WADO-RS): one record
  per burst of one user reading one study from one client, written once nothing more of it came
  for `quiet` seconds, with the requests counted by kind. A viewer fetches hundreds of frames per
  series; a line each would be hundreds of fsyncs and a log nobody can read.
- ATNA "Query" (DCM 110112) for each QIDO-RS search: user, client, level, the keys given, the
  number of matches.
- ATNA "User Authentication" (DCM 110114, event `login` as for the login route and identity
  provider tokens, `detail.method` basic or token), failure, for a request whose credentials were refused
  (wrong password, unknown, expired or revoked token): at most one line per client a minute
  (a script can try tokens at will; the next line counts what was left out).
- The same event, success, for a user's password (Basic) or bearer token accepted: at most one
  line per user, client and scheme an hour (every request carries them; a login session is
  recorded once, by its login).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .background import AuditWriter, Burst
from .log import FAILURE, INSTANCES_ACCESSED, LOGIN, QUERY, SUCCESS, AuditLog, Record

AUTH_FAILED_EVERY = 60.0
AUTH_OK_EVERY = 3600.0


class WebAudit:
    def __init__(self, log: AuditLog, patient_of: Callable[[str], str | None] | None = None, *,
                 quiet: float = 10.0, clock: Callable[[], float] = time.time) -> None:
        self.log = log
        self.patient_of = patient_of
        self.writer = AuditWriter(log, quiet=quiet, clock=clock, name="dv-audit-web")

    def accessed(self, user: str | None, client: str | None, study: str, kind: str) -> None:
        """One read of `study` (`kind`: instances, frames, metadata, rendered, ...)."""
        self.writer.count(("access", user, client, study), self._accessed, {kind: 1})

    def _accessed(self, key: Any, b: Burst) -> Record | None:
        _, user, client, study = key
        patient = self.patient_of(study) if self.patient_of is not None else None
        detail = {"protocol": "DICOMweb", "requests": sum(b.counts.values()),
                  "kinds": dict(sorted(b.counts.items())), "first": round(b.first, 3),
                  "last": round(b.last, 3)}
        return self.log.event(INSTANCES_ACCESSED, SUCCESS, user=user, client=client, study=study,
                              patient=patient, detail=detail)

    def queried(self, user: str | None, client: str | None, level: str, keys: dict[str, str],
                matches: int, *, study: str | None = None, protocol: str = "QIDO-RS") -> None:
        given = {k: v for k, v in keys.items() if v not in ("", None)}
        self.writer.queue(self.log.event(
            QUERY, SUCCESS, user=user, client=client, patient=given.get("PatientID") or given.get("00100020"),
            study=study or given.get("StudyInstanceUID") or given.get("0020000D"),
            detail={"protocol": protocol, "level": level, "keys": given, "matches": matches}))

    def auth_failed(self, client: str | None, method: str, reason: str, user: str | None = None) -> None:
        self.writer.queue(self.log.event(
            LOGIN, FAILURE, user=user, client=client, detail={"method": method, "reason": reason},
            once_per=(f"auth-failed:{client}", AUTH_FAILED_EVERY)))

    def authenticated(self, user: str, client: str | None, method: str) -> None:
        self.writer.queue(self.log.event(
            LOGIN, SUCCESS, user=user, client=client, detail={"method": method},
            once_per=(f"auth-ok:{user}@{client}:{method}", AUTH_OK_EVERY)))

    def flush(self, *, everything: bool = False) -> int:
        return self.writer.flush(everything=everything)

    def close(self) -> None:
        self.writer.close()
