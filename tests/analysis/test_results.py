"""The analysis results store (analysis/results.py) on a real index: a run replaces the previous
run of the same analyzer instance only, the flag summary and the flagged-study keys follow every
change, trends come in study date order with the change since the previous study, read by a
prefix scan of the patient's own keys, and everything survives a reopen."""

from __future__ import annotations

import math
import shutil
import subprocess
from io import BytesIO
from pathlib import Path
from typing import Any

import highdicom as hd
import numpy as np
import pytest
from dv_analysis import BLOCK, analysed_study, result
from pydicom.dataset import Dataset

from dicomvault.analysis import results
from dicomvault.analysis.api import URGENT, WARNING, Flag, Measurement, Result
from dicomvault.engine import Engine
from dicomvault.index import keys as K


def _bytes(ds: Dataset) -> bytes:
    buf = BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _store(eng: Engine, objects: list[Dataset]) -> None:
    for outcome in eng.store_buffers([_bytes(o) for o in objects]):
        assert not isinstance(outcome, Exception), outcome


def _record(eng: Engine, study: Any, res: Result,
            stored: list[tuple[str, str, str]] | None = None) -> None:
    results.record(eng.index, study_uid=study.study_uid, patient_id=study.patient_id,
                   study_date=study.study_date, result=res,
                   stored=study.stored() if stored is None else stored)


@pytest.fixture
def eng(tmp_path: Path) -> Engine:
    with Engine(tmp_path / "data", min_free_bytes=0) as e:
        yield e


def test_study_results_have_the_agreed_shape(eng: Engine) -> None:
    s = analysed_study(patient_id="P1", patient_name="One^Pat", study_date="20240105")
    _store(eng, s.objects())
    _record(eng, s, result("ct-chest", s.ct_series, volume=2.4, emphysema=7.5,
                           flags=[("chest.emphysema", WARNING, "Emphysema index 7.5 % in series 1")]))
    _record(eng, s, result("quality", s.ct_series, volume=2.4,
                           flags=[("quality.missing_slices", URGENT, "Series 1: slice 4 missing")]),
            stored=[])
    out = results.study_results(eng.index, s.study_uid)
    assert set(out) == {"study_uid", "flags", "measurements", "objects"}
    assert out["study_uid"] == s.study_uid
    # most severe first, whatever the analyzer's name
    assert [(f["analyzer"], f["severity"]) for f in out["flags"]] == [("quality", URGENT),
                                                                   ("ct-chest", WARNING)]
    assert set(out["flags"][0]) == {"analyzer", "code", "reason", "severity", "score", "series_uid"}
    assert out["flags"][0]["score"] == 0.9 and out["flags"][0]["series_uid"] == s.ct_series
    assert [(m["analyzer"], m["key"], m["value"], m["unit"]) for m in out["measurements"]] == [
        ("ct-chest", "block_volume", 2.4, "mL"), ("ct-chest", "emphysema_index", 7.5, "%"),
        ("quality", "block_volume", 2.4, "mL")]
    assert set(out["measurements"][0]) == {"analyzer", "key", "label", "value", "unit", "series_uid"}
    assert sorted(o["sop_uid"] for o in out["objects"]) == sorted(x[0] for x in s.stored())
    assert {o["analyzer"] for o in out["objects"]} == {"ct-chest"}
    assert set(out["objects"][0]) == {"analyzer", "sop_uid", "series_uid", "sop_class_uid"}

    summary = results.flag_summary(eng.index, s.study_uid)
    assert summary is not None and summary["severity"] == URGENT
    assert summary["reasons"] == ["Series 1: slice 4 missing", "Emphysema index 7.5 % in series 1"]
    assert results.flagged_studies(eng.index) == {s.study_uid: URGENT}
    assert results.flagged_studies(eng.index, [WARNING]) == {}


def test_a_run_replaces_the_previous_run_of_its_analyzer_only(eng: Engine) -> None:
    s = analysed_study(patient_id="P2", patient_name="Two^Pat", study_date="20240106")
    _store(eng, s.objects())
    _record(eng, s, result("quality", s.ct_series, volume=1.0,
                           flags=[("quality.missing_slices", URGENT, "slice 4 missing")]))
    _record(eng, s, result("ct-chest", s.ct_series, volume=2.0,
                           flags=[("chest.emphysema", WARNING, "emphysema")]), stored=[])
    assert results.flagged_studies(eng.index) == {s.study_uid: URGENT}

    # quality again, now finding nothing: its measurement, flag and objects go; ct-chest's stay
    _record(eng, s, result("quality", s.ct_series, volume=3.0), stored=[])
    out = results.study_results(eng.index, s.study_uid)
    assert [(m["analyzer"], m["value"]) for m in out["measurements"]] == [("ct-chest", 2.0),
                                                                        ("quality", 3.0)]
    assert [f["analyzer"] for f in out["flags"]] == ["ct-chest"]
    assert out["objects"] == []
    # the summary and the flagged-study keys moved down to warning, with no urgent key left behind
    assert results.flag_summary(eng.index, s.study_uid)["severity"] == WARNING
    assert results.flagged_studies(eng.index, [URGENT]) == {}
    assert results.flagged_studies(eng.index, [WARNING]) == {s.study_uid: WARNING}
    # trends hold one point per analyzer and key for the study: the replaced run's value is gone
    t = {(x["analyzer"], x["key"]): x for x in results.trends(eng.index, "P2")["trends"]}
    assert [p["value"] for p in t[("quality", "block_volume")]["points"]] == [3.0]

    # and the last flag gone: the study is no longer flagged
    _record(eng, s, result("ct-chest", s.ct_series, volume=2.0), stored=[])
    assert results.flag_summary(eng.index, s.study_uid) is None
    assert results.flagged_studies(eng.index) == {}


def test_trends_in_study_date_order_with_the_change_since_the_last_study(eng: Engine) -> None:
    dates_values = [("20230610", 5.0, 3000.0), ("20210301", 4.0, 3200.0), ("20240115", 6.5, 2900.0)]
    studies = []
    for date, emph, vol in dates_values:  # recorded out of date order
        s = analysed_study(patient_id="PT-7", patient_name="Trend^Pat", study_date=date, with_objects=False)
        _store(eng, s.ct)
        _record(eng, s, result("ct-chest", s.ct_series, volume=vol, emphysema=emph), stored=[])
        studies.append(s)
    other = analysed_study(patient_id="PT-8", patient_name="Other^Pat", study_date="20220101",
                           with_objects=False)
    _store(eng, other.ct)
    _record(eng, other, result("ct-chest", other.ct_series, volume=1.0, emphysema=50.0), stored=[])

    out = results.trends(eng.index, "PT-7")
    assert out["patient_id"] == "PT-7"
    assert [(t["analyzer"], t["key"]) for t in out["trends"]] == [("ct-chest", "block_volume"),
                                                                  ("ct-chest", "emphysema_index")]
    emph = out["trends"][1]
    assert set(emph) == {"analyzer", "key", "label", "unit", "points", "change"}
    by_date = sorted(dates_values)
    assert [p["study_date"] for p in emph["points"]] == [d for d, _, _ in by_date]
    assert [p["value"] for p in emph["points"]] == [e for _, e, _ in by_date]
    uid_of = {s.study_date: s.study_uid for s in studies}
    assert [p["study_uid"] for p in emph["points"]] == [uid_of[d] for d, _, _ in by_date]
    assert emph["change"]["since"] == "20230610"
    assert emph["change"]["absolute"] == pytest.approx(1.5)
    assert emph["change"]["relative"] == pytest.approx(0.3)
    vol = out["trends"][0]
    assert vol["change"]["absolute"] == pytest.approx(-100.0) and vol["unit"] == "mL"

    # a deleted study drops out of the trend; one study left gives no change
    eng.delete("study", uid_of["20240115"])
    eng.delete("study", uid_of["20210301"])
    emph = results.trends(eng.index, "PT-7")["trends"][1]
    assert [p["study_date"] for p in emph["points"]] == ["20230610"] and emph["change"] is None
    assert results.trends(eng.index, "nobody") == {"patient_id": "nobody", "trends": []}


class CountingIndex:
    """The real index, with its meta reads counted: which prefixes were scanned, how many
    records came back, how many study records were read."""

    def __init__(self, index: Any) -> None:
        self._index = index
        self.prefixes: list[bytes] = []
        self.rows = 0
        self.study_reads = 0

    def meta_items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        out = self._index.meta_items(prefix)
        self.prefixes.append(prefix)
        self.rows += len(out)
        return out

    def get_study(self, uid: str) -> Any:
        self.study_reads += 1
        return self._index.get_study(uid)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._index, name)


def test_trends_read_the_patients_keys_only(eng: Engine) -> None:
    mine = []
    for i in range(3):
        s = analysed_study(patient_id="SCAN-ME", patient_name="Me^Pat", study_date=f"2020010{i + 1}",
                           with_objects=False)
        _store(eng, s.ct)
        _record(eng, s, result("ct-chest", s.ct_series, volume=1.0 + i), stored=[])
        _record(eng, s, result("quality", s.ct_series, volume=1.0), stored=[])
        mine.append(s)
    for i in range(25):  # other patients, one of them with an ID that extends ours
        pid = "SCAN-ME2" if i == 0 else f"OTHER-{i}"
        s = analysed_study(patient_id=pid, patient_name="Other^Pat", study_date="20200101",
                           with_objects=False)
        _store(eng, s.ct)
        _record(eng, s, result("ct-chest", s.ct_series, volume=9.0), stored=[])
    counting = CountingIndex(eng.index)
    out = results.trends(counting, "SCAN-ME")  # type: ignore[arg-type]
    assert counting.prefixes == [results.BY_PATIENT + K.encode("SCAN-ME")]
    assert counting.rows == 6  # 3 studies x 2 analyzers, nothing of the 25 other patients
    assert counting.study_reads == 3  # one existence check per study, not per point
    assert [p["value"] for p in out["trends"][0]["points"]] == [1.0, 2.0, 3.0]


def test_results_survive_a_reopen_and_forget_study_drops_them(tmp_path: Path) -> None:
    s = analysed_study(patient_id="P9", patient_name="Dur^Able", study_date="20240301")
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        _store(eng, s.objects())
        _record(eng, s, result("ct-chest", s.ct_series, volume=2.4,
                               flags=[("chest.large", URGENT, "large block")]))
        before = results.study_results(eng.index, s.study_uid)
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        assert results.study_results(eng.index, s.study_uid) == before
        assert results.flagged_studies(eng.index) == {s.study_uid: URGENT}
        assert results.forget_study(eng.index, s.study_uid) == 1
        assert results.study_results(eng.index, s.study_uid)["measurements"] == []
        assert results.flagged_studies(eng.index) == {}
        assert results.trends(eng.index, "P9")["trends"] == []


def test_bad_results_are_refused_naming_the_analyzer_and_study(eng: Engine) -> None:
    s = analysed_study(patient_id="P3", patient_name="Bad^Pat", study_date="20240101", with_objects=False)
    nan = Result("ct-chest", measurements=[Measurement("v", "V", math.nan, "mL")])
    with pytest.raises(ValueError, match=rf"ct-chest.*{s.study_uid}.*'v'"):
        _record(eng, s, nan, stored=[])
    bad = Result("quality", flags=[Flag("q.x", "why", severity="critical")])
    with pytest.raises(ValueError, match=r"quality.*severity 'critical'"):
        _record(eng, s, bad, stored=[])
    with pytest.raises(ValueError, match="no analyzer name"):
        _record(eng, s, Result(""), stored=[])
    assert results.study_results(eng.index, s.study_uid)["measurements"] == []


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) is not installed")
def test_the_seg_and_sr_the_tests_store_are_valid(tmp_path: Path) -> None:
    """The objects the results and viewer tests put in the study stand for the pipeline's: dciodvfy
    finds no error in them, and highdicom reads the SEG back as the block it marks."""
    s = analysed_study(patient_id="V1", patient_name="Valid^Pat", study_date="20240101")
    for name, ds in (("seg", s.seg), ("sr", s.sr)):
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]
        assert errors == [], f"{name}: {errors}"
    seg = hd.seg.Segmentation.from_dataset(s.seg)
    order = [str(d.SOPInstanceUID) for d in s.ct]
    mask = np.zeros((len(s.ct), *s.ct[0].pixel_array.shape), bool)
    for i, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        src = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        mask[order.index(src)] |= seg.pixel_array[i].astype(bool)
    expected = np.zeros_like(mask)
    expected[BLOCK] = True
    assert (mask == expected).all()


def test_trends_follow_a_patient_merge_and_its_undoing(eng: Engine) -> None:
    old = analysed_study(patient_id="TMP-1", patient_name="Temp^Pat", study_date="20220101",
                         with_objects=False)
    new = analysed_study(patient_id="MRN-1", patient_name="Real^Pat", study_date="20240101",
                         with_objects=False)
    for s, emph in ((old, 4.0), (new, 6.0)):
        _store(eng, s.ct)
        _record(eng, s, result("ct-chest", s.ct_series, volume=1.0, emphysema=emph), stored=[])
    eng.index.merge_patients("TMP-1", "MRN-1")
    emph = results.trends(eng.index, "MRN-1")["trends"][1]
    assert [(p["study_date"], p["value"]) for p in emph["points"]] == [("20220101", 4.0), ("20240101", 6.0)]
    assert emph["change"]["absolute"] == pytest.approx(2.0)
    assert results.trends(eng.index, "TMP-1")["trends"] == []  # its study is the survivor's now
    eng.index.unmerge_patients("TMP-1")
    assert [p["value"] for p in results.trends(eng.index, "MRN-1")["trends"][1]["points"]] == [6.0]
    assert [p["value"] for p in results.trends(eng.index, "TMP-1")["trends"][1]["points"]] == [4.0]
