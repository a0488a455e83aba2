"""Hierarchy building, duplicates, replacement, deletes, refcounts, stats, reopen."""

from __future__ import annotations

from pathlib import Path

import pytest
from index_helpers import MakeInst

from dicomvault.index import Index, InvalidInstanceError, NotFoundError, ReadOnlyIndexError


def test_hierarchy_built_with_counts(idx: Index, mk: MakeInst) -> None:
    idx.add_instance(mk("1.1", series="S1", modality="CT", instance_number=2))
    idx.add_instance(mk("1.2", series="S1", modality="CT", instance_number=1))
    idx.add_instance(mk("1.3", series="S2", modality="MR", series_number=2, sop_class="9.9"))
    idx.add_instance(mk("2.1", study="ST2", series="S3", patient_id="PID2", patient_name="Roe^Jane"))

    st = idx.get_study("1.2.840.1")
    assert st is not None
    assert (st.num_series, st.num_instances, st.patient_id) == (2, 3, "PID1")
    assert st.modalities_in_study() == ["CT", "MR"]
    assert st.sop_classes == {"1.2.840.10008.5.1.4.1.1.2": 2, "9.9": 1}
    assert st.logical_bytes == 3000 and st.stored_bytes == 1800
    pa = idx.get_patient("PID1")
    assert pa is not None and (pa.num_studies, pa.num_series, pa.num_instances) == (1, 2, 3)
    assert [s.series_uid for s in idx.series_of("1.2.840.1")] == ["S1", "S2"]
    se = idx.get_series("S1")
    assert se is not None and se.num_instances == 2 and se.modality == "CT"
    # ordered by series, then InstanceNumber
    assert [r.sop_uid for r in idx.instances_of("study", "1.2.840.1")] == ["1.2", "1.1", "1.3"]
    assert [r.sop_uid for r in idx.instances_of("series", "S1")] == ["1.2", "1.1"]
    assert [r.sop_uid for r in idx.instances_of("patient", "PID2")] == ["2.1"]
    assert [r.sop_uid for r in idx.instances_of("instance", "2.1")] == ["2.1"]
    idx.add_instance(mk("2.2", study="ST3", series="S4", patient_id="PID2", patient_name="Roe^Jane"))
    # the SOP UIDs alone (C-GET listing), from the hierarchy index, in the same order
    for level, uid in (("study", "1.2.840.1"), ("series", "S1"), ("patient", "PID2"), ("patient", "PID1"),
                       ("instance", "2.1"), ("instance", "nope"), ("study", "nope")):
        assert idx.sop_uids_of(level, uid) == [r.sop_uid for r in idx.instances_of(level, uid)], (level, uid)
        # ... and with class and syntax (C-MOVE's contexts), from the records' fields
        assert idx.syntaxes_of(level, uid) == [(r.sop_uid, r.sop_class_uid, r.transfer_syntax)
                                               for r in idx.instances_of(level, uid)], (level, uid)
    assert idx.sop_uids_of("patient", "PID2") == ["2.1", "2.2"]
    idx.delete("instance", "2.2")
    assert {p.patient_id for p in idx.patients()} == {"PID1", "PID2"}
    assert {s.study_uid for s in idx.studies()} == {"1.2.840.1", "ST2"}
    inst = idx.get_instance("1.1")
    assert inst is not None and inst.prefix.endswith(b"DICM") and inst.instance_number == 2
    assert inst.transfer_syntax == "1.2.840.10008.1.2.1"
    s = idx.stats()
    assert {k: s[k] for k in ("objects", "studies", "series", "patients", "blobs")} == {
        "objects": 4, "studies": 2, "series": 3, "patients": 2, "blobs": 4}
    assert s["logical_bytes"] == 4000 and s["stored_bytes"] == 2400
    assert idx.check() == []


def test_uid_padding_normalised(idx: Index, mk: MakeInst) -> None:
    idx.add_instance(mk("1.5\x00", study="1.2.840.1 "))
    assert idx.get_instance("1.5") is not None
    assert idx.get_study("1.2.840.1") is not None


def test_missing_uid_rejected(idx: Index, mk: MakeInst) -> None:
    bad = mk("1.9")
    del bad["attrs"]["SeriesInstanceUID"]
    with pytest.raises(InvalidInstanceError, match=r"1\.9 lacks SeriesInstanceUID"):
        idx.add_instance(bad)
    bad = mk("1.8")
    bad["hash"] = b"short"
    with pytest.raises(InvalidInstanceError, match=r"1\.8"):
        idx.add_instance(bad)
    assert idx.stats()["objects"] == 0


def test_duplicate_is_noop(idx: Index, mk: MakeInst) -> None:
    r1 = idx.add_instance(mk("1.1"))
    r2 = idx.add_instance(mk("1.1"))
    assert not r1.duplicate and r1.new_blob and r1.seq == 1
    assert r2.duplicate and r2.seq is None and not r2.released_blobs
    assert idx.stats()["objects"] == 1
    assert idx.last_seq() == 1
    blob = idx.blob(mk("1.1")["hash"])
    assert blob is not None and blob.refcount == 1


def test_duplicates_within_one_batch(idx: Index, mk: MakeInst) -> None:
    res = idx.add_instances([mk("1.1"), mk("1.1"), mk("1.2")])
    assert [r.duplicate for r in res] == [False, True, False]
    assert idx.stats()["objects"] == 2


def test_replacement_keep_newest(idx: Index, mk: MakeInst) -> None:
    old = mk("1.1", content=b"v1", logical_len=1000, stored_len=500)
    new = mk("1.1", content=b"v2", logical_len=2000, stored_len=900, patient_name="Doe^Johnny")
    idx.add_instance(old)
    r = idx.add_instance(new)
    assert r.replaced and not r.duplicate
    assert r.old_hash == old["hash"] and r.released_blobs == [old["hash"]]
    assert idx.blob(old["hash"]) is None
    b = idx.blob(new["hash"])
    assert b is not None and b.refcount == 1
    inst = idx.get_instance("1.1")
    assert inst is not None and inst.hash == new["hash"] and inst.logical_len == 2000
    s = idx.stats()
    assert (s["objects"], s["logical_bytes"], s["stored_bytes"], s["blobs"], s["blob_bytes"]) == (
        1, 2000, 900, 1, 900)
    st = idx.get_study("1.2.840.1")
    assert st is not None and st.num_instances == 1 and st.logical_bytes == 2000
    kinds = [c.kind for c in idx.changes(0, 10)]
    assert kinds == ["stored", "replaced"]
    assert idx.changes(1, 10)[0].old_hash == old["hash"]


def test_replacement_moving_to_other_study(idx: Index, mk: MakeInst) -> None:
    idx.add_instance(mk("1.1", study="A", series="A1", content=b"x"))
    r = idx.add_instance(mk("1.1", study="B", series="B1", patient_id="P9", content=b"y"))
    assert r.replaced
    assert idx.get_study("A") is None and idx.get_series("A1") is None
    assert idx.get_study("B") is not None
    assert idx.get_patient("PID1") is None and idx.get_patient("P9") is not None
    assert idx.stats()["studies"] == 1 and idx.stats()["patients"] == 1


def test_shared_blob_refcount(idx: Index, mk: MakeInst) -> None:
    a = mk("1.1", content=b"same")
    b = mk("1.2", content=b"same")
    assert idx.add_instance(a).new_blob
    assert not idx.add_instance(b).new_blob
    blob = idx.blob(a["hash"])
    assert blob is not None and blob.refcount == 2
    d = idx.delete("instance", "1.1")
    assert d.released_blobs == []
    blob = idx.blob(a["hash"])
    assert blob is not None and blob.refcount == 1
    d = idx.delete("instance", "1.2")
    assert d.released_blobs == [a["hash"]]
    assert list(idx.blobs()) == []


def test_delete_cascades(idx: Index, mk: MakeInst) -> None:
    idx.add_instances([
        mk("1.1", series="S1"), mk("1.2", series="S1"), mk("1.3", series="S2", modality="MR"),
        mk("2.1", study="ST2", series="S3"),
    ])
    d = idx.delete("instance", "1.3")  # last of S2 -> series gone, MR leaves ModalitiesInStudy
    assert d.deleted == ["1.3"] and d.released_blobs == [mk("1.3")["hash"]]
    assert idx.get_series("S2") is None
    st = idx.get_study("1.2.840.1")
    assert st is not None and st.num_series == 1 and st.modalities_in_study() == ["CT"]
    assert list(idx.find("STUDY", {"ModalitiesInStudy": "MR"})) == []
    d = idx.delete("series", "S1")
    assert sorted(d.deleted) == ["1.1", "1.2"] and len(d.released_blobs) == 2
    assert idx.get_study("1.2.840.1") is None
    pa = idx.get_patient("PID1")
    assert pa is not None and pa.num_studies == 1  # ST2 remains
    d = idx.delete("study", "ST2")
    assert d.deleted == ["2.1"]
    assert idx.get_patient("PID1") is None
    s = idx.stats()
    assert all(s[k] == 0 for k in ("objects", "logical_bytes", "stored_bytes", "patients", "studies",
                                    "series", "blobs", "blob_bytes"))
    assert s["last_seq"] == 8  # 4 stored + 4 deleted
    with pytest.raises(NotFoundError, match="ST2"):
        idx.delete("study", "ST2")
    with pytest.raises(NotFoundError, match="nope"):
        idx.delete("instance", "nope")


def test_delete_patient(idx: Index, mk: MakeInst) -> None:
    idx.add_instances([mk("1.1"), mk("2.1", study="ST2", series="X"), mk("3.1", study="O", series="Y",
                                                                         patient_id="OTHER")])
    d = idx.delete("patient", "PID1")
    assert sorted(d.deleted) == ["1.1", "2.1"]
    assert idx.stats()["patients"] == 1 and idx.stats()["objects"] == 1


def test_mixed_operations_keep_stats_exact(index_path: str, mk: MakeInst) -> None:
    import random

    # durability is not under test here: skip the per-commit WAL sync to stay fast
    idx = Index.open(index_path, durable=False)
    rnd = random.Random(7)
    live: dict[str, dict] = {}
    for step in range(300):
        op = rnd.random()
        sop = f"9.{rnd.randrange(60)}"
        study = f"ST{rnd.randrange(5)}"
        if op < 0.6:
            inst = mk(sop, study=study, series=f"{study}.{rnd.randrange(3)}",
                      patient_id=f"P{rnd.randrange(3)}", content=f"{sop}/{rnd.randrange(2)}".encode(),
                      modality=rnd.choice(["CT", "MR"]), logical_len=rnd.randrange(1, 5000),
                      stored_len=rnd.randrange(1, 3000), instance_number=rnd.randrange(10))
            idx.add_instance(inst)
            live[sop] = inst
        elif op < 0.8 and live:
            victim = rnd.choice(sorted(live))
            idx.delete("instance", victim)
            live.pop(victim)
        elif live:
            victim_study = rnd.choice(sorted(live))
            rec = idx.get_instance(victim_study)
            assert rec is not None
            d = idx.delete("study", rec.study_uid)
            for s in d.deleted:
                live.pop(s, None)
        if step % 50 == 0:
            assert idx.check() == []
    assert idx.stats()["objects"] == len(live)
    assert idx.check() == []
    idx.close()


def test_reopen_preserves_everything(index_path: str, mk: MakeInst) -> None:
    with Index.open(index_path) as ix:
        ix.add_instances([mk(f"1.{i}", series=f"S{i % 3}", modality="CT" if i % 2 else "MR")
                          for i in range(20)])
        ix.delete("instance", "1.0")
        before = (ix.stats(), [c.to_wire() for c in ix.changes(0, 100)],
                  list(ix.find("SERIES", {"Modality": "", "NumberOfSeriesRelatedInstances": ""})))
    with Index.open(index_path) as ix:
        after = (ix.stats(), [c.to_wire() for c in ix.changes(0, 100)],
                 list(ix.find("SERIES", {"Modality": "", "NumberOfSeriesRelatedInstances": ""})))
        assert after == before
        assert ix.check() == []
        r = ix.add_instance(mk("1.99"))
        assert r.seq == before[0]["last_seq"] + 1
    with Index.open(index_path, read_only=True) as ro:
        assert ro.stats()["objects"] == 20
        with pytest.raises(ReadOnlyIndexError, match="read-only"):
            ro.add_instance(mk("1.100"))


def test_checkpoint(idx: Index, mk: MakeInst, tmp_path: Path) -> None:
    idx.add_instance(mk("1.1"))
    idx.checkpoint(tmp_path / "ck")
    idx.add_instance(mk("1.2"))
    with Index.open(tmp_path / "ck", read_only=True) as ck:
        assert ck.stats()["objects"] == 1
        assert ck.get_instance("1.1") is not None and ck.get_instance("1.2") is None


def test_entries_follow_every_field_they_derive_from(monkeypatch: pytest.MonkeyPatch) -> None:
    """Hierarchy entries are memoised by what they derive from: a change of any of those gives
    the entries of the new values, and the shared mappings cannot be modified."""
    from dicomvault.index import secondary
    from dicomvault.index.records import SeriesRecord, StudyRecord

    st = StudyRecord(study_uid="1.2.3", patient_id="P1",
                     attrs={"PatientName": "Doe^Jane", "StudyDate": "20240101", "AccessionNumber": "A1"})
    first = secondary.study_entries(st)
    assert secondary.study_entries(st) is first
    with pytest.raises(TypeError):
        first[b"x"] = b""  # type: ignore[index]
    fresh = {k: v for k, v in secondary._study_entries(
        "1.2.3", "P1", "Doe^Jane", "20240101", "A1", ()).items()}
    assert dict(first) == fresh
    for change in (lambda r: r.attrs.update(PatientName="Roe^Jim"),
                   lambda r: r.attrs.update(StudyDate="20240102"),
                   lambda r: r.attrs.update(AccessionNumber="A2"),
                   lambda r: r.modalities.update(CT=1),
                   lambda r: setattr(r, "patient_id", "P2")):
        before = dict(secondary.study_entries(st))
        change(st)
        after = dict(secondary.study_entries(st))
        assert after != before
        assert after == secondary._study_entries(st.study_uid, st.patient_id, st.attrs.get("PatientName"),
                                                 st.attrs.get("StudyDate"), st.attrs.get("AccessionNumber"),
                                                 tuple(st.modalities_in_study()))
    monkeypatch.setattr(secondary, "_ENTRY_CACHE_MAX", 4)
    for i in range(20):
        secondary.series_entries(SeriesRecord(study_uid="1.2", series_uid=f"1.2.{i}", modality="CT"))
    assert len(secondary._ENTRY_CACHE) <= 4


def test_study_listed_in_series_number_order(idx: Index, mk: MakeInst) -> None:
    """A C-GET lists a study series by series in SeriesNumber order (unnumbered last), then by UID,
    whatever order the UIDs sort in; series_of gives the same order."""
    idx.add_instance(mk("1.1", series="S1", series_number=None))
    idx.add_instance(mk("1.2", series="S2", series_number=10))
    idx.add_instance(mk("1.3", series="S3", series_number=2))
    idx.add_instance(mk("1.4", series="S4", series_number=2))
    idx.add_instance(mk("1.0", series="S0", series_number=None))
    # a NUL in the UID: escaped in the keys
    idx.add_instance(mk("1.3\x007", series="S3", series_number=2, instance_number=9))
    order = ["1.3", "1.3\x007", "1.4", "1.2", "1.0", "1.1"]
    assert idx.sop_uids_of("study", "1.2.840.1") == order
    assert list(idx.iter_sop_uids_of("study", "1.2.840.1")) == order
    assert [s.series_uid for s in idx.series_of("1.2.840.1")] == ["S3", "S4", "S2", "S0", "S1"]
