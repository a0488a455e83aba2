"""retrieve_keys (dimse/retrieve.py) reads a C-GET identifier without pydicom: whenever it answers,
the answer (or the RetrieveError) must be unique_keys' of the identifier pydicom decodes, and it
must leave to pydicom what it cannot read the same way."""

from __future__ import annotations

import itertools
import struct

import pytest
from pydicom.dataset import Dataset
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_dataset
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelGet,
)

from dicomvault.dimse.find import decode_identifier
from dicomvault.dimse.retrieve import RetrieveError, retrieve_keys, unique_keys

MODELS = (StudyRootQueryRetrieveInformationModelGet, PatientRootQueryRetrieveInformationModelGet)
LEVEL, PATIENT, STUDY, SERIES, SOP = 0x00080052, 0x00100020, 0x0020000D, 0x0020000E, 0x00080018
VR = {LEVEL: b"CS", PATIENT: b"LO", STUDY: b"UI", SERIES: b"UI", SOP: b"UI"}


def element(tag: int, value: bytes, implicit: bool, vr: bytes | None = None) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head + struct.pack("<I", len(value)) + value
    vr = vr or VR.get(tag, b"LO")
    if vr in (b"OB", b"SQ", b"UN", b"UT"):
        return head + vr + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + vr + struct.pack("<H", len(value)) + value


def encode(elements: list[tuple[int, bytes]], implicit: bool) -> bytes:
    return b"".join(element(t, v, implicit) for t, v in sorted(elements, key=lambda e: e[0]))


def reference(raw: bytes, implicit: bool, model: str) -> tuple[str, dict[str, str]] | str:
    try:
        return unique_keys(decode_identifier(raw, implicit), model)
    except RetrieveError as exc:
        return f"{exc.code:04X} {exc}"


def lean(raw: bytes, implicit: bool, model: str) -> tuple[str, dict[str, str]] | str | None:
    try:
        return retrieve_keys(raw, implicit, model)
    except RetrieveError as exc:
        return f"{exc.code:04X} {exc}"


LEVELS = [b"STUDY", b"STUDY ", b"SERIES", b"IMAGE", b"PATIENT", b"study", b" STUDY", b"STUDY\0", b"",
          b"FRAME ", b"STUDY\\SERIES"]
UIDS = [None, b"", b"1.2.840.113619.2.55.3", b"1.2.3 ", b"1.2.3\0", b" 1.2 \0", b"  ", b"1.2.*", b"1.2.?4",
        b"1.2\\1.3", b"1.2\x003", b"1.2.\xe9"]
PATIENT_IDS = [None, b"", b"PAT-1 ", b"  ", b"M\xfcller", b"*"]


def identifiers() -> list[list[tuple[int, bytes]]]:
    out = []
    for level, study, series in itertools.product(LEVELS, UIDS, UIDS[:6]):
        els = [(LEVEL, level)]
        if study is not None:
            els.append((STUDY, study))
        if series is not None:
            els.append((SERIES, series))
        out.append(els)
    for level, patient, study in itertools.product(LEVELS[:5], PATIENT_IDS, UIDS[:4]):
        els = [(LEVEL, level), (SOP, b"1.2.3.4.5")]
        if patient is not None:
            els.append((PATIENT, patient))
        if study is not None:
            els.append((STUDY, study))
        out.append(els)
    return out


@pytest.mark.parametrize("implicit", [True, False])
@pytest.mark.parametrize("model", MODELS)
def test_same_answer_as_pydicom_whenever_it_answers(implicit: bool, model: str) -> None:
    answered = 0
    for els in identifiers():
        raw = encode(els, implicit)
        got = lean(raw, implicit, model)
        if got is None:
            continue
        answered += 1
        assert got == reference(raw, implicit, model), (els, implicit)
    assert answered > 400  # the usual identifiers are read here, not left to pydicom


@pytest.mark.parametrize("implicit", [True, False])
def test_usual_study_retrieve_is_read_here(implicit: bool) -> None:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.47281597087500531692039305172135090529"
    ds.PatientID = "M\u00fcller"  # not a key of Study Root: read or not, it does not matter
    ds.SpecificCharacterSet = "ISO_IR 100"
    fp = DicomBytesIO()
    fp.is_little_endian, fp.is_implicit_VR = True, implicit
    write_dataset(fp, ds)
    raw = fp.getvalue()
    model = StudyRootQueryRetrieveInformationModelGet
    assert retrieve_keys(raw, implicit, model) == ("STUDY", {"StudyInstanceUID": ds.StudyInstanceUID})
    assert retrieve_keys(raw, implicit, model) == unique_keys(decode_identifier(raw, implicit), model)


def test_left_to_pydicom() -> None:
    study = StudyRootQueryRetrieveInformationModelGet
    ok = element(LEVEL, b"STUDY ", True) + element(STUDY, b"1.2.3", True)
    assert retrieve_keys(ok, True, study) == ("STUDY", {"StudyInstanceUID": "1.2.3"})
    # several values, a non-ASCII or control character in a key
    level = element(LEVEL, b"STUDY ", True)
    assert retrieve_keys(level + element(STUDY, b"1.2\\1.3", True), True, study) is None
    assert retrieve_keys(level + element(STUDY, b"1.2\x003", True), True, study) is None
    # a Patient ID that is a key (Patient Root): its character set is pydicom's business
    patient = PatientRootQueryRetrieveInformationModelGet
    assert retrieve_keys(ok + element(PATIENT, b"PAT-1 ", True), True, patient) is None
    assert retrieve_keys(ok + element(PATIENT, b"  ", True), True, patient) == (
        "STUDY", {"StudyInstanceUID": "1.2.3"})
    # an element twice, another VR, an undefined length, a truncated element
    assert retrieve_keys(ok + element(STUDY, b"1.2.4", True), True, study) is None
    assert retrieve_keys(element(LEVEL, b"STUDY ", False) + element(STUDY, b"1.2.3", False, b"UN"), False,
                         study) is None
    seq = struct.pack("<HHI", 0x0008, 0x1115, 0xFFFFFFFF) + struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    assert retrieve_keys(ok + seq, True, study) is None
    assert retrieve_keys(ok[:-2], True, study) is None
    assert retrieve_keys(ok + b"\x08\x00", True, study) is None


def test_refusals_as_unique_keys() -> None:
    study = StudyRootQueryRetrieveInformationModelGet
    for raw in (element(LEVEL, b"SERIES", True) + element(STUDY, b"1.2.3", True),
                element(LEVEL, b"PATIENT", True) + element(PATIENT, b"P", True),
                element(STUDY, b"1.2.3", True),
                element(LEVEL, b"STUDY ", True) + element(STUDY, b"1.2.*", True)):
        with pytest.raises(RetrieveError) as lean_exc:
            retrieve_keys(raw, True, study)
        with pytest.raises(RetrieveError) as ref_exc:
            unique_keys(decode_identifier(raw, True), study)
        assert (lean_exc.value.code, str(lean_exc.value)) == (ref_exc.value.code, str(ref_exc.value))
