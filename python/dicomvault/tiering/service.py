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
# How long `start` waits for the object stores to be connected (boto3's client set-up and the
# bucket check: ~0.2 s of CPU). `serve` opens its DIMSE port after `start`, so a retrieve that
# arrives at once does not wait on that set-up, or share the cores with it: the first cold
# C-GET of a just-started `serve` took 0.65-0.84 s against 0.48-0.65 s three seconds later
# (bench/tier_bench.py's study, first image 97-204 ms against 21-33). A store that does not
# answer holds the start up no longer than this; local data is served meanwhile.
CONNECT_WAIT = 5.0


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
        """Starts the compactor and the tier passes, and returns once the object stores are
        connected (or after CONNECT_WAIT seconds, if one is slow to answer)."""
        self.compactor.start()
        connected = threading.Event()
        self._thread = threading.Thread(target=self._loop, args=(connected,), name="dv-tiering", daemon=True)
        self._thread.start()
        if not connected.wait(CONNECT_WAIT):
            log.warning("object stores %s not connected after %.0f s: serving meanwhile; a cold read "
                        "waits for its store", sorted(self.engine.remote_tiers), CONNECT_WAIT)

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

    def _loop(self, connected: threading.Event) -> None:
        # Connect to the object stores now, not on a radiologist's first cold read (the client
        # setup and the bucket check cost 0.1-0.25 s).
        for name in self.engine.remote_tiers:
            try:
                self.engine.remote(name)
            except Exception:  # a store down at start: the first read reports it
                log.warning("tier %s: object store not reachable at start", name, exc_info=True)
        connected.set()
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
