"""Background warming of the metadata cache: a series that has just arrived is the one a
radiologist opens next, and its first `/metadata` would otherwise parse every object (~1 ms each,
1.6 s for a 1,000-instance CT series). The warmer follows the change feed and, once a series has
been quiet for `quiet_s` (the modality finished sending it), computes its instances' metadata.

It yields to everything else: its thread runs at the lowest CPU priority (nice 19, Linux applies
it per thread), works in small batches, and never delays an acknowledgement (it reads only
durable feed entries, after the fact).
"""

from __future__ import annotations

import logging
import os
import threading
import time

from ...engine import Engine
from ...index.records import REPLACED, STORED
from .metadata import MetadataService

log = logging.getLogger("dicomvault.web")
BATCH = 32
FEED_PAGE = 1000
# A cache that never saw the warmer (first `serve` after `dicomvault ingest` of a folder) catches
# up on this many of the newest feed entries, not on the whole archive: the recent studies are
# the ones opened first, and older ones are warmed by their first view.
CATCH_UP = 100_000
# Feed pages read per step (one step a second): a catch-up of CATCH_UP entries in one go held
# the GIL for ~0.5 s, and the C-FIND answers of that moment took 30-70 ms instead of 2.
STEP_PAGES = 8
YIELD_S = 0.002


def _yield() -> None:
    """Lets the server's other threads take the GIL: nice 19 lowers this thread's CPU share but
    not its turn at the interpreter, which it would otherwise keep for a whole switch interval."""
    time.sleep(YIELD_S)


class MetadataWarmer:
    def __init__(self, engine: Engine, metadata: MetadataService, *, quiet_s: float = 5.0,
                 poll_s: float = 1.0) -> None:
        self.engine = engine
        self.metadata = metadata
        self.quiet_s = quiet_s
        self.poll_s = poll_s
        # Where the last run stopped (kept in the cache itself), so objects stored while the
        # server was down (an ingest, a restore) are warmed too; the cache persists, so a
        # restart never re-warms what is already there.
        last = engine.index.last_seq()
        kept = metadata.cache.cursor() if metadata.cache is not None else None
        self.cursor = min(kept, last) if kept is not None else max(0, last - CATCH_UP)
        self.pending: dict[tuple[str, str], float] = {}  # (study, series) -> last change time
        self.warmed = 0
        self.skipped = 0  # objects found unreadable (at each attempt at their series)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="dicomvault-metadata-warmer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def _run(self) -> None:
        try:
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except OSError:
            pass  # not Linux, or not allowed: the batches stay small either way
        while not self._stop.wait(self.poll_s):
            try:
                self.step(time.monotonic())
            except Exception as exc:  # noqa: BLE001 - a cache must never take the server down
                log.warning("metadata warmer: %s", exc)

    def step(self, now: float) -> int:
        """Reads new feed entries (at most STEP_PAGES pages), warms the series quiet since
        `quiet_s`; how many it computed."""
        for _ in range(STEP_PAGES):
            changes = self.engine.index.changes(self.cursor, FEED_PAGE)
            for ch in changes:
                if ch.kind in (STORED, REPLACED):
                    self.pending[(ch.study_uid, ch.series_uid)] = now
            if changes:
                # Entries are oldest first and only what became pending is left to do: a crash
                # before those are warmed leaves them to their first view, never wrong.
                self.cursor = changes[-1].seq
            if len(changes) < FEED_PAGE:
                break
            _yield()
        done = 0
        unreadable = self.metadata.unreadable
        unreadable.clear()
        try:
            for key, at in list(self.pending.items()):
                if now - at < self.quiet_s or self._stop.is_set():
                    continue
                del self.pending[key]
                try:
                    done += self._warm_series(*key)
                except BaseException:
                    # anything but an unreadable object (skipped by warm(): it stopped the
                    # step, so a catch-up over a damaged archive warmed one series a second)
                    # may pass: the series is tried again at the next step
                    self.pending[key] = at
                    raise
        finally:
            self.warmed += done
            if unreadable:
                self.skipped += len(unreadable)
                log.warning("metadata warmer: %d objects not readable, left to their first view "
                            "(first: %s)", len(unreadable), unreadable[0])
        if not self.pending and self.metadata.cache is not None:
            self.metadata.cache.set_cursor(self.cursor)
        return done

    def _warm_series(self, study_uid: str, series_uid: str) -> int:
        recs = [r for r in self.engine.index.instances_of("series", series_uid) if r.study_uid == study_uid]
        done = 0
        for i in range(0, len(recs), BATCH):
            if self._stop.is_set():
                break
            done += self.metadata.warm(recs[i:i + BATCH])
            _yield()
        return done
