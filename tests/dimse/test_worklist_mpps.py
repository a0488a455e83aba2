"""Modality Worklist and MPPS against a real `dicomvault serve`: entries scheduled with the CLI
(which goes through the running server) and the HTTP API, queried with DCMTK `findscu -W` (query
files made by dump2dcm from text dumps, as dcmtk users do), MPPS reported by pynetdicom as the
modality, and the results read back with `dicomvault worklist show` and the API."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from dimse_helpers import ARCHIVE_AE, HOST, Archive, free_port, run, start_archive, stop_archive
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE
from pynetdicom.sop_class import ModalityPerformedProcedureStep as MPPS
from pynetdicom.sop_class import ModalityWorklistInformationFind

from dicomvault.engine import Engine
from dicomvault.integration.worklist_store import WorklistStore

pytestmark = pytest.mark.interop

# (accession, patient id, name, modality, station, start, entered through)
SCHEDULE = [
    ("ACC1", "P1", "Doe^John", "CT", "CT1", "2026-03-10 09:00", "cli"),
    ("ACC2", "P2", "Dupont^Marie", "CT", "CT2", "2026-03-10 14:30", "cli"),
    ("ACC3", "P3", "Doeman^Ann", "MR", "MR1", "2026-03-11 08:00", "api"),
    ("ACC4", "P4", "Smith^Bob", "CT", "CT1", "2026-03-12 10:00", "api"),
]


def cli(data: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "dicomvault.cli", *args, "--data", str(data)],
                          capture_output=True, text=True, timeout=60)
    if check and proc.returncode != 0:
        raise AssertionError(f"dicomvault {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n"
                             f"{proc.stderr}")
    return proc


def token_for(data: Path, name: str, role: str) -> str:
    cli(data, "users", "add", name, "--role", role)
    return cli(data, "users", "token", name).stdout.strip()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory, dcmtk: None) -> Iterator[dict[str, Any]]:
    tmp = tmp_path_factory.mktemp("worklist")
    data = tmp / "data"
    data.mkdir()
    tokens = {role: token_for(data, f"wl-{role}", role) for role in ("reader", "writer")}
    arch = start_archive(tmp, free_port(), free_port())
    try:
        deadline = time.monotonic() + 30
        while not (data / "http.json").exists():
            assert time.monotonic() < deadline, arch.log_text()
            time.sleep(0.05)
        url = json.loads((data / "http.json").read_text())["url"]
        clients = {role: httpx.Client(base_url=url, headers={"Authorization": f"Bearer {tok}"}, timeout=30)
                   for role, tok in tokens.items()}
        keys = {}
        for acc, pid, name, modality, station, start, how in SCHEDULE:
            if how == "cli":
                out = cli(data, "worklist", "add", "--patient-id", pid, "--patient-name", name,
                          "--accession", acc,
                          "--modality", modality, "--station-ae", station, "--start", start, "--procedure",
                          f"{modality} exam", "--json").stdout
                entry = json.loads(out)
            else:
                r = clients["writer"].post("/api/worklist", json={
                    "patient_id": pid, "patient_name": name, "accession": acc, "modality": modality,
                    "station_ae": station, "start": start, "procedure": f"{modality} exam"})
                assert r.status_code == 201, r.text
                entry = r.json()
            keys[acc] = entry
        yield {"archive": arch, "data": data, "http": clients, "entries": keys, "tmp": tmp}
        for c in clients.values():
            c.close()
    finally:
        rc = stop_archive(arch)
        assert rc == 0, arch.log_text()[-4000:]


QUERY = """\
(0008,0005) CS [ISO_IR 100]
(0008,0050) SH []
(0010,0010) PN [{name}]
(0010,0020) LO []
(0020,000d) UI []
(0032,1060) LO []
(0040,0100) SQ (Sequence with explicit length #=1)
  (fffe,e000) na (Item with explicit length #=8)
    (0008,0060) CS [{modality}]
    (0040,0001) AE [{station}]
    (0040,0002) DA [{date}]
    (0040,0003) TM [{time}]
    (0040,0009) SH []
    (0040,0020) CS []
  (fffe,e00d) na (ItemDelimitationItem for re-encoding)
(fffe,e0dd) na (SequenceDelimitationItem for re-encoding)
(0040,1001) SH []
"""


def findscu_w(site: dict[str, Any], *, aet: str = "FINDSCU", check: bool = True,
              **keys: str) -> list[Dataset]:
    """findscu -W with a query file made by dump2dcm; the responses as datasets (findscu -X)."""
    tmp: Path = site["tmp"]
    n = len(list(tmp.glob("q*")))
    dump, query, out = tmp / f"q{n}.txt", tmp / f"q{n}.wl", tmp / f"q{n}.out"
    out.mkdir()
    blank = dict.fromkeys(("name", "modality", "station", "date", "time"), "")
    dump.write_text(QUERY.format(**{**blank, **keys}))
    run(["dump2dcm", str(dump), str(query)])
    arch: Archive = site["archive"]
    proc = run(["findscu", "-W", "-X", "-od", str(out), "-aet", aet, "-aec", ARCHIVE_AE, *arch.addr,
                str(query)],
               check=check)
    if not check:
        assert proc.returncode != 0 or "Failed" in proc.stderr or "Rejected" in proc.stderr
    return [pydicom.dcmread(f) for f in sorted(out.glob("rsp*.dcm"))]


def accessions(rsps: list[Dataset]) -> list[str]:
    return sorted(str(r.AccessionNumber) for r in rsps)


def test_entries_from_cli_and_api_answer_findscu_with_the_requested_keys(site: dict[str, Any]) -> None:
    rsps = findscu_w(site)
    assert accessions(rsps) == ["ACC1", "ACC2", "ACC3", "ACC4"]
    one = next(r for r in rsps if r.AccessionNumber == "ACC1")
    assert str(one.PatientName) == "Doe^John" and one.PatientID == "P1"
    assert one.StudyInstanceUID == site["entries"]["ACC1"]["study_uid"]
    assert one.RequestedProcedureDescription == "CT exam"
    sps = one.ScheduledProcedureStepSequence[0]
    assert (sps.Modality, sps.ScheduledStationAETitle, sps.ScheduledProcedureStepStartDate,
            sps.ScheduledProcedureStepStartTime, sps.ScheduledProcedureStepStatus) == (
        "CT", "CT1", "20260310", "090000", "SCHEDULED")
    assert one.RequestedProcedureID == "ACC1"
    assert "PatientBirthDate" not in one  # not asked for, not returned


@pytest.mark.parametrize(("keys", "expected"), [
    ({"station": "CT1"}, ["ACC1", "ACC4"]),
    ({"modality": "MR"}, ["ACC3"]),
    ({"date": "20260310-20260311"}, ["ACC1", "ACC2", "ACC3"]),
    ({"date": "20260311-"}, ["ACC3", "ACC4"]),
    ({"name": "Doe*"}, ["ACC1", "ACC3"]),
    ({"name": "dupont^marie"}, ["ACC2"]),
    ({"date": "20260310", "time": "1200-2359"}, ["ACC2"]),
    # one date-time range (03-10 08:30 to 03-11 10:00), not a time window on each day
    ({"date": "20260310-20260311", "time": "0830-1000"}, ["ACC1", "ACC2", "ACC3"]),
    ({"modality": "CT", "station": "CT2"}, ["ACC2"]),
    ({"station": "NOSUCH"}, []),
])
def test_findscu_matching(site: dict[str, Any], keys: dict[str, str], expected: list[str]) -> None:
    assert accessions(findscu_w(site, **keys)) == expected


def test_api_and_cli_list_the_same_entries_and_roles_are_enforced(site: dict[str, Any]) -> None:
    reader, writer = site["http"]["reader"], site["http"]["writer"]
    listed = reader.get("/api/worklist", params={"modality": "CT"})
    assert listed.status_code == 200
    assert sorted(e["accession"] for e in listed.json()) == ["ACC1", "ACC2", "ACC4"]
    cli_rows = json.loads(cli(site["data"], "worklist", "list", "--station-ae", "CT1", "--json").stdout)
    assert sorted(e["accession"] for e in cli_rows) == ["ACC1", "ACC4"]
    refused = reader.post("/api/worklist", json={"patient_id": "X", "accession": "NOPE"})
    assert refused.status_code == 403
    assert reader.delete("/api/worklist/ACC4%5EACC4%5EACC4").status_code == 403
    bad = writer.post("/api/worklist", json={"patient_id": "X", "accession": "BAD", "start": "tomorrow"})
    assert bad.status_code == 400 and "start" in bad.text
    dup = writer.post("/api/worklist", json={"patient_id": "P1", "accession": "ACC1"})
    assert dup.status_code == 409


def _create_attrs(entry: dict[str, Any], station: str = "CT1") -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID = entry["study_uid"]
    item.AccessionNumber = entry["accession"]
    item.RequestedProcedureID = entry["requested_procedure_id"]
    item.ScheduledProcedureStepID = entry["sps_id"]
    item.RequestedProcedureDescription = entry["procedure"]
    item.ScheduledProcedureStepDescription = ""
    item.ReferencedStudySequence = []
    ds.ScheduledStepAttributesSequence = [item]
    ds.PatientName = entry["patient_name"]
    ds.PatientID = entry["patient_id"]
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.ReferencedPatientSequence = []
    ds.PerformedProcedureStepID = "PPS-" + entry["accession"]
    ds.PerformedStationAETitle = station
    ds.PerformedStationName = ""
    ds.PerformedLocation = ""
    ds.PerformedProcedureStepStartDate = "20260310"
    ds.PerformedProcedureStepStartTime = "0902"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.PerformedProcedureStepDescription = ""
    ds.PerformedProcedureTypeDescription = ""
    ds.ProcedureCodeSequence = []
    ds.PerformedProcedureStepEndDate = ""
    ds.PerformedProcedureStepEndTime = ""
    ds.Modality = "CT"
    ds.StudyID = ""
    ds.PerformedProtocolCodeSequence = []
    ds.PerformedSeriesSequence = []
    return ds


def _final(status: str, series_uid: str | None) -> Dataset:
    ds = Dataset()
    ds.PerformedProcedureStepStatus = status
    ds.PerformedProcedureStepEndDate = "20260310"
    ds.PerformedProcedureStepEndTime = "0930"
    if series_uid is not None:
        s = Dataset()
        s.PerformingPhysicianName = ""
        s.ProtocolName = "Chest"
        s.OperatorsName = ""
        s.SeriesInstanceUID = series_uid
        s.SeriesDescription = "axial"
        s.RetrieveAETitle = ARCHIVE_AE
        refs = []
        for _ in range(3):
            r = Dataset()
            r.ReferencedSOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
            r.ReferencedSOPInstanceUID = generate_uid()
            refs.append(r)
        s.ReferencedImageSequence = refs
        s.ReferencedNonImageCompositeSOPInstanceSequence = []
        ds.PerformedSeriesSequence = [s]
    return ds


@pytest.fixture()
def mpps_assoc(site: dict[str, Any]) -> Iterator[Any]:
    ae = AE(ae_title="CT1")
    ae.add_requested_context(MPPS)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    assoc = ae.associate(HOST, site["archive"].port, ae_title=ARCHIVE_AE)
    assert assoc.is_established
    try:
        yield assoc
    finally:
        assoc.release()


def _status(rsp: Dataset) -> int:
    return int(rsp.Status)


def test_mpps_in_progress_then_completed_takes_the_entry_off_the_worklist(
        site: dict[str, Any], mpps_assoc: Any) -> None:
    entry = site["entries"]["ACC1"]
    uid = generate_uid()
    rsp, _ = mpps_assoc.send_n_create(_create_attrs(entry), MPPS, uid)
    assert _status(rsp) == 0x0000
    shown = json.loads(cli(site["data"], "worklist", "show", entry["key"], "--json").stdout)
    assert shown["status"] == "STARTED" and shown["mpps"] == [uid]
    started = [r for r in findscu_w(site, station="CT1") if r.AccessionNumber == "ACC1"]
    assert started[0].ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus == "STARTED"

    series = generate_uid()
    rsp, _ = mpps_assoc.send_n_set(_final("COMPLETED", series), MPPS, uid)
    assert _status(rsp) == 0x0000
    assert accessions(findscu_w(site, station="CT1")) == ["ACC4"]
    shown = json.loads(cli(site["data"], "worklist", "show", entry["key"], "--json").stdout)
    assert shown["status"] == "COMPLETED"
    assert [(s["series_uid"], s["images"]) for s in shown["performed_series"]] == [(series, 3)]
    assert shown["mpps_steps"][0]["status"] == "COMPLETED"
    api = site["http"]["reader"].get("/api/worklist/" + urllib.parse.quote(entry["key"], safe=""))
    assert api.status_code == 200
    assert api.json()["status"] == "COMPLETED"
    assert api.json()["performed_series"][0]["series_uid"] == series
    human = cli(site["data"], "worklist", "show", entry["key"]).stdout
    assert "COMPLETED" in human and series in human
    # the study the modality stored under the scheduled study UID shows the step too
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID = entry["study_uid"], series, generate_uid()
    ct.file_meta.MediaStorageSOPInstanceUID = ct.SOPInstanceUID
    part10 = io.BytesIO()
    ct.save_as(part10, enforce_file_format=True)
    writer = site["http"]["writer"]
    assert writer.post("/api/instances", content=part10.getvalue()).status_code == 200
    study = site["http"]["reader"].get(f"/api/studies/{entry['study_uid']}").json()
    assert [(p["key"], p["status"], p["mpps"]) for p in study["procedure_steps"]] == [
        (entry["key"], "COMPLETED", [uid])]

    # a completed step may no longer be updated (PS3.4 F.7.2.2.4)
    rsp, _ = mpps_assoc.send_n_set(_final("DISCONTINUED", series), MPPS, uid)
    assert _status(rsp) == 0x0110
    assert rsp.ErrorComment == "Performed Procedure Step Object may no longer be updated"
    assert int(rsp.ErrorID) == 0xA710
    # the entry stays off the list, the listing with --all still shows it
    assert "ACC1" not in [e["accession"] for e in site["http"]["reader"].get("/api/worklist").json()]
    assert "ACC1" in [e["accession"] for e in site["http"]["reader"].get("/api/worklist?all=1").json()]


def test_mpps_refusals(site: dict[str, Any], mpps_assoc: Any) -> None:
    entry = site["entries"]["ACC2"]
    rsp, _ = mpps_assoc.send_n_set(_final("COMPLETED", generate_uid()), MPPS,
                                   generate_uid())
    assert _status(rsp) == 0x0112  # no such SOP instance

    wrong = _create_attrs(entry)
    wrong.PerformedProcedureStepStatus = "COMPLETED"
    rsp, _ = mpps_assoc.send_n_create(wrong, MPPS, generate_uid())
    assert _status(rsp) == 0x0106
    missing = _create_attrs(entry)
    del missing.PerformedStationAETitle
    rsp, _ = mpps_assoc.send_n_create(missing, MPPS, generate_uid())
    assert _status(rsp) == 0x0120
    assert "PerformedStationAETitle" in rsp.ErrorComment

    uid = generate_uid()
    rsp, _ = mpps_assoc.send_n_create(_create_attrs(entry, station="CT2"), MPPS, uid)
    assert _status(rsp) == 0x0000
    rsp, _ = mpps_assoc.send_n_create(_create_attrs(entry, station="CT2"), MPPS, uid)
    assert _status(rsp) == 0x0111  # duplicate
    rsp, _ = mpps_assoc.send_n_set(_final("COMPLETED", None), MPPS, uid)
    assert _status(rsp) == 0x0121  # completed without a performed series
    patient = Dataset()
    patient.PatientID = "SOMEONE-ELSE"
    rsp, _ = mpps_assoc.send_n_set(patient, MPPS, uid)
    assert _status(rsp) == 0x0106  # N-SET may not change the patient
    rsp, _ = mpps_assoc.send_n_set(_final("DISCONTINUED", generate_uid()), MPPS, uid)
    assert _status(rsp) == 0x0000
    shown = site["http"]["reader"].get("/api/worklist/" + urllib.parse.quote(entry["key"], safe="")).json()
    assert shown["status"] == "DISCONTINUED"
    assert "ACC2" not in accessions(findscu_w(site))


def test_unscheduled_mpps_is_kept_without_an_entry(site: dict[str, Any], mpps_assoc: Any) -> None:
    ds = _create_attrs({"study_uid": generate_uid(), "accession": "", "requested_procedure_id": "",
                        "sps_id": "", "procedure": "", "patient_name": "Walk^In", "patient_id": "W1"})
    rsp, _ = mpps_assoc.send_n_create(ds, MPPS)  # the SCP assigns the UID
    assert _status(rsp) == 0x0000
    with Engine(site["data"], read_only=True) as engine:  # beside the running server
        steps = [s for s in WorklistStore(engine.index).mpps_all()
                 if Dataset.from_json(s["attrs"]).PatientID == "W1"]
    assert len(steps) == 1 and steps[0]["entries"] == [] and steps[0]["status"] == "IN PROGRESS"
    assert steps[0]["uid"].startswith("1.2.") and steps[0]["caller"] == "CT1"


def test_cli_remove_and_api_delete_through_the_running_server(site: dict[str, Any]) -> None:
    writer = site["http"]["writer"]
    r = writer.post("/api/worklist", json={"patient_id": "P9", "accession": "ACC9", "modality": "US",
                                           "station_ae": "US1", "start": "2026-03-10 10:00"})
    assert r.status_code == 201
    assert accessions(findscu_w(site, station="US1")) == ["ACC9"]
    cli(site["data"], "worklist", "remove", "ACC9^ACC9^ACC9", "--cancel")
    assert accessions(findscu_w(site, station="US1")) == []
    assert writer.get("/api/worklist/ACC9%5EACC9%5EACC9").json()["status"] == "CANCELED"
    assert writer.delete("/api/worklist/ACC9%5EACC9%5EACC9").status_code == 200
    assert writer.get("/api/worklist/ACC9%5EACC9%5EACC9").status_code == 404
    assert "ACC9" in cli(site["data"], "worklist", "remove", "ACC9^ACC9^ACC9", check=False).stderr


def test_a_peer_without_the_worklist_service_cannot_query_it(site: dict[str, Any]) -> None:
    cli(site["data"], "peers", "add", "NOWL", HOST, "--allow", "query")
    findscu_w(site, aet="NOWL", check=False)
    assert "worklist not allowed for this peer" in site["archive"].log_text()
    cli(site["data"], "peers", "add", "WLONLY", HOST, "--allow", "worklist")
    assert accessions(findscu_w(site, aet="WLONLY", modality="MR")) == ["ACC3"]


def test_worklist_and_mpps_through_receiver_processes(tmp_path: Path, dcmtk: None) -> None:
    """With `workers = 2` the receivers relay worklist and MPPS associations to the writer."""
    arch = start_archive(tmp_path, free_port(), free_port(), workers=2)
    try:
        deadline = time.monotonic() + 30
        while not (arch.data / "http.json").exists():
            assert time.monotonic() < deadline, arch.log_text()
            time.sleep(0.05)
        entry = json.loads(cli(arch.data, "worklist", "add", "--patient-id", "PW", "--accession", "W1",
                               "--modality", "CT", "--station-ae", "CTW", "--json").stdout)
        site = {"tmp": tmp_path, "archive": arch}
        assert accessions(findscu_w(site, station="CTW")) == ["W1"]
        ae = AE(ae_title="CTW")
        ae.add_requested_context(MPPS)
        assoc = ae.associate(HOST, arch.port, ae_title=ARCHIVE_AE)
        assert assoc.is_established
        try:
            attrs = _create_attrs({**entry, "procedure": ""}, station="CTW")
            rsp, _ = assoc.send_n_create(attrs, MPPS, generate_uid())
            assert _status(rsp) == 0x0000
        finally:
            assoc.release()
        shown = json.loads(cli(arch.data, "worklist", "show", entry["key"], "--json").stdout)
        assert shown["status"] == "STARTED"
    finally:
        assert stop_archive(arch) == 0, arch.log_text()[-4000:]


def test_pynetdicom_worklist_query_in_utf8(site: dict[str, Any]) -> None:
    r = site["http"]["writer"].post("/api/worklist", json={
        "patient_id": "P8", "patient_name": "Müller^Jürgen", "accession": "ACC8", "modality": "DX",
        "station_ae": "DX1", "start": "2026-03-10 11:00"})
    assert r.status_code == 201, r.text
    ae = AE(ae_title="DX1")
    ae.add_requested_context(ModalityWorklistInformationFind)
    assoc = ae.associate(HOST, site["archive"].port, ae_title=ARCHIVE_AE)
    assert assoc.is_established
    q = Dataset()
    q.PatientName = "Mü*"
    q.PatientID = ""
    item = Dataset()
    item.ScheduledStationAETitle = "DX1"
    item.ScheduledProcedureStepStartDate = ""
    q.ScheduledProcedureStepSequence = [item]
    q.SpecificCharacterSet = "ISO_IR 192"
    try:
        answers = [(int(s.Status), ident)
                   for s, ident in assoc.send_c_find(q, ModalityWorklistInformationFind)]
    finally:
        assoc.release()
    assert [code for code, _ in answers] == [0xFF00, 0x0000]
    match = answers[0][1]
    assert str(match.PatientName) == "Müller^Jürgen" and match.SpecificCharacterSet == "ISO_IR 192"
    assert match.ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate == "20260310"
    # an ATNA Query record, with the step's keys from inside the sequence (written within ~2 s)
    audit = site["data"] / "audit" / "audit.jsonl"
    deadline = time.monotonic() + 15
    while True:
        records = [json.loads(line) for line in audit.read_text().splitlines() if line.strip()]
        mine = [r for r in records if r["detail"].get("level") == "WORKLIST" and r["user"] == "DX1"]
        if mine or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert mine and mine[-1]["detail"]["keys"] == {"PatientName": "Mü*", "ScheduledStationAETitle": "DX1"}
    assert mine[-1]["detail"]["matches"] == 1 and mine[-1]["event"] == "query"


def test_acknowledged_entries_and_steps_survive_kill_9(tmp_path: Path, dcmtk: None) -> None:
    arch = start_archive(tmp_path, free_port(), free_port())
    try:
        deadline = time.monotonic() + 30
        while not (arch.data / "http.json").exists():
            assert time.monotonic() < deadline, arch.log_text()
            time.sleep(0.05)
        entry = json.loads(cli(arch.data, "worklist", "add", "--patient-id", "PK", "--accession", "K1",
                               "--modality", "CT", "--station-ae", "CTK", "--json").stdout)
        ae = AE(ae_title="CTK")
        ae.add_requested_context(MPPS)
        assoc = ae.associate(HOST, arch.port, ae_title=ARCHIVE_AE)
        assert assoc.is_established
        uid = generate_uid()
        rsp, _ = assoc.send_n_create(_create_attrs({**entry, "procedure": ""}, station="CTK"), MPPS, uid)
        assert _status(rsp) == 0x0000
        arch.proc.kill()  # SIGKILL right after the acknowledgement: no clean shutdown
        arch.proc.wait(10)
    finally:
        if arch.proc.poll() is None:
            stop_archive(arch)
    with Engine(arch.data, read_only=True) as engine:
        store = WorklistStore(engine.index)
        assert store.require(entry["key"]).status == "STARTED"
        assert store.get_mpps(uid)["status"] == "IN PROGRESS"  # type: ignore[index]


def test_a_key_with_a_slash_is_addressable(site: dict[str, Any]) -> None:
    writer = site["http"]["writer"]
    r = writer.post("/api/worklist", json={"patient_id": "P7", "accession": "R/7", "station_ae": "XA1"})
    assert r.status_code == 201 and r.json()["key"] == "R/7^R/7^R/7"
    path = "/api/worklist/" + urllib.parse.quote("R/7^R/7^R/7", safe="")
    assert writer.get(path).json()["station_ae"] == "XA1"
    assert writer.delete(path).status_code == 200
    assert writer.get(path).status_code == 404
