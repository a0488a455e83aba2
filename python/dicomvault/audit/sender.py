"""The thread in `dicomvault serve` that sends the audit log to an audit repository over syslog.

It tails `<data>/audit/audit.jsonl` (audit/tail.py), so what any process appended is sent, in
seq order, and no writer ever waits on the network: writers append and fsync as before, the
sender reads behind them. A record counts as delivered, and the cursor moves past it, once the
repository's TCP has acknowledged its bytes and the connection was still open `grace` seconds
later (a syslog server never writes back, so a close or a reset is all we can see of a receiver
that went away with records unread); over UDP, once `grace` passed without an ICMP error. A
repository that is down or closes the connection is retried with exponential backoff from
`retry_min` to `retry_max` seconds, and sending resumes at the cursor: at-least-once, so records
sent just before an outage or a crash of the server may arrive twice (the same message again).
Over UDP a datagram lost without an ICMP error (a host down, a firewall) is lost: nothing
acknowledges it.

An outage is logged once when it starts and once when it ends, and written to
`<data>/audit/syslog.status` (JSON) for `dicomvault audit status`.
"""

from __future__ import annotations

import json
import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import DicomVaultError
from .atna import AuditSource, render
from .log import AUDIT_DIR, HEAD_FILE
from .settings import AuditSettings
from .syslog import MAX_DATAGRAM, Endpoint, Transport, message
from .tail import AuditTail, Position, cursor_path, load_cursor, save_cursor

STATUS_FILE = "syslog.status"

log = logging.getLogger("dicomvault.audit.syslog")


def status_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / AUDIT_DIR / STATUS_FILE


def last_seq(data_dir: str | os.PathLike[str]) -> int:
    """The last seq written to the log, as its head file records it (0 when there is none)."""
    try:
        return int((Path(data_dir) / AUDIT_DIR / HEAD_FILE).read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


def start_sender(data_dir: str | os.PathLike[str], settings: AuditSettings,
                 ae_title: str) -> SyslogSender | None:
    """The running sender `[audit]` asks for (None without `syslog`): what `serve` calls. A TLS
    certificate, key or CA file that does not load is an error here, not an outage later."""
    if settings.endpoint is None:
        return None
    source = AuditSource(settings.source_id or ae_title, settings.site)
    sender = SyslogSender(data_dir, settings.endpoint, source)
    sender.start()
    return sender


class SyslogSender:
    """`start()` the thread, `stop()` it (what is sent by then is committed to the cursor)."""

    def __init__(self, data_dir: str | os.PathLike[str], endpoint: Endpoint, source: AuditSource, *,
                 poll: float = 0.25, retry_min: float = 1.0, retry_max: float = 60.0, grace: float = 0.5,
                 batch: int = 200, clock: Callable[[], float] = time.time) -> None:
        self.data_dir = Path(data_dir)
        if endpoint.target.scheme == "tls":
            try:
                endpoint.tls_context()
            except (OSError, ssl.SSLError) as exc:
                raise DicomVaultError(f"audit: syslog TLS files for {endpoint.target} do not load "
                                      f"(syslog_ca={endpoint.ca}, syslog_cert={endpoint.cert}, "
                                      f"syslog_key={endpoint.key}): {exc}") from exc
        self.endpoint = endpoint
        self.source = source
        self.poll, self.retry_min, self.retry_max, self.grace = poll, retry_min, retry_max, grace
        self.batch = batch
        self.clock = clock
        self.cursor_file = cursor_path(data_dir)
        self.cursor = load_cursor(self.cursor_file)
        self.tail = AuditTail(data_dir, self.cursor)
        self.sent = 0  # messages written to the transport (resends included)
        self.unsendable = 0  # records that cannot become a message (logged, skipped)
        self.outages = 0
        self.down_since: float | None = None
        self.last_error: str | None = None
        self._transport: Transport | None = None
        # Sent, not yet known delivered: (position, time all its bytes were acknowledged or None).
        self._pending: list[tuple[Position, float | None]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the thread --------------------------------------------------------------------------

    def start(self) -> None:
        self.data_dir.joinpath(AUDIT_DIR).mkdir(mode=0o700, parents=True, exist_ok=True)
        self._write_status("starting")
        self._thread = threading.Thread(target=self._run, name="dv-audit-syslog", daemon=True)
        self._thread.start()
        log.info("audit: sending the audit log to %s from seq %d", self.endpoint.target, self.cursor.seq + 1)

    def stop(self, timeout: float = 10.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
        self._write_status("stopped")

    def backlog(self) -> int:
        return max(0, last_seq(self.data_dir) - self.cursor.seq)

    def _run(self) -> None:
        delay = self.retry_min
        while not self._stop.is_set():
            try:
                busy = self._step()
                delay = self.retry_min
            except (OSError, ssl.SSLError, ConnectionError) as exc:
                self._down(exc)
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, self.retry_max)
                continue
            except Exception as exc:  # noqa: BLE001 - a bug must not end the thread silently
                log.exception("audit: syslog sender failed; retrying in %g s", delay)
                self._down(exc)
                if self._stop.wait(delay):
                    break
                delay = min(delay * 2, self.retry_max)
                continue
            if not busy:
                self._stop.wait(self.poll)
        self._finish()

    def _step(self) -> bool:
        """Sends what is new and confirms what was sent; whether there was anything to do."""
        records = self.tail.read(self.batch)
        if not records and not self._pending:
            return False
        if self._transport is None:
            self._transport = self.endpoint.connect()
            self._up()
        for pos, rec in records:
            msg = self._message(rec)
            if msg is not None:
                self._transport.send(msg)
                self.sent += 1
            self._pending.append((pos, None))
        self._confirm()
        return bool(records)

    def _message(self, rec: dict[str, Any]) -> bytes | None:
        try:
            msg = message(rec, render(rec, self.source), self.source.hostname)
        except ValueError as exc:
            self.unsendable += 1
            log.error("audit: %s; not sent to %s", exc, self.endpoint.target)
            return None
        if self.endpoint.target.scheme == "udp" and len(msg) > MAX_DATAGRAM:
            self.unsendable += 1
            log.error("audit: record seq %s is %d bytes, more than one UDP datagram holds; not sent to %s",
                      rec.get("seq"), len(msg), self.endpoint.target)
            return None
        return msg

    def _confirm(self) -> None:
        """Moves the cursor past the records known delivered (see the module's docstring)."""
        if not self._pending or self._transport is None:
            return
        acked = self._transport.delivered()
        if not acked and not self._transport.open():
            raise ConnectionError(f"{self.endpoint.target} closed the connection")
        now = time.monotonic()
        if acked:
            self._pending = [(p, now if t is None else t) for p, t in self._pending]
        done = [p for p, t in self._pending if t is not None and now - t >= self.grace]
        if done:
            self._pending = self._pending[len(done):]
            self._commit(done[-1])

    def _commit(self, pos: Position) -> None:
        self.cursor = pos
        try:
            save_cursor(self.cursor_file, pos)
        except OSError as exc:
            # Only costs resends after a restart: the position is kept in memory.
            log.error("audit: cannot write the syslog cursor %s: %s", self.cursor_file, exc)

    def _finish(self) -> None:
        """At stop, over a connection that is up: what was written just before (the server's
        application-stop) is sent, and what the repository acknowledged gets its grace and is
        committed, for at most `grace` + 2 s. The rest is sent again by the next start."""
        if self._transport is not None:
            deadline = time.monotonic() + self.grace + 2.0
            try:
                while self._step() and time.monotonic() < deadline:
                    pass
                while self._pending and time.monotonic() < deadline:
                    time.sleep(min(0.05, self.grace or 0.05))
                    self._confirm()
            except (OSError, ssl.SSLError, ConnectionError) as exc:
                log.warning("audit: %s went away while stopping (%s); %d record(s) are sent again at the "
                            "next start", self.endpoint.target, exc, len(self._pending))
        if self._transport is not None:
            self._transport.close()
            self._transport = None

    # -- outages -----------------------------------------------------------------------------

    def _down(self, exc: BaseException) -> None:
        if self._transport is not None:
            self._transport.close()
            self._transport = None
        # Everything not known delivered goes again, from the cursor.
        self._pending.clear()
        self.tail.rewind(self.cursor)
        self.last_error = f"{type(exc).__name__}: {exc}"
        if self.down_since is None:
            self.down_since = self.clock()
            self.outages += 1
            log.error("audit: syslog repository %s unreachable (%s); %d record(s) wait in the audit log "
                      "and are sent when it is back (retrying every %g-%g s)", self.endpoint.target,
                      self.last_error, self.backlog(), self.retry_min, self.retry_max)
            self._write_status("down")
        else:
            log.debug("audit: syslog repository %s still unreachable: %s", self.endpoint.target, exc)

    def _up(self) -> None:
        if self.down_since is not None:
            log.warning("audit: syslog repository %s reachable again after %.0f s; sending %d record(s)",
                        self.endpoint.target, self.clock() - self.down_since, self.backlog())
        self.down_since = None
        self._write_status("up")

    def _write_status(self, state: str) -> None:
        doc = {"target": str(self.endpoint.target), "state": state, "time": self.clock(),
               "down_since": self.down_since, "last_error": self.last_error, "outages": self.outages,
               "pid": os.getpid()}
        path = status_path(self.data_dir)
        try:
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(doc) + "\n")
            os.replace(tmp, path)
        except OSError as exc:
            log.warning("audit: cannot write %s: %s", path, exc)
