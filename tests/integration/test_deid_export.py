"""`dicomvault export --deidentify` end to end on real images (CT, MR, US with sequences,
references and private attributes), through `dicomvault ingest` and the CLI as an operator runs
them; output checked with dciodvfy (dicom3tools) against the input, UIDs and dates across
exports, the burned-in rule, the report and the encrypted mapping."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pydicom
import pytest
from dv_deid import B_VALUE, KEY_HEX, PATIENT_ID, SECRET, UNSAFE_PRIVATE_TEXT, Study, make_study, write_config
from pydicom.dataset import Dataset

from dicomvault.integration.deid.mapping import MappingKeyError, mapping_path, read_mapping
from dicomvault.integration.deid.pseudonyms import Pseudonymizer, shift_da, shift_dt
from dv_corpus import real_file


def dv(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "dicomvault.cli", *args], capture_output=True, text=True,
                          timeout=120)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def read_all(out: Path) -> dict[str, Dataset]:
    """SOP Instance UID -> dataset of every .dcm under `out`, each at the path its UIDs name."""
    found = {}
    for path in sorted(out.rglob("*.dcm")):
        ds = pydicom.dcmread(path)
        assert path.relative_to(out).parts == (ds.StudyInstanceUID, ds.SeriesInstanceUID,
                                               f"{ds.SOPInstanceUID}.dcm")
        assert ds.file_meta.MediaStorageSOPInstanceUID == ds.SOPInstanceUID
        found[ds.SOPInstanceUID] = ds
    return found


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Study, Path]:
    tmp = tmp_path_factory.mktemp("deid")
    study = make_study(tmp / "in")
    data = tmp / "data"
    dv("ingest", "--data", str(data), str(tmp / "in"))
    return data, study, write_config(tmp)


def export(archive: tuple[Path, Study, Path], out: Path, *extra: str) -> tuple[dict[str, Dataset], dict]:
    data, study, cfg = archive
    proc = dv("export", "--data", str(data), "--config", str(cfg), "--study", study.uid, "-o", str(out),
              "--deidentify", "TRIAL", *extra)
    assert "held back" in proc.stdout or "--allow-burned-in" in extra
    report = json.loads((out / "deid-report.json").read_text())
    return read_all(out), report


def test_study_export_keeps_references_and_removes_identity(archive, tmp_path: Path) -> None:
    data, study, _ = archive
    pseudo = Pseudonymizer("TRIAL", SECRET.encode())
    first, report = export(archive, tmp_path / "a")
    second, _ = export(archive, tmp_path / "b")
    # CT x3 and MR out; the US (no BurnedInAnnotation) held back and reported
    assert len(first) == 4 and report["instances"] == 5 and report["exported"] == 4
    us = study.of("US")[0]
    assert [e["SOPInstanceUID"] for e in report["burned_in_held_back"]] == [pseudo.uid(us.sop_uid)]
    assert "US" in report["burned_in_held_back"][0]["reason"]
    # the same UIDs on a second export, and nothing original in the report
    assert sorted(first) == sorted(second) == sorted(pseudo.uid(o.sop_uid) for o in study.objects
                                                     if o.modality != "US")
    text = json.dumps(report)
    assert not any(o.sop_uid in text for o in study.objects) and PATIENT_ID not in text
    studies = {ds.StudyInstanceUID for ds in first.values()}
    frames = {ds.FrameOfReferenceUID for ds in first.values()}
    assert studies == {pseudo.uid(study.uid)} and frames == {pseudo.uid(study.frame_of_reference)}
    assert len({ds.SeriesInstanceUID for ds in first.values()}) == 2
    cts = sorted((ds for ds in first.values() if ds.Modality == "CT"), key=lambda d: d.InstanceNumber)
    first_ct = cts[0].SOPInstanceUID
    for ct in cts[1:]:  # the reference follows the referenced object's new UID
        assert ct.ReferencedImageSequence[0].ReferencedSOPInstanceUID == first_ct
        assert ct.ReferencedImageSequence[0].ReferencedSOPClassUID == ct.SOPClassUID
    shift = pseudo.day_shift(PATIENT_ID)
    for ds in first.values():
        assert ds.PatientID == pseudo.patient_id(PATIENT_ID)
        assert ds.PatientName == pseudo.patient_name(PATIENT_ID)
        assert ds.PatientIdentityRemoved == "YES" and ds.LongitudinalTemporalInformationModified == "MODIFIED"
        assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == ["113100", "113107"]
        assert ds.StudyDate == shift_da("20240229", shift) and ds.ContentDate == shift_da("20240301", shift)
        assert ds.AcquisitionDateTime == shift_dt("20240229101733.250000+0100", shift)
        assert ds.StudyTime == "101500"
        assert ds.PatientBirthDate == "" and "PatientAge" not in ds and ds.AccessionNumber == ""
        assert ds.InstitutionName != "St. Elsewhere Hospital" and ds.OperatorsName != "SMITH^TECH"
        assert "OtherPatientIDsSequence" not in ds and "StudyDescription" not in ds
        assert ds.ReferringPhysicianName == ""
        item = ds.ContributingEquipmentSequence[0]
        assert item.Manufacturer == "ACME" and item.InstitutionName != "St. Elsewhere Hospital"
        assert item.OperatorsName != "WILSON^JAMES"
        assert item.ContributionDateTime == shift_dt("20240229120000", shift)
        ref = ds.ReferencedPerformedProcedureStepSequence[0]
        assert ref.ReferencedSOPInstanceUID == pseudo.uid(study.uid[:60] + ".7")
        assert not any(t.is_private for t in ds.keys())
    src_ct = pydicom.dcmread(study.of("CT")[0].path)
    assert cts[0].PixelData == src_ct.PixelData
    assert study.uid in dv("ls", "--data", str(data)).stdout  # the archive itself is untouched


def test_retain_options_and_burned_in_on_request(archive, tmp_path: Path) -> None:
    _, study, _ = archive
    pseudo = Pseudonymizer("TRIAL", SECRET.encode())
    out, report = export(archive, tmp_path / "c", "--retain", "full-dates,patient,device,private",
                         "--allow-burned-in")
    assert len(out) == 5 and report["burned_in_held_back"] == []
    flagged = [e["SOPInstanceUID"] for e in report["burned_in_exported"]]
    assert flagged == [pseudo.uid(study.of("US")[0].sop_uid)]
    for ds in out.values():
        assert ds.StudyDate == "20240229" and ds.LongitudinalTemporalInformationModified == "UNMODIFIED"
        assert ds.PatientAge == "063Y" and ds.PatientSex == "F"
        assert ds.DeviceSerialNumber == "SN-445566"
        assert [i.CodeValue for i in ds.DeidentificationMethodCodeSequence] == [
            "113100", "113109", "113106", "113108", "113111"]
        assert UNSAFE_PRIVATE_TEXT not in str(ds)
    mr = next(ds for ds in out.values() if ds.Modality == "MR")
    kept = {int(t) & 0xFFFF00FF: mr[t].value for t in mr.keys() if t.is_private}
    assert kept == {0x00190010: "SIEMENS MR HEADER", 0x0019000C: str(B_VALUE)}


def test_another_project_gets_other_pseudonyms(archive, tmp_path: Path) -> None:
    data, study, cfg = archive
    dv("export", "--data", str(data), "--config", str(cfg), "--study", study.uid, "-o", str(tmp_path / "o"),
       "--deidentify", "OTHER")
    out = read_all(tmp_path / "o")
    other = Pseudonymizer("OTHER", b"another-secret-for-another-project")
    assert {ds.StudyInstanceUID for ds in out.values()} == {other.uid(study.uid)}
    assert {ds.PatientID for ds in out.values()} == {other.patient_id(PATIENT_ID)}
    # retain = []: Z dates emptied, X/Z/D ones replaced by a dummy
    assert all(ds.StudyDate == "" and ds.AcquisitionDateTime == "19000101000000" for ds in out.values())
    assert not mapping_path(data, "OTHER").exists()  # keep_mapping = "none"
    bad = dv("export", "--data", str(data), "--config", str(cfg), "--study", study.uid, "-o",
             str(tmp_path / "x"), "--deidentify", "NOPE", check=False)
    assert bad.returncode == 2 and "NOPE" in bad.stderr and "TRIAL" in bad.stderr


def test_mapping_is_encrypted_and_decrypts_with_the_key_only(archive, tmp_path: Path) -> None:
    data, study, _ = archive
    export(archive, tmp_path / "m")
    path = mapping_path(data, "TRIAL")
    assert path.stat().st_mode & 0o077 == 0
    raw = path.read_bytes()
    assert PATIENT_ID.encode() not in raw and study.uid.encode() not in raw
    records = read_mapping(path, bytes.fromhex(KEY_HEX), "TRIAL")
    pairs = {(p["kind"], p["original"]): p["pseudonym"] for r in records for p in r["pairs"]}
    pseudo = Pseudonymizer("TRIAL", SECRET.encode())
    assert pairs[("uid", study.uid)] == pseudo.uid(study.uid)
    assert pairs[("patient_id", PATIENT_ID)] == pseudo.patient_id(PATIENT_ID)
    assert pairs[("date_shift_days", PATIENT_ID)] == str(pseudo.day_shift(PATIENT_ID))
    with pytest.raises(MappingKeyError):
        read_mapping(path, bytes(32), "TRIAL")
    with pytest.raises(MappingKeyError):
        read_mapping(path, bytes.fromhex(KEY_HEX), "OTHER")


def _dciodvfy_errors(path: Path) -> set[str]:
    proc = subprocess.run(["dciodvfy", "-new", str(path)], capture_output=True, text=True, timeout=60)
    # UIDs quoted in a message are the object's own (replaced ones after de-identification)
    return {re.sub(r"\d+(\.\d+)+", "<UID>", re.sub(r"\s+", " ", line))
            for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("Error")}


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dicom3tools' dciodvfy not installed")
@pytest.mark.parametrize("retain", ["", "dates,patient,device,private"])
def test_output_has_no_new_dciodvfy_errors(tmp_path: Path, retain: str) -> None:
    from dicomvault.integration.deid.deidentifier import Deidentifier
    from dicomvault.integration.deid.profile import Options

    deid = Deidentifier("TRIAL", SECRET.encode(), Options.parse(retain))
    names = ["CT_small.dcm", "MR_small.dcm", "US1_UNCR.dcm", "MR-SIEMENS-DICOM-WithOverlays.dcm",
             "SC_rgb.dcm",
             "eCT_Supplemental.dcm", "rtplan.dcm", "rtstruct.dcm", "rtdose.dcm", "emri_small.dcm",
             "test-SR.dcm"]
    checked = 0
    for name in names:
        src = real_file(name)
        out = tmp_path / name
        out.write_bytes(deid.part10(src.read_bytes(), where=name).data)
        new = _dciodvfy_errors(out) - _dciodvfy_errors(src)
        assert new == set(), f"{name}: {sorted(new)}"
        checked += 1
    assert checked == len(names)


def test_export_arguments_are_checked(archive, tmp_path: Path) -> None:
    data, study, cfg = archive
    plain = dv("export", "--data", str(data), "--study", study.uid, "-o", str(tmp_path / "p"),
               "--retain", "dates", check=False)
    assert plain.returncode == 2 and "--deidentify" in plain.stderr
    nocfg = dv("export", "--data", str(data), "--study", study.uid, "-o", str(tmp_path / "q"),
               "--deidentify", "TRIAL", check=False)
    assert nocfg.returncode == 2 and "--config" in nocfg.stderr
    loose = tmp_path / "loose.secret"
    loose.write_text(SECRET)
    os.chmod(loose, 0o644)
    bad_cfg = tmp_path / "bad.toml"
    bad_cfg.write_text(f'[deidentify.projects.P]\nsecret_file = "{loose}"\n')
    bad = dv("export", "--data", str(data), "--config", str(bad_cfg), "--study", study.uid, "-o",
             str(tmp_path / "r"), "--deidentify", "P", check=False)
    assert bad.returncode == 2 and "chmod 600" in bad.stderr
    # the plain export is still the byte-identical one
    dv("export", "--data", str(data), "--study", study.uid, "-o", str(tmp_path / "plain"))
    ct = study.of("CT")[0]
    exported = tmp_path / "plain" / study.uid / ct.series_uid / f"{ct.sop_uid}.dcm"
    assert exported.read_bytes() == ct.path.read_bytes()


def test_no_identifier_of_the_corpus_survives_in_the_bytes() -> None:
    """Every real file of the corpus that has its UIDs, de-identified with no option: its
    patient's name and ID, the physicians' and operators' names, the accession number and its
    UIDs appear nowhere in the output bytes (private attributes and nested items included)."""
    from dicomvault.integration.deid.deidentifier import Deidentifier
    from dicomvault.integration.deid.profile import Options
    from dv_corpus import corpus_files

    deid = Deidentifier("TRIAL", SECRET.encode(), Options())
    keywords = ("PatientName", "PatientID", "ReferringPhysicianName", "OperatorsName", "AccessionNumber",
                "StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID")
    done, leaks = 0, []
    for path in corpus_files():
        data = path.read_bytes()
        try:
            src = pydicom.dcmread(path, force=True)
        except (pydicom.errors.InvalidDicomError, ValueError, EOFError, OSError):
            continue
        if not src.get("SOPInstanceUID") or not src.get("SOPClassUID"):
            continue
        out = deid.part10(data, where=path.name).data
        done += 1
        for kw in keywords:
            value = str(src.get(kw, "") or "").strip()
            if len(value) >= 6 and value.encode() in out:
                leaks.append((path.name, kw, value))
    assert done >= 100 and leaks == []
