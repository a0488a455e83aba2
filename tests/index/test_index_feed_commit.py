"""Change feed ordering/atomicity, group commit under concurrency, keys codec."""

from __future__ import annotations

import threading

from index_helpers import MakeInst

from dicomvault.index import Index, InstanceRecord, keys
from dicomvault.index.commit import GroupCommitter
from dicomvault.index.feed import feed_key
from dicomvault.index.txn import Txn


def test_feed_monotonic_one_per_change(idx: Index, mk: MakeInst) -> None:
    idx.add_instances([mk("1.1"), mk("1.2"), mk("1.3", series="S2")])
    idx.add_instance(mk("1.1"))  # duplicate: no entry
    idx.add_instance(mk("1.2", content=b"new"))  # replaced
    idx.delete("series", "1.2.840.1.1")  # 1.1 and 1.2
    ch = idx.changes(0, 100)
    assert [c.seq for c in ch] == [1, 2, 3, 4, 5, 6]
    assert [(c.kind, c.sop_uid) for c in ch] == [
        ("stored", "1.1"), ("stored", "1.2"), ("stored", "1.3"), ("replaced", "1.2"),
        ("deleted", "1.1"), ("deleted", "1.2")]
    assert ch[4].hash == mk("1.1")["hash"]
    assert idx.last_seq() == 6
    assert [c.seq for c in idx.changes(2, 2)] == [3, 4]
    assert idx.changes(6, 10) == []
    assert idx.changes(0, 0) == []


def test_feed_written_atomically_with_change(idx: Index, mk: MakeInst) -> None:
    """A failing batch writes neither the record nor the feed entry nor the stats."""
    idx.add_instance(mk("1.1"))
    before = (idx.stats(), idx.last_seq())
    broken = mk("1.2")
    broken["logical_len"] = "not a number"
    try:
        idx.add_instance(broken)
    except ValueError:
        pass
    # every feed entry has its instance (or a later delete) and vice versa
    assert (idx.stats(), idx.last_seq()) == before
    assert idx.get_instance("1.2") is None
    # feed entry and record come from the same WriteBatch: a failure in the batch
    # build (after the feed entry was assigned) must not leave a seq gap either
    original = idx._attach  # noqa: SLF001

    def boom(txn: Txn, rec: InstanceRecord) -> bool:
        original(txn, rec)
        raise RuntimeError("simulated failure after building the batch")

    idx._attach = boom  # type: ignore[method-assign]  # noqa: SLF001
    try:
        idx.add_instance(mk("1.3"))
    except RuntimeError:
        pass
    finally:
        idx._attach = original  # type: ignore[method-assign]  # noqa: SLF001
    assert idx.get_instance("1.3") is None and idx.last_seq() == 1
    assert idx.add_instance(mk("1.4")).seq == 2
    assert [c.seq for c in idx.changes(0, 10)] == [1, 2]


def test_concurrent_adds_exact_and_grouped(idx: Index, mk: MakeInst) -> None:
    n_threads, per_thread = 8, 40
    errors: list[BaseException] = []
    barrier = threading.Barrier(n_threads)

    def worker(t: int) -> None:
        try:
            barrier.wait()
            for i in range(per_thread):
                # all threads hit the same few studies/series/patients and shared blobs
                sop = f"5.{t}.{i}"
                idx.add_instance(mk(sop, study=f"ST{i % 3}", series=f"ST{i % 3}.{t % 2}",
                                    patient_id=f"P{i % 2}", content=f"blob{i % 10}".encode(),
                                    logical_len=100 + i, stored_len=50 + t))
                if i % 10 == 0:
                    idx.add_instance(mk(sop, study=f"ST{i % 3}", series=f"ST{i % 3}.{t % 2}",
                                        patient_id=f"P{i % 2}", content=f"blob{i % 10}".encode()))
        except BaseException as exc:  # noqa: BLE001 - collected and re-raised below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    total = n_threads * per_thread
    s = idx.stats()
    assert s["objects"] == total and s["studies"] == 3 and s["patients"] == 2 and s["blobs"] == 10
    assert s["series"] == 6
    assert s["logical_bytes"] == n_threads * sum(100 + i for i in range(per_thread))
    assert [c.seq for c in idx.changes(0, 10_000)] == list(range(1, total + 1))
    blob = idx.blob(mk("x", content=b"blob3")["hash"])
    assert blob is not None and blob.refcount == total // 10
    cs = idx.commit_stats
    print(f"\ncommits={cs['commits']} wal_syncs={cs['syncs']}")
    assert cs["commits"] == total
    assert cs["syncs"] < cs["commits"]
    assert idx.check() == []


def test_group_committer_leader_follower() -> None:
    """Followers whose batch was written before a sync started share it."""
    started, release = threading.Event(), threading.Event()
    calls: list[int] = []

    def slow_sync() -> None:
        calls.append(1)
        if len(calls) == 1:
            started.set()
            release.wait(5)

    gc = GroupCommitter(slow_sync)
    t1 = gc.note_written(1)
    leader = threading.Thread(target=gc.wait_durable, args=(t1,))
    leader.start()
    started.wait(5)
    tickets = [gc.note_written(i) for i in range(2, 6)]  # written during the first sync
    followers = [threading.Thread(target=gc.wait_durable, args=(t,)) for t in tickets]
    for f in followers:
        f.start()
    release.set()
    leader.join(5)
    for f in followers:
        f.join(5)
    assert len(calls) == 2  # one for t1, one shared by the four followers
    assert gc.durable_seq == 5


def test_key_codec_order_and_prefix() -> None:
    vals = ["", "A", "A\x00", "A\x00B", "AB", "A\x01", "B", "Ä"]
    enc = [keys.encode(v) for v in vals]
    assert sorted(enc) == [keys.encode(v) for v in sorted(vals, key=lambda s: s.encode())]
    assert all(keys.decode_at(e)[0] == v for e, v in zip(enc, vals, strict=True))
    assert keys.unpack(keys.pack("1.2", "a\x00b", "")) == ("1.2", "a\x00b", "")
    assert keys.encode("ABC").startswith(keys.encode_prefix("AB"))
    assert keys.encode("A") < keys.encode("AB") < keys.encode("B")
    assert feed_key(2) < feed_key(10) < feed_key(256)
    assert keys.instance_number_key(-1) < keys.instance_number_key(0) < keys.instance_number_key(2)
    assert keys.instance_number_key("10") > keys.instance_number_key("9")
    assert keys.instance_number_key(None) > keys.instance_number_key(10**6)
    assert keys.norm_pn("doe^john^^ ") == "DOE^JOHN"
    assert keys.norm_date("2024.01.05") == "20240105"
