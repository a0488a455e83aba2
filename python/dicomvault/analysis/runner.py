"""One attempt of one job, seen from the server: a worker process (worker.py) computes, the
server stores.

The worker is killed at the job's timeout (its whole process group). Its new objects are checked
(same study, new series, new SOP instances: the originals are never touched), marked as the
pipeline's own (`an/o/`, so they raise no event), stored through the engine like any ingested
Part-10 file, and the measurements and flags handed to the results store. The objects of the
job's previous run are deleted once the new ones are stored: the last result replaces it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom

from ..engine import Engine, StoreOutcome
from ..errors import DicomVaultError
from ..index import keys as K
from .api import SERIES_COMPLETE, Flag, Measurement, Result
from .jobs import DONE, FAILED, INTERRUPTED, OWNED, QUEUED, JobStore, backoff
from .worker import ERROR, LOG, RESULT, SPEC

log = logging.getLogger("dicomvault.analysis")

MAX_DETAIL = 8000  # characters of a failure's traceback kept with the job
# record(index, *, study_uid, patient_id, study_date, result, stored) of analysis/results.py
Recorder = Callable[..., None]


class JobFailure(DicomVaultError):
    """One attempt failed; the message is the job's recorded reason, `detail` the analyzer's
    traceback or the worker's last log lines."""

    def __init__(self, message: str, detail: str = "") -> None:
        super().__init__(message)
        self.detail = detail


@dataclass
class Attempt:
    """A job being run: its worker, so a stop or a timeout can kill it."""

    job: dict[str, Any]
    proc: subprocess.Popen[bytes] | None = None
    cancelled: threading.Event = field(default_factory=threading.Event)

    def kill(self) -> None:
        proc = self.proc
        if proc is not None and proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def job_dir(engine: Engine, job_id: int) -> Path:
    return Path(engine.data_dir) / "tmp" / "analysis" / str(job_id)


def _tail(path: Path, lines: int = 12) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def run_worker(attempt: Attempt, directory: Path, spec: dict[str, Any], timeout: float) -> dict[str, Any]:
    """Runs the worker to its end; its result.json, or JobFailure with the reason."""
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    (directory / SPEC).write_text(json.dumps(spec, default=str))
    with (directory / LOG).open("wb") as out:
        # A session of its own: the timeout kills the worker and anything it started.
        attempt.proc = subprocess.Popen([sys.executable, "-m", "dicomvault.analysis.worker", str(directory)],
                                        stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                        start_new_session=True)
    try:
        code = attempt.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        attempt.kill()
        attempt.proc.wait()
        raise JobFailure(f"timed out after {timeout:g} s (worker killed)") from None
    if attempt.cancelled.is_set():
        raise JobFailure("cancelled: the server is stopping")
    if code != 0:
        if (directory / ERROR).exists():
            err = json.loads((directory / ERROR).read_text())
            raise JobFailure(err["error"], err.get("traceback", ""))
        how = f"killed by signal {-code}" if code < 0 else f"exited with status {code}"
        tail = _tail(directory / LOG)
        raise JobFailure(f"worker {how}: {tail}".strip(), tail)
    return dict(json.loads((directory / RESULT).read_text()))


def _code(v: Any) -> tuple[str, str, str] | None:
    return (str(v[0]), str(v[1]), str(v[2])) if v else None


def _measurement(d: dict[str, Any]) -> Measurement:
    return Measurement(key=d["key"], label=d["label"], value=float(d["value"]), unit=d["unit"],
                       concept=_code(d.get("concept")), finding_site=_code(d.get("finding_site")),
                       series_uid=d.get("series_uid", ""))


def _flag(d: dict[str, Any]) -> Flag:
    return Flag(code=d["code"], reason=d["reason"], severity=d.get("severity", "warning"),
                score=None if d.get("score") is None else float(d["score"]),
                series_uid=d.get("series_uid", ""))


class ResultStorer:
    """Checks, stores and records what one attempt produced."""

    def __init__(self, engine: Engine, store: JobStore, recorder: Recorder | None) -> None:
        self.engine = engine
        self.store = store
        self.recorder = recorder

    def _check_objects(self, job: dict[str, Any], paths: list[Path]) -> list[tuple[str, str, str]]:
        """(sop, series, class) of each new object; JobFailure for one that would touch the
        originals or another study."""
        out = []
        index = self.engine.index
        for p in paths:
            ds = pydicom.dcmread(p, stop_before_pixels=True)
            sop, series = str(ds.get("SOPInstanceUID", "")), str(ds.get("SeriesInstanceUID", ""))
            if str(ds.get("StudyInstanceUID", "")) != job["study_uid"]:
                raise JobFailure(f"object {sop} names study {ds.get('StudyInstanceUID')!r}, not the "
                                 f"analysed study {job['study_uid']}")
            if not sop or not series:
                raise JobFailure(f"object {p.name} lacks a SOP Instance UID or Series Instance UID")
            if index.get_series(series) is not None and not self.store.owned(series):
                raise JobFailure(f"object {sop} would go into the existing series {series}: results "
                                 "must be new series")
            if index.get_instance(sop) is not None and not self.store.owned(series):
                raise JobFailure(f"object {sop} has the SOP Instance UID of an archived object")
            out.append((sop, series, str(ds.get("SOPClassUID", ""))))
        return out

    def store_objects(self, job: dict[str, Any], directory: Path,
                      names: list[str]) -> list[tuple[str, str, str]]:
        paths = [directory / n for n in names]
        objects = self._check_objects(job, paths)
        if not objects:
            return []
        series = sorted({s for _, s, _ in objects})
        # Marked before they are stored: their store events must not queue analyses of them, and a
        # crash before the job ends leaves them named for deletion by the next run.
        with self.store.batch() as b:
            for s in series:
                b.writes[OWNED + K.encode(s)] = K.u64(job["id"])
            current = b.get(job["id"]) or job
            b.put({**current, "storing": sorted({*current.get("storing", []), *series})}, current)
        for path, res in zip(paths, self.engine.store_files(paths), strict=True):
            if not isinstance(res, StoreOutcome):
                raise JobFailure(f"storing {path.name} of the result failed: {res}")
        return objects

    def record(self, job: dict[str, Any], result: Result, stored: list[tuple[str, str, str]]) -> None:
        """Hands the study's result of this analyzer instance to the results store: for a
        series-complete analyzer, the union over the study's series (each has its own job)."""
        if self.recorder is None:
            return
        if job["event"] == SERIES_COMPLETE:
            for other in self.store.of_study(job["analyzer"], job["study_uid"]):
                if other["id"] == job["id"] or other["state"] != DONE:
                    continue
                result.measurements += [_measurement(m) for m in other.get("measurements", [])]
                result.flags += [_flag(f) for f in other.get("flags", [])]
                stored = stored + [tuple(o) for o in other.get("objects", [])]  # type: ignore[misc]
                if other.get("summary"):
                    result.summary = "; ".join(x for x in (result.summary, other["summary"]) if x)
        study = self.engine.index.get_study(job["study_uid"])
        self.recorder(self.engine.index, study_uid=job["study_uid"],
                      patient_id=study.patient_id if study else job.get("patient_id", ""),
                      study_date=str(study.attrs.get("StudyDate", "")) if study else "",
                      result=result, stored=stored)

    def drop_previous(self, job: dict[str, Any], keep: set[str]) -> None:
        """Deletes the series of the job's earlier runs (and of a run a crash cut short)."""
        old = {o[1] for o in job.get("objects", [])} | set(job.get("storing", []))
        for series in sorted(old - keep):
            try:
                # 1.0: only wholly dead volumes are dropped; the tiering compactor reclaims the rest
                # when ingest is idle (a compaction here would hold ingest up)
                self.engine.delete("series", series, compact_threshold=1.0)
            except DicomVaultError as exc:
                log.warning("analysis job %d: previous result series %s not deleted: %s", job["id"], series,
                            exc)


def execute(engine: Engine, store: JobStore, attempt: Attempt, *, target: str, options: dict[str, Any],
            timeout: float, nice: int, recorder: Recorder | None) -> dict[str, Any]:
    """One attempt: the worker, then the result stored and recorded. Returns the job's new
    fields on success; raises JobFailure otherwise."""
    job = attempt.job
    directory = job_dir(engine, job["id"])
    spec = {"job": job["id"], "instance": job["analyzer"], "target": target, "options": options,
            "event": job["event"], "study_uid": job["study_uid"], "series_uids": job["series_uids"],
            "data_dir": str(engine.data_dir), "nice": nice}
    try:
        out = run_worker(attempt, directory, spec, timeout)
        done = {"summary": out["summary"], "timings": out["timings"], "instances": out["instances"],
                "priority": out.get("priority", [])}
        if out["declined"]:
            # nothing new: the previous result (if any) stands, objects and measurements alike
            return done
        t = time.monotonic()
        storer = ResultStorer(engine, store, recorder)
        objects = storer.store_objects(job, directory, out["objects"])
        headers = [pydicom.dcmread(directory / n, stop_before_pixels=True) for n in out["objects"]]
        result = Result(analyzer=job["analyzer"], measurements=[_measurement(m) for m in out["measurements"]],
                        flags=[_flag(f) for f in out["flags"]], summary=out["summary"], objects=headers)
        storer.record(job, result, list(objects))
        storer.drop_previous(store.get(job["id"]) or job, {s for _, s, _ in objects})
        out["timings"]["store"] = time.monotonic() - t
    finally:
        shutil.rmtree(directory, ignore_errors=True)
    return {**done, "measurements": out["measurements"], "flags": out["flags"],
            "objects": [list(o) for o in objects], "storing": []}


def finish(store: JobStore, job_id: int, *, ok: dict[str, Any] | None, error: str | None, started: float,
           retry_delay: float, interrupted: bool = False, detail: str = "") -> dict[str, Any] | None:
    """Writes the end of an attempt: done, failed, or queued again (retry, new data, a stop)."""
    now = time.time()
    with store.batch() as b:
        old = b.get(job_id)
        if old is None:
            return None
        job = {**old, "finished": now, "seconds": round(now - started, 3)}
        if error is not None and not interrupted:
            job["last_traceback"] = detail[-MAX_DETAIL:]
        if interrupted:
            job.update(state=QUEUED, attempts=max(old["attempts"] - 1, 0), not_before=now,
                       last_error=INTERRUPTED)
        elif ok is not None:
            job.update(ok, state=DONE, last_error="", runs=old.get("runs", 0) + 1)
        elif old["attempts"] < old["max_attempts"]:
            job.update(state=QUEUED, last_error=error or "",
                       not_before=now + backoff(retry_delay, old["attempts"]))
        else:
            job.update(state=FAILED, last_error=error or "")
        if job["state"] in (DONE, FAILED) and old.get("again"):
            # new instances (or a retry) came while it ran: run again on what is there now
            job.update(state=QUEUED, attempts=0, not_before=now, again=False, reason="new instances")
        b.put(job, old)
        return job
