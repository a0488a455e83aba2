"""What a query reads (QueryStats), not how long it takes: an indexed C-FIND must touch about as
many index entries and records as it returns, whatever the archive holds."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from index_helpers import make_inst

from dicomvault.index import Index
from dicomvault.index.query import QueryStats

INSTANCES = 20_000
PER_STUDY = 10
STUDIES_PER_PATIENT = 2
DAY0 = dt.date(2000, 1, 1)
RETURN_KEYS = {"StudyInstanceUID": "", "PatientName": "", "StudyDate": "", "AccessionNumber": "",
               "ModalitiesInStudy": "", "NumberOfStudyRelatedInstances": "",
               "NumberOfStudyRelatedSeries": ""}


@pytest.fixture(scope="module")
def big(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Index]:
    """20k instances: 10 per study, 2 studies per patient, one study per day."""
    idx = Index.open(tmp_path_factory.mktemp("cost") / "index")
    batch = []
    for i in range(INSTANCES):
        study = i // PER_STUDY
        patient = study // STUDIES_PER_PATIENT
        batch.append(make_inst(f"9.{study}.1.{i % PER_STUDY + 1}", study=f"9.{study}", series=f"9.{study}.1",
                               patient_id=f"P{patient:06d}", patient_name=f"NAME{patient:06d}^X",
                               study_date=(DAY0 + dt.timedelta(days=study)).strftime("%Y%m%d"),
                               accession=f"A{study:07d}", modality="CT", instance_number=i % PER_STUDY + 1))
        if len(batch) == 5000:
            idx.add_instances(batch)
            batch = []
    yield idx
    idx.close()


def _find(idx: Index, query: dict[str, str]) -> tuple[list[dict[str, str]], QueryStats]:
    stats = QueryStats()
    rows = list(idx.find("STUDY", {**RETURN_KEYS, **query}, stats=stats))
    return rows, stats


def test_patient_id_query_touches_only_its_studies(big: Index) -> None:
    rows, st = _find(big, {"PatientID": "P000123"})
    assert sorted(r["StudyInstanceUID"] for r in rows) == ["9.246", "9.247"]
    assert st.source.startswith("PatientID(idx")
    # 2 index entries costed, the same 2 not re-read, 2 study records loaded, 2 returned
    assert (st.probed, st.scanned, st.loaded, st.matched) == (2, 2, 2, 2)
    # computed keys come from the stored study record, not from scanning series or instances
    assert {r["NumberOfStudyRelatedInstances"] for r in rows} == {str(PER_STUDY)}
    assert {r["NumberOfStudyRelatedSeries"] for r in rows} == {"1"}
    assert {r["ModalitiesInStudy"] for r in rows} == {"CT"}


def test_wildcard_and_range_are_bounded_index_scans(big: Index) -> None:
    rows, st = _find(big, {"PatientName": "NAME00012*"})  # patients 120-129: 20 studies
    assert len(rows) == 20 and st.source.startswith("PatientName(idx")
    assert st.loaded == 20 and st.scanned <= 2 * len(rows)  # PN terms: at most 2 entries per study

    rows, st = _find(big, {"StudyDate": "20020101-20020107"})
    assert len(rows) == 7 and st.source.startswith("StudyDate(idx")
    assert (st.scanned, st.loaded, st.matched) == (7, 7, 7)


def test_a_second_key_filters_the_cheapest_source(big: Index) -> None:
    # PatientID (2 studies) beats a 6-year date range: only the 2 are loaded and checked
    rows, st = _find(big, {"PatientID": "P000123", "StudyDate": "20000101-20051231"})
    assert len(rows) == 2 and st.source.startswith("PatientID(idx")
    assert st.loaded == 2


def test_unindexed_key_is_a_full_scan(big: Index) -> None:
    _, st = _find(big, {"StudyDescription": "nothing*"})
    assert st.source == "full-scan" and st.loaded == INSTANCES // PER_STUDY


def test_a_source_keys_expansion_is_read_in_pieces_without_duplicates() -> None:
    """_keys_from reads a source key's expansion (a study's images) piece by piece, so the first
    keys leave before the whole expansion is read, and still yields each key once: duplicates
    inside a piece, across pieces, and across source keys are dropped."""
    from dicomvault.index.query import IMAGE, STUDY, Planner, Source

    consumed = []

    def expansion(study: bytes) -> Iterator[bytes]:
        for i in range(300):
            consumed.append(i)
            yield b"%s-%03d" % (study[:1], i % 250)  # 250 distinct, the last 50 again

    planner = Planner({}, lambda: None)  # type: ignore[arg-type,return-value]
    planner.expand = lambda src_level, level, key: expansion(key)  # type: ignore[method-assign]
    src = Source(name="test", cf=None, ranges=[], extract=lambda k: k, level=STUDY, probed=[b"A", b"B", b"A"])
    out = planner._keys_from(src, IMAGE, None)
    assert next(out) == b"A-000" and len(consumed) < 50  # a first piece, not the whole study
    rest = [b"A-000", *out]
    assert len(rest) == len(set(rest)) == 500
