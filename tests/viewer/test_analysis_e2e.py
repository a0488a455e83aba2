"""Issue 16's "done when", end to end with the built-in analyzers: two CT chest studies of one
patient sent to a real `dicomvault serve` by C-STORE produce, without anyone asking, an SR
(TID 1500) and a SEG in each study, a flag on the one whose emphysema index passes the limit, and
a trend of the emphysema index on the patient's page in the browser viewer."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian
from pynetdicom import AE

from dicomvault.bench.ports import free_port

from .conftest import CLI, Viewer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "analysis"))
from phantoms import chest_phantom, ct_series, study_attributes  # noqa: E402

HOST = "127.0.0.1"
PATIENT = "CHEST-E2E"
SEG, SR = "1.2.840.10008.5.1.4.1.1.66.4", "1.2.840.10008.5.1.4.1.1.88.34"


def _until(what: str, fn: Any, timeout: float, log: Path) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = fn()
        if got:
            return got
        time.sleep(0.5)
    raise AssertionError(f"{what}: not after {timeout} s\n{log.read_text(errors='replace')[-3000:]}")


def _send(port: int, datasets: list[Any]) -> None:
    ae = AE(ae_title="CT1")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate(HOST, port, ae_title="DICOMVAULT")
    assert assoc.is_established
    try:
        for ds in datasets:
            assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()


def test_ct_chest_studies_get_sr_seg_flag_and_a_trend_in_the_viewer(tmp_path: Path, new_page) -> None:
    studies = {}
    for date, emphysema in (("20230301", (0.02, 0.02)), ("20240517", (0.20, 0.15))):
        study = study_attributes(patient_id=PATIENT)
        study.StudyDate = date
        ph = chest_phantom(emphysema=emphysema, with_datasets=False)
        studies[date] = (study.StudyInstanceUID, ct_series(ph.hu, ph.spacing, study=study),
                         ph.emphysema_percent())
    data, cfg = tmp_path / "data", tmp_path / "dicomvault.toml"
    cfg.write_text(f'data = "{data}"\n\n[dimse]\naccept_unknown_callers = true\n\n'
                   "[analysis]\nquiet_seconds = 1\n")  # the built-in analyzers, unconfigured
    dimse, http = free_port(), free_port()
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CLI, "serve", "--config", str(cfg), "--dimse-port", str(dimse),
                                 "--http-port", str(http), "--hl7-port", "0"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        _until("serve", lambda: "serving DIMSE" in log.read_text(errors="replace"), 60, log)
        for _, datasets, _ in studies.values():
            _send(dimse, datasets)
        token = json.loads((data / "http.json").read_text())["admin_token"]
        base = f"http://{HOST}:{http}"
        with httpx.Client(base_url=base, timeout=30, headers={"Authorization": f"Bearer {token}"}) as api:

            def chest_done() -> list[dict[str, Any]] | None:
                jobs = api.get("/api/jobs", params={"kind": "analysis", "analyzer": "ct-chest"}).json()
                return jobs if len(jobs) == 2 and all(j["state"] == "done" for j in jobs) else None

            _until("both ct-chest jobs", chest_done, 240, log)
            for uid, _, _ in studies.values():
                classes = {r["00080016"]["Value"][0] for r in
                           api.get(f"/dicom-web/studies/{uid}/instances").json()}
                assert {SEG, SR} <= classes, uid
            flagged = api.get("/dicom-web/studies", params={"flagged": "true"}).json()
            assert [r["0020000D"]["Value"][0] for r in flagged] == [studies["20240517"][0]]
            trends = api.get(f"/api/patients/{PATIENT}/trends").json()["trends"]
            (emph,) = [t for t in trends if t["analyzer"] == "ct-chest" and t["key"] == "emphysema_index"]
            values = [p["value"] for p in emph["points"]]
            truth = [studies[d][2] for d in sorted(studies)]
            assert [round(v) for v in values] == [round(t) for t in truth] and values[1] > values[0]
        viewer = Viewer(new_page(), base)
        viewer.goto(f"#/patient/{PATIENT}")
        viewer.page.wait_for_selector("table.trends tr.trend[data-key=emphysema_index]")
        points = viewer.page.locator(".trend-card[data-key=emphysema_index] circle.trend-point")
        assert points.count() == 2
        assert [float(points.nth(i).get_attribute("data-value")) for i in (0, 1)] == values
    finally:
        proc.terminate()
        proc.wait(60)
