"""Patient corrections from the HIS against a real `dicomvault serve`: ADT^A08 over MLLP, then the
corrected values checked on every way out — DCMTK findscu (C-FIND), movescu to storescp (C-MOVE),
getscu (C-GET), QIDO-RS, WADO-RS and its metadata through dicomweb-client, WADO-URI and `export` —
while `export --as-received` still gives the bytes received; ADT^A40 merges, the API undoes it."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from blake3 import blake3
from dicomweb_client.api import DICOMwebClient
from dv_iocm import Image, ct_series
from hl7_served import (
    ARCHIVE_AE,
    CLI,
    STORESCP_AE,
    Served,
    free_port,
    kept,
    msg,
    run,
    send,
    serve_with_hl7,
    storescu,
)

from dicomvault.engine import Engine
from dv_corpus import split_part10

WRONG, RIGHT = "Wrong^Name", "Right^Anna"


def _adt(event: str, control: str, *segments: str) -> bytes:
    return msg(f"MSH|^~\\&|HIS|HOSP|PACS|HOSP|20261206||ADT^{event}^ADT_A01|{control}|P|2.5.1",
               f"EVN|{event}|20261206", *segments)


def _series(out: Path, patient_id: str, n: int) -> list[Image]:
    images = ct_series(out, n, patient_id=patient_id)
    for im in images:  # the name the modality typed (IOCM^TEST in dv_iocm) becomes WRONG
        ds = pydicom.dcmread(im.path)
        ds.PatientName, ds.PatientBirthDate = WRONG, "19000101"
        ds.save_as(im.path, enforce_file_format=True)
    return images


class Site:
    def __init__(self, served: Served, storescp_dir: Path, ct: list[Image], mr: list[Image]) -> None:
        self.s, self.storescp_dir, self.ct, self.mr = served, storescp_dir, ct, mr
        self.web = DICOMwebClient(url=str(served.http.base_url) + "/dicom-web",
                                  headers=dict(served.http.headers))


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    for tool in ("findscu", "movescu", "getscu", "storescp", "storescu"):
        if shutil.which(tool) is None:
            pytest.fail(f"missing tool {tool} (run `make sysdeps`)")
    tmp = tmp_path_factory.mktemp("corrections")
    scp_port = free_port()
    received = tmp / "storescp"
    received.mkdir()
    scp = subprocess.Popen(["storescp", "-aet", STORESCP_AE, "-od", str(received), "-uf", str(scp_port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        with serve_with_hl7(tmp / "site", storescp_port=scp_port) as served:
            ct, mr = _series(tmp / "ct", "PX1", 3), _series(tmp / "mr", "PX2", 2)
            storescu(served.arch, [im.path for im in ct + mr])
            yield Site(served, received, ct, mr)
    finally:
        scp.terminate()
        scp.wait(10)


def _findscu(site: Site, out: Path, level: str, **keys: str) -> list[pydicom.Dataset]:
    out.mkdir(parents=True)
    query = {"QueryRetrieveLevel": level, "PatientName": "", "PatientBirthDate": "", **keys}
    args = [a for k, v in query.items() for a in ("-k", f"{k}={v}")]
    run(["findscu", "-aet", "FINDSCU", "-aec", ARCHIVE_AE, "-P" if level == "PATIENT" else "-S", "-X", "-od",
         str(out), *args, *site.s.arch.addr])
    return [pydicom.dcmread(p) for p in sorted(out.iterdir())]


def _getscu(site: Site, out: Path, study_uid: str) -> list[pydicom.Dataset]:
    out.mkdir(parents=True)
    run(["getscu", "-aet", "GETSCU", "-aec", ARCHIVE_AE, "-S", "-od", str(out), "-k",
         "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", *site.s.arch.addr])
    return [pydicom.dcmread(p) for p in sorted(out.iterdir())]


def _moved(site: Site, study_uid: str) -> list[pydicom.Dataset]:
    for p in site.storescp_dir.iterdir():
        p.unlink()
    run(["movescu", "-aet", "MOVESCU", "-aec", ARCHIVE_AE, "-aem", STORESCP_AE, "-S", "-k",
         "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}", *site.s.arch.addr])
    return [pydicom.dcmread(p) for p in sorted(site.storescp_dir.iterdir())]


def _names(datasets: list[pydicom.Dataset]) -> set[tuple[str, str]]:
    return {(str(ds.PatientID), str(ds.PatientName)) for ds in datasets}


def _pixels_as_stored(site: Site, datasets: list[pydicom.Dataset], images: list[Image]) -> None:
    originals = {im.sop_uid: pydicom.dcmread(im.path).PixelData for im in images}
    assert {str(ds.SOPInstanceUID): ds.PixelData for ds in datasets} == originals


def test_adt_a08_correction_reaches_every_way_out(site: Site, tmp_path: Path) -> None:
    (ack,) = send(site.s, _adt("A08", "UPD1", "PID|1||PX1^^^HOSP||Right^Anna||19750505|F", "PV1|1|O"))
    assert ack["MSA"][1] == "AA", ack
    assert "updated" in ack["MSA"][3]
    ct_study = site.ct[0].study_uid
    # C-FIND, patient and study level (DCMTK)
    (pat,) = _findscu(site, tmp_path / "fp", "PATIENT", PatientID="PX1")
    assert (str(pat.PatientName), pat.PatientBirthDate) == (RIGHT, "19750505")
    (st,) = _findscu(site, tmp_path / "fs", "STUDY", PatientID="PX1", StudyInstanceUID="")
    assert str(st.PatientName) == RIGHT
    wrong = _findscu(site, tmp_path / "fw", "STUDY", PatientName="Wrong*", StudyInstanceUID="", PatientID="")
    assert "PX1" not in {str(d.PatientID) for d in wrong}  # the old name no longer finds it
    # C-MOVE to storescp and C-GET: the new values, the pixels as stored
    for got in (_moved(site, ct_study), _getscu(site, tmp_path / "get", ct_study)):
        assert _names(got) == {("PX1", RIGHT)}
        assert {(ds.PatientBirthDate, ds.PatientSex) for ds in got} == {("19750505", "F")}
        _pixels_as_stored(site, got, site.ct)
    # DICOMweb: QIDO, WADO-RS instances and metadata (dicomweb-client), WADO-URI
    (q,) = site.web.search_for_studies(search_filters={"PatientID": "PX1"})
    assert q["00100010"]["Value"][0]["Alphabetic"] == RIGHT
    retrieved = site.web.retrieve_study(ct_study)
    assert _names(retrieved) == {("PX1", RIGHT)}
    meta = site.web.retrieve_study_metadata(ct_study)
    assert {m["00100010"]["Value"][0]["Alphabetic"] for m in meta} == {RIGHT}
    assert {m["00100030"]["Value"][0] for m in meta} == {"19750505"}
    im = site.ct[0]
    r = site.s.http.get("/wado", params={"requestType": "WADO", "studyUID": im.study_uid,
                                         "seriesUID": im.series_uid, "objectUID": im.sop_uid,
                                         "contentType": "application/dicom"})
    assert r.status_code == 200 and str(pydicom.dcmread(io.BytesIO(r.content)).PatientName) == RIGHT
    # export beside the running server: corrected, or byte-identical as received
    run([CLI, "export", "--data", str(site.s.arch.data), "--study", ct_study, "-o", str(tmp_path / "x")])
    assert _names([pydicom.dcmread(p) for p in (tmp_path / "x").rglob("*.dcm")]) == {("PX1", RIGHT)}
    run([CLI, "export", "--data", str(site.s.arch.data), "--study", ct_study, "-o", str(tmp_path / "raw"),
         "--as-received"])
    # the data sets as they came over C-STORE: each hashes to the content address taken on arrival
    with Engine(site.s.arch.data, read_only=True) as eng:
        for p in (tmp_path / "raw").rglob("*.dcm"):
            ts, dataset = split_part10(p)
            rec = eng.instance(str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID))
            assert rec is not None and blake3(ts.encode() + b"\0" + dataset).digest() == rec.hash
    # audited as a Patient Record event
    lines = [json.loads(x) for x in (site.s.arch.data / "audit" / "audit.jsonl").read_text().splitlines()]
    rec = [x for x in lines if x["event"] == "patient-record"]
    assert rec and rec[-1]["patient"] == "PX1" and rec[-1]["code"] == "DCM 110110"
    assert rec[-1]["detail"]["source"] == "HL7 ADT^A08"


def test_adt_a40_merge_then_undo_through_the_api(site: Site, tmp_path: Path) -> None:
    mr_study = site.mr[0].study_uid
    (ack,) = send(site.s, _adt("A40", "MRG1", "PID|1||PX1^^^HOSP||Right^Anna||19750505|F", "MRG|PX2^^^HOSP"))
    assert ack["MSA"][1] == "AA", ack
    studies = site.web.search_for_studies(search_filters={"PatientID": "PX1"})
    assert {s["0020000D"]["Value"][0] for s in studies} == {site.ct[0].study_uid, mr_study}
    assert site.web.search_for_studies(search_filters={"PatientID": "PX2"}) == []
    assert _names(_getscu(site, tmp_path / "g1", mr_study)) == {("PX1", RIGHT)}
    (again,) = send(site.s, _adt("A40", "MRG2", "PID|1||PX1^^^HOSP", "MRG|PX2^^^HOSP"))
    assert again["MSA"][1] == "AA" and "already merged" in again["MSA"][3]
    merges = site.s.http.get("/api/patient-merges").json()
    assert [(m["prior_id"], m["survivor_id"]) for m in merges] == [("PX2", "PX1")]
    r = site.s.http.delete("/api/patient-merges/PX2")
    assert r.status_code == 200, r.text
    (back,) = site.web.search_for_studies(search_filters={"PatientID": "PX2"})
    assert back["0020000D"]["Value"][0] == mr_study
    got = _getscu(site, tmp_path / "g2", mr_study)
    assert _names(got) == {("PX2", WRONG)}


def test_identifier_change_by_the_cli_beside_the_server(site: Site) -> None:
    # the server holds the data directory: the CLI goes through its admin API
    out = run([CLI, "patients", "merge", "--data", str(site.s.arch.data), "PX2", "MRN-9", "--set",
               "PatientName=Renamed^Bob", "--json"])
    assert json.loads(out.stdout)["survivor_id"] == "MRN-9"
    (q,) = site.web.search_for_studies(search_filters={"PatientID": "MRN-9"})
    assert q["00100010"]["Value"][0]["Alphabetic"] == "Renamed^Bob"
    shown = run([CLI, "patients", "show", "--data", str(site.s.arch.data), "MRN-9", "--json"])
    shown = json.loads(shown.stdout)
    assert shown["values"]["PatientName"] == "Renamed^Bob"


def test_malformed_adt_is_refused_and_kept(site: Site) -> None:
    (ack,) = send(site.s, _adt("A08", "BADSEX", "PID|1||PX1^^^HOSP||Right^Anna||19750505|Q"))
    assert ack["MSA"][1] == "AE" and "table 0001" in ack["MSA"][3]
    assert kept(site.s, "rejected", "BADSEX")
