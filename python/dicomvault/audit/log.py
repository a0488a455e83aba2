"""The audit log: `<data>/audit/audit.jsonl`, one JSON object per line, appended and never rewritten.

Each line is {time, event, outcome, user, client, study, detail}, shaped by `build_event` alone:
the later IHE ATNA export (RFC 3881 / DICOM PS3.15 A.5 messages) maps that one dict, so no caller
builds a record by hand.

Events are rare (logins, share changes, share use at most hourly per share), so every line is
written with O_APPEND in one write and fsync'd before the request that caused it goes on: a
crash loses no acknowledged event, and the CLI and a server can append to the same file without
tearing each other's lines. Events that a client could repeat at will (a share link used for
every frame, an off-scope request) go through a throttle that writes the first and then at most
one line per window, counting what it left out in `detail.suppressed`.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AUDIT_DIR = "audit"
AUDIT_FILE = "audit.jsonl"

LOGIN = "login"
LOGOUT = "logout"
SHARE_CREATED = "share-created"
SHARE_REVOKED = "share-revoked"
SHARE_USED = "share-used"
SHARE_SCOPE_REFUSED = "share-scope-refused"
EVENTS = frozenset({LOGIN, LOGOUT, SHARE_CREATED, SHARE_REVOKED, SHARE_USED, SHARE_SCOPE_REFUSED})

SUCCESS = "success"
FAILURE = "failure"
OUTCOMES = frozenset({SUCCESS, FAILURE})

# Throttle keys kept at most; beyond, keys whose window has passed are forgotten.
_MAX_THROTTLE_KEYS = 10_000

log = logging.getLogger("dicomvault.audit")

Record = dict[str, Any]


def build_event(event: str, outcome: str, *, when: float, user: str | None, client: str | None,
                study: str | None = None, detail: dict[str, Any] | None = None) -> Record:
    """The one shape of an audit record. An unknown event or outcome is a bug in the caller
    (ValueError), not something to write and let an ATNA mapping trip over later."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}; events are {sorted(EVENTS)}")
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown audit outcome {outcome!r}; outcomes are {sorted(OUTCOMES)}")
    return {"time": datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds"),
            "event": event, "outcome": outcome, "user": user, "client": client, "study": study,
            "detail": dict(detail or {})}


class AuditLog:
    """The audit file of one data directory. Thread-safe.

    Split in two so the web layer can decide on the event loop (`event`, cheap) and write in
    the thread pool (`write`, an fsync); `record` does both."""

    def __init__(self, data_dir: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.dir = Path(data_dir) / AUDIT_DIR
        self.path = self.dir / AUDIT_FILE
        # Public so tests can move time forward.
        self.clock = clock
        self.write_failures = 0
        self._write_lock = threading.Lock()
        self._throttle_lock = threading.Lock()
        # key -> (time of the last line written, seconds of its window, events left out since)
        self._throttle: dict[str, tuple[float, float, int]] = {}

    def event(self, event: str, outcome: str, *, user: str | None, client: str | None,
              study: str | None = None, detail: dict[str, Any] | None = None,
              once_per: tuple[str, float] | None = None) -> Record | None:
        """The record of an event, or None when `once_per=(key, seconds)` says a line for `key`
        was written less than `seconds` ago (it is then counted, and the next line of `key`
        says how many were left out)."""
        now = self.clock()
        detail = dict(detail or {})
        if once_per is not None:
            suppressed = self._pass(once_per[0], once_per[1], now)
            if suppressed is None:
                return None
            if suppressed:
                detail["suppressed"] = suppressed
        return build_event(event, outcome, when=now, user=user, client=client, study=study, detail=detail)

    def _pass(self, key: str, every: float, now: float) -> int | None:
        """How many events of `key` were left out before this one, or None to leave it out."""
        with self._throttle_lock:
            held = self._throttle.get(key)
            if held is not None and now - held[0] < held[1]:
                self._throttle[key] = (held[0], held[1], held[2] + 1)
                return None
            if held is None and len(self._throttle) >= _MAX_THROTTLE_KEYS:
                stale = [k for k, (t, w, n) in self._throttle.items() if now - t >= w and not n]
                for k in stale:
                    del self._throttle[k]
                if len(self._throttle) >= _MAX_THROTTLE_KEYS:
                    # Only keys inside their window or owing a count remain: losing those counts
                    # is better than memory growing with the keys a client can invent.
                    self._throttle.clear()
            self._throttle[key] = (now, every, 0)
            return held[2] if held is not None else 0

    def write(self, records: Sequence[Record]) -> None:
        """Appends `records` (one write, then fsync). A failure is logged, counted in
        `write_failures` and swallowed: the archive must go on serving images when the audit
        disk is full, and the error log says the trail has a gap."""
        if not records:
            return
        data = "".join(json.dumps(r, ensure_ascii=False, separators=(",", ":")) + "\n" for r in records)
        body = data.encode("utf-8")
        with self._write_lock:
            try:
                self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    view = memoryview(body)
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                finally:
                    os.close(fd)
            except OSError as exc:
                self.write_failures += 1
                log.error("audit: cannot append %d event(s) to %s: %s", len(records), self.path, exc)

    def record(self, event: str, outcome: str, *, user: str | None, client: str | None,
               study: str | None = None, detail: dict[str, Any] | None = None,
               once_per: tuple[str, float] | None = None) -> Record | None:
        """`event` then `write`: for callers already off the event loop (routes in the thread
        pool, the CLI). Returns what was written, None when throttled."""
        rec = self.event(event, outcome, user=user, client=client, study=study, detail=detail,
                         once_per=once_per)
        if rec is not None:
            self.write([rec])
        return rec
