"""IMAGE-level rows read natively from the instance records (query._ImageRows over
core/src/index_record.rs) against the Python path (every record decoded, views merged): the same
rows in the same order, on the real corpus and on records the native reader hands back."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pydicom.data
import pytest
from index_helpers import MakeInst

from dicomvault import _native
from dicomvault.engine import Engine
from dicomvault.index import Index, RecordDecodeError
from dicomvault.index import keys as index_keys
from dicomvault.index.query import QueryStats
from dicomvault.index.records import RECORD_VERSION, InstanceRecord
from dicomvault.index.schema import CF_INSTANCES
from dv_corpus import corpus_files

CHARSET_FILES = sorted((Path(pydicom.data.__file__).parent / "charset_files").glob("*.dcm"))
# Return keys from every source of an IMAGE row: the record's fields, InstanceNumber's rule, the
# series' and study's records, the instance's own attributes, and keys nothing holds.
RETURN_KEYS = ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber",
               "AvailableTransferSyntaxUID", "PatientName", "PatientID", "StudyDate", "AccessionNumber",
               "Modality", "SeriesNumber", "SeriesDescription", "NumberOfSeriesRelatedInstances",
               "NumberOfStudyRelatedInstances", "ImageType", "Rows", "ContentDate", "SpecificCharacterSet",
               "BodyPartExamined", "PatientComments"]


def both(idx: Index, query: dict[str, str], limit: int | None = None
         ) -> tuple[list[dict[str, str]], list[dict[str, str]], QueryStats]:
    """(native rows, Python rows, the native query's stats) of one IMAGE-level query."""
    stats = QueryStats()
    native = list(idx.find("IMAGE", query, limit, stats))
    planner = idx._planner  # noqa: SLF001 - the switch between the two paths under test
    planner.native_image_rows = False
    try:
        python = list(idx.find("IMAGE", query, limit))
    finally:
        planner.native_image_rows = True
    return native, python, stats


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Engine]:
    """Every real file the archive takes (pydicom-data, pydicom's test and character set files)."""
    with Engine(tmp_path_factory.mktemp("image-rows") / "data") as eng:
        outcomes = eng.store_files([*corpus_files(), *CHARSET_FILES])
        assert sum(not isinstance(o, Exception) for o in outcomes) > 50
        yield eng


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
