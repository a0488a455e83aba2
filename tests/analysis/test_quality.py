"""The quality analyzer: each defect it claims, crafted into an otherwise clean CT series
(phantoms.py), is found with a flag naming the series, and none is reported on the clean
series; series that legitimately repeat positions (echoes) are not flagged; real pydicom-data
CT/MR/CR/DX files run through it without an exception."""

from __future__ import annotations

from collections.abc import Callable
from copy import deepcopy

import numpy as np
import pytest
from analysis_helpers import series_data
from phantoms import INTERCEPT, chest_phantom, ct_series
from pydicom import dcmread
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from dicomvault.analysis import api
from dicomvault.analysis.body_parts import mismatch, regions_named
from dicomvault.analysis.quality import QualityAnalyzer
from dv_corpus import corpus_files

SPACING = (5.0, 5.0, 5.0)


@pytest.fixture(scope="module")
def hu() -> np.ndarray:
    return chest_phantom(shape=(20, 64, 64), spacing=SPACING, with_datasets=False, seed=4).hu


def _series(hu: np.ndarray, edit: Callable[[int, Dataset], object] | None = None, **kw) -> list[Dataset]:
    return ct_series(hu, SPACING, edit=edit, **kw)  # type: ignore[arg-type]


def _run(datasets: list[Dataset], **options) -> api.Result:
    return QualityAnalyzer(options).run([series_data(datasets)])


def _codes(result: api.Result) -> list[str]:
    return sorted(f.code for f in result.flags)


def test_clean_series_has_no_finding(hu) -> None:
    result = _run(_series(hu))
    assert result.flags == [], [f.reason for f in result.flags]
    assert result.summary == "no finding"


def test_missing_slices(hu) -> None:
    datasets = _series(hu)
    del datasets[8:10]
    result = _run(datasets)
    assert _codes(result) == ["quality.missing_slices"]
    flag = result.flags[0]
    assert flag.series_uid == datasets[0].SeriesInstanceUID and flag.series_uid in flag.reason
    assert flag.score == 2 and "about 2 slice(s) missing" in flag.reason


def test_duplicate_position(hu) -> None:
    datasets = _series(hu)
    copy = deepcopy(datasets[5])
    copy.SOPInstanceUID = generate_uid()
    copy.InstanceNumber = len(datasets) + 1
    result = _run([*datasets, copy])
    assert _codes(result) == ["quality.duplicate_slices"]
    assert "occur more often" in result.flags[0].reason


def test_duplicate_instance_number(hu) -> None:
    def edit(k: int, ds: Dataset) -> None:
        if k == 6:
            ds.InstanceNumber = 5

    result = _run(_series(hu, edit))
    assert _codes(result) == ["quality.duplicate_slices"]
    assert "instance number(s) 5" in result.flags[0].reason


def test_inconsistent_spacing(hu) -> None:
    z = [-5.0 * k for k in range(hu.shape[0])]
    z[10:] = [v - 1.5 for v in z[10:]]  # one step of 6.5 mm among 5 mm: uneven, not a gap
    result = _run(_series(hu, slice_z=z))
    assert _codes(result) == ["quality.inconsistent_spacing"]


def test_inconsistent_orientation(hu) -> None:
    def edit(k: int, ds: Dataset) -> None:
        if k == 3:
            c, s = np.cos(np.radians(15)), np.sin(np.radians(15))
            ds.ImageOrientationPatient = [c, s, 0, -s, c, 0]

    result = _run(_series(hu, edit))
    assert "quality.inconsistent_orientation" in _codes(result)
    assert "1 of 20 images" in next(f.reason for f in result.flags
                                    if f.code == "quality.inconsistent_orientation")


def test_inconsistent_matrix_and_pixel_spacing(hu) -> None:
    def rows(k: int, ds: Dataset) -> np.ndarray | None:
        if k == 4:
            ds.Rows = 60
            return hu[k][:60]
        return None

    result = _run(_series(hu, rows))
    assert _codes(result) == ["quality.inconsistent_matrix"]
    assert "60x64" in result.flags[0].reason

    def spacing(k: int, ds: Dataset) -> None:
        if k == 4:
            ds.PixelSpacing = [4.0, 4.0]

    result = _run(_series(hu, spacing))
    assert _codes(result) == ["quality.inconsistent_matrix"]
    assert "pixel spacing" in result.flags[0].reason


def test_padding_value_inside_the_image_values(hu) -> None:
    def edit(k: int, ds: Dataset) -> None:
        ds.PixelPaddingValue = -1000 - INTERCEPT  # stored 24 (-1000 HU): amid the air's noisy values

    result = _run(_series(hu, edit))
    assert _codes(result) == ["quality.pixel_padding"]
    assert "inside the range" in result.flags[0].reason
    assert result.flags[0].severity == api.INFO


def test_padding_declared_but_another_value_used(hu) -> None:
    outside = hu[0] < -900  # the air around the body (and some lung air, which is fine here)

    def edit(k: int, ds: Dataset) -> np.ndarray:
        ds.PixelPaddingValue = 4095  # no pixel holds it: the phantom stays far below 3071 HU
        plane = hu[k].copy()
        border = np.zeros_like(outside)
        border[:, :6] = border[:, -6:] = True
        plane[border] = -1000  # the images pad their margins with -1000 HU (stored 24) instead
        return plane

    result = _run(_series(hu, edit))
    assert _codes(result) == ["quality.pixel_padding"]
    assert "no pixel has it" in result.flags[0].reason and "24" in result.flags[0].reason


def test_padding_used_as_declared_is_not_flagged(hu) -> None:
    def edit(k: int, ds: Dataset) -> np.ndarray:
        ds.PixelPaddingValue = 0  # stored 0 = -1024 HU: below every real value once clipped
        plane = np.maximum(hu[k], -1020)
        plane[:, :6] = INTERCEPT
        return plane

    assert _run(_series(hu, edit)).flags == []


def test_clipped_dynamic_range(hu) -> None:
    rng = np.random.default_rng(1)

    def edit(k: int, ds: Dataset) -> np.ndarray:
        plane = hu[k].copy()
        plane[rng.random(plane.shape) < 0.05] = 4095 + INTERCEPT  # 12 bits stored: saturated
        return plane

    result = _run(_series(hu, edit))
    assert _codes(result) == ["quality.clipped_range"]
    assert result.flags[0].score == pytest.approx(5.0, abs=0.5)


def test_body_part_contradicting_the_protocol(hu) -> None:
    result = _run(_series(hu, body_part="HEAD", protocol="Chest routine", description="Thorax 5mm"))
    assert _codes(result) == ["quality.body_part_mismatch"]
    assert "HEAD" in result.flags[0].reason and "chest" in result.flags[0].reason
    assert _run(_series(hu, body_part="CHESTABDPELVIS", protocol="CT Chest Abd Pelvis")).flags == []
    assert _run(_series(hu, body_part="SITE_TERM", protocol="Chest")).flags == []


def test_body_part_table() -> None:
    assert regions_named("CT_THORAX-HR", "") == {"CHEST"}
    assert regions_named("t1_vibe_fs_tra_bh_dyn") == frozenset()
    assert mismatch("KNEE", "MR Brain w/o") == {"HEAD"}
    assert mismatch("LSPINE", "L-Spine sag T2") is None
    assert mismatch("EXTREMITY", "Hand PA") is None
    assert mismatch("CHEST", "") is None


def test_echoes_on_the_same_positions_are_not_duplicates(hu) -> None:
    first = _series(hu[:10])
    study_uid, series_uid = first[0].StudyInstanceUID, first[0].SeriesInstanceUID
    study = Dataset()
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "ReferringPhysicianName", "StudyID", "AccessionNumber", "StudyDescription"):
        setattr(study, kw, first[0].get(kw))
    second = ct_series(hu[:10], SPACING, study=study, series_uid=series_uid)
    for echo, stack in ((1, first), (2, second)):
        for ds in stack:
            ds.EchoNumbers = echo
            ds.FrameOfReferenceUID = first[0].FrameOfReferenceUID
    assert study_uid == second[0].StudyInstanceUID
    assert _run([*first, *second]).flags == []
    # Without echo numbers, every position twice is still two stacks, not 10 duplicates...
    for ds in [*first, *second]:
        del ds.EchoNumbers
    codes = _codes(_run([*first, *second]))
    assert "quality.missing_slices" not in codes and "quality.inconsistent_spacing" not in codes
    assert "quality.duplicate_slices" in codes  # ...but their instance numbers do repeat


def test_checks_option_selects_what_runs(hu) -> None:
    datasets = _series(hu, body_part="HEAD")
    del datasets[8:10]
    assert _codes(_run(datasets, checks=["body_part"])) == ["quality.body_part_mismatch"]
    with pytest.raises(ValueError, match="nonsense"):
        QualityAnalyzer({"checks": ["nonsense"]})


def test_wants() -> None:
    analyzer = QualityAnalyzer({})
    info = api.SeriesInfo(study_uid="1.2", series_uid="1.2.3", modality="CR", num_instances=1, attrs={})
    assert analyzer.wants(info)
    assert not analyzer.wants(api.SeriesInfo("1.2", "1.2.3", "SR", 1, {}))
    assert not QualityAnalyzer({"modalities": ["CT"]}).wants(info)


def test_real_files_run_without_an_exception() -> None:
    analyzer = QualityAnalyzer({})
    ran = 0
    for path in corpus_files():
        try:
            ds = dcmread(path)
        except Exception:  # noqa: BLE001 — the corpus holds files pydicom cannot read at all
            continue
        if ds.get("Modality") not in ("CT", "MR", "CR", "DX") or "StudyInstanceUID" not in ds:
            continue
        result = analyzer.run([series_data([ds])])
        for flag in result.flags:
            assert flag.code.startswith("quality.") and flag.series_uid in flag.reason, (path.name, flag)
        ran += 1
    assert ran >= 20


def test_pyproject_entry_points_name_the_builtin_classes() -> None:
    # The venv is shared and not reinstalled per branch, so the entry points are checked from
    # pyproject.toml itself: each resolves to a class whose name is the entry point's.
    import importlib
    import tomllib
    from pathlib import Path

    pyproject = Path(__file__).resolve().parents[2] / "pyproject.toml"
    entries = tomllib.loads(pyproject.read_text())["project"]["entry-points"][api.ENTRY_POINT_GROUP]
    for name in ("ct-chest", "quality"):
        module, _, attr = entries[name].partition(":")
        cls = getattr(importlib.import_module(module), attr)
        assert cls.name == name and cls.event == api.SERIES_COMPLETE
        assert callable(cls({}).wants)
