"""The audit log: `<data>/audit/audit.jsonl`, one JSON object per line, appended and never rewritten.

Each line is {time, event, code, outcome, user, client, patient, study, detail}, shaped by
`build_event` alone (`code` is the event's DICOM PS3.15 A.5 / IHE ATNA EventID), so no caller
builds a record by hand, plus two fields the writer adds: `seq` (1, 2, ...) and `prev`, the
SHA-256 of the previous line's bytes. Editing, inserting or deleting a line breaks the chain at
that point (`verify`); cutting lines off the end is caught by `<data>/audit/head` (the last seq
and line hash, replaced after every append). A writer takes an flock on the file while it reads
the chain's end and appends, so the CLI and a server can append to the same log.

Events are rare (logins, share changes, share use at most hourly per share), so every line is
written with O_APPEND in one write and fsync'd before the request that caused it goes on: a
crash loses no acknowledged event, and the CLI and a server can append to the same file without
tearing each other's lines. Events that a client could repeat at will (a share link used for
every frame, an off-scope request) go through a throttle that writes the first and then at most
one line per window, counting what it left out in `detail.suppressed`.
"""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

AUDIT_DIR = "audit"
AUDIT_FILE = "audit.jsonl"
HEAD_FILE = "head"
GENESIS = "0" * 64  # `prev` of the first chained line

LOGIN = "login"
LOGOUT = "logout"
SHARE_CREATED = "share-created"
SHARE_REVOKED = "share-revoked"
SHARE_USED = "share-used"
SHARE_SCOPE_REFUSED = "share-scope-refused"
APPLICATION_START = "application-start"
APPLICATION_STOP = "application-stop"
DATA_DELETION = "data-deletion"
EXPORT = "export"
SECURITY_ALERT = "security-alert"
INSTANCES_TRANSFERRED = "instances-transferred"
QUERY = "query"
BEGIN_TRANSFERRING = "begin-transferring"
INSTANCES_ACCESSED = "instances-accessed"
ASSOCIATION_REFUSED = "association-refused"
TLS_REFUSED = "tls-refused"
# IOCM: instances hidden by a rejection note, or put back by an admin (docs/integration.md)
INSTANCES_REJECTED = "instances-rejected"
INSTANCES_RESTORED = "instances-restored"
# A patient's demographics updated, two patients merged or a merge undone (HL7 ADT, the API,
# the CLI: integration/patients.py); an order or a report changed (integration/hl7/auditing.py).
# detail["action"] may carry the EventActionCode (C create, U update, D delete)
PATIENT_RECORD = "patient-record"
PROCEDURE_RECORD = "procedure-record"

# Each event's EventID (DICOM PS3.16 CID 400, as PS3.15 A.5.3 uses them).
CODES = {
    LOGIN: "DCM 110114",  # User Authentication
    LOGOUT: "DCM 110114",
    SHARE_CREATED: "DCM 110113",  # Security Alert (a security configuration change)
    SHARE_REVOKED: "DCM 110113",
    SHARE_USED: "DCM 110103",  # DICOM Instances Accessed
    SHARE_SCOPE_REFUSED: "DCM 110113",
    APPLICATION_START: "DCM 110100",  # Application Activity
    APPLICATION_STOP: "DCM 110100",
    DATA_DELETION: "DCM 110105",
    EXPORT: "DCM 110106",
    SECURITY_ALERT: "DCM 110113",
    INSTANCES_TRANSFERRED: "DCM 110104",
    QUERY: "DCM 110112",
    BEGIN_TRANSFERRING: "DCM 110102",
    INSTANCES_ACCESSED: "DCM 110103",
    ASSOCIATION_REFUSED: "DCM 110113",
    TLS_REFUSED: "DCM 110113",
    INSTANCES_REJECTED: "DCM 110103",  # DICOM Instances Accessed, action U (update)
    INSTANCES_RESTORED: "DCM 110103",
    PATIENT_RECORD: "DCM 110110",  # Patient Record
    PROCEDURE_RECORD: "DCM 110111",  # Procedure Record
}
EVENTS = frozenset(CODES)

SUCCESS = "success"
FAILURE = "failure"
OUTCOMES = frozenset({SUCCESS, FAILURE})

# Throttle keys kept at most; beyond, keys whose window has passed are forgotten.
_MAX_THROTTLE_KEYS = 10_000

log = logging.getLogger("dicomvault.audit")

Record = dict[str, Any]


def build_event(event: str, outcome: str, *, when: float, user: str | None, client: str | None,
                study: str | None = None, detail: dict[str, Any] | None = None,
                patient: str | None = None) -> Record:
    """The one shape of an audit record. An unknown event or outcome is a bug in the caller
    (ValueError), not something to write and let an ATNA mapping trip over later."""
    if event not in EVENTS:
        raise ValueError(f"unknown audit event {event!r}; events are {sorted(EVENTS)}")
    if outcome not in OUTCOMES:
        raise ValueError(f"unknown audit outcome {outcome!r}; outcomes are {sorted(OUTCOMES)}")
    return {"time": datetime.fromtimestamp(when, UTC).isoformat(timespec="milliseconds"),
            "event": event, "code": CODES[event], "outcome": outcome, "user": user, "client": client,
            "patient": patient, "study": study, "detail": dict(detail or {})}


def cli_user() -> str:
    """Who runs a CLI command, as audit records and share revocations name them."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):  # no USER variable and a uid without a passwd entry (containers)
        return "cli:unknown"


def line_hash(line: bytes) -> str:
    """The chain's hash of one line (its bytes without the newline)."""
    return hashlib.sha256(line).hexdigest()


def _last_line_end(fd: int, size: int) -> int:
    """Offset just past the last newline before `size` (0 if there is none)."""
    end = size
    while end > 0:
        start = max(0, end - 65536)
        cut = os.pread(fd, end - start, start).rfind(b"\n")
        if cut >= 0:
            return start + cut + 1
        end = start
    return 0


def _head(path: Path) -> tuple[int, str | None]:
    """(seq, hash) the head file records; (0, None) when it is missing or unreadable."""
    try:
        seq, digest = path.read_text().split()
        return int(seq), digest
    except (OSError, ValueError):
        return 0, None


def _last_line(fd: int, size: int) -> bytes | None:
    """The last complete line of the file (without its newline), or None when it is empty."""
    if size == 0:
        return None
    block = 4096
    end = size
    tail = b""
    while True:
        start = max(0, end - block)
        tail = os.pread(fd, end - start, start) + tail
        body = tail[:-1] if tail.endswith(b"\n") else tail
        cut = body.rfind(b"\n")
        if cut >= 0 or start == 0:
            return body[cut + 1:]
        end = start
        block *= 2


class AuditLog:
    """The audit file of one data directory. Thread-safe.

    Split in two so the web layer can decide on the event loop (`event`, cheap) and write in
    the thread pool (`write`, an fsync); `record` does both."""

    def __init__(self, data_dir: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.dir = Path(data_dir) / AUDIT_DIR
        self.path = self.dir / AUDIT_FILE
        self.head_path = self.dir / HEAD_FILE
        # Public so tests can move time forward.
        self.clock = clock
        self.write_failures = 0
        self._write_lock = threading.Lock()
        self._throttle_lock = threading.Lock()
        # key -> (time of the last line written, seconds of its window, events left out since)
        self._throttle: dict[str, tuple[float, float, int]] = {}

    def event(self, event: str, outcome: str, *, user: str | None, client: str | None,
              study: str | None = None, detail: dict[str, Any] | None = None,
              once_per: tuple[str, float] | None = None, patient: str | None = None) -> Record | None:
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
        return build_event(event, outcome, when=now, user=user, client=client, study=study, detail=detail,
                           patient=patient)

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
        """Appends `records`, chained (one write, then fsync, then the head). A failure is
        logged, counted in `write_failures` and swallowed: the archive must go on serving images
        when the audit disk is full, and the error log says the trail has a gap."""
        if not records:
            return
        with self._write_lock:
            try:
                self.dir.mkdir(mode=0o700, parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
                try:
                    # Other processes append too: the chain's end is read and extended under one lock.
                    fcntl.flock(fd, fcntl.LOCK_EX)
                    seq, prev = self._chain_end(fd)
                    lines = []
                    for r in records:
                        seq += 1
                        line = json.dumps({**r, "seq": seq, "prev": prev}, ensure_ascii=False,
                                          separators=(",", ":")).encode("utf-8")
                        prev = line_hash(line)
                        lines.append(line + b"\n")
                    view = memoryview(b"".join(lines))
                    while view:
                        view = view[os.write(fd, view):]
                    os.fsync(fd)
                    self._write_head(seq, prev)
                finally:
                    os.close(fd)  # releases the flock
            except OSError as exc:
                self.write_failures += 1
                log.error("audit: cannot append %d event(s) to %s: %s", len(records), self.path, exc)

    def _chain_end(self, fd: int) -> tuple[int, str]:
        """(seq, hash) of the last line: where the next line chains on. A torn last line (an
        append cut short by a full disk or a crash: never acknowledged, its writer got the
        error) is cut off first, or the next event would be glued onto it."""
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            whole = _last_line_end(fd, size)
            log.warning("audit: cutting a torn last line (%d bytes) off %s", size - whole, self.path)
            os.ftruncate(fd, whole)
            size = whole
        last = _last_line(fd, size)
        if last is None:
            return 0, GENESIS
        try:
            seq = int(json.loads(last).get("seq", 0))
        except (ValueError, AttributeError):
            seq = _head(self.head_path)[0]  # a damaged last line: the head still counts
        return seq, line_hash(last)

    def _write_head(self, seq: int, digest: str) -> None:
        tmp = self.head_path.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            os.write(fd, f"{seq} {digest}\n".encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, self.head_path)
        # The rename durable too: an older head after a power loss would read as lines cut off.
        dfd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)

    def record(self, event: str, outcome: str, *, user: str | None, client: str | None,
               study: str | None = None, detail: dict[str, Any] | None = None,
               once_per: tuple[str, float] | None = None, patient: str | None = None) -> Record | None:
        """`event` then `write`: for callers already off the event loop (routes in the thread
        pool, the CLI). Returns what was written, None when throttled."""
        rec = self.event(event, outcome, user=user, client=client, study=study, detail=detail,
                         once_per=once_per, patient=patient)
        if rec is not None:
            self.write([rec])
        return rec


@dataclass
class ChainReport:
    """What `verify` found: the chained lines checked, lines from before the chain existed
    (no `seq`; anchored by the first chained line's `prev`, not checkable themselves), and
    every break, as (line number, why)."""

    lines: int = 0
    chained: int = 0
    unchained: int = 0
    breaks: list[tuple[int, str]] = field(default_factory=list)

    @property
    def intact(self) -> bool:
        return not self.breaks


def verify(data_dir: str | os.PathLike[str]) -> ChainReport:
    """Re-computes the chain of the data directory's audit log and checks it against the head.
    The log and its head are read under a shared lock, so a server appending meanwhile is not
    mistaken for lines cut off."""
    d = Path(data_dir) / AUDIT_DIR
    try:
        fd = os.open(d / AUDIT_FILE, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return ChainReport()
    try:
        fcntl.flock(fd, fcntl.LOCK_SH)
        size = os.fstat(fd).st_size
        raw = os.pread(fd, size, 0) if size else b""
        head = (d / HEAD_FILE).read_text() if (d / HEAD_FILE).exists() else None
    finally:
        os.close(fd)
    return _check_chain(raw, head)


def _check_chain(raw: bytes, head: str | None) -> ChainReport:
    report = ChainReport()
    prev, seq = None, 0
    for n, line in enumerate(raw.split(b"\n")[:-1] if raw else [], start=1):
        report.lines += 1
        try:
            rec = json.loads(line)
        except ValueError:
            report.breaks.append((n, "not a JSON line"))
            prev = line_hash(line)
            continue
        if not isinstance(rec, dict) or "seq" not in rec:
            if report.chained:
                report.breaks.append((n, "a line without seq/prev inside the chain"))
            report.unchained += 1
            prev = line_hash(line)
            continue
        report.chained += 1
        want_prev = prev if prev is not None else GENESIS
        if rec.get("prev") != want_prev:
            report.breaks.append((n, "prev does not match the line before it (edited, inserted or removed)"))
        if rec.get("seq") != seq + 1 and report.chained > 1:
            report.breaks.append((n, f"seq {rec.get('seq')} after {seq}"))
        seq = rec.get("seq") if isinstance(rec.get("seq"), int) else seq + 1
        prev = line_hash(line)
    if raw and not raw.endswith(b"\n"):
        report.breaks.append((report.lines + 1, "a torn last line (no newline)"))
    if head is None:
        if report.chained:
            report.breaks.append((report.lines, "the head file is missing"))
        return report
    try:
        head_seq, head_hash = head.split()
        head_n = int(head_seq)
    except ValueError:
        report.breaks.append((report.lines, "the head file is damaged"))
        return report
    if head_n != seq or head_hash != prev:
        report.breaks.append((report.lines, f"the log ends at seq {seq}, its head says {head_seq}: "
                                            "lines were cut off the end or the head was replaced"))
    return report


def search(data_dir: str | os.PathLike[str], *, patient: str | None = None, user: str | None = None,
           study: str | None = None, event: str | None = None, since: str | None = None,
           until: str | None = None) -> Iterator[Record]:
    """The audit records matching every given criterion (times as ISO 8601, compared as UTC)."""
    lo, hi = _utc(since), _utc(until)
    path = Path(data_dir) / AUDIT_DIR / AUDIT_FILE
    if not path.exists():
        return
    with path.open("rb") as f:
        for line in f:
            try:
                rec = json.loads(line)
            except ValueError:
                continue
            if not isinstance(rec, dict):
                continue
            when = _utc(rec.get("time"))
            if ((patient is not None and rec.get("patient") != patient)
                    or (user is not None and rec.get("user") != user)
                    or (study is not None and rec.get("study") != study)
                    or (event is not None and rec.get("event") != event)
                    or (lo is not None and (when is None or when < lo))
                    or (hi is not None and (when is None or when > hi))):
                continue
            yield rec


def _utc(text: object) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    t = datetime.fromisoformat(text)
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)
