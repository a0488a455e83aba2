"""The ONNX model runner inside a real `dicomvault serve` (with the analysis pipeline): a CT
series with nodules sent by C-STORE is analysed without anyone asking, and the SEG the model's
masks became is in the same study (QIDO-RS, WADO-RS), valid for dciodvfy, with the nodule volume
and the flag in the job's result."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from io import BytesIO
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE
from test_onnx_model import INPUT, NODULES, ct_series
from tiny_model import segmentation_model, train

from dicomvault.bench.ports import free_port

pytest.importorskip("dicomvault.analysis.plugins", reason="the analysis pipeline is not in this tree")

HOST = "127.0.0.1"
T = TypeVar("T")


def _wait(fn: Callable[[], T | None], timeout: float, what: str) -> T:
    deadline = time.monotonic() + timeout
    while (value := fn()) is None or value is False:
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(0.2)
    return value


def _toml(v: Any) -> str:
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{k} = {_toml(x)}" for k, x in v.items()) + " }"
    if isinstance(v, list | tuple):
        return "[" + ", ".join(_toml(x) for x in v) + "]"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return repr(v)


def _config(tmp: Path, model: Path) -> Path:
    from importlib.metadata import entry_points

    from dicomvault.analysis.api import ENTRY_POINT_GROUP

    tables: dict[str, dict[str, Any]] = {ep.name: {"enabled": False}
                                         for ep in entry_points(group=ENTRY_POINT_GROUP)}
    # through `class =`: the entry point `onnx` needs the package reinstalled to be seen
    tables["nodules"] = {"class": "dicomvault.analysis.onnx_model:OnnxModelAnalyzer", "model": str(model),
                         "input": INPUT, "output": {"kind": "segmentation", "labels": ["Nodule"],
                                                    "flag_above_ml": 0.1, "severity": "urgent"}}
    lines = [f'data = "{tmp / "data"}"', "", "[dimse]", "accept_unknown_callers = true", "",
             "[analysis]", "quiet_seconds = 1", "nice = 10"]
    for name, table in tables.items():
        lines += ["", f"[analysis.analyzers.{name}]", *(f"{k} = {_toml(v)}" for k, v in table.items())]
    cfg = tmp / "dicomvault.toml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def test_a_ct_series_sent_to_serve_gets_its_seg(tmp_path: Path) -> None:
    model = segmentation_model(train(np.random.default_rng(16)), tmp_path / "nodule_seg.onnx")
    cfg = _config(tmp_path, model)
    dimse, http = free_port(), free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dicomvault.cli", "serve", "--config", str(cfg),
                                 "--dimse-port", str(dimse), "--http-port", str(http), "--hl7-port", "0"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait(lambda: proc.poll() is not None or "serving DIMSE" in log.read_text(), 60, "serve to start")
        assert proc.poll() is None, log.read_text()
        data, truth = ct_series(np.random.default_rng(21), NODULES, "Chest nodules")
        study = data.info.study_uid
        ae = AE(ae_title="CT1")
        ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
        assoc = ae.associate(HOST, dimse, ae_title="DICOMVAULT")
        assert assoc.is_established
        try:
            for ds in data.datasets:
                assert assoc.send_c_store(ds).Status == 0
        finally:
            assoc.release()

        token = json.loads((tmp_path / "data" / "http.json").read_text())["admin_token"]
        with httpx.Client(base_url=f"http://{HOST}:{http}", timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as client:
            def done() -> list[dict[str, Any]] | None:
                jobs = client.get("/api/jobs", params={"kind": "analysis", "analyzer": "nodules"}).json()
                if jobs and jobs[0]["state"] in ("failed", "dead"):
                    raise AssertionError(f"{jobs}\n{log.read_text()}")
                return jobs if jobs and all(j["state"] == "done" for j in jobs) else None

            (job,) = _wait(done, 120, "the nodules job")
            full = client.get(f"/api/jobs/{job['id']}").json()
            (vol,) = full["measurements"]
            truth_ml = truth.sum() * 0.7 * 0.7 * 2.0 / 1000
            assert vol["key"] == "nodule_volume" and abs(vol["value"] - truth_ml) <= 0.1 * truth_ml, vol
            assert [f["code"] for f in full["flags"]] == ["model.nodule"]
            rows = client.get(f"/dicom-web/studies/{study}/series").json()
            modality = {r["0020000E"]["Value"][0]: r["00080060"]["Value"][0] for r in rows}
            (seg_series,) = [uid for uid, m in modality.items() if m == "SEG"]
            body = client.get(f"/dicom-web/studies/{study}/series/{seg_series}",
                              headers={"Accept": 'multipart/related; type="application/dicom"'})
            assert body.status_code == 200
            boundary = body.headers["content-type"].split("boundary=")[1].split(";")[0].strip('"')
            (part,) = [p for p in body.content.split(b"--" + boundary.encode()) if b"\r\n\r\n" in p]
            seg = pydicom.dcmread(BytesIO(part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")))
            assert seg.Modality == "SEG" and seg.StudyInstanceUID == study
        if shutil.which("dciodvfy"):
            path = tmp_path / "seg.dcm"
            seg.save_as(path, enforce_file_format=True)
            out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
            assert not [x for x in (out.stdout + out.stderr).splitlines() if x.startswith("Error")]
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
