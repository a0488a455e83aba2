"""Audit records written by a thread of their own, so that no request waits on the log's fsync.

Two kinds of work are handed in:
- a finished record (`queue`): written within `tick` seconds;
- a count towards a burst (`count`): events of one key (a caller sending one study, a user
  reading one study, a retrieve on one association) are summed until nothing more of that key
  came for `quiet` seconds, then written as one record. Why bursts: an ATNA record describes
  a transfer or an access of a study, and the viewer fetches hundreds of frames, a modality
  sends thousands of objects; one fsync'd line for each would cost every one of them a disk
  flush and fill the log with noise.

A burst that is `busy` (a retrieve still running) is not written until it ends, however long
it takes. The request paths only take a lock and add to a dict; the thread writes everything
due with one fsync.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from .log import AuditLog, Record


@dataclass
class Burst:
    """Events of one key: when the first and the last came, their summed counts, what the first
    one said (`fields`), and how many of its operations are still running (`busy`)."""

    first: float
    last: float
    counts: dict[str, int] = field(default_factory=dict)
    fields: dict[str, Any] = field(default_factory=dict)
    busy: int = 0


# Makes the record of a burst when it is written (on the writer thread: a lookup in the index
# costs the request nothing); None writes nothing.
RecordOf = Callable[[Any, Burst], Record | None]


class AuditWriter:
    """`queue(record)` and `count(key, ...)` from any thread; `close()` writes what is left."""

    def __init__(self, log: AuditLog, *, quiet: float = 10.0, clock: Callable[[], float] = time.time,
                 name: str = "dv-audit") -> None:
        self.log = log
        self.quiet = quiet
        self.clock = clock
        self._lock = threading.Lock()
        self._bursts: dict[Hashable, tuple[Burst, RecordOf]] = {}
        self._records: list[Record] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def queue(self, record: Record | None) -> None:
        """A record to write as it is (None, what a throttled `AuditLog.event` gives: nothing)."""
        if record is not None:
            with self._lock:
                self._records.append(record)

    def count(self, key: Hashable, record_of: RecordOf, add: dict[str, int] | None = None, *,
              fields: dict[str, Any] | None = None, busy: int = 0) -> bool:
        """Adds `add` to the burst of `key` (made with `fields` if there is none); `busy` +1 when
        an operation of it starts, -1 when it ends. True when this started a new burst."""
        now = self.clock()
        with self._lock:
            held = self._bursts.get(key)
            new = held is None
            if held is None:
                burst = Burst(now, now, fields=dict(fields or {}))
                self._bursts[key] = (burst, record_of)
            else:
                burst = held[0]
                burst.last = now
            for k, n in (add or {}).items():
                burst.counts[k] = burst.counts.get(k, 0) + n
            burst.busy += busy
        return new

    def bump(self, key: Hashable, record_of: RecordOf, counter: str, fields: Any) -> None:
        """`count(key, record_of, {counter: 1}, fields=fields)` for a per-object path (a C-STORE):
        the same, with less work per call. `fields` is kept as given (no copy)."""
        now = self.clock()
        with self._lock:
            held = self._bursts.get(key)
            if held is None:
                self._bursts[key] = (Burst(now, now, {counter: 1}, fields), record_of)
            else:
                b = held[0]
                b.last = now
                b.counts[counter] += 1

    def flush(self, *, everything: bool = False) -> int:
        """Writes the records queued and the bursts that went quiet (every burst with
        `everything`); returns how many lines that was."""
        now = self.clock()
        with self._lock:
            due = [(k, b, f) for k, (b, f) in self._bursts.items()
                   if everything or (b.busy <= 0 and now - b.last >= self.quiet)]
            for k, _, _ in due:
                del self._bursts[k]
            records, self._records = self._records, []
        for key, burst, record_of in due:
            rec = record_of(key, burst)
            if rec is not None:
                records.append(rec)
        self.log.write(records)  # one fsync for everything due
        return len(records)

    def _run(self) -> None:
        while not self._stop.wait(min(2.0, max(0.05, self.quiet / 2))):
            self.flush()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self.flush(everything=True)
