"""The FHIR R4 read API against the real HTTP app: studies built from real images (pydicom's MR
and CT test files, a pydicom-data CT) stored through /api/instances, every response parsed by
the fhir.resources models, every expectation derived from the datasets that were stored."""

from __future__ import annotations

import base64
import datetime as dt
import io
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx
import pydicom
import pytest
from fhir.resources.R4B.bundle import Bundle
from fhir.resources.R4B.capabilitystatement import CapabilityStatement
from fhir.resources.R4B.endpoint import Endpoint
from fhir.resources.R4B.imagingstudy import ImagingStudy
from fhir.resources.R4B.operationoutcome import OperationOutcome
from fhir.resources.R4B.patient import Patient
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomvault.engine import Engine
from dicomvault.index.store import Index
from dicomvault.integration.fhir import search as fhir_search
from dicomvault.integration.fhir.ids import from_fhir_id, to_fhir_id
from dicomvault.integration.fhir.mapping import fhir_datetime
from dicomvault.site import Site, SiteOptions
from dv_corpus import real_file

FHIR = "/fhir/r4"
MODELS = {"Bundle": Bundle, "ImagingStudy": ImagingStudy, "Patient": Patient, "Endpoint": Endpoint,
          "CapabilityStatement": CapabilityStatement, "OperationOutcome": OperationOutcome}


def _study(src: str, *, patient: tuple[str, str, str, str], date: str, time: str, accession: str,
           modality: str, series: list[dict[str, Any]], tz: str | None = None) -> list[Dataset]:
    """Copies of a real image as one study: ``series`` gives each series' attributes and its
    number of instances."""
    study_uid = generate_uid()
    out: list[Dataset] = []
    for se in series:
        se_uid = generate_uid()
        for n in range(se["instances"]):
            ds = pydicom.dcmread(real_file(src))
            ds.PatientID, ds.PatientName, ds.PatientBirthDate, ds.PatientSex = patient
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, se_uid
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.Modality = date, time, accession, modality
            ds.SeriesNumber, ds.InstanceNumber = se["number"], n + 1
            ds.SeriesDescription = se.get("description", "")
            if "body" in se:
                ds.BodyPartExamined = se["body"]
            if tz is not None:
                ds.TimezoneOffsetFromUTC = tz
            out.append(ds)
    return out


def _bytes(ds: Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


@pytest.fixture(scope="module")
def studies() -> dict[str, list[Dataset]]:
    jane = ("FHIR-1", "Doe^Jane^Q", "19700102", "F")
    return {
        # three MR series, one with a body part
        "A": _study("MR_small.dcm", patient=jane, date="20240115", time="101500", accession="ACC-1",
                    modality="MR", series=[
                        {"number": 3, "instances": 2, "description": "T2 ax", "body": "HEAD"},
                        {"number": 1, "instances": 2, "description": "T1 sag"},
                        {"number": 2, "instances": 1}]),
        "B": _study("CT_small.dcm", patient=jane, date="20240203", time="080000", accession="ACC-2",
                    modality="CT", series=[{"number": 1, "instances": 3, "description": "abdomen"}]),
        # a Patient ID that is no FHIR id as it stands (space, slash): its id is escaped
        "C": _study("693_UNCI.dcm", patient=("FHIR 2/x", "Smith^John", "19850607", "M"), date="20231231",
                    time="235959", accession="ACC-3", modality="CT",
                    series=[{"number": 7, "instances": 1}, {"number": 8, "instances": 1}]),
    }


@pytest.fixture(scope="module")
def fsite(tmp_path_factory: pytest.TempPathFactory, studies: dict[str, list[Dataset]]) -> Iterator[Site]:
    with Engine(tmp_path_factory.mktemp("fhir") / "data", min_free_bytes=0) as eng:
        s = Site(eng, SiteOptions(port=0))
        s.start()
        try:
            with httpx.Client(base_url=s.url, timeout=30) as c:
                for dss in studies.values():
                    for ds in dss:
                        r = c.post("/api/instances", content=_bytes(ds))
                        assert r.status_code == 200, r.text
            yield s
        finally:
            s.stop()


@pytest.fixture(scope="module")
def client(fsite: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=fsite.url, timeout=30) as c:
        yield c


def fhir_get(client: httpx.Client, path: str, status: int = 200, **params: Any) -> dict[str, Any]:
    """GET a FHIR URL; checks the status and media type and parses the body with the FHIR models."""
    r = client.get(path if path.startswith("http") else FHIR + path, params=params or None)
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("application/fhir+json")
    body = r.json()
    MODELS[body["resourceType"]].model_validate(body)
    return body


def search(client: httpx.Client, resource: str, **params: Any) -> list[dict[str, Any]]:
    b = fhir_get(client, f"/{resource}", **params)
    assert b["type"] == "searchset"
    return [e["resource"] for e in b.get("entry", [])]


def uid_of(res: dict[str, Any]) -> str:
    (ident,) = [i for i in res["identifier"] if i.get("system") == "urn:dicom:uid"]
    return ident["value"].removeprefix("urn:oid:")


def uids(found: list[dict[str, Any]]) -> list[str]:
    return [uid_of(r) for r in found]


def suid(dss: list[Dataset]) -> str:
    return str(dss[0].StudyInstanceUID)


# ---------------------------------------------------------------------------- ImagingStudy


def test_imaging_study_by_patient_maps_every_series_and_instance(
        client: httpx.Client, studies: dict[str, list[Dataset]]) -> None:
    a, b = studies["A"], studies["B"]
    found = search(client, "ImagingStudy", **{"patient.identifier": "|FHIR-1"})
    assert uids(found) == [suid(b), suid(a)]  # newest first
    study = found[1]
    assert study["id"] == suid(a) and study["status"] == "available"
    assert study["subject"] == {"reference": f"Patient/{to_fhir_id('FHIR-1')}", "display": "Jane Q Doe"}
    assert study["started"] == dt.datetime(2024, 1, 15, 10, 15).astimezone().isoformat()
    assert study["numberOfSeries"] == 3 and study["numberOfInstances"] == len(a)
    assert study["modality"] == [{"system": "http://dicom.nema.org/resources/ontology/DCM", "code": "MR"}]
    acc = [i for i in study["identifier"] if i.get("type")]
    assert acc[0]["value"] == "ACC-1" and acc[0]["type"]["coding"][0]["code"] == "ACSN"
    assert study["endpoint"] == [{"reference": "Endpoint/dicomweb"}]
    # series in SeriesNumber order, each with its instances in InstanceNumber order
    by_series: dict[str, list[Dataset]] = {}
    for ds in a:
        by_series.setdefault(str(ds.SeriesInstanceUID), []).append(ds)
    expected = sorted(by_series.values(), key=lambda d: int(d[0].SeriesNumber))
    assert [s["uid"] for s in study["series"]] == [str(d[0].SeriesInstanceUID) for d in expected]
    for se, dss in zip(study["series"], expected, strict=True):
        assert se["number"] == int(dss[0].SeriesNumber) and se["numberOfInstances"] == len(dss)
        assert se["modality"]["code"] == "MR"
        assert se.get("description", "") == dss[0].SeriesDescription
        assert se.get("bodySite", {}).get("display") == dss[0].get("BodyPartExamined")
        assert [(i["uid"], i["number"], i["sopClass"]["code"]) for i in se["instance"]] == \
            [(str(d.SOPInstanceUID), int(d.InstanceNumber), f"urn:oid:{d.SOPClassUID}") for d in dss]
    # the same study through the other patient forms, and its read
    pid = to_fhir_id("FHIR-1")
    for params in ({"patient": f"Patient/{pid}"}, {"subject": pid}, {"patient.identifier": "FHIR-1"},
                   {"patient": f"{client.base_url}{FHIR}/Patient/{pid}"}):
        assert uids(search(client, "ImagingStudy", **params)) == [suid(b), suid(a)], params
    assert fhir_get(client, f"/ImagingStudy/{study['id']}") == study
    # Patient IDs here carry no identifier system: another system names no patient of ours
    assert search(client, "ImagingStudy", **{"patient.identifier": "urn:oid:9.9|FHIR-1"}) == []


def test_started_time_without_zone_takes_the_hosts(client: httpx.Client,
                                                   studies: dict[str, list[Dataset]]) -> None:
    (b,) = search(client, "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{suid(studies['B'])}")
    local = dt.datetime(2024, 2, 3, 8, 0).astimezone().isoformat()
    assert b["started"] == local


def test_started_with_a_dicom_zone_offset() -> None:
    # The core does not extract TimezoneOffsetFromUTC into the index today; when a row holds
    # it, it wins over the host's zone.
    assert fhir_datetime("20240115", "101500.25", "+0130") == "2024-01-15T10:15:00.25+01:30"
    assert fhir_datetime("20240115", "", None) == "2024-01-15"
    assert fhir_datetime("20240230", "1015", None) is None
    assert fhir_datetime("20240115", "2561", None) == "2024-01-15"


def test_escaped_patient_id_round_trips(client: httpx.Client, studies: dict[str, list[Dataset]]) -> None:
    pid = to_fhir_id("FHIR 2/x")
    assert pid == "FHIR-202-2fx"
    found = search(client, "ImagingStudy", patient=f"Patient/{pid}")
    assert uids(found) == [suid(studies["C"])]
    assert found[0]["subject"]["reference"] == f"Patient/{pid}"
    p = fhir_get(client, f"/Patient/{pid}")
    assert p["identifier"][0]["value"] == "FHIR 2/x"


@pytest.mark.parametrize(("params", "keys"), [
    ({"started": ["ge2024-01-01", "lt2024-02-01"]}, ["A"]),
    ({"started": "eq2024-02"}, ["B"]),
    ({"started": "2024"}, ["B", "A"]),
    ({"started": "gt2024-01-15"}, ["B"]),
    ({"started": "le2023-12-31"}, ["C"]),
    ({"started": "lt2024-01-15"}, ["C"]),
    ({"started": ["ge2024-02-04", "le2024-01-01"]}, []),
    ({"modality": "CT"}, ["B", "C"]),
    ({"modality": "http://dicom.nema.org/resources/ontology/DCM|MR"}, ["A"]),
    ({"modality": "MR,CT"}, ["B", "A", "C"]),
    ({"modality": ["MR", "CT"]}, []),
    ({"modality": "http://loinc.org|CT"}, []),
    ({"identifier": "|ACC-2"}, ["B"]),
    ({"identifier": "ACC-3"}, ["C"]),
    ({"accession": "ACC-1"}, ["A"]),
    ({"identifier:of-type": "http://terminology.hl7.org/CodeSystem/v2-0203|ACSN|ACC-1"}, ["A"]),
    ({"identifier:of-type": "http://terminology.hl7.org/CodeSystem/v2-0203|MR|ACC-1"}, []),
    ({"patient.identifier": "FHIR-1", "modality": "CT"}, ["B"]),
    ({"patient.identifier": "FHIR*"}, []),
])
def test_imaging_study_search_parameters(client: httpx.Client, studies: dict[str, list[Dataset]],
                                         params: dict[str, Any], keys: list[str]) -> None:
    assert uids(search(client, "ImagingStudy", **params)) == [suid(studies[k]) for k in keys]


def test_identifier_by_study_uid_and_id(client: httpx.Client, studies: dict[str, list[Dataset]]) -> None:
    for k, dss in studies.items():
        uid = suid(dss)
        assert uids(search(client, "ImagingStudy", identifier=f"urn:dicom:uid|urn:oid:{uid}")) == [uid], k
        assert uids(search(client, "ImagingStudy", identifier=f"urn:oid:{uid}")) == [uid], k
        assert uids(search(client, "ImagingStudy", _id=to_fhir_id(uid))) == [uid], k


def test_paging_walks_every_study_once(client: httpx.Client, studies: dict[str, list[Dataset]]) -> None:
    first = fhir_get(client, "/ImagingStudy", _count=1)
    assert first["total"] == len(studies)
    seen: list[str] = []
    page: dict[str, Any] | None = first
    while page is not None:
        seen += uids([e["resource"] for e in page.get("entry", [])])
        nxt = [x["url"] for x in page["link"] if x["relation"] == "next"]
        page = fhir_get(client, nxt[0]) if nxt else None
        if page is not None:
            assert page["total"] == len(studies)
            assert any(x["relation"] == "previous" for x in page["link"])
    assert sorted(seen) == sorted(suid(d) for d in studies.values()) and len(seen) == len(set(seen))
    assert seen == uids(search(client, "ImagingStudy", _count=100))
    # the links keep the search's own parameters
    b = fhir_get(client, "/ImagingStudy", modality="CT", _count=1)
    nxt = [x["url"] for x in b["link"] if x["relation"] == "next"][0]
    assert ("modality", "CT") in parse_qsl(urlsplit(nxt).query)
    # _count=0: the total alone
    only = fhir_get(client, "/ImagingStudy", _count=0, modality="CT")
    assert only["total"] == 2 and "entry" not in only


def test_endpoint_points_at_working_dicomweb(client: httpx.Client, studies: dict[str, list[Dataset]]) -> None:
    ep = fhir_get(client, "/Endpoint/dicomweb")
    assert ep["connectionType"]["code"] == "dicom-wado-rs"
    assert ep["address"] == f"{client.base_url}/dicom-web"
    # the address serves the study an ImagingStudy names
    uid = suid(studies["A"])
    r = client.get(f"{ep['address']}/studies/{uid}/metadata")
    assert r.status_code == 200 and len(r.json()) == len(studies["A"])


def test_public_url_is_honoured(tmp_path: Path, studies: dict[str, list[Dataset]]) -> None:
    public = "https://pacs.example.org/archive"
    with Engine(tmp_path / "d", min_free_bytes=0) as eng:
        eng.store_buffers([_bytes(ds) for ds in studies["B"]])
        s = Site(eng, SiteOptions(port=0, public_url=public))
        s.start()
        try:
            with httpx.Client(base_url=s.url, timeout=30) as c:
                assert fhir_get(c, "/Endpoint/dicomweb")["address"] == f"{public}/dicom-web"
                b = fhir_get(c, "/ImagingStudy")
                assert b["entry"][0]["fullUrl"] == f"{public}{FHIR}/ImagingStudy/{suid(studies['B'])}"
                assert all(x["url"].startswith(f"{public}{FHIR}/ImagingStudy?") for x in b["link"])
        finally:
            s.stop()


# ---------------------------------------------------------------------------- Patient


@pytest.mark.parametrize(("params", "ids"), [
    ({"identifier": "FHIR-1"}, ["FHIR-1"]),
    ({"identifier": "|FHIR 2/x"}, ["FHIR 2/x"]),
    ({"name": "smi"}, ["FHIR 2/x"]),
    ({"name": "JANE"}, ["FHIR-1"]),
    ({"name": "q"}, ["FHIR-1"]),
    ({"name": "ane"}, []),
    ({"family": "Do"}, ["FHIR-1"]),
    ({"family": "jane"}, []),
    ({"given": "jo"}, ["FHIR 2/x"]),
    ({"birthdate": "1970-01-02"}, ["FHIR-1"]),
    ({"birthdate": "ge1980"}, ["FHIR 2/x"]),
    ({"birthdate": "lt1980-01"}, ["FHIR-1"]),
    ({"gender": "female"}, ["FHIR-1"]),
    ({"gender": "http://hl7.org/fhir/administrative-gender|male"}, ["FHIR 2/x"]),
    ({"gender": "female", "name": "smith"}, []),
])
def test_patient_search(client: httpx.Client, params: dict[str, Any], ids: list[str]) -> None:
    found = search(client, "Patient", **params)
    assert [p["identifier"][0]["value"] for p in found] == ids


def test_patient_read_maps_demographics(client: httpx.Client, studies: dict[str, list[Dataset]]) -> None:
    for dss in (studies["A"], studies["C"]):
        ds = dss[0]
        p = fhir_get(client, f"/Patient/{to_fhir_id(ds.PatientID)}")
        pn = ds.PatientName
        assert p["name"][0]["family"] == pn.family_name
        assert p["name"][0]["given"] == [x for x in (pn.given_name, pn.middle_name) if x]
        born = ds.PatientBirthDate
        assert p["birthDate"] == f"{born[:4]}-{born[4:6]}-{born[6:]}"
        assert p["gender"] == {"M": "male", "F": "female"}[ds.PatientSex]
    everyone = fhir_get(client, "/Patient")
    assert everyone["total"] == 2


# ---------------------------------------------------------------------------- errors, metadata


@pytest.mark.parametrize(("path", "params", "status", "code"), [
    ("/ImagingStudy", {"foo": "1"}, 400, "invalid"),
    ("/ImagingStudy", {"started": "2024-13-01"}, 400, "invalid"),
    ("/ImagingStudy", {"started": "ne2024-01-01"}, 400, "invalid"),
    ("/ImagingStudy", {"started": "2024-01-01T10:00:00Z"}, 400, "invalid"),
    ("/ImagingStudy", {"_count": "x"}, 400, "invalid"),
    ("/ImagingStudy", {"patient": "Practitioner/1"}, 400, "invalid"),
    ("/ImagingStudy", {"_format": "xml"}, 400, "invalid"),
    ("/Patient", {"gender": "f"}, 400, "invalid"),
    ("/ImagingStudy/1.2.3.4", {}, 404, "not-found"),
    ("/ImagingStudy/no_such", {}, 404, "not-found"),
    ("/Patient/NOBODY", {}, 404, "not-found"),
    ("/Endpoint/other", {}, 404, "not-found"),
    ("/Observation", {}, 404, "not-found"),
])
def test_errors_are_operation_outcomes(client: httpx.Client, path: str, params: dict[str, str],
                                       status: int, code: str) -> None:
    oo = fhir_get(client, path, status, **params)
    assert oo["issue"][0]["code"] == code and oo["issue"][0]["diagnostics"]


def test_metadata_lists_exactly_what_is_supported(client: httpx.Client) -> None:
    cs = fhir_get(client, "/metadata")
    res = {r["type"]: r for r in cs["rest"][0]["resource"]}
    assert set(res) == {"ImagingStudy", "Patient", "Endpoint"}
    assert {p["name"] for p in res["ImagingStudy"]["searchParam"]} == fhir_search.IMAGING_STUDY_PARAMS
    assert {p["name"] for p in res["Patient"]["searchParam"]} == fhir_search.PATIENT_PARAMS
    assert {i["code"] for i in res["Endpoint"]["interaction"]} == {"read"}
    # every advertised parameter is accepted (a well-formed value of its type gives 200)
    sample = {"token": "x", "reference": "Patient/x", "date": "2024", "string": "x"}
    for rtype in ("ImagingStudy", "Patient"):
        for p in res[rtype]["searchParam"]:
            value = "t|ACSN|x" if p["name"] == "identifier:of-type" else sample[p["type"]]
            if p["name"] == "gender":
                value = "other"
            fhir_get(client, f"/{rtype}", **{p["name"]: value})


def test_security_401_and_403(site: Site, studies: dict[str, list[Dataset]]) -> None:
    site.engine.store_buffers([_bytes(ds) for ds in studies["B"]])
    uid = suid(studies["B"])
    site.users.add("ehr", "reader", password="fhir reader pw")
    with httpx.Client(base_url=site.url, timeout=30) as c:
        oo = fhir_get(c, f"/ImagingStudy/{uid}", 401)
        assert oo["issue"][0]["code"] == "login"
        assert "WWW-Authenticate" in c.get(f"{FHIR}/metadata").headers
        basic = "Basic " + base64.b64encode(b"ehr:fhir reader pw").decode()
        c.headers["Authorization"] = basic
        assert uid_of(fhir_get(c, f"/ImagingStudy/{uid}")) == uid
        # a share link of the very study may not use the FHIR API (it names no study path)
        _, token = site.shares.create(uid, "ehr")
        c.headers["Authorization"] = f"Bearer {token}"
        assert fhir_get(c, f"/ImagingStudy/{uid}", 403)["issue"][0]["code"] == "forbidden"


# ---------------------------------------------------------------------------- ids, cost


@pytest.mark.parametrize("value", ["1.2.840.10008.1", "FHIR-1", "a b/c", "Åsa_1", "x" * 64, "-", "..."])
def test_ids_round_trip(value: str) -> None:
    fid = to_fhir_id(value)
    assert fid is not None and len(fid) <= 64
    assert from_fhir_id(fid, "test") == value


def test_ids_refuse_what_no_identifier_encodes() -> None:
    from dicomvault.errors import NotFoundError

    assert to_fhir_id("x" * 65) is None and to_fhir_id("é" * 30) is None and to_fhir_id("") is None
    for bad in ("a-", "a-zz", "a-41", "a_b", "", "x" * 65, "-ff"):
        with pytest.raises(NotFoundError):
            from_fhir_id(bad, "test")


def test_a_page_costs_three_index_queries_whatever_its_size(
        fsite: Site, client: httpx.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    """The page's studies, their series, their instances (a Patient page: the patients), counted
    on the real index."""
    calls: list[str] = []
    lock = threading.Lock()
    real_find = Index.find

    def counting(self: Index, level: str, *args: Any, **kwargs: Any) -> Any:
        with lock:
            calls.append(level)
        return real_find(self, level, *args, **kwargs)

    monkeypatch.setattr(Index, "find", counting)
    for count in (1, 3):
        calls.clear()
        found = search(client, "ImagingStudy", _count=count)
        assert len(found) == count and all("series" in s for s in found)
        assert calls == ["STUDY", "SERIES", "IMAGE"], calls
    calls.clear()
    assert len(search(client, "Patient", name="doe")) == 1
    assert calls == ["PATIENT"], calls
