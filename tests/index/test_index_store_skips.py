"""What a plain store no longer does, and what it still must: the prune scans are skipped when no
written record is empty (index/txn.py), the site role is read from the database once and then
remembered by the writable index (Index.get_meta_cached), and the stats are copied for each
transaction without sharing anything with the live ones."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
from index_helpers import MakeInst

from dicomvault.index import Index, keys, role
from dicomvault.index.errors import IndexClosedError
from dicomvault.index.records import Stats
from dicomvault.index.schema import CF_META, CF_SERIES
from dicomvault.index.txn import Txn


def test_a_plain_store_does_not_scan_for_empty_records(
    idx: Index, mk: MakeInst, monkeypatch: pytest.MonkeyPatch
) -> None:
    idx.add_instance(mk("1.1"))

    def scan(self: Txn, cf: str) -> list[Any]:
        raise AssertionError(f"scanned {cf} for empty records")

    monkeypatch.setattr(Txn, "_dirty", scan)
    idx.add_instance(mk("1.2", instance_number=2))  # same series
    idx.add_instance(mk("1.3", series="1.2.840.1.2", modality="MR"))  # a new series, a new modality
    assert idx.stats()["objects"] == 3


def test_a_replace_into_another_series_still_prunes_the_emptied_series_and_blob(
    idx: Index, mk: MakeInst
) -> None:
    first = mk("1.1", series="1.2.840.1.1")
    idx.add_instance(first)
    res = idx.add_instance(mk("1.1", series="1.2.840.1.2", content=b"other bytes"))
    assert res.replaced and res.released_blobs == [first["hash"]]
    st = idx.stats()
    assert (st["objects"], st["series"], st["studies"], st["patients"], st["blobs"]) == (1, 1, 1, 1, 1)
    gone = keys.encode("1.2.840.1") + keys.encode("1.2.840.1.1")
    assert idx._cfs[CF_SERIES].get(gone) is None  # noqa: SLF001


class _CountingCf:
    def __init__(self, cf: Any) -> None:
        self.cf = cf
        self.gets = 0

    def get(self, key: bytes) -> Any:
        self.gets += 1
        return self.cf.get(key)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.cf, name)


def test_the_role_is_read_once_and_follows_every_meta_write(idx: Index) -> None:
    meta = _CountingCf(idx._cfs[CF_META])  # noqa: SLF001
    idx._cfs = {**idx._cfs, CF_META: meta}  # noqa: SLF001
    assert [role.role(idx) for _ in range(3)] == [role.PRIMARY] * 3
    assert meta.gets == 1
    role.set_role(idx, role.REPLICA)
    assert role.role(idx) == role.REPLICA
    idx.put_meta_many({role.ROLE: role.PRIMARY.encode(), b"other": b"x"})
    assert role.role(idx) == role.PRIMARY
    role.set_role(idx, role.REPLICA)
    idx.put_meta(role.ROLE, None)  # deleted: primary again
    assert role.role(idx) == role.PRIMARY
    idx.put_meta(b"unrelated", b"1")  # any meta write forgets, and the next read reads again
    before = meta.gets
    assert role.role(idx) == role.PRIMARY and meta.gets == before + 1
    idx.close()
    with pytest.raises(IndexClosedError):
        role.role(idx)


def test_a_write_during_the_first_read_of_the_role_is_not_hidden_by_it(
    idx: Index, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The read and the remembering happen under the write lock: a role written meanwhile
    waits, then forgets the value read before it."""
    real = idx.get_meta
    read = threading.Event()
    written = threading.Event()

    def slow_get_meta(key: bytes) -> bytes | None:
        value = real(key)
        read.set()
        written.wait(0.5)  # a writer not kept out would write (and forget) right here
        return value

    monkeypatch.setattr(idx, "get_meta", slow_get_meta)
    reader = threading.Thread(target=role.role, args=(idx,))
    reader.start()
    assert read.wait(5)
    writer = threading.Thread(target=lambda: (role.set_role(idx, role.REPLICA), written.set()))
    writer.start()
    reader.join(5)
    writer.join(5)
    monkeypatch.undo()
    assert role.role(idx) == role.REPLICA


def test_a_secondary_index_reads_the_role_the_writer_sets(
    idx: Index, index_path: str, tmp_path: Path
) -> None:
    sec = Index.open(index_path, secondary_path=str(tmp_path / "sec"))
    try:
        assert role.role(sec) == role.PRIMARY
        role.set_role(idx, role.REPLICA)
        sec.refresh()
        assert role.role(sec) == role.REPLICA
    finally:
        sec.close()


def test_stats_copy_is_equal_and_shares_nothing() -> None:
    st = Stats(objects=3, logical_bytes=10, blobs=2, last_seq=7, tiers={"hot": [2, 6, 10]})
    c = st.copy()
    assert c == st and c is not st
    c.objects += 1
    c.tiers["hot"][0] += 1
    c.count_tier("warm", 1, 1, 1)
    assert st.objects == 3 and st.tiers == {"hot": [2, 6, 10]}
