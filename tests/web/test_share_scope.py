"""A share link's token reads its one study and nothing else: the scope check of web/security.py
through the real app (uvicorn, httpx), and inside a Mount whose path holds the study."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Mount, Route

from dicomvault.audit.log import AuditLog
from dicomvault.auth.shares import DAY, ShareStore
from dicomvault.auth.users import UserStore
from dicomvault.engine import Engine
from dicomvault.errors import DicomVaultError
from dicomvault.site import Site, SiteOptions
from dicomvault.web.errors import error_response
from dicomvault.web.security import Security, secured

CT = pydicom.dcmread(get_testdata_file("CT_small.dcm"), stop_before_pixels=True)
MR = pydicom.dcmread(get_testdata_file("MR_small.dcm"), stop_before_pixels=True)
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"'


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        eng.store_buffers([Path(get_testdata_file(n)).read_bytes() for n in ("CT_small.dcm", "MR_small.dcm")])
        s = Site(eng, SiteOptions(port=0))
        s.users.add("wendy", "writer")
        s.start()
        try:
            yield s
        finally:
            s.stop()


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def share_ct(site: Site, http: httpx.Client) -> dict:
    r = http.post("/api/shares", json={"study": CT.StudyInstanceUID},
                  headers=bearer(site.users.issue_token("wendy")))
    assert r.status_code == 201, r.text
    return r.json()


def audit_lines(site: Site) -> list[dict]:
    path = site.engine.data_dir / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_share_reads_its_study_only(site: Site, http: httpx.Client) -> None:
    share = share_ct(site, http)
    h = bearer(share["token"])
    st, se, sop = CT.StudyInstanceUID, CT.SeriesInstanceUID, CT.SOPInstanceUID
    # QIDO of the study's series and instances
    r = http.get(f"/dicom-web/studies/{st}/series", headers=h)
    assert r.status_code == 200 and r.json()[0]["0020000E"]["Value"] == [se]
    assert http.get(f"/dicom-web/studies/{st}/instances", headers=h).status_code == 200
    # metadata, a frame, a rendering, a thumbnail, the study itself, the /api view of it
    r = http.get(f"/dicom-web/studies/{st}/metadata", headers=h)
    assert r.status_code == 200 and r.json()[0]["00080018"]["Value"] == [sop]
    r = http.get(f"/dicom-web/studies/{st}/series/{se}/instances/{sop}/frames/1",
                 headers={**h, "Accept": FRAME_ACCEPT})
    assert r.status_code == 200 and r.headers["content-type"].startswith("multipart/related")
    assert len(r.content) > 128 * 128 * 2
    r = http.get(f"/dicom-web/studies/{st}/series/{se}/instances/{sop}/rendered",
                 headers={**h, "Accept": "image/png"})
    assert r.status_code == 200 and r.content[:4] == b"\x89PNG"
    r = http.get(f"/dicom-web/studies/{st}/thumbnail", headers={**h, "Accept": "image/jpeg"})
    assert r.status_code == 200 and r.content[:2] == b"\xff\xd8"
    assert http.get(f"/api/studies/{st}", headers=h).json()["series"][0]["SeriesInstanceUID"] == se
    # and the viewer's first question
    me = http.get("/api/session", headers=h).json()
    assert me == {"name": f"share:{share['id']}", "role": "reader", "method": "share", "study": st,
                  "actions": ["read"], "expires": share["expires"]}


@pytest.mark.parametrize("path", [
    f"/dicom-web/studies/{MR.StudyInstanceUID}/series",
    f"/dicom-web/studies/{MR.StudyInstanceUID}/metadata",
    f"/dicom-web/studies/{MR.StudyInstanceUID}",
    "/dicom-web/studies",
    f"/dicom-web/studies?StudyInstanceUID={CT.StudyInstanceUID}",
    f"/dicom-web/series?StudyInstanceUID={CT.StudyInstanceUID}",
    "/dicom-web/instances",
    f"/api/studies/{MR.StudyInstanceUID}",
    "/api/studies",
    "/api/stats",
    "/metrics",
    f"/wado?requestType=WADO&studyUID={CT.StudyInstanceUID}&seriesUID={CT.SeriesInstanceUID}"
    f"&objectUID={CT.SOPInstanceUID}",
    "/replication/status",
    "/api/shares",
])
def test_share_is_refused_everywhere_else(site: Site, http: httpx.Client, path: str) -> None:
    share = share_ct(site, http)
    r = http.get(path, headers=bearer(share["token"]))
    assert r.status_code == 403, (path, r.status_code, r.text)
    assert share["id"] in r.text


def test_share_cannot_write_or_reach_another_study_through_its_own(site: Site, http: httpx.Client) -> None:
    share = share_ct(site, http)
    h = bearer(share["token"])
    st = CT.StudyInstanceUID
    # MR's series under CT's path: the retrieve refuses what is not of the path's study
    r = http.get(f"/dicom-web/studies/{st}/series/{MR.SeriesInstanceUID}/metadata", headers=h)
    assert r.status_code == 404
    r = http.post(f"/dicom-web/studies/{st}", content=b"x",
                  headers={**h, "Content-Type": "application/dicom"})
    assert r.status_code == 403
    assert http.post("/api/shares", json={"study": st}, headers=h).status_code == 403
    assert http.delete("/api/session", headers=h).status_code == 403


def test_revoked_and_expired_shares_are_401(site: Site, http: httpx.Client) -> None:
    share = share_ct(site, http)
    h = bearer(share["token"])
    url = f"/dicom-web/studies/{CT.StudyInstanceUID}/series"
    assert http.get(url, headers=h).status_code == 200
    site.shares.clock = lambda: time.time() + 7 * DAY + 1
    r = http.get(url, headers=h)
    assert r.status_code == 401 and "expired" in r.text and share["id"] in r.text
    site.shares.clock = time.time
    assert http.get(url, headers=h).status_code == 200
    wendy = bearer(site.users.issue_token("wendy"))
    assert http.delete(f"/api/shares/{share['id']}", headers=wendy).status_code == 204
    r = http.get(url, headers=h)
    assert r.status_code == 401 and "revoked" in r.text and share["id"] in r.text
    assert "WWW-Authenticate" in r.headers


def test_share_use_and_refusal_are_audited_without_a_line_per_request(site: Site, http: httpx.Client) -> None:
    share = share_ct(site, http)
    h = bearer(share["token"])
    for _ in range(5):
        assert http.get(f"/dicom-web/studies/{CT.StudyInstanceUID}/metadata", headers=h).status_code == 200
    for _ in range(3):
        assert http.get("/api/stats", headers=h).status_code == 403
    used = [e for e in audit_lines(site) if e["event"] == "share-used"]
    refused = [e for e in audit_lines(site) if e["event"] == "share-scope-refused"]
    assert len(used) == 1 and used[0]["user"] == f"share:{share['id']}"
    assert used[0]["study"] == CT.StudyInstanceUID and used[0]["outcome"] == "success"
    assert len(refused) == 1 and "/api/stats" in refused[0]["detail"]["path"]
    assert refused[0]["outcome"] == "failure" and refused[0]["client"] == "127.0.0.1"
    # an hour later the next use is written again, saying how many were left out
    real = site.audit.clock
    site.audit.clock = lambda: real() + 3601
    assert http.get(f"/dicom-web/studies/{CT.StudyInstanceUID}/series", headers=h).status_code == 200
    used = [e for e in audit_lines(site) if e["event"] == "share-used"]
    assert len(used) == 2 and used[1]["detail"]["suppressed"] == 4


def test_scope_sees_the_path_parameters_of_an_enclosing_mount(tmp_path: Path) -> None:
    """A route inside `Mount("/outer/{study}")` has no `study` of its own: the check must still
    see the Mount's, or a share would be refused (or worse, a check written otherwise would pass)."""
    users = UserStore(tmp_path)
    shares = ShareStore(tmp_path)
    sec = Security(users, None, shares=shares, audit=AuditLog(tmp_path))
    _, token = shares.create("1.2.3", "wendy")
    seen: list[dict[str, str]] = []

    def inner(request: Request) -> Response:
        seen.append(dict(request.path_params))
        return JSONResponse(request.path_params)

    app = Starlette(routes=[Mount("/outer/{study}", routes=[
        Route("/inner/{series}", secured(sec, "read", inner), methods=["GET"]),
        Mount("/deeper", routes=[Route("/leaf", secured(sec, "read", inner), methods=["GET"])]),
    ])], exception_handlers={DicomVaultError: error_response})

    async def statuses(paths: list[str]) -> list[int]:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            return [(await client.get(p, headers=bearer(token))).status_code for p in paths]

    ok = asyncio.run(statuses(["/outer/1.2.3/inner/4.5", "/outer/1.2.3/deeper/leaf"]))
    assert ok == [200, 200]
    assert seen == [{"study": "1.2.3", "series": "4.5"}, {"study": "1.2.3"}]
    assert asyncio.run(statuses(["/outer/9.9.9/inner/4.5", "/outer/9.9.9/deeper/leaf"])) == [403, 403]
    assert len(seen) == 2
