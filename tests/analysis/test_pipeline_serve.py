"""The analysis pipeline inside a real `dicomvault serve`: series sent by C-STORE (pynetdicom),
an MPPS COMPLETED over DIMSE, the result found by QIDO-RS, `dicomvault jobs` beside the running
server, `/api/jobs` with its roles, and a kill -9 in the middle of a job."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pydicom
from pipeline_helpers import analysis_toml, ct_series, sample, wait_until
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep  # type: ignore[attr-defined]

from dicomvault.bench.ports import free_port

HOST = "127.0.0.1"
ARCHIVE_AE = "DICOMVAULT"


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    data: Path
    dimse_port: int
    http: str
    log: Path

    def admin(self) -> httpx.Client:
        info = json.loads((self.data / "http.json").read_text())
        return httpx.Client(base_url=self.http, timeout=30,
                            headers={"Authorization": f"Bearer {info['admin_token']}"})


def cli(data: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "dicomvault.cli", *args, "--data", str(data)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, f"{args}: {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    return proc


@contextmanager
def serve(tmp: Path, tables: dict[str, dict[str, Any]], **analysis: Any) -> Iterator[Served]:
    data = tmp / "data"
    cfg = tmp / "dicomvault.toml"
    cfg.write_text(f'data = "{data}"\n\n[dimse]\naccept_unknown_callers = true\n\n'
                   + analysis_toml(tables, **analysis))
    dimse, http = free_port(), free_port()
    log = tmp / f"serve-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dicomvault.cli", "serve", "--config", str(cfg),
                                 "--dimse-port", str(dimse), "--http-port", str(http), "--hl7-port", "0"],
                                stdout=out, stderr=subprocess.STDOUT)
    served = Served(proc, data, dimse, f"http://{HOST}:{http}", log)
    try:
        wait_until(lambda: proc.poll() is not None or "serving DIMSE" in log.read_text(), 60,
                   "serve to start")
        assert proc.poll() is None, log.read_text()
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                assert proc.wait(60) == 0, log.read_text()
            except subprocess.TimeoutExpired:
                proc.kill()
                raise


def c_store(served: Served, paths: list[Path]) -> None:
    ae = AE(ae_title="CT1")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(HOST, served.dimse_port, ae_title=ARCHIVE_AE)
    assert assoc.is_established
    try:
        for p in paths:
            status = assoc.send_c_store(pydicom.dcmread(p))
            assert status.Status == 0, status
    finally:
        assoc.release()


def jobs_cli(served: Served, *args: str) -> list[dict[str, Any]]:
    return list(json.loads(cli(served.data, "jobs", "list", "--json", *args).stdout))


def done_jobs(served: Served, analyzer: str, runs: int = 1) -> list[dict[str, Any]] | None:
    with served.admin() as admin:
        jobs = admin.get("/api/jobs", params={"kind": "analysis", "analyzer": analyzer}).json()
    return jobs if jobs and all(j["state"] == "done" and j["runs"] >= runs for j in jobs) else None


def test_a_series_sent_to_serve_is_analysed_once_and_its_result_is_in_qido(tmp_path: Path) -> None:
    log = tmp_path / "runs.log"
    tables = {"mean": sample("MeanValue", key_image=True, log=str(log))}
    with serve(tmp_path, tables, quiet_seconds=1, nice=10) as served:
        study = generate_uid()
        paths = ct_series(tmp_path / "in", 5, study_uid=study)
        series = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
        c_store(served, paths)
        wait_until(lambda: done_jobs(served, "mean"), 60, "the job")
        time.sleep(1.5)
        (job,) = jobs_cli(served)  # the CLI beside the running server
        assert job["study_uid"] == study and job["series_uids"] == [series] and job["objects"] == 1
        assert job["state"] == "done" and log.read_text().count("run ") == 1

        # the worker ran below ingest: 10 nicer than the server (SCHED_IDLE where the kernel allows)
        shown = json.loads(cli(served.data, "jobs", "show", str(job["id"]), "--json").stdout)
        nice = min(os.getpriority(os.PRIO_PROCESS, served.proc.pid) + 10, 19)
        assert f"nice {nice}" in shown["priority"] and shown["instances"] == 5
        ((obj),) = shown["objects"]

        # QIDO-RS finds the result series like any other
        with httpx.Client(base_url=served.http, timeout=30) as anon:
            rows = anon.get(f"/dicom-web/studies/{study}/series").json()
            got = {r["0020000E"]["Value"][0]: r["00080060"]["Value"][0] for r in rows}
            assert got == {series: "CT", obj["series_uid"]: "OT"}
            # /api/jobs is for admins: the loopback anonymous writer may not read it
            assert anon.get("/api/jobs").status_code in (401, 403)
        with served.admin() as admin:
            listed = admin.get("/api/jobs", params={"kind": "analysis"}).json()
            assert [(j["id"], j["state"], j["kind"]) for j in listed] == [(job["id"], "done", "analysis")]
            one = admin.get(f"/api/jobs/{job['id']}").json()
            assert one["measurements"][0]["series_uid"] == series and one["objects"] == [obj]
            assert admin.get("/api/jobs", params={"state": "bogus"}).status_code == 400
            assert admin.get("/api/jobs/999999").status_code == 404
            assert admin.get("/api/jobs/abc").status_code == 400
            assert admin.get("/api/analysis/status").json()["analyzers"] == {"mean": "series-complete"}
            assert admin.post(f"/api/jobs/{job['id']}/retry").status_code == 200
        wait_until(lambda: done_jobs(served, "mean", runs=2), 60, "the API retry")
        # the study analysed again on request, from the CLI through the running server
        out = cli(served.data, "jobs", "add", "--study", study).stdout
        assert f"job {job['id']}: mean on 1 series of study {study}" in out
        (job,) = wait_until(lambda: done_jobs(served, "mean", runs=3), 60, "the requested run")
        # each run replaced the previous result: still one result series
        with httpx.Client(base_url=served.http, timeout=30) as anon:
            assert len(anon.get(f"/dicom-web/studies/{study}/series").json()) == 2
    listing = cli(served.data, "jobs").stdout  # the table, server stopped
    assert "done" in listing and study in listing
    # with no server, `jobs add` queues into the data directory for the next start
    cfg = str(tmp_path / "dicomvault.toml")
    assert "queued" in cli(served.data, "jobs", "add", "--study", study, "--config", cfg).stdout
    assert [j["state"] for j in jobs_cli(served, "--state", "queued")] == ["queued"]


def _mpps_create(study: str) -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID = study
    item.AccessionNumber = item.RequestedProcedureID = item.ScheduledProcedureStepID = ""
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientID, ds.PatientName = "PAT-1", "TEST^ANALYSIS"
    ds.PerformedProcedureStepID, ds.PerformedStationAETitle = "PPS1", "CT1"
    ds.PerformedProcedureStepStartDate, ds.PerformedProcedureStepStartTime = "20260301", "1000"
    ds.PerformedProcedureStepStatus, ds.Modality = "IN PROGRESS", "CT"
    return ds


def _mpps_completed(series: str, sops: list[str]) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = "COMPLETED"
    ds.PerformedProcedureStepEndDate, ds.PerformedProcedureStepEndTime = "20260301", "1010"
    s = Dataset()
    s.SeriesInstanceUID, s.SeriesDescription, s.RetrieveAETitle = series, "axial", ARCHIVE_AE
    refs = []
    for sop in sops:
        r = Dataset()
        r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID = CTImageStorage, sop
        refs.append(r)
    s.ReferencedImageSequence = refs
    ds.PerformedSeriesSequence = [s]
    return ds


def test_mpps_completed_starts_the_job_at_once_and_a_kill_9_mid_job_resumes(tmp_path: Path) -> None:
    log, pid_file = tmp_path / "runs.log", tmp_path / "pid"
    slow = {"mean": sample("MeanValue", key_image=True, sleep=60, log=str(log), pid_file=str(pid_file))}
    with serve(tmp_path, slow, quiet_seconds=3600) as served:
        study = generate_uid()
        paths = ct_series(tmp_path / "in", 3, study_uid=study)
        series = str(pydicom.dcmread(paths[0]).SeriesInstanceUID)
        c_store(served, paths)
        ae = AE(ae_title="CT1")
        ae.add_requested_context(ModalityPerformedProcedureStep)
        assoc = ae.associate(HOST, served.dimse_port, ae_title=ARCHIVE_AE)
        assert assoc.is_established
        try:
            uid = generate_uid()
            rsp, _ = assoc.send_n_create(_mpps_create(study), ModalityPerformedProcedureStep, uid)
            assert rsp.Status == 0
            sops = [str(pydicom.dcmread(p).SOPInstanceUID) for p in paths]
            rsp, _ = assoc.send_n_set(_mpps_completed(series, sops), ModalityPerformedProcedureStep, uid)
            assert rsp.Status == 0
        finally:
            assoc.release()
        # the quiet time is an hour: only the MPPS can have started it
        wait_until(lambda: log.exists() and pid_file.exists(), 30, "the job to start after the MPPS")
        with served.admin() as admin:
            (job,) = admin.get("/api/jobs").json()
        assert (job["state"], job["reason"], job["attempts"]) == ("running", "mpps-completed", 1)
        worker = int(pid_file.read_text())
        served.proc.kill()  # kill -9 while the worker runs
        served.proc.wait(30)
    # the worker dies with its server
    wait_until(lambda: not Path(f"/proc/{worker}").exists(), 10, "the orphaned worker to die")
    (job,) = jobs_cli(served)
    assert job["state"] == "running"  # as the crash left it
    with serve(tmp_path, {"mean": sample("MeanValue", key_image=True, log=str(log))},
               quiet_seconds=3600) as served:
        (job,) = wait_until(lambda: done_jobs(served, "mean"), 60, "the resumed job")
        assert job["attempts"] == 1 and job["objects"] == 1
        assert "queued again" in served.log.read_text()
        with httpx.Client(base_url=served.http, timeout=30) as anon:
            assert len(anon.get(f"/dicom-web/studies/{study}/series").json()) == 2
    assert not os.path.exists(served.data / "tmp" / "analysis" / str(job["id"]))
