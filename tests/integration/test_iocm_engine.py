"""IOCM in the engine and index: hiding, late arrivals, restore, delete policy, consistency."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from dv_iocm import ct_series, rejection_note

from dicomvault.audit.atna import AuditSource, render
from dicomvault.engine import Engine
from dicomvault.errors import UnknownObjectError


def _visible(eng: Engine, study_uid: str) -> set[str]:
    return {r["SOPInstanceUID"] for r in eng.index.find("IMAGE", {"StudyInstanceUID": study_uid,
                                                                 "SOPInstanceUID": ""})}


def test_rejection_hides_and_restore_brings_back(tmp_path: Path) -> None:
    images = ct_series(tmp_path / "ct", 4)
    study = images[0].study_uid
    note = rejection_note(tmp_path / "kos.dcm", images[:2])
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        eng.store_files([im.path for im in images])
        before = eng.index.get_study(study)
        assert before is not None and before.num_instances == 4
        res = eng.store_files([tmp_path / "kos.dcm"])
        assert not isinstance(res[0], Exception)
        visible = _visible(eng, study)
        assert visible == {images[2].sop_uid, images[3].sop_uid, note}
        assert eng.index.get_study(study).num_instances == 3  # 2 CT + the note
        assert eng.index.get_instance(images[0].sop_uid) is None
        with pytest.raises(UnknownObjectError):
            eng.read_file(images[0].sop_uid)
        assert images[0].sop_uid not in eng.index.sop_uids_of("study", study)
        assert [e.sop_uid for e in eng.index.rejected(study)] == sorted(im.sop_uid for im in images[:2])
        assert eng.index.check() == []
        restored = eng.index.restore([images[0].sop_uid])
        assert [e.sop_uid for e in restored] == [images[0].sop_uid]
        assert images[0].sop_uid in _visible(eng, study)
        assert eng.read_file(images[0].sop_uid) == images[0].path.read_bytes()
        assert eng.index.check() == []


def test_note_before_images_hides_late_arrivals(tmp_path: Path) -> None:
    images = ct_series(tmp_path / "ct", 3)
    note = rejection_note(tmp_path / "kos.dcm", images[:1], code="113037")
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        eng.store_files([tmp_path / "kos.dcm"])
        eng.store_files([im.path for im in images])
        assert _visible(eng, images[0].study_uid) == {images[1].sop_uid, images[2].sop_uid, note}
        entry = eng.index.rejected()[0]
        assert entry.sop_uid == images[0].sop_uid and entry.record and entry.code == "113037"
        assert eng.index.check() == []
        eng.index.restore([images[0].sop_uid])
        assert eng.read_file(images[0].sop_uid) == images[0].path.read_bytes()


def test_retention_expired_deletes_under_policy(tmp_path: Path) -> None:
    images = ct_series(tmp_path / "ct", 3)
    rejection_note(tmp_path / "kos.dcm", images[:2], code="113039")
    with Engine(tmp_path / "data", min_free_bytes=0, delete_on_retention_expired=True) as eng:
        eng.store_files([im.path for im in images])
        blobs_before = eng.index.stats()["blobs"]
        eng.store_files([tmp_path / "kos.dcm"])
        assert eng.index.rejected_record(images[0].sop_uid) is None
        assert all(e.deleted for e in eng.index.rejected())
        # CT_small copies share pixel data but differ in UIDs: each had its own blob, two freed
        assert eng.index.stats()["blobs"] == blobs_before - 2 + 1
        # a late copy of a deleted instance is not kept
        eng.store_files([images[0].path])
        assert eng.index.get_instance(images[0].sop_uid) is None
        assert eng.index.stats()["blobs"] == blobs_before - 1
        assert eng.index.check() == []


def test_retention_expired_hides_by_default(tmp_path: Path) -> None:
    images = ct_series(tmp_path / "ct", 2)
    rejection_note(tmp_path / "kos.dcm", images[:1], code="113039")
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        eng.store_files([im.path for im in images] + [tmp_path / "kos.dcm"])
        assert eng.index.rejected_record(images[0].sop_uid) is not None
        assert eng.index.check() == []


def test_other_kos_titles_hide_nothing(tmp_path: Path) -> None:
    images = ct_series(tmp_path / "ct", 2)
    rejection_note(tmp_path / "kos.dcm", images[:1], code="113000")  # "Of Interest"
    rejection_note(tmp_path / "kos2.dcm", images[1:], code="113001", scheme="99LOCAL")
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        eng.store_files([im.path for im in images] + [tmp_path / "kos.dcm", tmp_path / "kos2.dcm"])
        assert eng.index.rejected() == []
        assert {im.sop_uid for im in images} <= _visible(eng, images[0].study_uid)


def test_deleting_a_study_deletes_what_is_hidden_in_it(tmp_path: Path) -> None:
    images = ct_series(tmp_path / "ct", 3)
    rejection_note(tmp_path / "kos.dcm", images[:2])
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        eng.store_files([im.path for im in images] + [tmp_path / "kos.dcm"])
        assert eng.delete("study", images[0].study_uid) == 4
        assert eng.index.rejected() == []
        assert eng.index.stats()["blobs"] == 0
        assert eng.index.check() == []


def test_rejection_is_audited_as_instances_accessed_update(tmp_path: Path) -> None:
    images = ct_series(tmp_path / "ct", 2)
    note = rejection_note(tmp_path / "kos.dcm", images[:1], code="113037")
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        eng.store_files([im.path for im in images] + [tmp_path / "kos.dcm"])
        eng.store_files([tmp_path / "kos.dcm"])  # a duplicate note changes nothing: no second record
    lines = (tmp_path / "data" / "audit" / "audit.jsonl").read_text().splitlines()
    recs = [json.loads(x) for x in lines if '"instances-rejected"' in x]
    assert len(recs) == 1
    rec = recs[0]
    assert rec["detail"]["note"] == note and rec["detail"]["instances"] == [images[0].sop_uid]
    assert rec["study"] == images[0].study_uid and rec["patient"] == "IOCM1"
    xml = ET.fromstring(render(rec, AuditSource("DICOMVAULT")))
    ident = xml.find("EventIdentification")
    assert ident is not None and ident.get("EventActionCode") == "U"
    assert ident.find("EventID").get("csd-code") == "110103"
