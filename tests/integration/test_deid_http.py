"""`POST /api/studies/{uid}/export-research` through the real app (uvicorn, httpx): a streamed ZIP
of the study de-identified for a project, its report, who may ask, the audit record."""

from __future__ import annotations

import io
import json
import re
import signal
import subprocess
import sys
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from dv_deid import KEY_HEX, PATIENT_ID, SECRET, Study, make_study, write_config

from dicomvault.bench.ports import free_port
from dicomvault.config import load_config
from dicomvault.engine import Engine
from dicomvault.integration.deid.mapping import mapping_path, read_mapping
from dicomvault.integration.deid.pseudonyms import Pseudonymizer
from dicomvault.site import Site, SiteOptions


@pytest.fixture
def research_site(tmp_path: Path) -> Iterator[tuple[Site, Study]]:
    study = make_study(tmp_path / "in")
    settings = load_config(write_config(tmp_path)).deidentify
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        eng.store_buffers([o.path.read_bytes() for o in study.objects])
        s = Site(eng, SiteOptions(port=0, deidentify=settings))
        s.users.add("wendy", "writer")
        s.users.add("rita", "reader")
        s.start()
        try:
            yield s, study
        finally:
            s.stop()


def bearer(site: Site, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {site.users.issue_token(user)}"}


def test_export_research_streams_a_zip_of_the_deidentified_study(research_site: tuple[Site, Study]) -> None:
    site, study = research_site
    pseudo = Pseudonymizer("TRIAL", SECRET.encode())
    url = f"/api/studies/{study.uid}/export-research"
    with httpx.Client(base_url=site.url, timeout=60) as http:
        projects = http.get("/api/research-projects", headers=bearer(site, "wendy")).json()
        assert [p["name"] for p in projects] == ["TRIAL", "OTHER"] and "secret" not in json.dumps(projects)
        r = http.post(url, json={"project": "TRIAL", "retain": ["dates", "patient"]},
                      headers=bearer(site, "wendy"))
        assert r.status_code == 200, r.text
        assert r.headers["content-type"] == "application/zip" and "content-length" not in r.headers
        assert pseudo.uid(study.uid) in r.headers["content-disposition"]
        again = http.post(url, json={"project": "TRIAL", "retain": ["dates", "patient"]},
                          headers=bearer(site, "wendy"))
    zf = zipfile.ZipFile(io.BytesIO(r.content))
    names = sorted(zf.namelist())
    report = json.loads(zf.read("deid-report.json"))
    dicoms = {n: pydicom.dcmread(io.BytesIO(zf.read(n))) for n in names if n.endswith(".dcm")}
    assert len(dicoms) == 4 and report["exported"] == 4 and len(report["burned_in_held_back"]) == 1
    assert report["retain"] == ["dates", "patient"]
    for name, ds in dicoms.items():
        assert name == f"{ds.StudyInstanceUID}/{ds.SeriesInstanceUID}/{ds.SOPInstanceUID}.dcm"
        assert ds.StudyInstanceUID == pseudo.uid(study.uid) and ds.PatientID == pseudo.patient_id(PATIENT_ID)
        assert ds.PatientAge == "063Y" and ds.PatientIdentityRemoved == "YES"
    assert {pseudo.uid(o.sop_uid) for o in study.objects if o.modality != "US"} == {
        ds.SOPInstanceUID for ds in dicoms.values()}
    assert sorted(zipfile.ZipFile(io.BytesIO(again.content)).namelist()) == names  # same UIDs again
    audit = [json.loads(x) for x in (site.engine.data_dir / "audit" / "audit.jsonl").read_text().splitlines()]
    exports = [a for a in audit if a["event"] == "export"]
    assert len(exports) == 2 and exports[0]["outcome"] == "success" and exports[0]["user"] == "wendy"
    assert exports[0]["study"] == study.uid and exports[0]["patient"] == PATIENT_ID
    assert exports[0]["detail"]["deidentified"] == "TRIAL" and exports[0]["detail"]["files"] == 4
    assert exports[0]["detail"]["burned_in_held_back"] == 1
    records = read_mapping(mapping_path(site.engine.data_dir, "TRIAL"), bytes.fromhex(KEY_HEX), "TRIAL")
    assert len(records) == 2 and records[0]["context"] == {"export": "http", "user": "wendy"}


def test_export_research_who_and_what(research_site: tuple[Site, Study]) -> None:
    site, study = research_site
    url = f"/api/studies/{study.uid}/export-research"
    with httpx.Client(base_url=site.url, timeout=60) as http:
        body = {"project": "TRIAL"}
        assert http.post(url, json=body, headers=bearer(site, "rita")).status_code == 403
        assert http.post(url, json=body).status_code == 401  # users exist: no anonymous access
        share = http.post("/api/shares", json={"study": study.uid}, headers=bearer(site, "wendy")).json()
        as_share = http.post(url, json=body, headers={"Authorization": f"Bearer {share['token']}"})
        assert as_share.status_code == 403
        assert http.post(url, json={"project": "NOPE"}, headers=bearer(site, "wendy")).status_code == 400
        bad_option = http.post(url, json={"project": "TRIAL", "retain": ["eyes"]},
                               headers=bearer(site, "wendy"))
        assert bad_option.status_code == 400 and "eyes" in bad_option.text
        missing = http.post("/api/studies/1.2.3.4/export-research", json=body, headers=bearer(site, "wendy"))
        assert missing.status_code == 404
        with_burned_in = http.post(url, json={**body, "allow_burned_in": True}, headers=bearer(site, "wendy"))
    report = json.loads(zipfile.ZipFile(io.BytesIO(with_burned_in.content)).read("deid-report.json"))
    assert report["exported"] == 5 and len(report["burned_in_exported"]) == 1


def test_serve_reads_deidentify_from_its_config(tmp_path: Path) -> None:
    """`dicomvault serve --config` hands [deidentify] to the HTTP side (cli.py -> site)."""
    study = make_study(tmp_path / "in")
    data = tmp_path / "data"
    subprocess.run([sys.executable, "-m", "dicomvault.cli", "ingest", "--data", str(data),
                    str(tmp_path / "in")], check=True, capture_output=True, timeout=120)
    cfg = write_config(tmp_path)
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "dicomvault.cli", "serve", "--config", str(cfg),
                                 "--data", str(data), "--dimse-port", str(free_port()), "--http-port", "0",
                                 "--hl7-port", "0"], stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline, url = time.monotonic() + 60, None
        while url is None and time.monotonic() < deadline:
            assert proc.poll() is None, log.read_text()
            m = re.search(r"dicomvault serving HTTP (\S+)", log.read_text())
            url = m.group(1) if m else None
            time.sleep(0.1)
        assert url, log.read_text()
        with httpx.Client(base_url=url, timeout=60) as http:  # loopback, no users: the anonymous writer
            assert [p["name"] for p in http.get("/api/research-projects").json()] == ["TRIAL", "OTHER"]
            r = http.post(f"/api/studies/{study.uid}/export-research", json={"project": "OTHER"})
        assert r.status_code == 200
        names = zipfile.ZipFile(io.BytesIO(r.content)).namelist()
        other = Pseudonymizer("OTHER", b"another-secret-for-another-project")
        assert f"{other.uid(study.uid)}/" in names[0] and "deid-report.json" in names
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(40)
