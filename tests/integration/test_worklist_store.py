"""The worklist store and its matching, in process on a real index: durability across reopen,
reads beside a writer, secondary indexes kept in step with updates, C.2.2.2 matching, the MPPS
rules and their links to entries; and the CLI on a data directory no server holds."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomvault.engine import Engine
from dicomvault.errors import ConflictError, RequestError, UnknownObjectError
from dicomvault.index import Index
from dicomvault.index.role import REPLICA, set_role
from dicomvault.integration.mpps import (
    DUPLICATE_SOP_INSTANCE,
    MISSING_ATTRIBUTE_VALUE,
    NO_LONGER_UPDATABLE_ID,
    PROCESSING_FAILURE,
    MppsRefusal,
    MppsService,
)
from dicomvault.integration.worklist_entry import entry_from_fields, parse_start
from dicomvault.integration.worklist_match import match_value, matches, response
from dicomvault.integration.worklist_store import WorklistStore


def _entry(acc: str, **kw: str) -> dict[str, str]:
    return {"patient_id": "P-" + acc, "patient_name": "Doe^John", "accession": acc, "modality": "CT",
            "station_ae": "CT1", "start": "2026-03-10 09:00", **kw}


def _query(**sps: str) -> Dataset:
    q = Dataset()
    q.AccessionNumber = ""
    q.PatientName = ""
    item = Dataset()
    for k in ("Modality", "ScheduledStationAETitle", "ScheduledProcedureStepStartDate",
              "ScheduledProcedureStepStartTime"):
        setattr(item, k, sps.get(k, ""))
    q.ScheduledProcedureStepSequence = [item]
    return q


def test_entries_are_durable_and_readable_beside_the_writer(tmp_path: Path) -> None:
    path = str(tmp_path / "index")
    with Index.open(path) as idx:
        store = WorklistStore(idx)
        e = store.add(entry_from_fields(_entry("A1")))
        with Index.open(path, read_only=True) as ro:  # what `worklist list` does beside `serve`
            assert [x.key for x in WorklistStore(ro).entries()] == [e.key]
    with Index.open(path) as idx:
        got = WorklistStore(idx).require("A1^A1^A1")
    assert got.study_uid == e.study_uid and got.start_date == "20260310" and got.start_time == "090000"


def test_secondary_indexes_follow_updates_and_removal(tmp_path: Path) -> None:
    with Index.open(str(tmp_path / "index")) as idx:
        store = WorklistStore(idx)
        store.add(entry_from_fields(_entry("A1")))
        store.add(entry_from_fields(_entry("A2", station_ae="CT2", start="2026-03-11 10:00")))
        store.update("A1^A1^A1", station_ae="CT9", start="2026-03-12 07:45")
        assert store.require("A1^A1^A1").start_time == "074500"
        assert [e.key for e in store.entries(station_ae="CT1")] == []
        assert [e.key for e in store.entries(station_ae="CT9")] == ["A1^A1^A1"]
        assert [e.key for e in store.entries(date="20260311-20260312")] == ["A2^A2^A2", "A1^A1^A1"]
        assert [e.key for e in store.entries(date="20260310")] == []
        store.cancel("A2^A2^A2")
        assert [e.key for e in store.entries()] == ["A1^A1^A1"]
        assert store.get("A2^A2^A2").status == "CANCELED"  # type: ignore[union-attr]
        assert len(list(store.find(_query()))) == 1
        store.remove("A1^A1^A1")
        assert store.get("A1^A1^A1") is None and store.entries(station_ae="CT9", active_only=False) == []
        with pytest.raises(UnknownObjectError):
            store.remove("A1^A1^A1")
        with pytest.raises(ConflictError):
            store.add(entry_from_fields(_entry("A2")))
        with pytest.raises(ConflictError):
            store.update("A2^A2^A2", accession="OTHER")


@pytest.mark.parametrize(("vr", "query", "stored", "expected"), [
    ("PN", "doe*", "Doe^John", True),
    ("PN", "D?e^J*", "Doe^John", True),
    ("PN", "Doe", "Doe^John", False),
    ("LO", "p1", "P1", False),  # only person names are case-insensitive
    ("UI", "1.2.3\\1.2.4", "1.2.4", True),
    ("UI", "1.2.3\\1.2.4", "1.2.5", False),
    ("DA", "20260301-20260310", "20260310", True),
    ("DA", "-20260309", "20260310", False),
    ("DA", "20260301-", "", False),  # an empty value does not fall in a range
    ("TM", "0900-0930", "093059", True),  # 0930 covers the whole minute
    ("TM", "0900-0930", "093100", False),
    ("TM", "09", "091500", True),
    ("CS", "", "anything", True),
])
def test_match_value(vr: str, query: str, stored: str, expected: bool) -> None:
    assert match_value(vr, query, stored) is expected


def test_sequence_matching_and_return_keys(tmp_path: Path) -> None:
    entry = entry_from_fields(_entry("A1", procedure="CT chest", procedure_code="CTCH^L^CT chest"))
    ds = entry.as_dataset()
    assert matches(_query(ScheduledStationAETitle="CT1"), ds)
    assert not matches(_query(ScheduledStationAETitle="CT2"), ds)
    assert matches(_query(Modality="C?"), ds)
    stray = _query(ScheduledStationAETitle="CT1")
    stray.QueryRetrieveLevel = "STUDY"  # not a worklist key: ignored, not matched
    assert matches(stray, ds) and "QueryRetrieveLevel" not in response(stray, ds)
    q = Dataset()
    q.RequestedProcedureCodeSequence = []  # universal: the whole sequence comes back
    q.ScheduledProcedureStepSequence = [Dataset()]
    q.ScheduledProcedureStepSequence[0].ScheduledProcedureStepID = ""
    out = response(q, ds)
    assert out.RequestedProcedureCodeSequence[0].CodeMeaning == "CT chest"
    assert list(out.ScheduledProcedureStepSequence[0].keys()) == [0x00400009]  # only the key asked for


@pytest.mark.parametrize(("fields", "message"), [
    ({"patient_id": "P"}, "accession"),
    ({"patient_id": "P", "accession": "A^B"}, "'^'"),
    ({"patient_id": "P", "accession": "A", "start": "next week"}, "start"),
    ({"patient_id": "P", "accession": "A", "patient_birth_date": "1970-01-01"}, "YYYYMMDD"),
    ({"patient_id": "P", "accession": "A", "colour": "red"}, "unknown worklist field"),
    ({"patient_id": "P", "accession": "A" * 17}, "longer than 16"),
])
def test_entry_validation(fields: dict[str, str], message: str) -> None:
    with pytest.raises(RequestError, match=message.replace("^", "\\^")):
        entry_from_fields(fields)


def test_parse_start() -> None:
    assert parse_start("2026-03-10 09:05") == ("20260310", "090500")
    assert parse_start("202603100905") == ("20260310", "0905")
    assert parse_start("2026-03-10") == ("20260310", "")


def _create(study_uid: str, accession: str = "") -> Dataset:
    ds = Dataset()
    item = Dataset()
    item.StudyInstanceUID = study_uid
    item.AccessionNumber = accession
    ds.ScheduledStepAttributesSequence = [item]
    ds.PerformedProcedureStepID = "1"
    ds.PerformedStationAETitle = "CT1"
    ds.PerformedProcedureStepStartDate = "20260310"
    ds.PerformedProcedureStepStartTime = "0900"
    ds.PerformedProcedureStepStatus = "IN PROGRESS"
    ds.Modality = "CT"
    ds.PerformedSeriesSequence = []
    return ds


def test_mpps_links_by_study_uid_and_refuses_updates_once_final(tmp_path: Path) -> None:
    with Index.open(str(tmp_path / "index")) as idx:
        store = WorklistStore(idx)
        entry = store.add(entry_from_fields(_entry("A1")))
        mpps = MppsService(store)
        uid = generate_uid()
        rec = mpps.create(uid, _create(entry.study_uid), "CT1")  # no IDs: linked by the study UID
        assert rec["entries"] == [entry.key] and store.require(entry.key).status == "STARTED"
        with pytest.raises(MppsRefusal) as dup:
            mpps.create(uid, _create(entry.study_uid), "CT1")
        assert dup.value.status == DUPLICATE_SOP_INSTANCE
        final = Dataset()
        final.PerformedProcedureStepStatus = "COMPLETED"
        final.PerformedProcedureStepEndDate = "20260310"
        final.PerformedProcedureStepEndTime = ""
        with pytest.raises(MppsRefusal) as empty:
            mpps.set(uid, final, "CT1")
        assert empty.value.status == MISSING_ATTRIBUTE_VALUE and "EndTime" in empty.value.comment
        assert store.require(entry.key).status == "STARTED"  # a refused N-SET changes nothing
        final.PerformedProcedureStepEndTime = "0915"
        series = Dataset()
        series.SeriesInstanceUID = generate_uid()
        series.ReferencedImageSequence = []
        final.PerformedSeriesSequence = [series]
        mpps.set(uid, final, "CT1")
        after = store.require(entry.key)
        assert after.status == "COMPLETED"
        assert after.performed_series[0]["series_uid"] == series.SeriesInstanceUID
        with pytest.raises(MppsRefusal) as late:
            mpps.set(uid, final, "CT1")
        assert (late.value.status, late.value.error_id) == (PROCESSING_FAILURE, NO_LONGER_UPDATABLE_ID)
    with Index.open(str(tmp_path / "index"), read_only=True) as ro:  # all of it durable
        assert WorklistStore(ro).get_mpps(uid)["status"] == "COMPLETED"  # type: ignore[index]


def _cli(data: Path, *args: str) -> str:
    return subprocess.run([sys.executable, "-m", "dicomvault.cli", "worklist", *args, "--data", str(data)],
                          check=True, capture_output=True, text=True, timeout=60).stdout


def test_cli_without_a_server(tmp_path: Path) -> None:
    data = tmp_path / "data"
    out = _cli(data, "add", "--patient-id", "P1", "--patient-name", "Doe^John", "--accession", "A1",
               "--modality", "CT", "--station-ae", "CT1", "--start", "2026-03-10 09:00",
               "--procedure", "CT head")
    assert out.startswith("scheduled A1^A1^A1: study ")
    rows = json.loads(_cli(data, "list", "--json"))
    assert [(r["key"], r["procedure"]) for r in rows] == [("A1^A1^A1", "CT head")]
    table = _cli(data, "list")
    assert "A1^A1^A1" in table and "2026-03-10 09:00" in table and "(1 entries)" in table
    assert "SCHEDULED" in _cli(data, "show", "A1^A1^A1")
    _cli(data, "remove", "A1^A1^A1")
    assert json.loads(_cli(data, "list", "--all", "--json")) == []


def test_cli_refuses_to_schedule_on_a_replica(tmp_path: Path) -> None:
    data = tmp_path / "data"
    with Engine(data) as engine:
        set_role(engine.index, REPLICA)
    proc = subprocess.run([sys.executable, "-m", "dicomvault.cli", "worklist", "add", "--patient-id", "P",
                           "--accession", "A", "--data", str(data)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "is a replica" in proc.stderr
    with Engine(data, read_only=True) as engine:
        assert WorklistStore(engine.index).entries(active_only=False) == []
