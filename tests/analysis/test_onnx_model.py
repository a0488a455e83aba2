"""The ONNX model runner end to end (analysis/onnx_model.py): a nodule model trained inside the
test on synthetic slices (tiny_model.py), exported to ONNX, run by OnnxModelAnalyzer on new
synthetic CT series with spherical nodules at known places.

Classification flags the series with nodules and not the clean one; segmentation gives a SEG
that covers the spheres (Dice > 0.7 on the source grid, which differs from the model's) and
passes dciodvfy, with nodule volumes within 10 % of the spheres'; a model that disagrees with
its config is refused at load with its path in the message."""

from __future__ import annotations

import math
import pickle
import shutil
import subprocess
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid
from tiny_model import (
    HU_RANGE,
    LUNG_HU,
    NODULE_HU,
    NOISE_HU,
    TinyModel,
    classification_model,
    segmentation_forms_model,
    segmentation_model,
    train,
)

from dicomvault.analysis.api import URGENT, SeriesData, SeriesInfo
from dicomvault.analysis.model_input import model_grid
from dicomvault.analysis.model_options import ModelConfigError
from dicomvault.analysis.onnx_model import OnnxModelAnalyzer
from dicomvault.config_values import ConfigError
from dicomvault.engine import Engine

# The test series: a grid finer than the model's (96 x 96 at 0.7 mm -> 64 x 64), 2 mm slices
ROWS = 96  # and as many columns
PIXEL_MM = 0.7
SLICE_MM = 2.0
SLICES = 32
NODULES = (((20.0, 20.0, 22.0), 5.0), ((40.0, 45.0, 40.0), 6.0), ((34.0, 18.0, 48.0), 4.0))  # (z, y, x) mm, r
Nodules = tuple[tuple[tuple[float, float, float], float], ...]  # ((z, y, x) mm, radius mm) each
VOLUME_TOLERANCE = 0.10  # measured: +2.4 % against the spheres, +4.4 % against their voxels

INPUT = {"layout": "slice2d", "size": [64, 64], "hu_range": list(HU_RANGE), "normalise": "minmax"}


@pytest.fixture(scope="module")
def model() -> TinyModel:
    return train(np.random.default_rng(16))


@pytest.fixture(scope="module")
def models(model: TinyModel, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("models")
    return {"seg": segmentation_model(model, d / "nodule_seg.onnx"),
            "seg3d": segmentation_model(model, d / "nodule_seg3d.onnx", layout="volume3d",
                                        grid=("D", "H", "W")),
            "seg-background": segmentation_forms_model(model, d / "nodule_seg_bg.onnx", "background"),
            "seg-labels": segmentation_forms_model(model, d / "nodule_seg_labels.onnx", "labels"),
            "seg-logits": segmentation_forms_model(model, d / "nodule_seg_logits.onnx", "logits"),
            "seg-logit-pair": segmentation_forms_model(model, d / "nodule_seg_logit_pair.onnx", "logit-pair"),
            "seg-any": segmentation_model(model, d / "nodule_seg_any.onnx", grid=("H", "W")),
            "cls": classification_model(model, d / "nodule_cls.onnx"),
            "cls32": classification_model(model, d / "nodule_cls32.onnx", grid=(32, 32)),
            "cls-batch5": classification_model(model, d / "nodule_cls_b5.onnx", batch=5)}


def truth_mask(nodules: Nodules, rows: int = ROWS,
               pixel_mm: float = PIXEL_MM) -> np.ndarray:
    """Voxels whose centre lies in a sphere: [slices, rows, cols] (slices by position)."""
    z = (np.arange(SLICES) * SLICE_MM)[:, None, None]
    y = (np.arange(rows) * pixel_mm)[None, :, None]
    x = (np.arange(rows) * pixel_mm)[None, None, :]
    mask = np.zeros((SLICES, rows, rows), dtype=bool)
    for (cz, cy, cx), r in nodules:
        mask |= (z - cz) ** 2 + (y - cy) ** 2 + (x - cx) ** 2 <= r * r
    return mask


def ct_series(rng: np.random.Generator, nodules: Nodules, description: str, rows: int = ROWS,
              pixel_mm: float = PIXEL_MM) -> tuple[SeriesData, np.ndarray]:
    """A CT series as the pipeline hands it over (Part-10 bytes decoded by pydicom), its
    instances shuffled so that the runner must order them by position, and the truth mask."""
    truth = truth_mask(nodules, rows, pixel_mm)
    hu = rng.normal(LUNG_HU, NOISE_HU, truth.shape)
    hu[truth] = rng.normal(NODULE_HU, NOISE_HU, int(truth.sum()))
    stored = np.clip(np.round(hu + 1024), 0, 4095).astype(np.uint16)
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for i in rng.permutation(SLICES):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Phantom^Nodule", "ONNX1", "", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20261206", "120000", "1", "A16"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 3, int(i) + 1
        ds.SeriesDescription = description
        ds.Manufacturer, ds.PositionReferenceIndicator = "synthetic", ""
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [0.0, 0.0, float(i) * SLICE_MM]
        ds.PixelSpacing = [pixel_mm, pixel_mm]
        ds.SliceThickness = SLICE_MM
        ds.KVP, ds.AcquisitionNumber = 120, 1
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = rows, rows
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = -1024, 1, "HU"
        ds.PixelData = stored[i].tobytes()
        buf = BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        datasets.append(pydicom.dcmread(BytesIO(buf.getvalue())))
    info = SeriesInfo(study_uid=study, series_uid=series, modality="CT", num_instances=SLICES,
                      attrs={"SeriesDescription": description}, sop_class_uids=frozenset({CTImageStorage}))
    return SeriesData(info, datasets), truth


def _analyzer(path: Path, output: dict[str, Any], **extra: Any) -> OnnxModelAnalyzer:
    return OnnxModelAnalyzer({"model": str(path), "modalities": ["CT"], "input": dict(INPUT),
                              "output": output, **extra})


def _seg_mask(seg: Dataset, data: SeriesData) -> np.ndarray:
    """The SEG's first segment on the source grid, slices ordered by position like truth_mask."""
    position = {ds.SOPInstanceUID: round(float(ds.ImagePositionPatient[2]) / SLICE_MM)
                for ds in data.datasets}
    frames = seg.pixel_array if seg.pixel_array.ndim == 3 else seg.pixel_array[None]
    mask = np.zeros((SLICES, seg.Rows, seg.Columns), dtype=bool)
    for frame, item in zip(frames, seg.PerFrameFunctionalGroupsSequence, strict=True):
        src = item.DerivationImageSequence[0].SourceImageSequence[0].ReferencedSOPInstanceUID
        # one segment: highdicom may put its identification in the shared groups instead
        ident = item.get("SegmentIdentificationSequence") or \
            seg.SharedFunctionalGroupsSequence[0].SegmentIdentificationSequence
        assert ident[0].ReferencedSegmentNumber == 1
        mask[position[src]] |= frame.astype(bool)
    return mask


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


def _dciodvfy(ds: Dataset, path: Path) -> list[str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    ds.save_as(path, enforce_file_format=True)
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")]


# -- classification ---------------------------------------------------------------------------


def test_classification_flags_the_series_with_nodules_only(models: dict[str, Path]) -> None:
    rng = np.random.default_rng(7)
    sick, _ = ct_series(rng, NODULES, "Chest nodules")
    clean, _ = ct_series(rng, (), "Chest clean")
    analyzer = _analyzer(models["cls"], {"kind": "classification", "threshold": 0.5, "severity": URGENT,
                                         "finding": "Lung nodule", "code": "model.nodule"})
    flagged = analyzer.run([sick])
    assert len(flagged.flags) == 1, flagged
    flag = flagged.flags[0]
    assert (flag.code, flag.severity, flag.series_uid) == ("model.nodule", URGENT, sick.info.series_uid)
    assert flag.score is not None and flag.score > 0.5
    assert sick.info.series_uid in flag.reason and "nodule_cls.onnx" in flag.reason
    # the slice that scored highest goes through a nodule (1-based slice number in the reason)
    best = int(flag.reason.rsplit("slice ", 1)[1].split(" ")[0]) - 1
    assert truth_mask(NODULES)[best].any()
    assert [m.key for m in flagged.measurements] == ["nodule_score"]
    assert flagged.objects == []

    quiet = analyzer.run([clean])
    assert quiet.flags == []
    assert quiet.measurements[0].value < 0.5


# -- segmentation -----------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["slice2d", "volume3d"])
def test_segmentation_covers_the_nodules(models: dict[str, Path], tmp_path: Path, layout: str) -> None:
    rng = np.random.default_rng(11)
    data, truth = ct_series(rng, NODULES, "Chest nodules")
    inp = dict(INPUT, layout=layout, size=[SLICES, 64, 64]) if layout == "volume3d" else dict(INPUT)
    analyzer = OnnxModelAnalyzer({
        "model": str(models["seg" if layout == "slice2d" else "seg3d"]), "input": inp, "series_number": 9050,
        "output": {"kind": "segmentation", "threshold": 0.5, "labels": [{"name": "Nodule", "key": "nodule",
                   "type": ["27925004", "SCT", "Nodule"]}], "flag_above_ml": 0.1}})
    result = analyzer.run([data])

    assert len(result.objects) == 1
    seg = result.objects[0]
    assert seg.Modality == "SEG" and seg.StudyInstanceUID == data.info.study_uid
    assert seg.SeriesInstanceUID != data.info.series_uid and seg.SeriesNumber == 9050
    assert seg.Manufacturer == "dicomvault" and "nodule_seg" in seg.SeriesDescription
    assert seg.SegmentSequence[0].SegmentLabel == "Nodule"
    assert seg.SegmentSequence[0].SegmentedPropertyTypeCodeSequence[0].CodeValue == "27925004"
    referenced = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0]
                  .ReferencedInstanceSequence}
    assert referenced <= {ds.SOPInstanceUID for ds in data.datasets}

    dice = _dice(_seg_mask(seg, data), truth)
    assert dice > 0.7, f"Dice {dice:.3f}"

    (vol,) = result.measurements
    assert (vol.key, vol.unit, vol.series_uid) == ("nodule_volume", "mL", data.info.series_uid)
    spheres_ml = sum(4 / 3 * math.pi * r**3 for _, r in NODULES) / 1000
    assert abs(vol.value - spheres_ml) <= VOLUME_TOLERANCE * spheres_ml, (vol.value, spheres_ml)
    assert [f.code for f in result.flags] == ["model.nodule"]

    assert _dciodvfy(seg, tmp_path / "seg.dcm") == []


@pytest.mark.parametrize(("form", "activation"), [
    ("seg-background", "none"), ("seg-labels", "none"), ("seg-logits", "sigmoid"),
    ("seg-logit-pair", "softmax")])
def test_other_output_forms_give_the_same_mask(models: dict[str, Path], form: str, activation: str) -> None:
    # one probability channel, background-first channels, a label map, logits: one mask, read
    # each way the output options describe
    data, truth = ct_series(np.random.default_rng(14), NODULES, "Chest nodules")
    output = {"kind": "segmentation", "labels": ["Nodule"]}
    base = _analyzer(models["seg"], output).run([data])
    other = _analyzer(models[form], dict(output, activation=activation)).run([data])
    mask = _seg_mask(other.objects[0], data)
    # a label map is resampled nearest-neighbour from the model's coarser grid, so its edges
    # step by 1.5 source pixels where interpolated probabilities do not (measured: 0.95)
    assert _dice(mask, _seg_mask(base.objects[0], data)) > (0.9 if form == "seg-labels" else 0.97)
    assert _dice(mask, truth) > 0.7
    assert other.measurements[0].value == pytest.approx(base.measurements[0].value, rel=0.05)


def test_two_labels_give_two_segments_and_two_volumes(models: dict[str, Path], tmp_path: Path) -> None:
    # the background-first model read as two independent probabilities: "air" and "nodule"
    data, truth = ct_series(np.random.default_rng(18), NODULES, "Chest nodules")
    result = _analyzer(models["seg-background"], {"kind": "segmentation", "labels": [
        {"name": "Aerated lung", "key": "air", "type": ["39607008", "SCT", "Lung"],
         "category": ["91723000", "SCT", "Anatomical Structure"]}, "Nodule"]}).run([data])
    air, nodule = result.measurements
    assert (air.key, nodule.key) == ("air_volume", "nodule_volume")
    voxel_ml = PIXEL_MM * PIXEL_MM * SLICE_MM / 1000
    # every voxel is in exactly one of the two (p and 1 - p on either side of 0.5)
    assert air.value + nodule.value == pytest.approx(SLICES * ROWS * ROWS * voxel_ml, abs=2 * voxel_ml)
    assert abs(nodule.value - truth.sum() * voxel_ml) <= VOLUME_TOLERANCE * truth.sum() * voxel_ml
    (seg,) = result.objects
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["Aerated lung", "Nodule"]
    assert seg.SegmentSequence[0].SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert _dciodvfy(seg, tmp_path / "seg2.dcm") == []


def test_spacing_resamples_each_series_to_the_model_scale(models: dict[str, Path]) -> None:
    # the same nodules in a 96-pixel 0.7 mm series and a 200-pixel 0.5 mm one (a wider field of
    # view): both brought to 1.05 mm pixels, the scale of the slices the model was trained on
    # (64 px over 67.2 mm), where a fixed size would shrink the wider one's nodules
    spacing = {"input": {**{k: v for k, v in INPUT.items() if k != "size"}, "spacing": [1.05, 1.05]}}
    analyzer = _analyzer(models["seg-any"], {"kind": "segmentation", "labels": ["Nodule"]}, **spacing)
    assert model_grid((SLICES, 200, 200), (SLICE_MM, 0.5, 0.5), analyzer.options.input) == (SLICES, 95, 95)
    for rows, pixel_mm in ((96, 0.7), (200, 0.5)):
        data, truth = ct_series(np.random.default_rng(20), NODULES, "Chest nodules", rows, pixel_mm)
        result = analyzer.run([data])
        dice = _dice(_seg_mask(result.objects[0], data), truth)
        assert dice > 0.7, (rows, pixel_mm, dice)
        truth_ml = truth.sum() * pixel_mm * pixel_mm * SLICE_MM / 1000
        assert abs(result.measurements[0].value - truth_ml) <= VOLUME_TOLERANCE * truth_ml


def test_the_seg_is_archived_in_the_analysed_study(models: dict[str, Path], engine: Engine) -> None:
    # what the pipeline does with Result.objects: the engine stores them like any received object
    data, _ = ct_series(np.random.default_rng(17), NODULES[:2], "Chest nodules")
    seg = _analyzer(models["seg"], {"kind": "segmentation", "labels": ["Nodule"]}).run([data]).objects[0]
    buf = BytesIO()
    seg.save_as(buf, enforce_file_format=True)
    (outcome,) = engine.store_buffers([buf.getvalue()])
    assert not isinstance(outcome, Exception), outcome
    assert outcome.study_instance_uid == data.info.study_uid
    assert outcome.sop_class_uid == "1.2.840.10008.5.1.4.1.1.66.4"  # Segmentation Storage
    assert [r.sop_uid for r in engine.instances("series", seg.SeriesInstanceUID)] == [
        seg.SOPInstanceUID]
    assert engine.read_file(seg.SOPInstanceUID) == buf.getvalue()


def test_segmentation_of_a_clean_series_writes_no_seg(models: dict[str, Path]) -> None:
    data, _ = ct_series(np.random.default_rng(12), (), "Chest clean")
    analyzer = _analyzer(models["seg"], {"kind": "segmentation", "labels": ["Nodule"], "flag_above_ml": 0.1})
    result = analyzer.run([data])
    assert result.objects == [] and result.flags == []
    assert result.measurements[0].key == "nodule_volume" and result.measurements[0].value < 0.05


def test_a_pickled_analyzer_reopens_its_model(models: dict[str, Path]) -> None:
    # a worker process receives the analyzer pickled; the ONNX session is not picklable itself
    data, _ = ct_series(np.random.default_rng(13), NODULES[:1], "Chest one nodule")
    analyzer = _analyzer(models["cls"], {"kind": "classification"})
    assert analyzer._session is None  # checked at load, then let go until the first run
    copy = pickle.loads(pickle.dumps(analyzer))
    assert copy.session.session.get_session_options().intra_op_num_threads == 1  # the default
    assert copy.run([data]).measurements == analyzer.run([data]).measurements


def test_batches_give_the_scores_of_one_run(models: dict[str, Path]) -> None:
    # 32 slices: by 3 (the last run short), and through a model fixed at 5 (the last run padded)
    data, _ = ct_series(np.random.default_rng(15), NODULES, "Chest nodules")
    whole = _analyzer(models["cls"], {"kind": "classification"}, batch=64).run([data])
    by3 = _analyzer(models["cls"], {"kind": "classification"}, batch=3).run([data])
    fixed = _analyzer(models["cls-batch5"], {"kind": "classification"}).run([data])
    assert whole.measurements == by3.measurements == fixed.measurements
    assert whole.flags == by3.flags and len(whole.flags) == 1
    # the same slice scored highest (the reason names the model file, which differs)
    assert whole.flags[0].reason.split("highest on ")[1] == fixed.flags[0].reason.split("highest on ")[1]


def test_a_series_that_is_no_volume_fails_naming_it(models: dict[str, Path]) -> None:
    data, _ = ct_series(np.random.default_rng(19), (), "Chest clean")
    odd = data.datasets[0]
    odd.Rows, odd.Columns, odd.PixelData = 48, 48, bytes(48 * 48 * 2)
    with pytest.raises(ValueError, match=f"series {data.info.series_uid}: slices of different sizes"):
        _analyzer(models["cls"], {"kind": "classification"}).run([data])


def test_other_modalities_are_declined(models: dict[str, Path]) -> None:
    analyzer = _analyzer(models["cls"], {"kind": "classification"})
    mr = SeriesInfo(study_uid="1.2", series_uid="1.2.3", modality="MR", num_instances=10, attrs={})
    assert not analyzer.wants(mr)


# -- refused at load --------------------------------------------------------------------------


def test_a_model_whose_input_disagrees_with_the_config_is_refused(models: dict[str, Path]) -> None:
    with pytest.raises(ModelConfigError) as exc:
        _analyzer(models["cls32"], {"kind": "classification"})
    message = str(exc.value)
    assert str(models["cls32"]) in message
    assert "[N, 1, 32, 32]" in message and "[64, 64]" in message


@pytest.mark.parametrize(("which", "options", "words"), [
    ("seg", {"input": dict(INPUT, layout="volume3d", size=[8, 64, 64])}, "layout volume3d"),
    ("seg", {"input": dict(INPUT, dtype="float16")}, "tensor(float16)"),
    ("seg", {"output": {"kind": "segmentation", "labels": ["A", "B", "C"]}}, "1 channels for 3 label(s)"),
    ("cls", {"output": {"kind": "segmentation", "labels": ["A"]}}, "segmentation reads"),
    ("cls", {"output": {"kind": "classification", "activation": "softmax"}}, "softmax needs [N, classes]"),
    ("seg", {"input": {k: v for k, v in INPUT.items() if k != "size"}}, "set input.size to [64, 64]"),
    ("seg", {"input": {**{k: v for k, v in INPUT.items() if k != "size"}, "spacing": [1.0, 1.0]}},
     "input.spacing makes a grid that follows"),
])
def test_other_disagreements_name_the_model(models: dict[str, Path], which: str, options: dict[str, Any],
                                            words: str) -> None:
    config = {"model": str(models[which]), "input": dict(INPUT), "output": {"kind": "classification"}}
    config.update(options)
    with pytest.raises(ModelConfigError) as exc:
        OnnxModelAnalyzer(config)
    assert str(models[which]) in str(exc.value) and words in str(exc.value)


@pytest.mark.parametrize(("options", "words"), [
    ({"input": dict(INPUT, window=[40, 400])}, "window and hu_range say the same thing"),
    ({"input": dict(INPUT, spacing=[1.0, 1.0])}, "size and spacing both set"),
    ({"input": dict(INPUT, size=[64])}, "input.size: layout slice2d needs 2 integers"),
    ({"input": dict(INPUT, normalise={"mean": 0.0})}, "input.normalise: a table needs mean and std"),
    ({"output": {"kind": "segmentation"}}, "output.labels: a segmentation output needs its labels"),
    ({"output": {"kind": "segmentation", "labels": ["A b", "a-b"]}}, "two labels share a measurement key"),
    ({"output": {"kind": "classification", "severity": "high"}}, "output.severity: must be one of"),
    ({"output": {"kind": "classification", "labels": ["A"]}}, "labels and flag_above_ml belong to"),
    ({"treads": 2}, "unknown key(s) treads"),
])
def test_option_errors_name_the_key(models: dict[str, Path], options: dict[str, Any], words: str) -> None:
    config = {"model": str(models["seg"]), "input": dict(INPUT), "output": {"kind": "classification"}}
    config.update(options)
    with pytest.raises(ConfigError) as exc:
        OnnxModelAnalyzer(config)
    assert words in str(exc.value)


def test_a_missing_model_file_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ModelConfigError, match=str(tmp_path / "absent.onnx")):
        _analyzer(tmp_path / "absent.onnx", {"kind": "classification"})
