"""C.2.2.2 matching rules, candidate selection and relational queries."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import pytest
from index_helpers import make_inst

from dicomvault.index import Index, QueryError
from dicomvault.index.query import parse_match


@pytest.fixture(scope="module")
def filled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    """One index shared by the (read-only) query tests of this module."""
    idx = Index.open(tmp_path_factory.mktemp("query") / "index")
    mk = make_inst
    idx.add_instances([
        mk("1.1.1", study="1.1", series="1.1.S1", patient_id="P001", patient_name="Doe^John",
           study_date="20240105", accession="A100", modality="CT", instance_number=1),
        mk("1.1.2", study="1.1", series="1.1.S1", patient_id="P001", patient_name="Doe^John",
           study_date="20240105", accession="A100", modality="CT", instance_number=2),
        mk("1.1.3", study="1.1", series="1.1.S2", patient_id="P001", patient_name="Doe^John",
           study_date="20240105", accession="A100", modality="SR", sop_class="1.2.840.10008.5.1.4.1.1.88.11"),
        mk("1.2.1", study="1.2", series="1.2.S1", patient_id="P001", patient_name="Doe^John",
           study_date="20240220", accession="A200", modality="MR"),
        mk("2.1.1", study="2.1", series="2.1.S1", patient_id="P002", patient_name="DOE^JANE^^^",
           study_date="20231231", accession="B100", modality="CT"),
        mk("3.1.1", study="3.1", series="3.1.S1", patient_id="X003", patient_name="Smith^Anna",
           study_date="20240301", accession="C100", modality="MR", StudyDescription="Brain MRI"),
        mk("4.1.1", study="4.1", series="4.1.S1", patient_id="X004", patient_name="Dö^Zoë",
           study_date="", accession="", modality="US"),
    ])
    yield idx
    assert idx.check() == []
    idx.close()


def uids(rows: Iterable[dict[str, str]], key: str = "StudyInstanceUID") -> list[str]:
    return sorted(r[key] for r in rows)


def test_single_value(filled: Index) -> None:
    assert uids(filled.find("STUDY", {"PatientID": "P001"})) == ["1.1", "1.2"]
    assert uids(filled.find("STUDY", {"AccessionNumber": "A200"})) == ["1.2"]
    assert uids(filled.find("STUDY", {"StudyDate": "20240105"})) == ["1.1"]
    assert uids(filled.find("STUDY", {"PatientID": "p001"})) == []  # LO is case-sensitive
    assert uids(filled.find("STUDY", {"PatientID": "P001 "})) == ["1.1", "1.2"]  # padding ignored


def test_single_value_uses_index(filled: Index) -> None:
    assert filled.explain("STUDY", {"PatientID": "P001"})["source"].startswith("PatientID(idx")
    assert filled.explain("STUDY", {"StudyInstanceUID": "1.1"})["source"].startswith("StudyInstanceUID")
    assert filled.explain("STUDY", {"StudyDescription": "x"})["source"] == "full-scan"
    assert filled.explain("STUDY", {"PatientID": "*"})["source"] == "full-scan"  # universal


def test_pn_case_insensitive(filled: Index) -> None:
    assert uids(filled.find("STUDY", {"PatientName": "doe^john"})) == ["1.1", "1.2"]
    assert uids(filled.find("STUDY", {"PatientName": "DOE^JANE"})) == ["2.1"]  # trailing ^^^ ignored
    assert uids(filled.find("STUDY", {"PatientName": "dö^zoë"})) == ["4.1"]
    assert uids(filled.find("PATIENT", {"PatientName": "smith^anna"}), "PatientID") == ["X003"]


def test_wildcards(filled: Index) -> None:
    assert uids(filled.find("STUDY", {"PatientName": "doe*"})) == ["1.1", "1.2", "2.1"]
    assert uids(filled.find("STUDY", {"PatientName": "DOE^J?NE"})) == ["2.1"]
    assert uids(filled.find("STUDY", {"PatientName": "*ANNA"})) == ["3.1"]  # no literal prefix: scan
    assert uids(filled.find("STUDY", {"PatientID": "X*"})) == ["3.1", "4.1"]
    assert uids(filled.find("STUDY", {"PatientID": "P00?"})) == ["1.1", "1.2", "2.1"]
    assert uids(filled.find("STUDY", {"AccessionNumber": "?100"})) == ["1.1", "2.1", "3.1"]
    assert uids(filled.find("STUDY", {"StudyDescription": "*MRI"})) == ["3.1"]
    assert uids(filled.find("STUDY", {"StudyDescription": "*mri"})) == []  # LO case-sensitive
    assert filled.explain("STUDY", {"PatientName": "DOE*"})["source"].startswith("PatientName(idx")
    assert filled.explain("STUDY", {"PatientName": "*ANNA"})["source"] == "full-scan"


def test_date_ranges(filled: Index) -> None:
    assert uids(filled.find("STUDY", {"StudyDate": "20240101-20240229"})) == ["1.1", "1.2"]
    assert uids(filled.find("STUDY", {"StudyDate": "20240220-"})) == ["1.2", "3.1"]
    assert uids(filled.find("STUDY", {"StudyDate": "-20240105"})) == ["1.1", "2.1"]
    assert uids(filled.find("STUDY", {"StudyDate": "2024.01.05-2024.01.05"})) == ["1.1"]
    assert filled.explain("STUDY", {"StudyDate": "20240101-20240229"})["source"].startswith("StudyDate")
    with pytest.raises(QueryError, match="StudyDate"):
        filled.find("STUDY", {"StudyDate": "20240301-20240101"})  # raised eagerly


def test_uid_list(filled: Index) -> None:
    assert uids(filled.find("STUDY", {"StudyInstanceUID": "1.1\\3.1\\9.9"})) == ["1.1", "3.1"]
    rows = filled.find("IMAGE", {"SOPInstanceUID": "1.1.1\\1.1.3", "StudyInstanceUID": "",
                                 "SeriesInstanceUID": ""})
    assert uids(rows, "SOPInstanceUID") == ["1.1.1", "1.1.3"]
    # value list for other VRs (QIDO comma lists)
    assert uids(filled.find("STUDY", {"ModalitiesInStudy": "US\\SR"})) == ["1.1", "4.1"]


def test_universal_and_return_keys(filled: Index) -> None:
    rows = list(filled.find("STUDY", {"PatientID": "P001", "PatientName": "", "StudyDate": "",
                                      "ModalitiesInStudy": "", "NumberOfStudyRelatedInstances": "",
                                      "NumberOfStudyRelatedSeries": "",
                                      "NumberOfPatientRelatedStudies": ""}))
    by = {r["StudyInstanceUID"]: r for r in rows}
    assert by["1.1"] == {
        "StudyInstanceUID": "1.1", "PatientID": "P001", "PatientName": "Doe^John", "StudyDate": "20240105",
        "ModalitiesInStudy": "CT\\SR", "NumberOfStudyRelatedInstances": "3",
        "NumberOfStudyRelatedSeries": "2", "NumberOfPatientRelatedStudies": "2"}
    # universal match also returns entities lacking the attribute
    assert len(list(filled.find("STUDY", {"AccessionNumber": ""}))) == 5
    assert len(list(filled.find("STUDY", {}))) == 5
    assert len(list(filled.find("STUDY", {}, limit=2))) == 2


def test_empty_value_matching(filled: Index) -> None:
    assert uids(filled.find("STUDY", {"AccessionNumber": '""'})) == ["4.1"]


def test_modalities_in_study(filled: Index) -> None:
    assert uids(filled.find("STUDY", {"ModalitiesInStudy": "CT"})) == ["1.1", "2.1"]
    assert uids(filled.find("STUDY", {"ModalitiesInStudy": "MR", "PatientID": "P*"})) == ["1.2"]


def test_hierarchical_series_and_image(filled: Index) -> None:
    rows = list(filled.find("SERIES", {"StudyInstanceUID": "1.1", "Modality": "",
                                       "NumberOfSeriesRelatedInstances": ""}))
    assert sorted((r["SeriesInstanceUID"], r["Modality"], r["NumberOfSeriesRelatedInstances"])
                  for r in rows) == [("1.1.S1", "CT", "2"), ("1.1.S2", "SR", "1")]
    assert filled.explain("SERIES", {"StudyInstanceUID": "1.1"})["source"].startswith("StudyInstanceUID")
    rows = list(filled.find("IMAGE", {"StudyInstanceUID": "1.1", "SeriesInstanceUID": "1.1.S1",
                                      "InstanceNumber": ""}))
    got = sorted((r["SOPInstanceUID"], r["InstanceNumber"]) for r in rows)
    assert got == [("1.1.1", "1"), ("1.1.2", "2")]
    assert filled.explain("IMAGE", {"SeriesInstanceUID": "1.1.S1"})["source"].startswith("SeriesInstanceUID")
    assert uids(filled.find("SERIES", {"SeriesInstanceUID": "3.1.S1"}), "SeriesInstanceUID") == ["3.1.S1"]


def test_relational(filled: Index) -> None:
    # patient/study keys at IMAGE level
    rows = filled.find("IMAGE", {"PatientName": "DOE^*", "StudyDate": "20240101-", "Modality": "CT"})
    assert uids(rows, "SOPInstanceUID") == ["1.1.1", "1.1.2"]
    rows = filled.find("IMAGE", {"PatientID": "P001", "SOPClassUID": "1.2.840.10008.5.1.4.1.1.88.11"})
    assert uids(rows, "SOPInstanceUID") == ["1.1.3"]
    rows = filled.find("SERIES", {"PatientID": "P001", "Modality": "MR"})
    assert uids(rows, "SeriesInstanceUID") == ["1.2.S1"]
    rows = list(filled.find("IMAGE", {"AccessionNumber": "B100", "PatientName": "", "StudyDate": ""}))
    assert rows == [{"StudyInstanceUID": "2.1", "SeriesInstanceUID": "2.1.S1", "SOPInstanceUID": "2.1.1",
                     "AccessionNumber": "B100", "PatientName": "DOE^JANE^^^", "StudyDate": "20231231"}]


def test_patient_level(filled: Index) -> None:
    rows = list(filled.find("PATIENT", {"PatientID": "P00*", "NumberOfPatientRelatedStudies": ""}))
    assert sorted((r["PatientID"], r["NumberOfPatientRelatedStudies"]) for r in rows) == [
        ("P001", "2"), ("P002", "1")]


def test_bad_level(filled: Index) -> None:
    with pytest.raises(QueryError, match="FOO"):
        filled.find("FOO", {})


def test_parse_match_forms() -> None:
    assert parse_match("PatientName", "").kind == "universal"
    assert parse_match("PatientName", "*").kind == "universal"
    assert parse_match("PatientName", "a*").kind == "wildcard"
    assert parse_match("StudyDate", "2020-").kind == "range"
    assert parse_match("StudyTime", "1000-1200").matches("1130")
    assert parse_match("StudyTime", "-10").matches("105959.123")
    assert not parse_match("StudyTime", "-10").matches("110000")
    assert parse_match("SOPInstanceUID", "1\\2").kind == "list"
    assert parse_match("PatientName", "Doe^John").matches("DOE^JOHN^^")
    assert parse_match("PatientName", "Yamada^Tarou").matches("Yamada^Tarou=山田^太郎")
