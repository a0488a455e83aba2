"""Patient updates and merges in the index, and the corrections applied to what leaves the archive
(coercion.py) while the stored bytes stay as received: the byte splice checked element by element
against pydicom on every real file, then the index semantics (update, merge, undo, late arrivals)."""

from __future__ import annotations

import io
import warnings
import zlib
from pathlib import Path

import pydicom
import pytest
from dv_iocm import ct_series
from pydicom.data import get_testdata_file
from pydicom.filereader import read_dataset

from dicomvault import coercion
from dicomvault.engine import Engine
from dicomvault.errors import NotFoundError
from dicomvault.index.errors import CorrectionConflictError, CorrectionError
from dicomvault.index.records import MERGE_UNDONE, PATIENT_UPDATED, PATIENTS_MERGED
from dv_corpus import corpus_files, pydicom_reads, split_part10

VALUES = {"PatientName": "Corrected^Name^Q", "PatientBirthDate": "19700101", "OtherPatientIDs": "A\\B",
          "PatientSex": ""}
DEFLATED = "1.2.840.10008.1.2.1.99"


def _parse(ts: str, data: bytes) -> pydicom.Dataset:
    if ts == DEFLATED:
        data, ts = zlib.decompress(data, -zlib.MAX_WBITS), "1.2.840.10008.1.2.1"
    return read_dataset(io.BytesIO(data), ts == "1.2.840.10008.1.2", ts != "1.2.840.10008.1.2.2")


def _readable() -> list[Path]:
    """The files pydicom reads whole (a truncated one reads as an empty data set: nothing to compare)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return [p for p in corpus_files() if pydicom_reads(p) is None and len(ds := pydicom.dcmread(p)) > 0
                and "TransferSyntaxUID" in ds.file_meta]


@pytest.mark.parametrize("path", _readable(), ids=lambda p: p.name)
def test_coercion_sets_the_patient_values_and_keeps_every_other_element(path: Path) -> None:
    ts, data = split_part10(path)
    out = coercion.apply(ts, data, VALUES)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        before, after = _parse(ts, data), _parse(ts, out)
        assert str(after.PatientName) == "Corrected^Name^Q"
        assert after.PatientBirthDate == "19700101" and list(after.OtherPatientIDs) == ["A", "B"]
        assert after.PatientSex in ("", None)
        for elem in before:
            if elem.tag.group == 0x0010 and (elem.keyword in VALUES or elem.tag.element == 0):
                continue
            assert after[elem.tag].value == elem.value, f"{path.name}: {elem.tag} changed"
        assert {e.tag for e in after} - {e.tag for e in before} <= {0x00100010, 0x00100030, 0x00101000,
                                                                    0x00100040}
    if ts != DEFLATED:
        # outside group 0010 not one byte differs: the head before it and everything after it
        head, tail = _around(ts, data)
        assert out[:head] == data[:head]
        assert out[len(out) - tail:] == data[len(data) - tail:]


def _around(ts: str, data: bytes) -> tuple[int, int]:
    """(length of the bytes before group 0010, length of those after it): what the splice copies."""
    implicit, little = ts == "1.2.840.10008.1.2", ts != "1.2.840.10008.1.2.2"
    fp = io.BytesIO(data)
    read_dataset(fp, implicit, little, stop_when=lambda tag, _vr, _len: tag.group >= 0x0010)
    head = fp.tell()
    read_dataset(fp, implicit, little, stop_when=lambda tag, _vr, _len: tag.group > 0x0010)
    return head, len(data) - fp.tell()


def test_a_value_the_character_set_cannot_carry_reencodes_the_whole_dataset_in_utf8() -> None:
    ts, data = split_part10(get_testdata_file("CT_small.dcm"))
    out = coercion.apply(ts, data, {"PatientName": "山田^太郎"})
    ds = _parse(ts, out)
    ds.decode()
    assert ds.SpecificCharacterSet == "ISO_IR 192"
    assert str(ds.PatientName) == "山田^太郎"
    assert ds.PixelData == _parse(ts, data).PixelData


def test_latin1_value_stays_in_a_latin1_dataset() -> None:
    ds = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    ds.SpecificCharacterSet = "ISO_IR 100"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    ts, data = split_part10(buf.getvalue())
    out = coercion.apply(ts, data, {"PatientName": "Müller^Zoë"})
    got = _parse(ts, out)
    got.decode()
    assert got.SpecificCharacterSet == "ISO_IR 100" and str(got.PatientName) == "Müller^Zoë"
    assert "Müller^Zoë".encode("latin-1") in out


def test_coercion_refuses_attributes_outside_the_patient_module() -> None:
    with pytest.raises(ValueError, match="not a patient attribute"):
        coercion.apply("1.2.840.10008.1.2.1", b"", {"StudyDescription": "x"})


# ------------------------------------------------------------------------------ the index


def _file(engine: Engine, sop: str, **kw: bool) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(engine.read_file(sop, **kw)))


def _find(engine: Engine, level: str, **query: str) -> list[dict[str, str]]:
    return list(engine.index.find(level, {"PatientID": "", "PatientName": "", **query}))


def test_update_reaches_queries_and_outgoing_bytes_and_keeps_the_stored_ones(engine: Engine, tmp_path: Path
                                                                            ) -> None:
    images = ct_series(tmp_path / "a", 3, patient_id="P1")
    engine.store_files([im.path for im in images])
    studies = engine.index.update_patient("P1", {"PatientName": "Doe^Jane", "PatientBirthDate": "19800214"})
    assert studies == [images[0].study_uid]
    for level in ("PATIENT", "STUDY", "SERIES", "IMAGE"):
        rows = _find(engine, level, PatientBirthDate="")
        assert rows and all(r["PatientName"] == "Doe^Jane" and r["PatientBirthDate"] == "19800214"
                            for r in rows), level
    assert _find(engine, "STUDY", PatientName="DOE*")  # the name index follows the update
    assert not _find(engine, "STUDY", PatientName="IOCM*")
    out = _file(engine, images[0].sop_uid)
    assert str(out.PatientName) == "Doe^Jane" and out.PatientBirthDate == "19800214"
    assert engine.read_file(images[0].sop_uid, as_received=True) == images[0].path.read_bytes()
    exported = engine.export("study", images[0].study_uid, tmp_path / "out")
    assert all(str(pydicom.dcmread(p).PatientName) == "Doe^Jane" for p in exported)
    raw = engine.export("study", images[0].study_uid, tmp_path / "raw", as_received=True)
    assert sorted(p.read_bytes() for p in raw) == sorted(im.path.read_bytes() for im in images)
    (change,) = [c for c in engine.index.changes(0, 100) if c.kind == PATIENT_UPDATED]
    assert change.patient_id == "P1" and change.detail["values"]["PatientName"] == "Doe^Jane"
    assert engine.index.check() == []


def test_a_new_study_of_a_corrected_patient_takes_the_current_values(engine: Engine, tmp_path: Path) -> None:
    engine.store_files([im.path for im in ct_series(tmp_path / "a", 1, patient_id="P2")])
    engine.index.update_patient("P2", {"PatientName": "Right^Name"})
    late = ct_series(tmp_path / "b", 2, patient_id="P2")  # the modality still sends IOCM^TEST
    engine.store_files([im.path for im in late])
    assert str(_file(engine, late[0].sop_uid).PatientName) == "Right^Name"
    assert {r["PatientName"] for r in _find(engine, "STUDY")} == {"Right^Name"}
    assert engine.index.check() == []


def test_merge_moves_studies_and_undo_puts_them_back_exactly(engine: Engine, tmp_path: Path) -> None:
    a = ct_series(tmp_path / "a", 2, patient_id="OLD")
    b = ct_series(tmp_path / "b", 3, patient_id="KEEP")
    engine.store_files([im.path for im in a + b])
    engine.index.update_patient("KEEP", {"PatientName": "Keep^Me", "PatientSex": "F"})
    before = {s.study_uid: (s.patient_id, dict(s.attrs), dict(s.coerced)) for s in engine.index.studies()}
    record = engine.index.merge_patients("OLD", "KEEP")
    assert record is not None and list(record.studies) == [a[0].study_uid]
    assert engine.index.get_patient("OLD") is None
    keep = engine.index.get_patient("KEEP")
    assert keep is not None and keep.num_studies == 2 and keep.num_instances == 5
    assert {r["StudyInstanceUID"] for r in _find(engine, "STUDY", PatientID="KEEP")} == {
        a[0].study_uid, b[0].study_uid}
    moved = _file(engine, a[0].sop_uid)
    assert (moved.PatientID, str(moved.PatientName), moved.PatientSex) == ("KEEP", "Keep^Me", "F")
    assert engine.index.check() == []
    # an object still carrying the old ID lands under the survivor
    late = ct_series(tmp_path / "late", 1, patient_id="OLD")
    engine.store_files([late[0].path])
    assert engine.index.get_study(late[0].study_uid).patient_id == "KEEP"
    assert _file(engine, late[0].sop_uid).PatientID == "KEEP"
    assert engine.index.merge_patients("OLD", "KEEP") is None  # repeated: nothing to do
    with pytest.raises(CorrectionConflictError):
        engine.index.merge_patients("OLD", "OTHER")
    undone = engine.index.unmerge_patients("OLD")
    assert undone.survivor_id == "KEEP"
    after = {s.study_uid: (s.patient_id, dict(s.attrs), dict(s.coerced)) for s in engine.index.studies()}
    after.pop(late[0].study_uid)  # arrived after the merge: stays with the survivor
    assert after == before
    assert _file(engine, a[0].sop_uid).PatientID == "OLD"
    assert engine.read_file(a[0].sop_uid) == a[0].path.read_bytes()  # nothing to correct any more
    kinds = [c.kind for c in engine.index.changes(0, 1000) if c.kind in (PATIENTS_MERGED, MERGE_UNDONE)]
    assert kinds == [PATIENTS_MERGED, MERGE_UNDONE]
    assert engine.index.check() == []


def test_identifier_change_is_a_merge_into_a_new_id(engine: Engine, tmp_path: Path) -> None:
    a = ct_series(tmp_path / "a", 2, patient_id="TEMP-77")
    engine.store_files([im.path for im in a])
    record = engine.index.merge_patients("TEMP-77", "MRN-1234", {"PatientName": "Real^Name"})
    assert record is not None and record.survivor_created
    ds = _file(engine, a[1].sop_uid)
    assert (ds.PatientID, str(ds.PatientName)) == ("MRN-1234", "Real^Name")
    assert engine.stats()["patients"] == 1
    engine.index.unmerge_patients("TEMP-77")
    assert engine.index.get_patient("MRN-1234") is None and engine.stats()["patients"] == 1
    assert engine.index.check() == []


def test_bad_corrections_are_refused(engine: Engine, tmp_path: Path) -> None:
    engine.store_files([im.path for im in ct_series(tmp_path / "a", 1, patient_id="P9")])
    with pytest.raises(NotFoundError):
        engine.index.update_patient("NOBODY", {"PatientName": "X"})
    with pytest.raises(CorrectionError, match="merge"):
        engine.index.update_patient("P9", {"PatientID": "P10"})
    with pytest.raises(CorrectionError, match="StudyDescription"):
        engine.index.update_patient("P9", {"StudyDescription": "x"})
    with pytest.raises(CorrectionError):
        engine.index.merge_patients("P9", "P9")
    with pytest.raises(NotFoundError):
        engine.index.unmerge_patients("P9")


def test_the_header_walk_and_pydicom_agree_and_the_walk_takes_most_files() -> None:
    """coercion.py splices with a header walk (element_walk.py) and falls back to pydicom when the
    walk is unsure: both give the same elements, and the fallback stays the exception."""
    fast_files = 0
    files = [p for p in _readable() if split_part10(p)[0] != DEFLATED]
    for path in files:
        ts, data = split_part10(path)
        implicit, little = ts == "1.2.840.10008.1.2", ts != "1.2.840.10008.1.2.2"
        fast = coercion._splice(data, implicit, little, VALUES)
        if fast is None:
            continue
        fast_files += 1
        slow = coercion._splice_pydicom(data, implicit, little, VALUES)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            a, b = _parse(ts, fast), _parse(ts, slow)
            assert [(e.tag, e.value) for e in a if e.tag != 0x7FE00010] == [
                (e.tag, e.value) for e in b if e.tag != 0x7FE00010], path.name
    assert fast_files >= 0.8 * len(files), f"the header walk read only {fast_files} of {len(files)} files"
