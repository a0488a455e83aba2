"""What `serve` runs for analysis: one thread that reads the change feed into completion events
(events.py) and starts due jobs, up to `concurrency` at once, each in a worker process
(runner.py, worker.py) at a CPU priority below ingest.

An analyzer that raises, hangs or crashes fails its own job only: the reason is recorded with
the job and logged with the study UID, and ingest never waits on any of it (the store path does
not know this service exists; it only reads what ingest committed).
"""

from __future__ import annotations

import logging
import threading
import time
import traceback
from collections.abc import Sequence
from typing import Any

from ..engine import Engine
from ..errors import DicomVaultError
from . import results
from .events import CompletionReader, mpps_marker_writes
from .jobs import QUEUED, JobStore
from .plugins import Plugin, load
from .runner import Attempt, JobFailure, Recorder, execute, finish
from .settings import AnalysisSettings

log = logging.getLogger("dicomvault.analysis")
TICK_MIN = 0.5
# A due job waits while objects are being stored (the last store less than INGEST_QUIET seconds
# ago), at most MAX_DEFER seconds: measured (bench/analysis_bench.py), a worker at niceness 19
# and SCHED_IDLE still cost ingest about a fifth of its rate on this 2-vCPU machine while they
# overlapped, most likely through the shared caches and memory bandwidth that no CPU priority
# governs. Under ingest that never pauses, jobs still start, MAX_DEFER apart at worst.
INGEST_QUIET = 1.0
MAX_DEFER = 60.0


def default_recorder() -> Recorder:
    """Where a job's measurements and flags go: analysis/results.py (the study list, QIDO, the
    viewer and the trends read them there)."""
    return results.record


class AnalysisService:
    def __init__(self, engine: Engine, settings: AnalysisSettings, *, plugins: Sequence[Plugin] | None = None,
                 recorder: Recorder | None = None) -> None:
        self.engine = engine
        self.settings = settings
        self.store = JobStore(engine.index)
        self.plugins = {p.instance: p for p in (load(settings) if plugins is None else plugins)}
        self.recorder = recorder if recorder is not None else default_recorder()
        self.reader = CompletionReader(engine.index, self.store, list(self.plugins.values()),
                                       quiet_seconds=settings.quiet_seconds,
                                       max_attempts=settings.retries + 1)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._running: dict[int, tuple[Attempt, threading.Thread]] = {}
        self._deferred_since: float | None = None
        self._guard = threading.Lock()
        self.last_error: str | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        recovered = self.store.recover()
        if recovered:
            log.info("analysis: %d job(s) cut by the last stop queued again: %s", len(recovered),
                     ", ".join(map(str, recovered)))
        self.reader.start_cursor()
        names = ", ".join(f"{p.instance} ({p.event})" for p in self.plugins.values()) or "none"
        log.info("analysis: %d analyzer(s): %s; quiet %g s, %d at once, timeout %g s, %d retries",
                 len(self.plugins), names,
                 self.settings.quiet_seconds, self.settings.concurrency, self.settings.timeout_seconds,
                 self.settings.retries)
        self._thread = threading.Thread(target=self._loop, name="dv-analysis", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Kills running workers (their jobs go back to the queue, the attempt not counted)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(30)
        with self._guard:
            running = list(self._running.values())
        for attempt, _ in running:
            attempt.cancelled.set()
            attempt.kill()
        for _, thread in running:
            thread.join(30)

    def wake(self) -> None:
        self._wake.set()

    def mpps_completed(self, record: dict[str, Any]) -> None:
        """An MPPS went COMPLETED: its performed series are complete once all their instances
        are here (integration/mpps.py calls this after its own write)."""
        writes = mpps_marker_writes(record)
        if writes:
            with self.store.lock:
                self.engine.index.put_meta_many(writes)
            self.wake()

    # -- the loop ---------------------------------------------------------------------------------

    def _interval(self) -> float:
        # Each tick that finds new changes writes the cursor and the pending series (one synced
        # batch beside ingest's): at most twice a second, at least once.
        return min(1.0, max(TICK_MIN, self.settings.quiet_seconds / 4))

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.reader.read_feed()
                self.reader.complete_due()
                self._dispatch()
                self.last_error = None
            except Exception as exc:  # noqa: BLE001 - the service outlives any one bad pass
                # the index full, a disk error, a damaged record: logged, the next tick tries again
                self.last_error = str(exc)
                log.exception("analysis: event or dispatch pass failed")
            self._wake.wait(self._interval())
            self._wake.clear()

    def _dispatch(self) -> None:
        with self._guard:
            free = self.settings.concurrency - len(self._running)
        if free <= 0 or self._stop.is_set():
            return
        now = time.time()
        due = self.store.due(now, free)
        if not due or self._yield_to_ingest():
            return
        for job_id in due:
            job = self.store.claim(job_id, now)
            if job is None:
                continue
            attempt = Attempt(job)
            thread = threading.Thread(target=self._run, args=(attempt,), name=f"dv-analysis-{job_id}",
                                      daemon=True)
            with self._guard:
                self._running[job_id] = (attempt, thread)
            thread.start()

    def _yield_to_ingest(self) -> bool:
        """Whether due jobs wait for a pause in ingest (see INGEST_QUIET)."""
        mono = time.monotonic()
        if mono - self.engine.last_ingest >= INGEST_QUIET:
            self._deferred_since = None
            return False
        if self._deferred_since is None:
            self._deferred_since = mono
        if mono - self._deferred_since < MAX_DEFER:
            return True
        self._deferred_since = mono  # waited long enough: start what is due, then wait again
        return False

    def _run(self, attempt: Attempt) -> None:
        job = attempt.job
        started = time.time()
        ok: dict[str, Any] | None = None
        error: str | None = None
        detail = ""
        plugin = self.plugins.get(job["analyzer"])
        try:
            if plugin is None:
                raise JobFailure(f"analyzer {job['analyzer']} is not configured (or not enabled) any more")
            ok = execute(self.engine, self.store, attempt, target=plugin.target,
                         options=dict(plugin.options), timeout=self.settings.timeout_seconds,
                         nice=self.settings.nice, recorder=self.recorder)
        except JobFailure as exc:
            error, detail = str(exc), exc.detail
        except Exception as exc:  # noqa: BLE001 - storing or recording a result failed: the job's failure
            log.exception("analysis job %d (%s, study %s): storing the result failed", job["id"],
                          job["analyzer"], job["study_uid"])
            error, detail = f"{type(exc).__name__}: {exc}", traceback.format_exc()
        interrupted = attempt.cancelled.is_set() and ok is None
        try:
            done = finish(self.store, job["id"], ok=ok, error=error, started=started,
                          retry_delay=self.settings.retry_delay, interrupted=interrupted, detail=detail)
        except DicomVaultError:
            log.exception("analysis job %d: its end could not be recorded (queued again at the next start)",
                          job["id"])
            done = None
        if done is not None and error is not None and not interrupted:
            again = done["state"] == QUEUED
            log.warning("analysis job %d (%s, study %s) attempt %d failed%s: %s", job["id"], job["analyzer"],
                        job["study_uid"], done["attempts"], ", retried later" if again else "", error)
        elif done is not None and ok is not None:
            log.info("analysis job %d (%s, study %s) done in %.1f s: %s", job["id"], job["analyzer"],
                     job["study_uid"], done["seconds"], done.get("summary") or "no summary")
        with self._guard:
            self._running.pop(job["id"], None)
        self._wake.set()

    # -- what /api/jobs shows ---------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        with self._guard:
            running = sorted(self._running)
        return {"enabled": True, "analyzers": {p.instance: p.event for p in self.plugins.values()},
                "running": running, "cursor": self.reader.cursor(),
                "waiting_for_ingest_pause": self._deferred_since is not None,
                "pending_series": len(self.reader.pending()), "last_error": self.last_error,
                "counts": self.store.counts()}
