"""The measurement report writer (analysis/sr.py): a Comprehensive SR following TID 1500 that
dciodvfy (dicom3tools) accepts without errors, with the content tree, codes and references the
module documents, and refusals that name the measurement at fault."""

from __future__ import annotations

import math
import shutil
import subprocess
from datetime import datetime, timedelta, timezone
from io import BytesIO
from pathlib import Path

import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from dicomvault.analysis.sr import (
    COMPREHENSIVE_SR,
    ImageRef,
    Measurement,
    MeasurementError,
    Value,
    measurement_report,
    to_part10,
)

CT = get_testdata_file("CT_small.dcm")  # 128 x 128, single frame
EMRI = get_testdata_file("emri_small.dcm")  # MR, 64 x 64, 10 frames
NOW = datetime(2024, 5, 17, 14, 30, 5, tzinfo=timezone(timedelta(hours=2)))


def _image(ds: Dataset, frame: int = 1) -> ImageRef:
    return ImageRef(sop_instance_uid=ds.SOPInstanceUID, sop_class_uid=ds.SOPClassUID,
                    series_uid=ds.SeriesInstanceUID, frame=frame,
                    number_of_frames=int(ds.get("NumberOfFrames") or 1), rows=ds.Rows, columns=ds.Columns,
                    modality=ds.Modality)


def _ct_measurements(img: ImageRef) -> list[Measurement]:
    return [
        Measurement("length", img, ((10.5, 10.5), (50.25, 60.0)), (Value("length", 31.4159, "mm"),),
                    "Lesion A"),
        Measurement("angle", img, ((10.0, 10.0), (20.0, 20.0), (30.0, 10.0)), (Value("angle", 90.0, "deg"),)),
        Measurement("ellipse", img, ((20.0, 40.0), (60.0, 40.0), (40.0, 30.0), (40.0, 50.0)),
                    (Value("area", 98.17, "mm2"), Value("mean", 35.25, "HU"), Value("sd", 12.0, "HU"),
                     Value("min", -20.0, "HU"), Value("max", 80.0, "HU")), "Liver ROI"),
        Measurement("rectangle", img, ((20.0, 20.0), (40.0, 20.0), (40.0, 30.0), (20.0, 30.0)),
                    (Value("area", 200.0, "mm2"), Value("mean", 1.5, "HU"))),
    ]


def _ct_report(**kw: object) -> tuple[Dataset, Dataset]:
    ct = pydicom.dcmread(CT)
    return ct, measurement_report(ct, _ct_measurements(_image(ct)), author="alice", now=NOW, **kw)


def _dciodvfy(path: Path) -> tuple[list[str], str]:
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=60)
    out = proc.stdout + proc.stderr
    return [line for line in out.splitlines() if line.startswith("Error")], out


def _save(ds: Dataset, path: Path) -> Path:
    # Explicit VR little endian with file meta, as pydicom writes a Part-10 file.
    ds.save_as(path, enforce_file_format=True)
    return path


def _children(item: Dataset) -> list[Dataset]:
    return list(item.get("ContentSequence", []))


def _name(item: Dataset) -> tuple[str, str]:
    c = item.ConceptNameCodeSequence[0]
    return c.CodingSchemeDesignator, c.CodeValue


def _find(item: Dataset, scheme: str, value: str) -> list[Dataset]:
    return [c for c in _children(item) if "ConceptNameCodeSequence" in c and _name(c) == (scheme, value)]


def _groups(ds: Dataset) -> list[Dataset]:
    (measurements,) = _find(ds, "DCM", "126010")
    return _children(measurements)


# -- dciodvfy -------------------------------------------------------------------------------------


def test_report_passes_dciodvfy(tmp_path: Path) -> None:
    _, ds = _ct_report()
    errors, out = _dciodvfy(_save(ds, tmp_path / "sr.dcm"))
    assert errors == [], out
    assert "ComprehensiveSR" in out, out


def test_multiframe_mr_report_with_non_ascii_label_passes_dciodvfy(tmp_path: Path) -> None:
    mr = pydicom.dcmread(EMRI)
    img = _image(mr, frame=3)
    ds = measurement_report(mr, [
        Measurement("ellipse", img, ((10.0, 30.0), (50.0, 30.0), (30.0, 20.0), (30.0, 40.0)),
                    (Value("mean", 412.5, "1"), Value("sd", 30.25, "1")), "Läsion α"),
        Measurement("angle", img, ((5.0, 5.0), (32.0, 32.0), (60.0, 5.0)), (Value("angle", 88.5, "deg"),)),
    ], author="dr.who@example", now=NOW)
    errors, out = _dciodvfy(_save(ds, tmp_path / "mr.dcm"))
    assert errors == [], out


def test_dciodvfy_check_reports_errors_of_a_broken_report(tmp_path: Path) -> None:
    """The check above can fail: a report missing a Type 1 attribute and holding a bad Graphic
    Type gives Error lines."""
    _, ds = _ct_report()
    del ds.VerificationFlag
    region = _find(_groups(ds)[2], "DCM", "111030")[0]
    region.GraphicType = "BOGUS"
    errors, out = _dciodvfy(_save(ds, tmp_path / "bad.dcm"))
    assert any("VerificationFlag" in e for e in errors), out
    assert any("BOGUS" in e for e in errors), out


# -- header ---------------------------------------------------------------------------------------


def test_header_copies_the_study_and_lists_the_evidence() -> None:
    ct, ds = _ct_report(series_number=9003, instance_number=1)
    back = pydicom.dcmread(BytesIO(to_part10(ds)))
    assert back.file_meta.TransferSyntaxUID == ExplicitVRLittleEndian
    assert back.file_meta.MediaStorageSOPClassUID == COMPREHENSIVE_SR == back.SOPClassUID
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID
    assert back.SpecificCharacterSet == "ISO_IR 192"
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        assert str(back.get(kw, "")) == str(ct.get(kw, "")), kw
    assert back.PatientName == "CompressedSamples^CT1"
    assert back.Modality == "SR"
    assert back.SeriesNumber == 9003 and back.InstanceNumber == 1
    assert back.SeriesDescription == "dicomvault measurements"
    assert back.SeriesInstanceUID not in (ct.SeriesInstanceUID, "")
    assert back.SOPInstanceUID != ct.SOPInstanceUID
    assert (back.CompletionFlag, back.VerificationFlag) == ("COMPLETE", "UNVERIFIED")
    assert (back.ContentDate, back.ContentTime, back.TimezoneOffsetFromUTC) == ("20240517", "143005", "+0200")
    assert back.Manufacturer == "dicomvault"
    assert "ReferencedPerformedProcedureStepSequence" in back and "PerformedProcedureCodeSequence" in back
    (ev,) = back.CurrentRequestedProcedureEvidenceSequence
    assert ev.StudyInstanceUID == ct.StudyInstanceUID
    (series,) = ev.ReferencedSeriesSequence
    assert series.SeriesInstanceUID == ct.SeriesInstanceUID
    assert [(r.ReferencedSOPClassUID, r.ReferencedSOPInstanceUID) for r in series.ReferencedSOPSequence] == [
        (ct.SOPClassUID, ct.SOPInstanceUID)]
    # CT statistics use standard codes only: no private coding scheme to declare
    assert "CodingSchemeIdentificationSequence" not in back


def test_study_attributes_from_the_index_as_a_mapping() -> None:
    ct = pydicom.dcmread(CT)
    attrs = {"StudyInstanceUID": "1.2.3", "PatientName": "Doe^Jane", "PatientID": "P1",
             "StudyDate": "20240101"}
    ds = measurement_report(attrs, _ct_measurements(_image(ct))[:1], author="bob")
    got = (ds.StudyInstanceUID, str(ds.PatientName), ds.PatientID, ds.StudyDate)
    assert got == ("1.2.3", "Doe^Jane", "P1", "20240101")
    assert ds.AccessionNumber == ""
    assert ds.CurrentRequestedProcedureEvidenceSequence[0].StudyInstanceUID == "1.2.3"
    with pytest.raises(MeasurementError, match="StudyInstanceUID"):
        measurement_report({"PatientID": "P1"}, _ct_measurements(_image(ct)), author="bob")


# -- content tree ---------------------------------------------------------------------------------


def test_root_template_language_observer_procedure_and_library() -> None:
    ct, ds = _ct_report()
    assert ds.ValueType == "CONTAINER" and _name(ds) == ("DCM", "126000")
    assert ds.ConceptNameCodeSequence[0].CodeMeaning == "Imaging Measurement Report"
    assert ds.ContinuityOfContent == "SEPARATE"
    (tpl,) = ds.ContentTemplateSequence
    assert (tpl.MappingResource, tpl.TemplateIdentifier) == ("DCMR", "1500")
    (lang,) = _find(ds, "DCM", "121049")
    assert lang.RelationshipType == "HAS CONCEPT MOD"
    assert lang.ConceptCodeSequence[0].CodeValue == "en-US"
    assert lang.ConceptCodeSequence[0].CodingSchemeDesignator == "RFC5646"
    (otype,) = _find(ds, "DCM", "121005")
    assert otype.RelationshipType == "HAS OBS CONTEXT"
    assert (otype.ConceptCodeSequence[0].CodingSchemeDesignator, otype.ConceptCodeSequence[0].CodeValue) == (
        "DCM", "121006")
    (observer,) = _find(ds, "DCM", "121008")
    assert (observer.ValueType, observer.RelationshipType, str(observer.PersonName)) == (
        "PNAME", "HAS OBS CONTEXT", "alice")
    (proc,) = _find(ds, "DCM", "121058")
    assert (proc.ConceptCodeSequence[0].CodingSchemeDesignator, proc.ConceptCodeSequence[0].CodeValue) == (
        "LN", "25045-6")  # CID 100 "CT unspecified body region"
    (library,) = _find(ds, "DCM", "111028")
    (lgroup,) = _find(library, "DCM", "126200")
    entries = [c.ReferencedSOPSequence[0].ReferencedSOPInstanceUID for c in _children(lgroup)]
    assert entries == [ct.SOPInstanceUID]
    # order of the root's children: language, observer, procedure, library, measurements
    order = [_name(c)[1] for c in _children(ds)]
    assert order == ["121049", "121005", "121008", "121058", "111028", "126010"]


def _tracking(group: Dataset) -> tuple[str, str]:
    (tid,) = _find(group, "DCM", "112039")
    (tuid,) = _find(group, "DCM", "112040")
    assert (tid.ValueType, tid.RelationshipType) == ("TEXT", "HAS OBS CONTEXT")
    assert (tuid.ValueType, tuid.RelationshipType) == ("UIDREF", "HAS OBS CONTEXT")
    return tid.TextValue, tuid.UID


def _image_ref(scoord: Dataset) -> Dataset:
    (img,) = _children(scoord)
    assert (img.RelationshipType, img.ValueType) == ("SELECTED FROM", "IMAGE")
    assert _name(img) == ("DCM", "121324")
    (ref,) = img.ReferencedSOPSequence
    return ref


def _num(item: Dataset) -> tuple[float, float, str]:
    (mv,) = item.MeasuredValueSequence
    (unit,) = mv.MeasurementUnitsCodeSequence
    assert unit.CodingSchemeDesignator == "UCUM"
    return float(mv.NumericValue), float(mv.FloatingPointValue), unit.CodeValue


def test_measurement_groups_codes_and_coordinates() -> None:
    ct, ds = _ct_report()
    groups = _groups(ds)
    assert len(groups) == 4
    assert all(_name(g) == ("DCM", "125007") and g.RelationshipType == "CONTAINS" for g in groups)
    templates = [g.ContentTemplateSequence[0].TemplateIdentifier for g in groups]
    assert templates == ["1501", "1501", "1410", "1410"]
    labels_uids = [_tracking(g) for g in groups]
    assert [label for label, _ in labels_uids] == ["Lesion A", "Angle 2", "Liver ROI", "Rectangle 4"]
    uids = [uid for _, uid in labels_uids]
    assert len(set(uids)) == 4 and all(pydicom.uid.UID(u).is_valid for u in uids)

    # length: NUM Length (SCT 410668003, mm) INFERRED FROM an open POLYLINE of 2 points
    (length,) = _find(groups[0], "SCT", "410668003")
    assert length.ValueType == "NUM"
    numeric, exact, unit = _num(length)
    assert (exact, unit) == (31.4159, "mm") and math.isclose(numeric, 31.4159)
    (scoord,) = _children(length)
    assert (scoord.RelationshipType, scoord.ValueType) == ("INFERRED FROM", "SCOORD")
    assert scoord.GraphicType == "POLYLINE"
    assert list(scoord.GraphicData) == [10.5, 10.5, 50.25, 60.0]
    ref = _image_ref(scoord)
    assert (ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) == (ct.SOPClassUID, ct.SOPInstanceUID)
    assert "ReferencedFrameNumber" not in ref  # single-frame image

    # angle: NUM Angle (SCT 1483009, deg) INFERRED FROM an open POLYLINE of 3 points, vertex second
    (angle,) = _find(groups[1], "SCT", "1483009")
    assert _num(angle)[1:] == (90.0, "deg")
    (scoord,) = _children(angle)
    assert list(scoord.GraphicData) == [10.0, 10.0, 20.0, 20.0, 30.0, 10.0]

    # ellipse: TID 1410 Image Region ELLIPSE in the group, then Area and HU statistics
    (region,) = _find(groups[2], "DCM", "111030")
    assert (region.RelationshipType, region.ValueType) == ("CONTAINS", "SCOORD")
    assert region.GraphicType == "ELLIPSE"
    assert list(region.GraphicData) == [20.0, 40.0, 60.0, 40.0, 40.0, 30.0, 40.0, 50.0]
    assert _image_ref(region).ReferencedSOPInstanceUID == ct.SOPInstanceUID
    nums = [c for c in _children(groups[2]) if c.ValueType == "NUM"]
    assert [_name(n) for n in nums] == [("SCT", "42798000")] + [("DCM", "112031")] * 4
    assert _num(nums[0])[1:] == (98.17, "mm2")
    derivations = []
    for n in nums[1:]:
        assert _num(n)[2] == "[hnsf'U]"
        (mod,) = _children(n)
        assert (mod.RelationshipType, mod.ValueType) == ("HAS CONCEPT MOD", "CODE")
        assert _name(mod) == ("DCM", "121401")
        (code,) = mod.ConceptCodeSequence
        derivations.append((code.CodingSchemeDesignator, code.CodeValue))
    assert derivations == [("SCT", "373098007"), ("SCT", "386136009"), ("SCT", "255605001"),
                           ("SCT", "56851009")]
    assert [_num(n)[1] for n in nums[1:]] == [35.25, 12.0, -20.0, 80.0]
    assert not any(c.RelationshipType == "INFERRED FROM" for n in nums for c in _children(n))

    # rectangle: closed POLYLINE, the first corner repeated
    (region,) = _find(groups[3], "DCM", "111030")
    assert region.GraphicType == "POLYLINE"
    assert list(region.GraphicData) == [20.0, 20.0, 40.0, 20.0, 40.0, 30.0, 20.0, 30.0, 20.0, 20.0]


def test_multiframe_reference_names_the_frame_and_mr_statistics_quantity() -> None:
    mr = pydicom.dcmread(EMRI)
    ds = measurement_report(mr, [
        Measurement("rectangle", _image(mr, frame=7), ((1.0, 1.0), (63.0, 1.0), (63.0, 64.0), (1.0, 64.0)),
                    (Value("max", 900.0, "1"),)),
    ], author="bob")
    (group,) = _groups(ds)
    (region,) = _find(group, "DCM", "111030")
    ref = _image_ref(region)
    assert ref.ReferencedFrameNumber == 7
    (num,) = [c for c in _children(group) if c.ValueType == "NUM"]
    assert _name(num) == ("DCM", "110852")  # MR signal intensity
    assert _num(num)[2] == "1"
    (proc,) = _find(ds, "DCM", "121058")
    assert proc.ConceptCodeSequence[0].CodeValue == "25056-3"


def test_statistics_of_other_modalities_use_a_declared_local_code() -> None:
    ct = pydicom.dcmread(CT)
    img = ImageRef(ct.SOPInstanceUID, ct.SOPClassUID, ct.SeriesInstanceUID, rows=128, columns=128,
                   modality="OT")
    ds = measurement_report(ct, [Measurement("rectangle", img, ((0.0, 0.0), (128.0, 0.0), (128.0, 128.0),
                                                                  (0.0, 128.0)), (Value("mean", 3.0, "1"),))],
                            author="bob")
    (num,) = [c for c in _children(_groups(ds)[0]) if c.ValueType == "NUM"]
    assert _name(num) == ("99DVAULT", "pixel-value")
    (scheme,) = ds.CodingSchemeIdentificationSequence
    assert scheme.CodingSchemeDesignator == "99DVAULT"
    assert ds.ContentSequence[3].ConceptCodeSequence[0].CodeValue == "363679005"  # Imaging procedure


def test_ellipse_given_minor_axis_first_is_written_major_axis_first() -> None:
    ct = pydicom.dcmread(CT)
    ds = measurement_report(ct, [Measurement("ellipse", _image(ct), ((40.0, 30.0), (40.0, 50.0), (20.0, 40.0),
                                                                     (60.0, 40.0)))], author="bob")
    (region,) = _find(_groups(ds)[0], "DCM", "111030")
    assert list(region.GraphicData) == [20.0, 40.0, 60.0, 40.0, 40.0, 30.0, 40.0, 50.0]


# -- refusals -------------------------------------------------------------------------------------


def _bad(kind: str, points: tuple[tuple[float, float], ...], values: tuple[Value, ...] = (),
         label: str | None = None, frame: int = 1) -> Measurement:
    ct = pydicom.dcmread(CT, stop_before_pixels=True)
    return Measurement(kind, _image(ct, frame), points, values, label)


L = (Value("length", 5.0, "mm"),)


@pytest.mark.parametrize(("measurement", "reason"), [
    (_bad("circle", ((1.0, 1.0), (2.0, 2.0)), L), "kind"),
    (_bad("length", ((1.0, 1.0),), L), "needs 2 points"),
    (_bad("angle", ((1.0, 1.0), (2.0, 2.0)), (Value("angle", 5.0, "deg"),)), "needs 3 points"),
    (_bad("length", ((1.0, 1.0), (129.0, 2.0)), L), "outside the image"),
    (_bad("length", ((-0.5, 1.0), (12.0, 2.0)), L), "outside the image"),
    (_bad("length", ((1.0, 1.0), (1.0, 1.0)), L), "coincide"),
    (_bad("length", ((1.0, 1.0), (float("nan"), 1.0)), L), "finite"),
    (_bad("length", ((1.0, 1.0), (5.0, 1.0)), (Value("length", 5.0, "cm"),)), "in mm"),
    (_bad("length", ((1.0, 1.0), (5.0, 1.0)), ()), "needs its length"),
    (_bad("length", ((1.0, 1.0), (5.0, 1.0)), (*L, Value("mean", 1.0, "HU"))), "has no 'mean'"),
    (_bad("length", ((1.0, 1.0), (5.0, 1.0)), (*L, *L)), "twice"),
    (_bad("length", ((1.0, 1.0), (5.0, 1.0)), (Value("length", float("inf"), "mm"),)), "finite"),
    (_bad("angle", ((1.0, 1.0), (5.0, 1.0), (5.0, 9.0)), (Value("angle", 400.0, "deg"),)), "0..360"),
    (_bad("ellipse", ((20.0, 40.0), (60.0, 40.0), (40.0, 30.0), (45.0, 50.0))), "perpendicular"),
    (_bad("ellipse", ((20.0, 40.0), (60.0, 40.0), (30.0, 30.0), (30.0, 50.0))), "midpoint"),
    (_bad("rectangle", ((20.0, 20.0), (40.0, 30.0), (40.0, 20.0), (20.0, 30.0))), "in order"),
    (_bad("rectangle", ((20.0, 20.0), (40.0, 20.0), (40.0, 30.0), (20.0, 30.0)),
          (Value("min", 5.0, "HU"), Value("max", 1.0, "HU"))), "inconsistent"),
    (_bad("rectangle", ((20.0, 20.0), (40.0, 20.0), (40.0, 30.0), (20.0, 30.0)),
          (Value("mean", 5.0, "not a unit"),)), "UCUM"),
    (_bad("length", ((1.0, 1.0), (5.0, 1.0)), L, label="x" * 65), "at most 64"),
    (_bad("length", ((1.0, 1.0), (5.0, 1.0)), L, label="a\nb"), "control"),
    (_bad("length", ((1.0, 1.0), (5.0, 1.0)), L, frame=2), "no frame 2"),
])
def test_bad_measurements_are_refused_with_their_index(measurement: Measurement, reason: str) -> None:
    ct = pydicom.dcmread(CT, stop_before_pixels=True)
    good = _ct_measurements(_image(ct))[0]
    with pytest.raises(MeasurementError, match=reason) as exc:
        measurement_report(ct, [good, measurement], author="alice")
    assert exc.value.index == 1
    assert str(exc.value).startswith("measurement 1: ")


def test_a_report_needs_measurements_and_an_author() -> None:
    ct = pydicom.dcmread(CT, stop_before_pixels=True)
    with pytest.raises(MeasurementError, match="at least one"):
        measurement_report(ct, [], author="alice")
    with pytest.raises(MeasurementError, match="author"):
        measurement_report(ct, _ct_measurements(_image(ct)), author=" ")
