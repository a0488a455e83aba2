"""The audit trail of HTTP traffic, checked after real requests to a real site (uvicorn, httpx):
QIDO-RS searches are Query records, WADO-RS/WADO-URI reads one Instances Accessed record per
(user, client, study) burst, refused credentials a throttled User Authentication (login) failure, user
changes through /api a Security Alert; the chain verifies (`dicomvault audit verify`)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomvault.engine import Engine
from dicomvault.site import Site, SiteOptions

CT = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
MR = pydicom.dcmread(get_testdata_file("MR_small.dcm"), stop_before_pixels=True)
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"'


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        eng.store_buffers([Path(get_testdata_file(n)).read_bytes() for n in ("CT_small.dcm", "MR_small.dcm")])
        s = Site(eng, SiteOptions(port=0))
        s.users.add("rita", "reader", "rita-password")
        s.start()
        try:
            yield s
        finally:
            s.stop()


def records(data: Path) -> list[dict]:
    path = data / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_http_reads_searches_and_refusals_are_audited(site: Site, http: httpx.Client) -> None:
    data = site.engine.data_dir
    rita = {"Authorization": f"Bearer {site.users.issue_token('rita')}"}
    admin = {"Authorization": f"Bearer {site.admin_token}"}
    # QIDO-RS: two searches, two Query records with their match counts
    r = http.get("/dicom-web/studies", params={"PatientID": CT.PatientID}, headers=rita)
    assert r.status_code == 200 and len(r.json()) == 1
    assert http.get("/dicom-web/studies", params={"PatientID": "NOBODY"}, headers=rita).json() == []
    # the viewer's study list and summary (/api): a Query and a read
    assert http.get("/api/studies", params={"PatientID": MR.PatientID}, headers=rita).status_code == 200
    assert http.get(f"/api/studies/{MR.StudyInstanceUID}", headers=rita).status_code == 200
    # WADO-RS as a viewer reads: metadata, then the same frame 25 times, a rendering
    st, se, sop = CT.StudyInstanceUID, CT.SeriesInstanceUID, CT.SOPInstanceUID
    assert http.get(f"/dicom-web/studies/{st}/metadata", headers=rita).status_code == 200
    for _ in range(25):
        r = http.get(f"/dicom-web/studies/{st}/series/{se}/instances/{sop}/frames/1",
                     headers={**rita, "Accept": FRAME_ACCEPT})
        assert r.status_code == 200
    r = http.get(f"/dicom-web/studies/{st}/series/{se}/instances/{sop}/rendered",
                 headers={**rita, "Accept": "image/png"})
    assert r.status_code == 200
    # a read that fails (no such instance) is no access
    assert http.get(f"/dicom-web/studies/{st}/series/{se}/instances/1.2.3/metadata",
                    headers=rita).status_code == 404
    # WADO-URI of the MR
    r = http.get("/wado", params={"requestType": "WADO", "studyUID": MR.StudyInstanceUID,
                                  "seriesUID": MR.SeriesInstanceUID, "objectUID": MR.SOPInstanceUID,
                                  "contentType": "application/dicom"}, headers=rita)
    assert r.status_code == 200
    # a password accepted (Basic): authenticated, once an hour like the token
    assert http.get("/dicom-web/studies", auth=("rita", "rita-password")).status_code == 200
    # refused credentials: a wrong password three times, a token nobody issued: one line a minute
    for _ in range(3):
        assert http.get("/dicom-web/studies", auth=("rita", "wrong")).status_code == 401
    assert http.get("/dicom-web/studies", headers={"Authorization": "Bearer forged"}).status_code == 401
    site.audit.clock = lambda: time.time() + 120  # the minute has passed
    assert http.get("/dicom-web/studies", headers={"Authorization": "Bearer forged"}).status_code == 401
    # no credentials at all (a browser's first request) is not a refused credential
    # (loopback with a user: anonymous is off, so 401, but nothing to audit)
    assert http.get("/dicom-web/studies").status_code == 401
    # a user added and given a token through /api: two Security Alerts
    assert http.post("/api/users", json={"name": "ann", "role": "reader"}, headers=admin).status_code == 201
    assert http.post("/api/users/ann/tokens", headers=admin).status_code == 201
    site.stop()  # writes the bursts still counted
    site.stop = lambda: None  # the fixture's stop is done

    recs = records(data)
    queries = [r for r in recs if r["event"] == "query"]
    assert [(q["user"], q["client"], q["detail"]["protocol"], q["detail"]["level"], q["detail"]["matches"],
             q["patient"]) for q in queries] == [
        ("rita", "127.0.0.1", "QIDO-RS", "studies", 1, CT.PatientID),
        ("rita", "127.0.0.1", "QIDO-RS", "studies", 0, "NOBODY"),
        ("rita", "127.0.0.1", "HTTP /api/studies", "studies", 1, MR.PatientID),
        ("rita", "127.0.0.1", "QIDO-RS", "studies", 2, None)]
    assert all(q["code"] == "DCM 110112" for q in queries)
    accessed = {r["study"]: r for r in recs if r["event"] == "instances-accessed"}
    assert set(accessed) == {CT.StudyInstanceUID, MR.StudyInstanceUID}
    ct = accessed[CT.StudyInstanceUID]
    assert (ct["user"], ct["client"], ct["patient"], ct["code"]) == (
        "rita", "127.0.0.1", CT.PatientID, "DCM 110103")
    assert ct["detail"]["requests"] == 27
    assert ct["detail"]["kinds"] == {"frames": 25, "metadata": 1, "rendered": 1}
    assert accessed[MR.StudyInstanceUID]["detail"]["kinds"] == {"study-summary": 1, "wado-uri": 1}
    ok = [(r["user"], r["detail"]["method"]) for r in recs if r["event"] == "login"
          and r["outcome"] == "success"]
    assert ok == [("rita", "token"), ("rita", "basic")]  # 30 requests with the token: one line
    auth = [r for r in recs if r["event"] == "login" and r["outcome"] == "failure"]
    assert len(auth) == 2, auth
    assert (auth[0]["outcome"], auth[0]["user"], auth[0]["detail"]["method"], auth[0]["code"]) == (
        "failure", "rita", "basic", "DCM 110114")
    assert auth[1]["detail"]["method"] == "bearer" and auth[1]["detail"]["suppressed"] == 3
    changes = [(r["detail"]["what"], r["detail"]["action"], r["detail"]["target"], r["user"])
               for r in recs if r["event"] == "security-alert"]
    assert changes == [("users", "add", "ann", "local-admin"), ("users", "token", "ann", "local-admin")]
    assert not any("password" in json.dumps(r) and "rita-password" in json.dumps(r) for r in recs)
    v = subprocess.run([sys.executable, "-m", "dicomvault.cli", "audit", "verify", "--data", str(data)],
                       capture_output=True, text=True, timeout=60)
    assert v.returncode == 0, v.stdout + v.stderr
