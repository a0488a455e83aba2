"""The index's record cache (index/record_cache.py): transactions take the study, series and
patient records the previous one wrote from memory, and what they see is always what the
database holds, after deletes, patient updates, a failed transaction and a reopen."""

from __future__ import annotations

import pytest
from index_helpers import MakeInst

from dicomvault.index import Index
from dicomvault.index import keys as index_keys
from dicomvault.index.records import SeriesRecord, StudyRecord
from dicomvault.index.schema import CF_SERIES, CF_STUDIES


def on_disk(idx: Index, cf: str, key: bytes) -> object:
    raw = idx._cfs[cf].get(key)
    return None if raw is None else {CF_STUDIES: StudyRecord, CF_SERIES: SeriesRecord}[cf].decode(raw)


def cached_equals_disk(idx: Index) -> int:
    """Every cached record equals its decoded database bytes; the number checked."""
    n = 0
    for (cf, key), (rec, _) in list(idx._records._items.items()):
        if cf in (CF_STUDIES, CF_SERIES):
            assert rec == on_disk(idx, cf, key), (cf, key)
            n += 1
    return n


def test_single_commits_hit_the_cache_and_match_the_database(idx: Index, mk: MakeInst) -> None:
    for i in range(30):
        study = f"1.2.{i % 2}"
        idx.add_instances([mk(f"1.3.{i}", study=study, series=f"{study}.{i % 3}")])
    assert idx._records.hits >= 2 * 28  # study and series of every store after the first few
    assert cached_equals_disk(idx) >= 2
    st = idx.get_study("1.2.0")
    assert st is not None and st.num_instances == 15
    assert idx.check() == []


def test_deletes_and_updates_go_through_the_cache(idx: Index, mk: MakeInst) -> None:
    for i in range(12):
        idx.add_instances([mk(f"1.3.{i}", series=f"1.2.840.1.{i % 2}")])
    idx.delete("series", "1.2.840.1.0")
    idx.add_instances([mk("1.3.99", series="1.2.840.1.1")])
    st = idx.get_study("1.2.840.1")
    assert st is not None and st.num_instances == 7 and st.num_series == 1
    idx.update_patient("PID1", {"PatientName": "Roe^Jane"})
    idx.add_instances([mk("1.3.100", series="1.2.840.1.1", patient_name="Roe^Jane")])
    cached_equals_disk(idx)
    assert idx.get_study("1.2.840.1").num_instances == 8  # type: ignore[union-attr]
    assert idx.check() == []


def test_a_failed_transaction_leaves_no_trace_in_the_cache(idx: Index, mk: MakeInst) -> None:
    idx.add_instances([mk("1.3.1")])
    idx.add_instances([mk("1.3.2")])  # the study record is now in the cache
    key = index_keys.encode("1.2.840.1")

    def corrupt(txn):  # type: ignore[no-untyped-def]
        study = txn.get(CF_STUDIES, key)
        study.num_instances += 1000  # mutated in place, then the transaction fails
        txn.put(CF_STUDIES, key, study)
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        idx._commit("a failing change", corrupt)
    idx.add_instances([mk("1.3.3")])
    assert idx.get_study("1.2.840.1").num_instances == 3  # type: ignore[union-attr]
    cached_equals_disk(idx)
    assert idx.check() == []


def test_loaded_but_unwritten_records_are_not_kept(idx: Index, mk: MakeInst) -> None:
    idx.add_instances([mk("1.3.1")])
    key = index_keys.encode("1.2.840.1")

    def peek(txn):  # type: ignore[no-untyped-def]
        txn.get(CF_STUDIES, key).num_instances = 77  # a read-side change, never put
        txn.meta[b"test:peek"] = b"1"

    idx._commit("peek", peek)
    assert (CF_STUDIES, key) not in idx._records._items
    idx.add_instances([mk("1.3.2")])
    assert idx.get_study("1.2.840.1").num_instances == 2  # type: ignore[union-attr]
    assert idx.check() == []


def test_reopen_starts_empty(index_path: str, mk: MakeInst) -> None:
    with Index.open(index_path) as idx:
        idx.add_instances([mk("1.3.1")])
        assert len(idx._records) > 0
    with Index.open(index_path) as idx:
        assert len(idx._records) == 0
        idx.add_instances([mk("1.3.2")])
        assert idx.get_study("1.2.840.1").num_instances == 2  # type: ignore[union-attr]
