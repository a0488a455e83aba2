"""The SEG and TID 1500 SR the ct-chest analyzer writes (seg_writer.py, tid1500.py): dciodvfy
finds no error in them, pydicom and highdicom's readers read them back, and what they hold (the
segments' voxels, the measurements, the references between SR, SEG and source images) agrees
with the analyzer's result."""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from analysis_helpers import dciodvfy, series_data
from phantoms import chest_phantom
from pydicom.sr.coding import Code

from dicomvault.analysis import api
from dicomvault.analysis.concepts import LUNG
from dicomvault.analysis.lung import CtChestAnalyzer
from dicomvault.analysis.seg_writer import SegError, Segment, binary_seg
from dicomvault.analysis.tid1500 import Group, measurement_report

SEG_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@pytest.fixture(scope="module")
def run():
    ph = chest_phantom(seed=21)
    result = CtChestAnalyzer({}).run([series_data(ph.datasets)])
    seg, sr = result.objects
    return ph, result, seg, sr


@pytest.fixture(scope="module")
def files(run, tmp_path_factory) -> dict[str, Path]:
    _, _, seg, sr = run
    d = tmp_path_factory.mktemp("objects")
    paths = {"seg": d / "seg.dcm", "sr": d / "sr.dcm"}
    seg.save_as(paths["seg"], enforce_file_format=True)
    sr.save_as(paths["sr"], enforce_file_format=True)
    return paths


def _values(result: api.Result) -> dict[str, float]:
    return {m.key: m.value for m in result.measurements}


def test_seg_passes_dciodvfy(run, tmp_path: Path) -> None:
    errors, out = dciodvfy(run[2], tmp_path / "seg.dcm")
    assert errors == [], out
    assert "Segmentation" in out, out


def test_sr_passes_dciodvfy(run, tmp_path: Path) -> None:
    errors, out = dciodvfy(run[3], tmp_path / "sr.dcm")
    assert errors == [], out
    assert "Comprehensive3DSR" in out, out


def test_new_series_in_the_same_study(run) -> None:
    ph, _, seg, sr = run
    source = ph.datasets[0]
    assert seg.SOPClassUID == SEG_STORAGE and sr.SOPClassUID == COMPREHENSIVE_3D_SR
    for obj, number in ((seg, 9100), (sr, 9101)):
        assert obj.StudyInstanceUID == source.StudyInstanceUID
        assert obj.PatientID == source.PatientID
        assert obj.SeriesInstanceUID != source.SeriesInstanceUID
        assert obj.SeriesNumber == number
        assert obj.Manufacturer == "dicomvault"
        assert "ct-chest" in obj.SeriesDescription
        assert obj.file_meta.MediaStorageSOPInstanceUID == obj.SOPInstanceUID
    assert seg.SeriesInstanceUID != sr.SeriesInstanceUID
    assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID


def test_seg_read_back_by_highdicom_holds_the_measured_lungs(run, files) -> None:
    ph, result, _, _ = run
    seg = hd.seg.segread(files["seg"])
    assert seg.segment_numbers == [1, 2]
    for number, side, laterality in ((1, "left", "7771000"), (2, "right", "24028007")):
        desc = seg.get_segment_description(number)
        assert desc.segment_label == f"{side.capitalize()} lung"
        assert desc.segmented_property_type == LUNG
        assert desc.segmented_property_category.value == "91723000"
        modifier = desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence[0]
        assert modifier.CodeValue == laterality
        assert desc.algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    uids = [ds.SOPInstanceUID for ds in ph.datasets]
    # Every frame names its source image; frames a segment does not cover were left out.
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced <= set(uids)
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[1, 2])
    voxel_ml = ph.voxel_ml
    got = _values(result)
    assert pixels[..., 0].sum() * voxel_ml == pytest.approx(got["lung_volume_left"], abs=0.06)
    assert pixels[..., 1].sum() * voxel_ml == pytest.approx(got["lung_volume_right"], abs=0.06)
    # The left lung is on the patient's left: +x, the higher columns of these axial images.
    cols = np.arange(pixels.shape[2])
    centre = (pixels.shape[2] - 1) / 2
    left_cols = (pixels[..., 0].sum(axis=(0, 1)) * cols).sum() / pixels[..., 0].sum()
    right_cols = (pixels[..., 1].sum(axis=(0, 1)) * cols).sum() / pixels[..., 1].sum()
    assert left_cols > centre > right_cols


def test_sr_read_back_by_highdicom_references_the_seg_and_holds_the_measurements(run, files) -> None:
    ph, result, seg, _ = run
    report = hd.sr.srread(files["sr"])
    got = _values(result)
    groups = report.content.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in groups] == ["Left lung", "Right lung"]
    for number, (group, side, laterality) in enumerate(
            zip(groups, ("left", "right"), ("7771000", "24028007"), strict=True), start=1):
        ref = group.referenced_segment
        assert ref.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert ref.referenced_sop_class_uid == SEG_STORAGE
        assert ref.referenced_segment_numbers == [number] or ref.referenced_segment_numbers == number
        site = group.finding_sites[0]
        assert site.value.value == LUNG.value and site.laterality.value == laterality
        values = {m.name.meaning: (m.value, m.unit.value) for m in group.get_measurements()}
        assert values["Volume"] == (pytest.approx(got[f"lung_volume_{side}"]), "mL")
        assert values["Lung volume percentage below -950 HU"] == (
            pytest.approx(got[f"emphysema_index_{side}"]), "%")
    (total,) = report.content.get_image_measurement_groups()
    values = {m.name.meaning: m.value for m in total.get_measurements()}
    assert values["Volume"] == pytest.approx(got["lung_volume_total"])
    # Evidence: the SEG and every source image.
    evidence = {ref.ReferencedSOPInstanceUID for s in report.CurrentRequestedProcedureEvidenceSequence
                for series in s.ReferencedSeriesSequence for ref in series.ReferencedSOPSequence}
    assert evidence == {seg.SOPInstanceUID} | {ds.SOPInstanceUID for ds in ph.datasets}
    schemes = {item.CodingSchemeDesignator for item in report.CodingSchemeIdentificationSequence}
    assert "99DVAULT" in schemes


def test_sr_image_library_lists_every_source_image(run) -> None:
    ph, _, _, sr = run

    def find(items, value):
        for item in items:
            names = item.get("ConceptNameCodeSequence", [])
            if names and names[0].CodeValue == value:
                return item
            found = find(item.get("ContentSequence", []), value)
            if found is not None:
                return found
        return None

    library = find(sr.ContentSequence, "111028")
    images = [i for g in library.ContentSequence for i in g.ContentSequence if i.ValueType == "IMAGE"]
    assert {i.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for i in images} == {
        ds.SOPInstanceUID for ds in ph.datasets}


def test_objects_round_trip_through_part10_bytes(run) -> None:
    for obj in run[2:]:
        buf = io.BytesIO()
        obj.save_as(buf, enforce_file_format=True)
        back = pydicom.dcmread(io.BytesIO(buf.getvalue()))
        assert back.SOPInstanceUID == obj.SOPInstanceUID
        for elem in back.iterall():
            _ = elem.value


def test_seg_writer_refuses_mismatched_or_empty_masks() -> None:
    ph = chest_phantom(shape=(6, 32, 32), spacing=(5.0, 10.0, 10.0), seed=2)
    shape = ph.hu.shape
    with pytest.raises(SegError, match="mask"):
        binary_seg(ph.datasets, [Segment("x", LUNG, LUNG, np.ones((2, 2, 2), dtype=bool))],
                   algorithm_name="t", series_number=9100, series_description="t")
    with pytest.raises(SegError, match="empty"):
        binary_seg(ph.datasets, [Segment("x", LUNG, LUNG, np.zeros(shape, dtype=bool))],
                   algorithm_name="t", series_number=9100, series_description="t")


def test_report_group_naming_a_segment_needs_the_seg() -> None:
    ph = chest_phantom(shape=(6, 32, 32), spacing=(5.0, 10.0, 10.0), seed=2)
    m = api.Measurement(key="v", label="V", value=1.0, unit="mL", concept=("118565006", "SCT", "Volume"))
    with pytest.raises(ValueError, match="no SEG"):
        measurement_report(ph.datasets, [Group("g", [m], LUNG, Code("7771000", "SCT", "Left"), 1)],
                           algorithm_name="t", series_number=9101, series_description="t")


def test_phantom_slices_are_valid_ct_images(tmp_path: Path) -> None:
    # The SEG and SR copy patient, study and frame of reference from these: they must be clean.
    ph = chest_phantom(shape=(2, 32, 32), spacing=(5.0, 10.0, 10.0), seed=2)
    errors, out = dciodvfy(ph.datasets[0], tmp_path / "ct.dcm")
    assert errors == [] and "Warning" not in out, out
    assert "CTImage" in out
