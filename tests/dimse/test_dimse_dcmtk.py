"""The archive's DIMSE services against dcmtk: echoscu, storescu, findscu, movescu (to storescp),
getscu, with real files in eight transfer syntaxes."""

from __future__ import annotations

import os
import re
import subprocess
import time
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from dimse_helpers import ARCHIVE_AE, Archive, Sent, dataset_bytes, read_part10, run
from pydicom.dataset import Dataset
from pydicom.tag import Tag
from pydicom.uid import generate_uid

pytestmark = pytest.mark.interop

CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"  # CT_small.dcm and its variants


def test_echo(archive: Archive) -> None:
    run(["echoscu", "-aet", "ECHOSCU", "-aec", ARCHIVE_AE, *archive.addr])


def _same_content(want: Dataset, got: Dataset, where: str) -> None:
    """Element values equal (dcmtk's storescu re-serialises what it sends, so the bytes may
    differ from the file: group lengths, sequence length encoding; the content may not)."""
    for elem in want:
        if elem.tag.element == 0 or elem.tag == 0xFFFCFFFC:
            continue  # group lengths and trailing padding: dcmtk drops them when sending
        assert elem.tag in got, f"{where}: {elem.tag} {elem.keyword} missing"
        if elem.VR == "SQ":
            assert len(got[elem.tag].value) == len(elem.value), f"{where}: {elem.keyword} items"
        else:
            assert got[elem.tag].value == elem.value, f"{where}: {elem.keyword} differs"


def test_store_every_transfer_syntax(stored: Archive, corpus: list[Path]) -> None:
    for path in corpus:
        s = Sent.of(path)
        ts, _ = stored.stored(s.sop_uid)
        assert ts == s.ts, f"{path.name} arrived as {ts}, sent as {s.ts}"
        _same_content(pydicom.dcmread(path), read_part10(stored.stored_file(s.sop_uid)), path.name)
    log = stored.log_text()
    if "receiver processes on" not in log:  # in-process SCP (workers mode has its own lines)
        assert re.search(r"association from STORESCU: \d+ object\(s\) stored \([\d.]+ MB\), 0 refused",
                         log), log


# -- C-FIND ---------------------------------------------------------------------------------------

def findscu(archive: Archive, out: Path, model: str, keys: dict[str, str]) -> list[Dataset]:
    out.mkdir()
    args = []
    for k, v in keys.items():
        args += ["-k", f"{k}={v}" if v else k]
    run(["findscu", "-aet", "FINDSCU", "-aec", ARCHIVE_AE, model, "-X", "-od", str(out), *args,
         *archive.addr])
    return [pydicom.dcmread(p) for p in sorted(out.glob("rsp*.dcm"))]


def test_find_patient_level(stored: Archive, tmp_path: Path) -> None:
    rsp = findscu(stored, tmp_path / "f", "-P", {"QueryRetrieveLevel": "PATIENT", "PatientID": "",
                                                 "PatientName": "", "NumberOfPatientRelatedStudies": ""})
    assert {str(r.PatientID) for r in rsp} == {s.patient_id for s in stored.sent.values()}
    ct = next(r for r in rsp if r.PatientID == "1CT1")
    assert str(ct.PatientName) == "CompressedSamples^CT1"
    assert int(ct.NumberOfPatientRelatedStudies) == 1
    assert all(r.QueryRetrieveLevel == "PATIENT" for r in rsp)


@pytest.mark.parametrize(
    ("keys", "expect"),
    [
        ({"StudyDate": "20040101-20041231"}, lambda s: "20040101" <= s.study_date <= "20041231"),
        ({"StudyDate": "-20031231"}, lambda s: s.study_date and s.study_date <= "20031231"),
        ({"StudyDate": "20170101-"}, lambda s: s.study_date >= "20170101"),
        ({"PatientName": "CompressedSamples^M*"}, lambda s: s.patient_name.startswith("CompressedSamples^M")),
        ({"PatientID": "?CT1"}, lambda s: s.patient_id == "1CT1"),
        ({"ModalitiesInStudy": "CT"}, lambda s: s.modality == "CT"),
    ],
    ids=["date-range", "date-to", "date-from", "name-wildcard", "id-qmark", "modalities"],
)
def test_find_study_level(stored: Archive, tmp_path: Path, keys: dict[str, str], expect) -> None:  # noqa: ANN001
    query = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "StudyDate": "", "PatientName": "",
             "PatientID": "", "StudyDescription": "", "NumberOfStudyRelatedInstances": "", **keys}
    rsp = findscu(stored, tmp_path / "f", "-S", query)
    want = {s.study_uid for s in stored.sent.values() if expect(s)}
    assert want, "the query must match something"
    assert {str(r.StudyInstanceUID) for r in rsp} == want
    for r in rsp:
        # Every requested key comes back, filled or empty.
        assert all(Tag(pydicom.datadict.tag_for_keyword(k)) in r for k in query), r
        n = sum(1 for s in stored.sent.values() if s.study_uid == r.StudyInstanceUID)
        assert int(r.NumberOfStudyRelatedInstances) == n


def test_find_star_runs_answer_at_once(stored: Archive, tmp_path: Path) -> None:
    """Found by fuzzing QIDO (fuzz/python/regressions/qido_params/): a run of stars made the regex
    matcher backtrack for minutes per stored value; C-FIND matches with the same code."""
    started = time.monotonic()
    query = {"QueryRetrieveLevel": "STUDY", "StudyInstanceUID": "", "PatientName": "*" * 40 + "Q"}
    assert findscu(stored, tmp_path / "none", "-S", query) == []
    query["PatientName"] = "*" * 40 + "CT1"
    rsp = findscu(stored, tmp_path / "ct", "-S", query)
    assert CT_STUDY in {str(r.StudyInstanceUID) for r in rsp}
    assert time.monotonic() - started < 30


def test_find_series_and_image_level(stored: Archive, tmp_path: Path) -> None:
    ct = [s for s in stored.sent.values() if s.study_uid == CT_STUDY]
    assert len(ct) == 6
    series = findscu(stored, tmp_path / "se", "-S", {
        "QueryRetrieveLevel": "SERIES", "StudyInstanceUID": CT_STUDY, "SeriesInstanceUID": "",
        "Modality": "", "NumberOfSeriesRelatedInstances": ""})
    assert [str(r.SeriesInstanceUID) for r in series] == [ct[0].series_uid]
    assert series[0].Modality == "CT" and int(series[0].NumberOfSeriesRelatedInstances) == 6

    images = findscu(stored, tmp_path / "im", "-S", {
        "QueryRetrieveLevel": "IMAGE", "StudyInstanceUID": CT_STUDY, "SeriesInstanceUID": ct[0].series_uid,
        "SOPInstanceUID": "", "SOPClassUID": "", "InstanceNumber": ""})
    assert {str(r.SOPInstanceUID) for r in images} == {s.sop_uid for s in ct}
    assert {str(r.SOPClassUID) for r in images} == {"1.2.840.10008.5.1.4.1.1.2"}

    pick = sorted(s.sop_uid for s in ct)[:2]
    listed = findscu(stored, tmp_path / "uid", "-P", {
        "QueryRetrieveLevel": "IMAGE", "PatientID": "1CT1", "StudyInstanceUID": CT_STUDY,
        "SeriesInstanceUID": ct[0].series_uid, "SOPInstanceUID": "\\".join(pick)})
    assert sorted(str(r.SOPInstanceUID) for r in listed) == pick


# -- C-MOVE / C-GET -------------------------------------------------------------------------------

def received(directory: Path) -> dict[str, Path]:
    out = {}
    for p in directory.iterdir():
        if p.is_file():
            out[str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID)] = p
    return out


def assert_bit_exact(archive: Archive, files: dict[str, Path], uids: set[str]) -> None:
    assert set(files) >= uids, f"missing {uids - set(files)}"
    for uid in uids:
        ts, data = dataset_bytes(files[uid])
        assert (ts, data) == archive.stored(uid), f"{uid} ({archive.sent[uid].path.name}) not bit-exact"


def movescu(archive: Archive, *keys: str, model: str = "-S") -> None:
    args = [a for k in keys for a in ("-k", k)]
    run(["movescu", "-aet", "MOVESCU", "-aec", ARCHIVE_AE, "-aem", "STORESCP", model, *args, *archive.addr])


def test_move_study_every_transfer_syntax(stored: Archive, storescp: tuple[int, Path]) -> None:
    movescu(stored, "QueryRetrieveLevel=STUDY", f"StudyInstanceUID={CT_STUDY}")
    uids = {s.sop_uid for s in stored.sent.values() if s.study_uid == CT_STUDY}
    assert_bit_exact(stored, received(storescp[1]), uids)
    assert "C-MOVE from MOVESCU: 6 instances to STORESCP" in stored.log_text()


def test_move_series_and_image_level(stored: Archive, storescp: tuple[int, Path]) -> None:
    sc = [s for s in stored.sent.values() if s.patient_id == "ID1"]
    assert len(sc) == 2
    movescu(stored, "QueryRetrieveLevel=SERIES", f"StudyInstanceUID={sc[0].study_uid}",
            f"SeriesInstanceUID={sc[0].series_uid}")
    nm = next(s for s in stored.sent.values() if s.patient_id == "8NM1")
    movescu(stored, "QueryRetrieveLevel=IMAGE", f"PatientID={nm.patient_id}",
            f"StudyInstanceUID={nm.study_uid}", f"SeriesInstanceUID={nm.series_uid}",
            f"SOPInstanceUID={nm.sop_uid}", model="-P")
    assert_bit_exact(stored, received(storescp[1]), {s.sop_uid for s in sc} | {nm.sop_uid})


def test_get_study(stored: Archive, tmp_path: Path) -> None:
    mr = next(s for s in stored.sent.values() if s.patient_id == "4MR1")
    out = tmp_path / "get"
    out.mkdir()
    run(["getscu", "-aet", "GETSCU", "-aec", ARCHIVE_AE, "-S", "+B", "-od", str(out),
         "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={mr.study_uid}", *stored.addr])
    assert_bit_exact(stored, received(out), {mr.sop_uid})


def test_get_with_a_nagle_peer_is_not_paced_by_delayed_acks(archive: Archive, tmp_path: Path) -> None:
    """dcmtk as packaged writes each C-STORE-RSP in two pieces with Nagle on, and holds the
    second until we ACK the first: unless the native C-GET acknowledges at once (TCP_QUICKACK),
    every sub-operation waits out Linux's delayed ACK, ~40 ms (60 CT slices took 3.5 s, 0.12 s
    with it). 40 objects in under 40 x 40 ms can only happen without that wait."""
    src = tmp_path / "src"
    src.mkdir()
    base = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    study, series = generate_uid(), generate_uid()
    for i in range(40):
        base.StudyInstanceUID, base.SeriesInstanceUID = study, series
        base.SOPInstanceUID = base.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        base.save_as(src / f"{i}.dcm")
    run(["storescu", "-aet", "STORESCU", "-aec", ARCHIVE_AE, "+sd", *archive.addr, str(src)])
    out = tmp_path / "get"
    out.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "TCP_NODELAY"}  # dcmtk's default: Nagle on
    t0 = time.monotonic()
    subprocess.run(["getscu", "-aet", "GETSCU", "-aec", ARCHIVE_AE, "-od", str(out), "-k",
                    "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study}", *archive.addr],
                   check=True, capture_output=True, env=env, timeout=120)
    elapsed = time.monotonic() - t0
    assert len(list(out.iterdir())) == 40
    assert elapsed < 40 * 0.040, f"40 C-GET sub-operations took {elapsed:.2f} s: delayed-ACK pacing"
