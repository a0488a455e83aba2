"""IOCM end to end against a real `dicomvault serve`: images and rejection notes sent with dcmtk
storescu, then C-FIND (findscu), QIDO-RS, WADO-RS/URI and FHIR (httpx) and C-GET (getscu) must not
return the rejected instances and must still return the others; an admin restores over /api."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from dv_iocm import Image, ct_series, rejection_note

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dimse"))
from dimse_helpers import (  # noqa: E402
    ARCHIVE_AE,
    CLI,
    HOST,
    Archive,
    free_port,
    run,
    stop_archive,
    wait_port,
    write_config,
)

from dicomvault.http_info import read_http_info  # noqa: E402

TOOLS = ("storescu", "findscu", "getscu", "dciodvfy")


@pytest.fixture(scope="module", autouse=True)
def tools() -> None:
    missing = [t for t in TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"missing tools: {', '.join(missing)} (run `make sysdeps`)")


def _start(tmp: Path, *, delete_on_retention_expired: bool = False) -> tuple[Archive, httpx.Client, str]:
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "data"
    cfg = write_config(tmp / "dicomvault.toml", data, free_port(), free_port())
    if delete_on_retention_expired:
        cfg.write_text(cfg.read_text() + "\n[iocm]\ndelete_on_retention_expired = true\n")
    port, http_port = free_port(), free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CLI, "serve", "--config", str(cfg), "--dimse-port", str(port),
                                 "--host", HOST, "--http-port", str(http_port)],
                                stdout=out, stderr=subprocess.STDOUT)
    wait_port(port, proc, log)
    wait_port(http_port, proc, log)
    info = read_http_info(data)
    assert info is not None
    arch = Archive(proc, port, data, log, 0, 0)
    # The per-start admin token: anonymous access ends once a test adds a user.
    admin = {"Authorization": f"Bearer {info['admin_token']}"}
    return arch, httpx.Client(base_url=info["url"], timeout=30, headers=admin), str(info["admin_token"])


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Archive, httpx.Client, str]]:
    arch, http, token = _start(tmp_path_factory.mktemp("iocm"))
    try:
        yield arch, http, token
    finally:
        http.close()
        assert stop_archive(arch) == 0, arch.log_text()


def _store(arch: Archive, *paths: Path) -> None:
    run(["storescu", "-aet", "STORESCU", "-aec", ARCHIVE_AE, *arch.addr, *map(str, paths)])


def _find_images(arch: Archive, out: Path, study_uid: str) -> set[str]:
    out.mkdir()
    run(["findscu", "-aet", "FINDSCU", "-aec", ARCHIVE_AE, "-S", "-X", "-od", str(out),
         "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={study_uid}", "-k", "SeriesInstanceUID",
         "-k", "SOPInstanceUID", *arch.addr])
    return {str(pydicom.dcmread(p).SOPInstanceUID) for p in out.glob("rsp*.dcm")}


def _find_study_count(arch: Archive, out: Path, study_uid: str) -> int:
    out.mkdir()
    run(["findscu", "-aet", "FINDSCU", "-aec", ARCHIVE_AE, "-S", "-X", "-od", str(out),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}",
         "-k", "NumberOfStudyRelatedInstances", *arch.addr])
    (rsp,) = [pydicom.dcmread(p) for p in out.glob("rsp*.dcm")]
    return int(rsp.NumberOfStudyRelatedInstances)


def _qido(http: httpx.Client, study_uid: str) -> set[str]:
    r = http.get(f"/dicom-web/studies/{study_uid}/instances")
    assert r.status_code in (200, 204), r.text
    return {row["00080018"]["Value"][0] for row in (r.json() if r.status_code == 200 else [])}


def _wado_status(http: httpx.Client, im: Image) -> tuple[int, int]:
    rs = http.get(f"/dicom-web/studies/{im.study_uid}/series/{im.series_uid}/instances/{im.sop_uid}",
                  headers={"Accept": 'multipart/related; type="application/dicom"'})
    uri = http.get("/wado", params={"requestType": "WADO", "studyUID": im.study_uid,
                                    "seriesUID": im.series_uid, "objectUID": im.sop_uid,
                                    "contentType": "application/dicom"})
    return rs.status_code, uri.status_code


def _fhir(http: httpx.Client, study_uid: str) -> tuple[int, set[str]]:
    """(numberOfInstances, instance UIDs) of the study's FHIR ImagingStudy."""
    r = http.get(f"/fhir/r4/ImagingStudy/{study_uid}")
    assert r.status_code == 200, r.text
    res = r.json()
    uids = {i["uid"] for se in res.get("series", []) for i in se.get("instance", [])}
    return int(res["numberOfInstances"]), uids


def _get_study(arch: Archive, out: Path, study_uid: str) -> set[str]:
    out.mkdir()
    run(["getscu", "-aet", "GETSCU", "-aec", ARCHIVE_AE, "-S", "+B", "-od", str(out),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", *arch.addr])
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in out.iterdir()}


def _audit(arch: Archive) -> list[dict[str, object]]:
    return [json.loads(line) for line in (arch.data / "audit" / "audit.jsonl").read_text().splitlines()]


def test_rejection_hides_from_every_path_and_admin_restores(
        served: tuple[Archive, httpx.Client, str], tmp_path: Path) -> None:
    arch, http, token = served
    images = ct_series(tmp_path / "ct", 4)
    study = images[0].study_uid
    kos = tmp_path / "kos.dcm"
    note = rejection_note(kos, images[:2], code="113001")
    assert run(["dciodvfy", str(kos)], check=False).returncode == 0
    _store(arch, *(im.path for im in images))
    assert _find_images(arch, tmp_path / "f0", study) == {im.sop_uid for im in images}
    _store(arch, kos)

    kept = {images[2].sop_uid, images[3].sop_uid, note}
    assert _find_images(arch, tmp_path / "f1", study) == kept
    assert _find_study_count(arch, tmp_path / "f2", study) == 3
    assert _qido(http, study) == kept
    assert _wado_status(http, images[0]) == (404, 404)
    assert _wado_status(http, images[2]) == (200, 200)
    assert _get_study(arch, tmp_path / "g1", study) == kept
    viewer = http.get(f"/api/studies/{study}").json()
    assert viewer["NumberOfStudyRelatedInstances"] == "3"
    assert _fhir(http, study) == (3, kept)

    # the rejected set is an admin's: anonymous (a writer on loopback) is refused
    assert httpx.get(str(http.base_url.join("/api/rejected")), timeout=30).status_code == 401  # anonymous
    admin = {"Authorization": f"Bearer {token}"}
    assert http.post("/api/users", json={"name": "rad", "role": "writer"}, headers=admin).status_code == 201
    writer = {"Authorization": f"Bearer {http.post('/api/users/rad/tokens', headers=admin).json()['token']}"}
    assert http.get("/api/rejected", headers=writer).status_code == 403
    assert http.post("/api/rejected/restore", json={"note": note}, headers=writer).status_code == 403
    rows = http.get("/api/rejected", params={"study": study}, headers=admin).json()
    assert {(r["SOPInstanceUID"], r["state"], r["code"], r["note"]) for r in rows} == {
        (im.sop_uid, "hidden", "DCM 113001", note) for im in images[:2]}

    r = http.post("/api/rejected/restore", json={"note": note}, headers=admin)
    assert r.status_code == 200, r.text
    assert set(r.json()["restored"]) == {im.sop_uid for im in images[:2]}
    everything = {im.sop_uid for im in images} | {note}
    assert _find_images(arch, tmp_path / "f3", study) == everything
    assert _qido(http, study) == everything
    assert _wado_status(http, images[0]) == (200, 200)
    assert _get_study(arch, tmp_path / "g2", study) == everything
    assert _fhir(http, study) == (5, everything)
    assert http.post("/api/rejected/restore", json={"note": note}, headers=admin).status_code == 404

    events = [(e["event"], e["detail"].get("note"), e["code"]) for e in _audit(arch)
              if e["event"] in ("instances-rejected", "instances-restored")]
    assert ("instances-rejected", note, "DCM 110103") in events
    assert any(ev == "instances-restored" for ev, _, _ in events)


def test_note_sent_before_the_images(served: tuple[Archive, httpx.Client, str], tmp_path: Path) -> None:
    arch, http, token = served
    images = ct_series(tmp_path / "ct", 3, patient_id="IOCM2")
    study = images[0].study_uid
    kos = tmp_path / "kos.dcm"
    note = rejection_note(kos, images[1:2], code="113038", patient_id="IOCM2")
    _store(arch, kos)
    _store(arch, *(im.path for im in images))
    kept = {images[0].sop_uid, images[2].sop_uid, note}
    assert _find_images(arch, tmp_path / "f1", study) == kept
    assert _qido(http, study) == kept
    assert _wado_status(http, images[1]) == (404, 404)
    admin = {"Authorization": f"Bearer {token}"}
    r = http.post("/api/rejected/restore", json={"instance": images[1].sop_uid}, headers=admin)
    assert r.json() == {"restored": [images[1].sop_uid]}
    assert _get_study(arch, tmp_path / "g", study) == kept | {images[1].sop_uid}


def test_retention_expired_deletes_under_policy(tmp_path: Path) -> None:
    arch, http, token = _start(tmp_path / "srv", delete_on_retention_expired=True)
    try:
        images = ct_series(tmp_path / "ct", 3, patient_id="IOCM3")
        study = images[0].study_uid
        kos = tmp_path / "kos.dcm"
        note = rejection_note(kos, images[:2], code="113039", patient_id="IOCM3")
        _store(arch, *(im.path for im in images))
        objects = http.get("/api/stats").json()["objects"]
        _store(arch, kos)
        assert _find_images(arch, tmp_path / "f", study) == {images[2].sop_uid, note}
        stats = http.get("/api/stats").json()
        assert stats["objects"] == objects - 2 + 1
        rows = http.get("/api/rejected", headers={"Authorization": f"Bearer {token}"}).json()
        assert {r["state"] for r in rows} == {"deleted"}
        deletions = [e for e in _audit(arch) if e["event"] == "data-deletion"]
        assert deletions and deletions[-1]["detail"]["note"] == note
    finally:
        http.close()
        assert stop_archive(arch) == 0, arch.log_text()
