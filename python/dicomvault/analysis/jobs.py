"""The analysis job queue, durable in the index's meta column family.

One job per analyzer instance and scope: a series (series-complete analyzers) or a study
(study-complete analyzers). New instances in a scope already analysed queue the same job again,
so its last result replaces the previous one. Records are written with the index's synced
batches, like the worklist's (integration/worklist_store.py), and read beside a running server
by a read-only open of the index:

    an/cursor                                   -> u64: the last change-feed seq read (events.py)
    an/n                                        -> u64: the last job id given
    an/j/ u64(id)                               -> job (version byte + msgpack)
    an/k/ E(instance) E(study uid) E(series uid or "") -> u64(id): the job of a scope
    an/q/ u64(due, ms) u64(id)                  -> b"1": queued jobs by the time they may start
    an/p/ E(study uid) E(series uid)            -> pending series (events.py)
    an/m/ E(series uid)                         -> an MPPS said the series is complete (events.py)
    an/o/ E(series uid)                         -> u64(id): a series the pipeline stored (results)

States: queued -> running -> done | failed; a failed attempt with attempts left goes back to
queued with a delay (retry_delay, doubled each time). A job found running at start was cut by a
stop or a crash: it is queued again, and that attempt is not counted.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from ..errors import NotFoundError
from ..index import Index
from ..index import keys as K
from ..index.meta_records import decode_map as decode
from ..index.meta_records import encode, lock_for

QUEUED, RUNNING, DONE, FAILED = "queued", "running", "done", "failed"
STATES = (QUEUED, RUNNING, DONE, FAILED)

CURSOR = b"an/cursor"
LAST_ID = b"an/n"
JOB, SCOPE, DUE, PENDING, MPPS, OWNED = b"an/j/", b"an/k/", b"an/q/", b"an/p/", b"an/m/", b"an/o/"
INTERRUPTED = "interrupted (the server stopped); queued again"


class UnknownJobError(NotFoundError):
    def __init__(self, job_id: int) -> None:
        super().__init__(f"no analysis job {job_id}")
        self.job_id = job_id


def _lock_for(index: Index) -> threading.RLock:
    return lock_for(index.path, "analysis-jobs")


def scope_key(instance: str, study_uid: str, series_uid: str) -> bytes:
    return SCOPE + K.pack(instance, study_uid, series_uid)


def _due_key(job: dict[str, Any]) -> bytes:
    return DUE + K.u64(int(job["not_before"] * 1000)) + K.u64(job["id"])


def backoff(retry_delay: float, failures: int) -> float:
    """Seconds before the next attempt after `failures` failed ones (at most an hour)."""
    return min(retry_delay * (2 ** max(failures - 1, 0)), 3600.0)


def view(job: dict[str, Any], *, full: bool = False) -> dict[str, Any]:
    """A job as /api/jobs and `dicomvault jobs` show it."""
    out = {"kind": "analysis", **{k: job.get(k) for k in (
        "id", "state", "analyzer", "event", "study_uid", "series_uids", "attempts", "max_attempts",
        "last_error", "reason", "created", "queued", "started", "finished", "seconds", "not_before",
        "summary", "runs")}}
    out["objects"] = len(job.get("objects", []))
    if full:
        out.update({k: job.get(k) for k in ("patient_id", "measurements", "flags", "timings", "instances",
                                             "priority", "last_traceback")})
        out["objects"] = [{"sop_uid": o[0], "series_uid": o[1], "sop_class_uid": o[2]}
                          for o in job.get("objects", [])]
    return out


class Batch:
    """Job changes made under the store's lock and written in one durable index batch (with any
    other meta writes the caller adds: the event reader's cursor and pending series)."""

    def __init__(self, store: JobStore) -> None:
        self.store = store
        self.writes: dict[bytes, bytes | None] = {}
        self._jobs: dict[int, dict[str, Any]] = {}
        self._last_id: int | None = None

    def get(self, job_id: int) -> dict[str, Any] | None:
        if job_id in self._jobs:
            return self._jobs[job_id]
        return self.store.get(job_id)

    def put(self, job: dict[str, Any], old: dict[str, Any] | None) -> None:
        if old is not None and old.get("state") == QUEUED:
            self.writes[_due_key(old)] = None
        job["updated"] = time.time()
        if job["state"] == QUEUED:
            self.writes[_due_key(job)] = b"1"
        self.writes[JOB + K.u64(job["id"])] = encode(job)
        self._jobs[job["id"]] = job

    def _new_id(self) -> int:
        if self._last_id is None:
            raw = self.store.index.get_meta(LAST_ID)
            self._last_id = K.read_u64(raw) if raw else 0
        self._last_id += 1
        self.writes[LAST_ID] = K.u64(self._last_id)
        return self._last_id

    def queue(self, *, instance: str, event: str, study_uid: str, series_uids: list[str], scope: str,
              patient_id: str, reason: str, max_attempts: int, now: float | None = None) -> dict[str, Any]:
        """Queues the job of (instance, study, scope): a new one, or the existing one again
        (a running one is marked to run again when it ends, with the new series list)."""
        now = time.time() if now is None else now
        key = scope_key(instance, study_uid, scope)
        raw = self.writes.get(key) or self.store.index.get_meta(key)
        old = self.get(K.read_u64(raw)) if raw else None
        if old is None:
            job: dict[str, Any] = {
                "id": self._new_id(), "analyzer": instance, "event": event, "study_uid": study_uid,
                "scope": scope, "patient_id": patient_id, "series_uids": series_uids, "state": QUEUED,
                "attempts": 0, "max_attempts": max_attempts, "last_error": "", "reason": reason,
                "created": now, "queued": now, "not_before": now, "started": None, "finished": None,
                "seconds": None, "summary": "", "measurements": [], "flags": [], "objects": [],
                "storing": [], "timings": {}, "again": False, "runs": 0}
            self.writes[key] = K.u64(job["id"])
            self.put(job, None)
            return job
        job = {**old, "series_uids": series_uids, "patient_id": patient_id or old.get("patient_id", "")}
        if old["state"] == RUNNING:
            job["again"] = True
        elif old["state"] != QUEUED:
            job.update(state=QUEUED, attempts=0, max_attempts=max_attempts, reason=reason, queued=now,
                       not_before=now, last_error="")
        else:
            job["reason"] = reason
        self.put(job, old)
        return job


class JobStore:
    """Jobs by id and by scope; the API of the event reader, the runner, the CLI and /api/jobs."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self.lock = _lock_for(index)

    @contextmanager
    def batch(self) -> Iterator[Batch]:
        with self.lock:
            b = Batch(self)
            yield b
            if b.writes:
                self.index.put_meta_many(b.writes)

    def get(self, job_id: int) -> dict[str, Any] | None:
        raw = self.index.get_meta(JOB + K.u64(int(job_id)))
        return decode(raw, f"analysis job {job_id}") if raw else None

    def require(self, job_id: int) -> dict[str, Any]:
        job = self.get(job_id)
        if job is None:
            raise UnknownJobError(job_id)
        return job

    def jobs(self, *, state: str | None = None, analyzer: str | None = None, study_uid: str | None = None,
             limit: int | None = None) -> list[dict[str, Any]]:
        """Newest first, filtered."""
        out = []
        for k, v in reversed(self.index.meta_items(JOB)):
            job = decode(v, f"analysis job {K.read_u64(k, len(JOB))}")
            if state and job["state"] != state or analyzer and job["analyzer"] != analyzer:
                continue
            if study_uid and job["study_uid"] != study_uid:
                continue
            out.append(job)
            if limit is not None and len(out) >= limit:
                break
        return out

    def of_study(self, instance: str, study_uid: str) -> list[dict[str, Any]]:
        """The jobs of one analyzer instance on one study (one per series, or the study's)."""
        prefix = SCOPE + K.pack(instance, study_uid)
        ids = [K.read_u64(v) for _, v in self.index.meta_items(prefix)]
        return [j for j in (self.get(i) for i in ids) if j is not None]

    def counts(self) -> dict[str, int]:
        out = dict.fromkeys(STATES, 0)
        for _, v in self.index.meta_items(JOB):
            job = decode(v, "analysis job")
            out[job["state"]] = out.get(job["state"], 0) + 1
        return out

    def due(self, now: float, limit: int) -> list[int]:
        """Ids of queued jobs that may start now, oldest due first."""
        hi = DUE + K.u64(int(now * 1000) + 1)
        return [K.read_u64(k, len(DUE) + 8) for k, _ in self.index.meta_range(DUE, hi)[:limit]]

    def next_due(self) -> float | None:
        """When the earliest queued job may start (epoch seconds), or None."""
        rows = self.index.meta_range(DUE, K.prefix_upper_bound(DUE))
        return K.read_u64(rows[0][0], len(DUE)) / 1000 if rows else None

    def claim(self, job_id: int, now: float) -> dict[str, Any] | None:
        """queued -> running (one more attempt), or None if it is no longer queued."""
        with self.batch() as b:
            old = b.get(job_id)
            if old is None or old["state"] != QUEUED:
                return None
            job = {**old, "state": RUNNING, "attempts": old["attempts"] + 1, "started": now,
                   "finished": None, "again": False}
            b.put(job, old)
            return job

    def recover(self) -> list[int]:
        """Jobs left running by a stop or a crash go back to the queue; that attempt is not
        counted (the analyzer did not fail). Returns their ids."""
        with self.batch() as b:
            ids = []
            for job in self.jobs(state=RUNNING):
                b.put({**job, "state": QUEUED, "attempts": max(job["attempts"] - 1, 0),
                       "not_before": time.time(), "last_error": INTERRUPTED}, job)
                ids.append(job["id"])
            return ids

    def retry(self, job_id: int) -> dict[str, Any]:
        """An operator's retry: queued now with its attempts counted from zero."""
        with self.batch() as b:
            old = b.get(job_id)
            if old is None:
                raise UnknownJobError(job_id)
            if old["state"] == RUNNING:
                job = {**old, "again": True}
            else:
                now = time.time()
                job = {**old, "state": QUEUED, "attempts": 0, "not_before": now, "queued": now,
                       "reason": "retry"}
            b.put(job, old)
            return job

    def owned(self, series_uid: str) -> bool:
        """Whether the pipeline stored this series (an analyzer's result)."""
        return self.index.get_meta(OWNED + K.encode(series_uid)) is not None
