"""The analysis pipeline in this process over a real data directory: events from the change feed,
the durable job queue, worker processes that succeed, raise, hang and crash, results stored as
new series, and restarts. The analyzers are tests/analysis/sample_analyzers.py; the results store
is a stand-in with analysis/results.py's `record` signature (that module is another branch's)."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pipeline_helpers import ct_series, sample, settings, wait_until
from pydicom.dataset import Dataset

from dicomvault.analysis.api import Result
from dicomvault.analysis.jobs import DONE, FAILED, QUEUED, RUNNING, JobStore
from dicomvault.analysis.plugins import PluginError, load
from dicomvault.analysis.service import AnalysisService
from dicomvault.analysis.settings import AnalysisSettings, parse_analysis
from dicomvault.config_values import ConfigError
from dicomvault.engine import Engine, StoreOutcome
from dicomvault.index import Index
from dicomvault.integration.mpps import MppsService, add_completion_listener, remove_completion_listener
from dicomvault.integration.worklist_store import WorklistStore


class Recorded:
    """Stand-in for analysis/results.py: keeps every call, keyword-only like the real one."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def __call__(self, index: Index, *, study_uid: str, patient_id: str, study_date: str, result: Result,
                 stored: list[tuple[str, str, str]]) -> None:
        assert isinstance(index, Index) and isinstance(result, Result)
        with self.lock:
            self.calls.append({"study_uid": study_uid, "patient_id": patient_id, "study_date": study_date,
                               "result": result, "stored": list(stored)})


@pytest.fixture
def engine(tmp_path: Path) -> Iterator[Engine]:
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        yield eng


def start(engine: Engine, s: AnalysisSettings, recorder: Recorded | None = None) -> AnalysisService:
    svc = AnalysisService(engine, s, recorder=recorder or Recorded())
    svc.start()
    return svc


def store(engine: Engine, paths: list[Path]) -> None:
    for res in engine.store_files(paths):
        assert isinstance(res, StoreOutcome), res


def jobs_of(engine: Engine, analyzer: str) -> list[dict[str, Any]]:
    return JobStore(engine.index).jobs(analyzer=analyzer)


def ended(engine: Engine, analyzer: str, n: int = 1) -> list[dict[str, Any]] | None:
    jobs = jobs_of(engine, analyzer)
    return jobs if len(jobs) >= n and all(j["state"] in (DONE, FAILED) for j in jobs) else None


def expected_mean(paths: list[Path]) -> float:
    px = [pydicom.dcmread(p).pixel_array.astype(np.float64) - 1024 for p in paths]
    return float(np.mean(px))


def lines(path: Path, what: str = "run") -> list[str]:
    """The sample analyzers' log lines of one kind ("run" or "end")."""
    text = path.read_text() if path.exists() else ""
    return [line for line in text.splitlines() if line.split(" ", 1)[0] == what]


# -- settings and plugins -------------------------------------------------------------------------

def test_settings_defaults_and_refusals() -> None:
    s = parse_analysis({}, "t")
    assert (s.enabled, s.quiet_seconds, s.concurrency, s.timeout_seconds, s.retries, s.nice) == (
        True, 30.0, 1, 600.0, 2, 10)
    tables = {"mine": {"class": "a.b:C", "threshold": 3}, "ct2": {"uses": "ct-chest"}}
    s = parse_analysis({"analyzers": tables}, "t")
    mine, ct2 = s.analyzers
    assert (mine.target, mine.uses, dict(mine.options)) == ("a.b:C", "", {"threshold": 3})
    assert (ct2.target, ct2.uses, dict(ct2.options)) == ("", "ct-chest", {})
    for bad, words in [({"quiet": 3}, "unknown key"), ({"concurrency": 0}, "concurrency"),
                       ({"nice": 25}, "nice"),
                       ({"analyzers": {"x": {"class": "a:B", "uses": "y"}}}, "not both"),
                       ({"analyzers": {"x": {"class": "nocolon"}}}, "module:Class")]:
        with pytest.raises(ConfigError, match=words):
            parse_analysis(bad, "t")


def test_a_configured_analyzer_that_cannot_load_stops_the_start_with_its_name() -> None:
    with pytest.raises(PluginError, match="mine.*No module named"):
        load(settings({"mine": {"class": "no.such.module:X"}}))
    with pytest.raises(PluginError, match="broken.*option 'model' is required"):
        load(settings({"broken": sample("BrokenConstructor")}))
    with pytest.raises(PluginError, match="no entry point 'nope'"):
        load(settings({"x": {"uses": "nope"}}))


# -- events ---------------------------------------------------------------------------------------

def test_a_series_makes_exactly_one_job_after_the_quiet_time(engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    rec = Recorded()
    mean = sample("MeanValue", log=str(log), key_image=True)
    svc = start(engine, settings({"mean": mean}, quiet_seconds=1.5), rec)
    try:
        study = pydicom.uid.generate_uid()
        first = ct_series(tmp_path / "in", 4, study_uid=study, seed=1)
        series_uid = str(pydicom.dcmread(first[0]).SeriesInstanceUID)
        store(engine, first[:2])
        time.sleep(0.8)
        store(engine, first[2:])  # within the quiet time: the same pending series
        time.sleep(0.8)
        assert jobs_of(engine, "mean") == [], "queued before the series was quiet"
        jobs = wait_until(lambda: ended(engine, "mean"), 30, "the job")
        time.sleep(2)  # more ticks: no second job, no second run
        jobs = jobs_of(engine, "mean")
        assert len(jobs) == 1 and jobs[0]["state"] == DONE, jobs
        job = jobs[0]
        assert job["series_uids"] == [series_uid]
        assert (job["attempts"], job["runs"], job["reason"]) == (1, 1, "quiet")
        assert len(lines(log)) == 1
        # the measurement is the data's, computed here from the files
        (m,) = job["measurements"]
        assert m["value"] == pytest.approx(expected_mean(first)) and m["series_uid"] == series_uid
        # the key image went into the study as a new series, marked as the pipeline's own
        ((sop, result_series, sop_class),) = job["objects"]
        assert result_series != series_uid
        rows = engine.index.find("SERIES", {"StudyInstanceUID": study, "Modality": ""})
        assert {r["SeriesInstanceUID"]: r["Modality"] for r in rows} == {series_uid: "CT",
                                                                         result_series: "OT"}
        kept = pydicom.dcmread(io.BytesIO(engine.read_file(sop)))
        assert kept.Manufacturer == "dicomvault" and kept.StudyInstanceUID == study
        assert {r.ReferencedSOPInstanceUID for r in kept.SourceImageSequence} == {
            str(pydicom.dcmread(p).SOPInstanceUID) for p in first}
        # the results store was told, with the study's own patient and date
        (call,) = rec.calls
        assert (call["study_uid"], call["patient_id"], call["study_date"]) == (study, "PAT-1", "20260301")
        assert call["result"].analyzer == "mean" and call["stored"] == [(sop, result_series, sop_class)]
        # the result's own store event made no job
        assert [j["series_uids"] for j in JobStore(engine.index).jobs()] == [[series_uid]]

        # new instances after completion: the same job again, its new result replacing the old
        more = ct_series(tmp_path / "more", 2, study_uid=study, series_uid=series_uid, seed=2, first=5)
        store(engine, more)
        job = wait_until(lambda: (j := JobStore(engine.index).get(job["id"])) and j["runs"] == 2 and j, 30,
                         "the second run")
        assert job["state"] == DONE and len(jobs_of(engine, "mean")) == 1 and len(lines(log)) == 2
        assert job["measurements"][0]["value"] == pytest.approx(expected_mean(first + more))
        ((_, new_series, _),) = job["objects"]
        rows = engine.index.find("SERIES", {"StudyInstanceUID": study})
        series_now = {r["SeriesInstanceUID"] for r in rows}
        assert series_now == {series_uid, new_series}, "the previous result series was not replaced"
    finally:
        svc.stop()


def test_a_study_complete_analyzer_gets_every_series_once(engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    svc = start(engine, settings({"count": sample("StudySeriesCount", log=str(log))}, quiet_seconds=0.5))
    try:
        study = pydicom.uid.generate_uid()
        a = ct_series(tmp_path / "a", 3, study_uid=study)
        b = ct_series(tmp_path / "b", 2, study_uid=study)
        store(engine, a)
        store(engine, b)
        (job,) = wait_until(lambda: ended(engine, "count"), 30, "the study job")
        uids = {str(pydicom.dcmread(p[0]).SeriesInstanceUID) for p in (a, b)}
        assert job["event"] == "study-complete" and set(job["series_uids"]) == uids
        assert {m["key"]: m["value"] for m in job["measurements"]} == {"series": 2, "instances": 5}
        time.sleep(1.5)
        assert len(lines(log)) == 1 and len(jobs_of(engine, "count")) == 1
    finally:
        svc.stop()


def test_mpps_completed_queues_at_once_when_its_images_are_here(engine: Engine, tmp_path: Path) -> None:
    svc = start(engine, settings({"mean": sample("MeanValue")}, quiet_seconds=3600))
    mpps = MppsService(WorklistStore(engine.index))
    add_completion_listener(engine.index.path, svc.mpps_completed)
    try:
        study = pydicom.uid.generate_uid()
        paths = ct_series(tmp_path / "in", 3, study_uid=study)
        series_uid = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
        store(engine, paths[:2])
        uid = pydicom.uid.generate_uid()
        mpps.create(uid, mpps_create(study), "CT1")
        t0 = time.monotonic()
        mpps.set(uid, mpps_completed(series_uid, images=3), "CT1")
        time.sleep(1.5)
        assert jobs_of(engine, "mean") == [], "queued before the MPPS's third image arrived"
        store(engine, paths[2:])
        (job,) = wait_until(lambda: ended(engine, "mean"), 30, "the job after MPPS")
        assert job["reason"] == "mpps-completed" and job["state"] == DONE
        assert time.monotonic() - t0 < 60  # not the hour of quiet time
    finally:
        remove_completion_listener(engine.index.path, svc.mpps_completed)
        svc.stop()


def mpps_create(study_uid: str) -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.AccessionNumber, item.RequestedProcedureID, item.ScheduledProcedureStepID = "", "", ""
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientID, ds.PatientName = "PAT-1", "TEST^ANALYSIS"
    ds.PerformedProcedureStepID = "PPS1"
    ds.PerformedStationAETitle = "CT1"
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20260301", "1000"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    return ds


def mpps_completed(series_uid: str, images: int) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = "20260301", "1010"
    s = Dataset()
    s.SeriesInstanceUID = series_uid
    s.SeriesDescription = "axial"
    s.RetrieveAETitle = "DICOMVAULT"
    refs = []
    for _ in range(images):
        r = Dataset()
        r.ReferencedSOPClassUID = pydicom.uid.CTImageStorage
        r.ReferencedSOPInstanceUID = pydicom.uid.generate_uid()
        refs.append(r)
    s.ReferencedImageSequence = refs
    ds.PerformedSeriesSequence = [s]
    return ds


def test_events_survive_a_restart_without_loss_or_repeat(engine: Engine, tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    s = settings({"mean": sample("MeanValue", log=str(log))}, quiet_seconds=2)
    svc = start(engine, s)
    paths = ct_series(tmp_path / "in", 3)
    store(engine, paths)
    wait_until(lambda: svc.reader.pending(), 10, "the series pending")
    svc.stop()  # read from the feed, not complete yet
    assert jobs_of(engine, "mean") == []
    svc = start(engine, s)
    try:
        wait_until(lambda: ended(engine, "mean"), 30, "the job after the restart")
        time.sleep(1.5)
        assert len(jobs_of(engine, "mean")) == 1 and len(lines(log)) == 1
    finally:
        svc.stop()


# -- failures -------------------------------------------------------------------------------------

def test_a_raising_analyzer_fails_its_job_after_the_retries_and_ingest_goes_on(
        engine: Engine, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    log = tmp_path / "runs.log"
    svc = start(engine, settings({"raising": sample("Raising", log=str(log)), "mean": sample("MeanValue")},
                                 retries=2, retry_delay=0.2, concurrency=2))
    try:
        study = pydicom.uid.generate_uid()
        store(engine, ct_series(tmp_path / "a", 2, study_uid=study))
        # ingest while the failing attempts run: every object stored and readable
        later = ct_series(tmp_path / "b", 20, study_uid=study, seed=3)
        for p in later:
            store(engine, [p])
        (job,) = wait_until(lambda: (j := jobs_of(engine, "raising")) and all(x["state"] == FAILED for x in j)
                            and len(j) == 2 and j[:1], 60, "the failed job")
        assert job["attempts"] == 3 == job["max_attempts"] and len(lines(log)) >= 3
        assert "RuntimeError: boom on purpose" in job["last_error"]
        full = JobStore(engine.index).get(job["id"])
        assert "sample_analyzers.py" in full["last_traceback"] and "in run" in full["last_traceback"]
        assert job["study_uid"] == study
        # the other analyzer of the same series is not held up by it
        assert {j["state"] for j in wait_until(lambda: ended(engine, "mean", 2), 30, "mean jobs")} == {DONE}
        assert engine.index.get_study(study).num_instances == 22
        assert any(study in r.getMessage() and "boom" in r.getMessage() for r in caplog.records)
    finally:
        svc.stop()


def test_a_hanging_analyzer_is_killed_at_the_timeout(engine: Engine, tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    svc = start(engine, settings({"hang": sample("Hanging", pid_file=str(pid_file))}, timeout_seconds=2,
                                 retries=0))
    try:
        store(engine, ct_series(tmp_path / "in", 2))
        t0 = time.monotonic()
        (job,) = wait_until(lambda: ended(engine, "hang"), 60, "the timed-out job")
        assert job["state"] == FAILED and "timed out after 2 s (worker killed)" in job["last_error"]
        assert 2 <= job["seconds"] < 15 and time.monotonic() - t0 < 30
        pid = int(pid_file.read_text())
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    finally:
        svc.stop()


def test_a_crashing_worker_fails_only_its_job(engine: Engine, tmp_path: Path) -> None:
    svc = start(engine, settings({"crash": sample("Crashing"), "mean": sample("MeanValue")}, retries=0))
    try:
        store(engine, ct_series(tmp_path / "in", 2))
        (job,) = wait_until(lambda: ended(engine, "crash"), 60, "the crashed job")
        assert job["state"] == FAILED and "killed by signal 6" in job["last_error"]
        assert [j["state"] for j in wait_until(lambda: ended(engine, "mean"), 30, "mean")] == [DONE]
    finally:
        svc.stop()


def test_an_object_into_the_analysed_series_is_refused(engine: Engine, tmp_path: Path) -> None:
    svc = start(engine, settings({"bad": sample("IntoSourceSeries")}, retries=0))
    try:
        paths = ct_series(tmp_path / "in", 2)
        store(engine, paths)
        (job,) = wait_until(lambda: ended(engine, "bad"), 60, "the refused job")
        assert job["state"] == FAILED and "results must be new series" in job["last_error"]
        series = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
        assert engine.index.get_series(series).num_instances == 2
    finally:
        svc.stop()


def test_a_stop_mid_job_queues_it_again_and_the_next_start_finishes_it(engine: Engine,
                                                                      tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    s = settings({"slow": sample("MeanValue", sleep=30, log=str(log), key_image=True)})
    svc = start(engine, s)
    paths = ct_series(tmp_path / "in", 2)
    store(engine, paths)
    wait_until(lambda: lines(log), 30, "the run to start")
    (job,) = jobs_of(engine, "slow")
    assert job["state"] == RUNNING and job["attempts"] == 1
    svc.stop()
    (job,) = jobs_of(engine, "slow")
    assert job["state"] == QUEUED and job["attempts"] == 0 and "interrupted" in job["last_error"]
    fast = settings({"slow": sample("MeanValue", log=str(log), key_image=True)})
    svc = start(engine, fast)
    try:
        (job,) = wait_until(lambda: ended(engine, "slow"), 30, "the resumed job")
        assert (job["state"], job["attempts"], job["runs"]) == (DONE, 1, 1)
        study = str(pydicom.dcmread(paths[0]).StudyInstanceUID)
        assert len(list(engine.index.find("SERIES", {"StudyInstanceUID": study}))) == 2
    finally:
        svc.stop()


def test_retry_of_a_failed_job_runs_it_again(engine: Engine, tmp_path: Path) -> None:
    svc = start(engine, settings({"raising": sample("Raising")}, retries=0))
    try:
        store(engine, ct_series(tmp_path / "in", 2))
        (job,) = wait_until(lambda: ended(engine, "raising"), 60, "the failed job")
        assert job["attempts"] == 1
        svc.store.retry(job["id"])
        svc.wake()
        def retried() -> bool:
            j = svc.store.get(job["id"])
            return j is not None and j["state"] == FAILED and j["finished"] > job["finished"]

        wait_until(retried, 60, "the retried job")
    finally:
        svc.stop()


@pytest.mark.parametrize("concurrency", [1, 2])
def test_the_concurrency_limit_bounds_the_workers_at_once(engine: Engine, tmp_path: Path,
                                                          concurrency: int) -> None:
    log = tmp_path / "runs.log"
    slow = sample("MeanValue", sleep=2, log=str(log))
    svc = start(engine, settings({"slow": slow}, concurrency=concurrency))
    try:
        for i in range(2):
            store(engine, ct_series(tmp_path / f"s{i}", 2, seed=i))
        wait_until(lambda: ended(engine, "slow", 2), 90, "two jobs")
        runs = sorted(float(line.split()[2]) for line in lines(log, "run"))
        ends = sorted(float(line.split()[2]) for line in lines(log, "end"))
        assert len(runs) == len(ends) == 2
        # the most run() calls in progress at any one time
        events = sorted([(t, 1) for t in runs] + [(t, -1) for t in ends], key=lambda e: (e[0], e[1]))
        most = now = 0
        for _, step in events:
            now += step
            most = max(most, now)
        assert most == concurrency
    finally:
        svc.stop()


def test_a_study_archived_before_can_be_analysed_on_request(engine: Engine, tmp_path: Path) -> None:
    study = pydicom.uid.generate_uid()
    store(engine, ct_series(tmp_path / "a", 2, study_uid=study))
    store(engine, ct_series(tmp_path / "b", 3, study_uid=study))
    s = settings({"mean": sample("MeanValue"), "count": sample("StudySeriesCount")})
    svc = start(engine, s)  # starts reading the feed at its end: the study is not analysed by itself
    try:
        time.sleep(1.5)
        assert JobStore(engine.index).jobs() == []
        with pytest.raises(Exception, match="no analyzer instance nope is enabled"):
            svc.reader.analyse_study(study, ["nope"])
        with pytest.raises(Exception, match="no study with UID 9.9.9"):
            svc.reader.analyse_study("9.9.9")
        queued = svc.reader.analyse_study(study, ["count"])
        assert [(j["analyzer"], len(j["series_uids"])) for j in queued] == [("count", 2)]
        svc.wake()
        (job,) = wait_until(lambda: ended(engine, "count"), 30, "the requested job")
        assert job["reason"] == "requested" and job["state"] == DONE
        queued = svc.reader.analyse_study(study)  # every analyzer: the study's, and one per series
        assert sorted(j["analyzer"] for j in queued) == ["count", "mean", "mean"]
    finally:
        svc.stop()


def test_a_wants_that_raises_shows_as_a_failed_job(engine: Engine, tmp_path: Path,
                                                   caplog: pytest.LogCaptureFixture) -> None:
    svc = start(engine, settings({"w": sample("WantsRaises")}, retries=0))
    try:
        paths = ct_series(tmp_path / "in", 2)
        store(engine, paths)
        (job,) = wait_until(lambda: ended(engine, "w"), 60, "the job")
        series = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
        assert job["state"] == FAILED and job["last_error"] == f"KeyError: 'no attribute in {series}'"
        assert any("wants() raised" in r.getMessage() for r in caplog.records)
    finally:
        svc.stop()


def test_a_due_job_waits_for_a_pause_in_ingest(engine: Engine, tmp_path: Path) -> None:
    svc = start(engine, settings({"mean": sample("MeanValue")}, quiet_seconds=0.5))
    try:
        first = ct_series(tmp_path / "a", 2)
        store(engine, first)
        other = ct_series(tmp_path / "b", 15, seed=5)
        for p in other:  # another series arrives, an object every 0.2 s, for 3 s
            store(engine, [p])
            time.sleep(0.2)
        last_store = time.time()
        series = str(pydicom.dcmread(first[0]).SeriesInstanceUID)
        (job,) = [j for j in jobs_of(engine, "mean") if j["series_uids"] == [series]]
        assert job["state"] == QUEUED, "started while objects were arriving"
        wait_until(lambda: ended(engine, "mean", 2), 60, "both jobs")
        started = JobStore(engine.index).get(job["id"])["started"]
        assert started >= last_store + 0.5
        assert svc.status()["waiting_for_ingest_pause"] is False
    finally:
        svc.stop()
