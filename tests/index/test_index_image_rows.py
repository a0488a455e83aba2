"""IMAGE- and STUDY-level rows read natively from the instance and study records
(query._ImageRows and query._StudyRows over core/src/index_record.rs) against the Python path
(every record decoded, views merged): the same rows in the same order, on the real corpus and on
records the native readers hand back."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import msgpack
import pytest
from index_helpers import MakeInst

from dicomvault import _native
from dicomvault.engine import Engine
from dicomvault.index import Index, RecordDecodeError
from dicomvault.index import keys as index_keys
from dicomvault.index.query import NewestFirst, QueryStats
from dicomvault.index.records import RECORD_VERSION, InstanceRecord, StudyRecord
from dicomvault.index.schema import CF_INSTANCES, CF_STUDIES
from dv_corpus import archive_corpus

# Return keys from every source of an IMAGE row: the record's fields, InstanceNumber's rule, the
# series' and study's records, the instance's own attributes, and keys nothing holds.
RETURN_KEYS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber",
               "AvailableTransferSyntaxUID", "PatientName", "PatientID", "StudyDate", "AccessionNumber",
               "Modality", "SeriesNumber", "SeriesDescription", "NumberOfSeriesRelatedInstances",
               "NumberOfStudyRelatedInstances", "ImageType", "Rows", "ContentDate", "SpecificCharacterSet",
               "BodyPartExamined", "PatientComments"]


# STUDY level: the record's fields, the computed lists and counts, patient and study attributes
# (text, person names, a sequence's stored form) and keys nothing holds at this level.
STUDY_KEYS = ["StudyInstanceUID", "PatientID", "PatientName", "PatientBirthDate", "PatientSex", "StudyDate",
              "StudyTime", "AccessionNumber", "StudyID", "StudyDescription", "ReferringPhysicianName",
              "ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries",
              "NumberOfStudyRelatedInstances", "SpecificCharacterSet", "InstitutionName", "PatientComments",
              "IssuerOfAccessionNumberSequence", "Modality", "SOPInstanceUID", "OtherPatientIDs"]


def both(idx: Index, query: dict[str, str], limit: int | None = None, level: str = "IMAGE",
         newest_first: bool = False) -> tuple[list[dict[str, str]], list[dict[str, str]], QueryStats]:
    """(native rows, Python rows, the native query's stats) of one IMAGE- or STUDY-level query
    (`newest_first`: a STUDY query's results newest first)."""
    if newest_first:
        query = {**query, "StudyDate": NewestFirst(query.get("StudyDate", ""))}
    stats = QueryStats()
    native = list(idx.find(level, query, limit, stats))
    planner = idx._planner  # noqa: SLF001 - the switch between the two paths under test
    planner.native_image_rows = planner.native_study_rows = False
    try:
        python = list(idx.find(level, query, limit))
    finally:
        planner.native_image_rows = planner.native_study_rows = True
    return native, python, stats


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """Every real file the archive takes (pydicom-data, pydicom's test and character set files)."""
    yield from archive_corpus(tmp_path_factory.mktemp("image-rows") / "data")


def _studies(idx: Index) -> list[str]:
    return sorted(s.study_uid for s in idx.studies())


def test_every_study_of_the_corpus(corpus: Engine) -> None:
    idx = corpus.index
    query = dict.fromkeys(RETURN_KEYS, "")
    total = 0
    for uid in _studies(idx):
        native, python, stats = both(idx, {**query, "StudyInstanceUID": uid})
        assert native == python, uid
        assert native and stats.native == len(native), uid  # read natively, not handed back
        total += len(native)
    assert total == idx.stats()["objects"]
    # the whole archive (a full scan of the instances) too, and non-ASCII text among it
    native, python, _ = both(idx, query)
    assert native == python and len(native) == total
    assert any(not r["PatientName"].isascii() for r in native)


@pytest.mark.parametrize("match", [
    {"PatientName": "*^*"},
    {"PatientName": "?*"},
    {"PatientName": '""'},
    {"SeriesDescription": '""'},
    {"Modality": "CT\\MR"},
    {"Modality": "ct"},  # case-sensitive: nothing
    {"SOPClassUID": "1.2.840.10008.5.1.4.1.1.2\\1.2.840.10008.5.1.4.1.1.4"},
    {"StudyDate": "19900101-"},
    {"StudyDate": "-20000101"},
    {"ContentDate": "20000101-20201231"},
    {"InstanceNumber": "1"},
    {"ImageType": "ORIGINAL*"},
    {"Rows": "512"},
    {"PatientComments": "*"},
    {"PatientID": "*", "Modality": "MR", "InstanceNumber": "1\\2\\3"},
])
def test_matching_keys(corpus: Engine, match: dict[str, str]) -> None:
    query = {**dict.fromkeys(RETURN_KEYS, ""), **match}
    native, python, _ = both(corpus.index, query)
    assert native == python
    # per study too: the study's key is the source, the matching keys are checked on the rows
    for uid in _studies(corpus.index)[:20]:
        native, python, _ = both(corpus.index, {**query, "StudyInstanceUID": uid})
        assert native == python, uid


def test_series_key_and_limit(corpus: Engine) -> None:
    idx = corpus.index
    some = [s for s in idx.studies() if s.num_instances > 1] or list(idx.studies())
    for st in some[:10]:
        for se in idx.series_of(st.study_uid):
            # the SeriesInstanceUID source: its StudyInstanceUID is checked on every row
            query = {**dict.fromkeys(RETURN_KEYS, ""), "StudyInstanceUID": st.study_uid,
                     "SeriesInstanceUID": se.series_uid}
            native, python, _ = both(idx, query)
            assert native == python and len(native) == se.num_instances
            native, python, _ = both(idx, {**query, "StudyInstanceUID": "1.2.3.nope"})
            assert native == python == []
    for limit in (1, 2, 7):
        native, python, _ = both(idx, dict.fromkeys(RETURN_KEYS, ""), limit)
        assert native == python and len(native) == limit


def test_columns_in_any_order(corpus: Engine) -> None:
    idx = corpus.index
    uid = _studies(idx)[0]
    query = {"StudyInstanceUID": uid, **dict.fromkeys(RETURN_KEYS, "")}
    rows = list(idx.find("IMAGE", query))
    cols = list(reversed(RETURN_KEYS))
    values = list(idx.find_values("IMAGE", query, cols))
    assert values == [[r[c] for c in cols] for r in rows]


def _rewrite(idx: Index, sop: str, change: dict[str, Any]) -> None:
    """Rewrites an instance record's stored map with `change` applied (values of kinds the
    archive never writes: what an older or newer version might have left)."""
    cf = idx._cfs[CF_INSTANCES]  # noqa: SLF001
    key = index_keys.encode(sop)
    fields = InstanceRecord.fields_of(cf[key])
    fields.update(change)
    cf[key] = bytes((RECORD_VERSION,)) + msgpack.packb(fields, use_bin_type=True)


@pytest.fixture
def loose(index_path: str) -> Iterator[Index]:
    """A fresh index whose records the test rewrites (so not checked for consistency after)."""
    ix = Index.open(index_path)
    yield ix
    ix.close()


def test_records_the_native_reader_hands_back(loose: Index, mk: MakeInst) -> None:
    idx = loose
    for i in range(1, 9):
        idx.add_instance(mk(f"1.{i}", instance_number=i, series_number=1, ImageType="ORIGINAL\\PRIMARY"))
    idx.add_instance(mk("1.9", instance_number=None))  # no InstanceNumber: "" from the record
    _rewrite(idx, "1.2", {"attrs": {**InstanceRecord.fields_of(
        idx._cfs[CF_INSTANCES][index_keys.encode("1.2")])["attrs"], "Rows": 512}})  # noqa: SLF001
    _rewrite(idx, "1.3", {"sop_class_uid": None, "transfer_syntax": 7})
    _rewrite(idx, "1.4", {"instance_number": 40, "attrs": {"PatientName": "Other^Name"}})
    _rewrite(idx, "1.5", {"attrs": None, "extra_field_of_a_newer_version": [1, {"x": b"y"}]})
    _rewrite(idx, "1.6", {"received_at": 1.5, "instance_number": -3, "attrs": {"InstanceNumber": None}})
    query = {"StudyInstanceUID": "1.2.840.1", "SOPInstanceUID": "", "SOPClassUID": "", "InstanceNumber": "",
             "AvailableTransferSyntaxUID": "", "PatientName": "", "Rows": "", "Modality": "", "ImageType": ""}
    native, python, stats = both(idx, query)
    assert native == python and len(native) == 9
    # 1.2 (an int attribute) and 1.3 (an int field) went through Python; the others natively
    assert stats.native == 7
    by_sop = {r["SOPInstanceUID"]: r for r in native}
    assert by_sop["1.2"]["Rows"] == "512" and by_sop["1.3"]["AvailableTransferSyntaxUID"] == "7"
    assert by_sop["1.4"]["InstanceNumber"] == "40" and by_sop["1.6"]["InstanceNumber"] == ""
    assert by_sop["1.9"]["InstanceNumber"] == "" and by_sop["1.5"]["ImageType"] == ""
    # upper levels over the instance's own attributes: the study's PatientName wins
    assert by_sop["1.4"]["PatientName"] == "Doe^John"
    for match, n in (({"InstanceNumber": "40"}, 1), ({"SOPClassUID": '""'}, 1),
                     ({"ImageType": "ORIGINAL"}, 5), ({"InstanceNumber": "1\\2\\3"}, 3),
                     ({"InstanceNumber": "-3"}, 0)):
        native, python, _ = both(idx, {**query, **match})
        assert native == python and len(native) == n, match


def test_a_record_that_cannot_be_decoded_fails_the_same_way(loose: Index, mk: MakeInst) -> None:
    idx = loose
    idx.add_instance(mk("1.1"))
    idx.add_instance(mk("1.2"))
    idx._cfs[CF_INSTANCES][index_keys.encode("1.2")] = b"\x01\xc1"  # noqa: SLF001 - not msgpack
    query = {"StudyInstanceUID": "1.2.840.1", "SOPInstanceUID": ""}
    errors = []
    for native in (True, False):
        idx._planner.native_image_rows = native  # noqa: SLF001
        try:
            with pytest.raises(RecordDecodeError) as info:
                list(idx.find("IMAGE", query))
            errors.append(str(info.value))
        finally:
            idx._planner.native_image_rows = True  # noqa: SLF001
    assert errors[0] == errors[1]


def _sending_fields_in_python(raw: bytes | None) -> tuple[bytes, str, str, str] | None:
    """What Index.sending_fields made of a record before it was read natively."""
    if raw is None:
        return None
    f = InstanceRecord.fields_of(raw)
    return (bytes(f.get("hash", b"")), str(f.get("transfer_syntax", "")), str(f.get("sop_class_uid", "")),
            str(f.get("study_uid", "")))


def test_sending_fields_of_the_corpus(corpus: Engine) -> None:
    """A retrieve's plan (Index.sending_fields, read natively): Python's answer for every object."""
    idx = corpus.index
    uids = [u for s in _studies(idx) for u in idx.iter_sop_uids_of("study", s)]
    raws = idx._cfs[CF_INSTANCES].get([index_keys.encode(u) for u in uids])  # noqa: SLF001
    expected = [_sending_fields_in_python(r) for r in raws]
    assert _native.sending_fields(raws) == expected  # none handed back
    assert idx.sending_fields([*uids, "9.9.9"]) == [*expected, None]
    assert len(uids) == idx.stats()["objects"] and all(len(e[0]) == 32 for e in expected if e)


def test_sending_fields_of_records_the_native_reader_hands_back(loose: Index, mk: MakeInst) -> None:
    idx = loose
    for i in range(1, 7):
        idx.add_instance(mk(f"1.{i}"))
    _rewrite(idx, "1.2", {"transfer_syntax": None})  # str(None) is "None": Python's answer
    _rewrite(idx, "1.3", {"hash": [1, 2, 3], "sop_class_uid": 7})  # an array: bytes() takes it
    _rewrite(idx, "1.4", {"attrs": None, "extra_field_of_a_newer_version": [1, {"x": b"y"}]})
    cf = idx._cfs[CF_INSTANCES]  # noqa: SLF001
    fields = InstanceRecord.fields_of(cf[index_keys.encode("1.5")])
    for k in ("hash", "transfer_syntax", "sop_class_uid", "study_uid"):
        del fields[k]
    cf[index_keys.encode("1.5")] = bytes((RECORD_VERSION,)) + msgpack.packb(fields, use_bin_type=True)
    cf[index_keys.encode("1.6")] = bytes((RECORD_VERSION + 1,)) + b"\x80"  # a version not known here
    uids = [f"1.{i}" for i in range(1, 7)]
    raws = cf.get([index_keys.encode(u) for u in uids])
    assert [r is False for r in _native.sending_fields(raws)] == [False, True, True, False, False, True]
    rows = idx.sending_fields(uids[:5])
    assert rows == [_sending_fields_in_python(r) for r in raws[:5]]
    assert rows[1][1] == "None" and rows[2][:3:2] == (b"\x01\x02\x03", "7") and rows[4] == (b"", "", "", "")
    with pytest.raises(RecordDecodeError):  # the unknown version: Python's error, as before
        idx.sending_fields(["1.6"])


def test_reader_rejects_a_wrong_upper_list() -> None:
    reader = _native.InstanceColumns([("sop_uid", None, False, False), (None, "Modality", True, False)])
    raw = bytes((RECORD_VERSION,)) + msgpack.packb({"study_uid": "S", "series_uid": "E", "sop_uid": "1"})
    uppers: dict[tuple[str, str], list[str | None]] = {}

    def fill(pairs: list[tuple[str, str]]) -> None:
        for p in pairs:
            uppers[p] = [None, "CT"]

    assert reader.rows([raw, None, b"\x02"], uppers, fill) == [["1", "CT"], None, False]
    uppers[("S", "E")] = ["x"]
    with pytest.raises(ValueError, match="1 upper values for 2 columns"):
        reader.rows([raw], uppers, fill)


# ---------------------------------------------------------------------------
# STUDY level
# ---------------------------------------------------------------------------


def test_every_study_of_the_corpus_at_study_level(corpus: Engine) -> None:
    idx = corpus.index
    query = dict.fromkeys(STUDY_KEYS, "")
    uids = _studies(idx)
    for uid in uids:
        native, python, stats = both(idx, {**query, "StudyInstanceUID": uid}, level="STUDY")
        assert native == python and len(native) == 1, uid
        assert stats.native == 1, uid  # read natively, not handed back
    # the whole archive (a full scan of the studies), newest first too
    native, python, stats = both(idx, query, level="STUDY")
    assert native == python and len(native) == len(uids) == stats.native
    native, python, _ = both(idx, query, level="STUDY", newest_first=True)
    assert native == python and len(native) == len(uids)
    # what the rows hold: non-ASCII names, many modalities and SOP classes (the corpus has no
    # study of two: test_study_records_the_native_reader_hands_back has one)
    assert any(not r["PatientName"].isascii() for r in native)
    assert len({r["ModalitiesInStudy"] for r in native}) > 5
    assert len({r["SOPClassesInStudy"] for r in native}) > 5
    assert sum(int(r["NumberOfStudyRelatedInstances"]) for r in native) == idx.stats()["objects"]


@pytest.mark.parametrize("match", [
    {"StudyDate": "19900101-"},
    {"StudyDate": "-20000101"},
    {"StudyDate": "20000101-20201231"},
    {"StudyDate": '""'},
    {"PatientName": "*^*"},
    {"PatientName": "?*"},
    {"PatientID": "*", "StudyDescription": "*"},
    {"ModalitiesInStudy": "CT\\MR"},
    {"ModalitiesInStudy": "MR"},
    {"SOPClassesInStudy": "1.2.840.10008.5.1.4.1.1.2"},
    {"NumberOfStudyRelatedInstances": "1"},
    {"NumberOfStudyRelatedSeries": "1\\2"},
    {"AccessionNumber": '""'},
    {"PatientSex": "F"},
    {"Modality": '""'},
    {"SpecificCharacterSet": "ISO_IR*"},
])
def test_matching_keys_at_study_level(corpus: Engine, match: dict[str, str]) -> None:
    query = {**dict.fromkeys(STUDY_KEYS, ""), **match}
    native, python, _ = both(corpus.index, query, level="STUDY")
    assert native == python
    for limit in (1, 3):
        native, python, _ = both(corpus.index, query, limit, level="STUDY", newest_first=True)
        assert native == python


def test_study_columns_in_any_order_and_the_patient_counts(corpus: Engine) -> None:
    idx = corpus.index
    query = dict.fromkeys(STUDY_KEYS, "")
    rows = list(idx.find("STUDY", query))
    cols = list(reversed(STUDY_KEYS))
    assert list(idx.find_values("STUDY", query, cols)) == [[r[c] for c in cols] for r in rows]
    # the patient's counts are another record's: the Python path answers, the same rows
    counted = {**query, "NumberOfPatientRelatedStudies": ""}
    native, python, stats = both(idx, counted, level="STUDY")
    assert native == python and stats.native == 0 and len(native) == len(rows)


def _rewrite_study(idx: Index, uid: str, change: dict[str, Any], drop: tuple[str, ...] = ()) -> None:
    """Rewrites a study record's stored map (as _rewrite does an instance's); a dict of `attrs`
    is merged over the stored ones."""
    cf = idx._cfs[CF_STUDIES]  # noqa: SLF001
    key = index_keys.encode(uid)
    fields = StudyRecord.fields_of(cf[key])
    if isinstance(change.get("attrs"), dict):
        change = {**change, "attrs": {**fields["attrs"], **change["attrs"]}}
    fields.update(change)
    for name in drop:
        del fields[name]
    cf[key] = bytes((RECORD_VERSION,)) + msgpack.packb(fields, use_bin_type=True)


def test_study_records_the_native_reader_hands_back(loose: Index, mk: MakeInst) -> None:
    idx = loose
    for i in range(1, 9):
        idx.add_instance(mk(f"{i}.1", study=f"2.{i}", series=f"2.{i}.1", study_date=f"2024010{i}"))
    idx.add_instance(mk("1.2", study="2.1", series="2.1.2", modality="MR",
                        sop_class="1.2.840.10008.5.1.4.1.1.4"))
    _rewrite_study(idx, "2.2", {"num_series": None, "attrs": {"StudyDescription": 5}})
    _rewrite_study(idx, "2.3", {"modalities": {"CT": 1.0}})
    _rewrite_study(idx, "2.4", {"modalities": {"CT": 0, "US": 2, "MR": -1}, "sop_classes": {},
                                "study_uid": None, "newer_field": [1, {"x": b"y"}]})
    _rewrite_study(idx, "2.5", {"attrs": {"PatientName": None}}, drop=("num_instances", "modalities"))
    _rewrite_study(idx, "2.6", {"num_instances": True})
    query = dict.fromkeys(["StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "StudyDescription",
                           "ModalitiesInStudy", "SOPClassesInStudy", "NumberOfStudyRelatedSeries",
                           "NumberOfStudyRelatedInstances"], "")
    native, python, stats = both(idx, query, level="STUDY")
    assert native == python and len(native) == 8
    # 2.2 (a nil count, an int attribute), 2.3 (a float count) and 2.6 (a bool count) through
    # Python; the others natively
    assert stats.native == 5
    by_date = {r["StudyDate"]: r for r in native}
    assert by_date["20240101"]["ModalitiesInStudy"] == "CT\\MR"
    assert by_date["20240101"]["SOPClassesInStudy"] == "1.2.840.10008.5.1.4.1.1.2\\1.2.840.10008.5.1.4.1.1.4"
    assert by_date["20240102"]["NumberOfStudyRelatedSeries"] == "None"
    assert by_date["20240102"]["StudyDescription"] == "5"
    assert by_date["20240104"]["ModalitiesInStudy"] == "US" and by_date["20240104"]["SOPClassesInStudy"] == ""
    assert by_date["20240104"]["StudyInstanceUID"] == ""
    assert by_date["20240105"]["NumberOfStudyRelatedInstances"] == "0"
    assert by_date["20240105"]["ModalitiesInStudy"] == by_date["20240105"]["PatientName"] == ""
    # (ModalitiesInStudy "US" would be served by the Modality index, which knows no US here)
    for match, n in (({"SOPClassesInStudy": '""'}, 1), ({"StudyInstanceUID": '""'}, 1),
                     ({"NumberOfStudyRelatedInstances": "0"}, 1), ({"PatientName": '""'}, 1),
                     ({"StudyDate": "20240102-20240105"}, 4), ({"NumberOfStudyRelatedSeries": "2"}, 1)):
        native, python, _ = both(idx, {**query, **match}, level="STUDY")
        assert native == python and len(native) == n, match


def test_a_study_record_python_cannot_take_fails_the_same_way(loose: Index, mk: MakeInst) -> None:
    idx = loose
    idx.add_instance(mk("1.1", study="2.1", series="2.1.1"))
    idx.add_instance(mk("1.2", study="2.2", series="2.2.1"))
    for broken, error in ((None, TypeError), (b"\x01\xc1", RecordDecodeError)):
        if broken is None:
            _rewrite_study(idx, "2.2", {"attrs": None})  # no attributes at all: study_view fails
        else:
            idx._cfs[CF_STUDIES][index_keys.encode("2.2")] = broken  # noqa: SLF001
        errors = []
        for native in (True, False):
            idx._planner.native_study_rows = native  # noqa: SLF001
            try:
                with pytest.raises(error) as info:
                    list(idx.find("STUDY", {"StudyInstanceUID": "", "StudyDate": ""}))
                errors.append(str(info.value))
            finally:
                idx._planner.native_study_rows = True  # noqa: SLF001
        assert errors[0] == errors[1]


def test_study_reader_rejects_an_unknown_source() -> None:
    with pytest.raises(ValueError, match="unknown column source"):
        _native.StudyColumns([("text", "study_uid"), ("nope", "x")])
    reader = _native.StudyColumns([("text", "study_uid"), ("keys", "modalities"), ("count", "num_series")])
    raw = bytes((RECORD_VERSION,)) + msgpack.packb({"study_uid": "S", "modalities": {"MR": 1, "CT": 3}})
    assert reader.rows([raw, None, b"\x02"]) == [["S", "CT\\MR", "0"], None, False]
