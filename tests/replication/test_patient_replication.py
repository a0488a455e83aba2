"""Patient corrections reach a DR replica: an update, a merge and its undoing are replayed from the
change feed, so the replica answers queries and retrieves with the same values as its primary."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
from dv_iocm import ct_series
from test_iocm_replication import catch_up

from dicomvault.engine import Engine


def _patient_of(eng: Engine, sop: str) -> tuple[str, str]:
    ds = pydicom.dcmread(io.BytesIO(eng.read_file(sop)))
    return str(ds.PatientID), str(ds.PatientName)


def test_replica_follows_updates_merges_and_their_undoing(primary, tmp_path: Path) -> None:
    eng, site = primary
    a = ct_series(tmp_path / "a", 2, patient_id="A1")
    b = ct_series(tmp_path / "b", 2, patient_id="B1")
    eng.store_files([im.path for im in a + b])
    with Engine(tmp_path / "replica", min_free_bytes=0) as rep:
        catch_up(rep, site.url)
        eng.index.update_patient("A1", {"PatientName": "Fixed^Name"})
        eng.index.merge_patients("B1", "A1")
        catch_up(rep, site.url)
        for e in (eng, rep):
            assert _patient_of(e, a[0].sop_uid) == ("A1", "Fixed^Name")
            assert _patient_of(e, b[1].sop_uid) == ("A1", "Fixed^Name")
            rows = e.index.find("STUDY", {"PatientID": "A1", "PatientName": "", "StudyInstanceUID": ""})
            assert {r["StudyInstanceUID"] for r in rows} == {a[0].study_uid, b[0].study_uid}
        assert [m.prior_id for m in rep.index.merges()] == ["B1"]
        eng.index.unmerge_patients("B1")
        catch_up(rep, site.url)
        assert _patient_of(rep, b[1].sop_uid) == ("B1", "IOCM^TEST")
        assert rep.read_file(b[1].sop_uid) == eng.read_file(b[1].sop_uid) == b[1].path.read_bytes()
        assert rep.index.check() == [] and eng.index.check() == []
        catch_up(rep, site.url)  # a replayed page changes nothing
        assert rep.index.check() == []
