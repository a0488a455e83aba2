"""What `serve` runs for the tiers: the background compactor, and every `interval` seconds a
tier pass (promotions of studies read from an object store, demotions whose time ended, the
policy job within its window, the reclaim of leftovers). Studies read from an object store are
promoted within seconds, not at the next pass."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from ..engine import Engine
from ..storage.settings import TieringSettings
from . import jobs
from .compactor import Compactor

log = logging.getLogger(__name__)

PROMOTE_CHECK = 2.0  # seconds between looks at the studies read from an object store
# A promotion (decode from the dense codec, encode hot, write) waits until foreground reads have
# paused this long: run during the retrieve that caused it, it took the cores that retrieve was
# decoding on (bench/tier_bench.py: cold C-GET 0.82 s with it, 0.67 s without). It waits at most
# PROMOTE_MAX_DEFER, so a site that never stops reading still gets its studies promoted.
PROMOTE_QUIET = 1.0
PROMOTE_MAX_DEFER = 60.0


def promotion_due(now: float, last_read: float, pending_since: float) -> bool:
    """Whether promotions waiting since `pending_since` may run now (monotonic seconds)."""
    return now - last_read >= PROMOTE_QUIET or now - pending_since >= PROMOTE_MAX_DEFER


class TieringService:
    def __init__(self, engine: Engine, settings: TieringSettings) -> None:
        self.engine = engine
        self.settings = settings
        self.compactor = Compactor(engine, threads=settings.compactor_threads,
                                   compact_after=settings.compact_after)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.last_pass: dict[str, Any] | None = None
        self._pass_lock = threading.Lock()

    def start(self) -> None:
        self.compactor.start()
        self._thread = threading.Thread(target=self._loop, name="dv-tiering", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self.compactor.stop()
        if self._thread is not None:
            self._thread.join(30)

    def run_pass(self, *, policy: str | None = None, ignore_window: bool = False) -> dict[str, Any]:
        """One tier pass now (also what `POST /api/tiers/run` does)."""
        with self._pass_lock:
            out: dict[str, Any] = {"at": time.time()}
            out["promoted_blobs"] = jobs.promote_pending(self.engine, self.settings)
            out["demoted_blobs"] = jobs.demote_expired(self.engine)
            job = jobs.run_policies(self.engine, self.settings, policy=policy, stop=self._stop,
                                    ignore_window=ignore_window)
            out["job"] = job.progress() if job else None
            out["reclaimed"] = jobs.reclaim(self.engine)
            self.last_pass = out
            return out

    def _loop(self) -> None:
        # Connect to the object stores now, not on a radiologist's first cold read (the client
        # setup and the bucket check cost 0.1-0.25 s).
        for name in self.engine.remote_tiers:
            try:
                self.engine.remote(name)
            except Exception:  # a store down at start: the first read reports it
                log.warning("tier %s: object store not reachable at start", name, exc_info=True)
        interval = self.settings.interval
        next_pass = time.monotonic() + (interval if interval > 0 else float("inf"))
        # Leftovers of a crash are reclaimed once at start, before any new work is placed.
        try:
            jobs.reclaim(self.engine)
        except Exception:  # a store that is down must not stop the service
            log.exception("tier reclaim at start failed")
        pending_since: float | None = None
        while not self._stop.wait(PROMOTE_CHECK):
            try:
                if self.engine.cold_reads:
                    now = time.monotonic()
                    pending_since = pending_since or now
                    if promotion_due(now, self.engine.last_read, pending_since):
                        jobs.promote_pending(self.engine, self.settings)
                        pending_since = None
                if time.monotonic() >= next_pass:
                    next_pass = time.monotonic() + interval
                    self.run_pass()
            except Exception:  # keep serving; the next pass retries (an outage resumes the job)
                log.exception("tier pass failed")
