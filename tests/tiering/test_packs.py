"""Packs on a real SeaweedFS: 10k small blobs in a few multipart-uploaded packs, every blob read
back by one ranged GET bit-exact and hash-checked; damage is detected; a pack's index is
rebuilt from its own trailer; a failed upload leaves nothing and can be retried."""

from __future__ import annotations

import os
import random
import struct
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import pytest
from blake3 import blake3

from dicomvault.errors import CorruptError, IntegrityError, ObjectStoreUnavailableError
from dicomvault.storage.objectstore import MiB, ObjectStore
from dicomvault.storage.packs import (
    HEADER,
    TRAILER,
    PackEntry,
    PackReader,
    PackWriter,
    unreferenced_packs,
)
from seaweed_server import free_ports


def blobs(n: int, seed: int) -> list[tuple[bytes, bytes]]:
    """(content hash, bytes): sizes from 0 to 3 KB, like small DICOM headers and SRs."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        data = rng.randbytes(rng.choice((0, 1)) if rng.random() < 0.05 else rng.randrange(2, 3000))
        out.append((blake3(data + i.to_bytes(4, "little")).digest(), data))
    return out


def write_packs(store: ObjectStore, items: list[tuple[bytes, bytes]], target: int) -> list[PackEntry]:
    w = PackWriter(store, prefix="cold/", target_size=target)
    index: list[PackEntry] = []
    for h, data in items:
        if w.add(h, data, meta=len(data) % 7):
            index += w.seal()
    index += w.seal()
    return index


def test_ten_thousand_blobs_round_trip(make_store: Callable[..., ObjectStore]) -> None:
    # Multipart threshold at the 5 MiB minimum so every full pack goes up in parts.
    store = make_store(multipart_threshold=5 * MiB, part_size=5 * MiB, max_concurrency=4)
    items = blobs(10_000, seed=1)
    index = write_packs(store, items, target=6 * MiB)  # ~14 MB of blobs
    packs = sorted({e.pack_key for e in index})
    assert len(index) == 10_000 and 3 <= len(packs) <= 6, len(packs)
    assert [o.key for o in store.list("cold/packs/")] == packs
    assert all(k.startswith("cold/packs/") and k.endswith(".pack") for k in packs)
    assert store.head(packs[0]).etag.endswith("-2")  # ~6 MiB: two parts

    reader = PackReader(store)
    by_hash = dict(items)
    # Every blob, each checked against its BLAKE3; neighbours share ranged GETs (a shuffled
    # order must not matter)...
    shuffled = random.Random(9).sample(index, len(index))
    for e, data in zip(shuffled, reader.read_many(shuffled), strict=True):
        assert data == by_hash[e.hash], e
        assert e.meta == len(data) % 7
    # ... and one in eight by a ranged GET of its own, from every pack (the cold tier's
    # single-instance read; 10k of them would take ~20 s of this 2-core machine's time).
    sample = index[::8]
    assert {e.pack_key for e in sample} == set(packs)
    with ThreadPoolExecutor(8) as pool:
        got = list(pool.map(reader.read, sample))
    for e, data in zip(sample, got, strict=True):
        assert data == by_hash[e.hash], e
    e = index[5000]
    raw = store.get_range(e.pack_key, e.offset, e.offset + e.length)
    assert raw == by_hash[e.hash] and blake3(raw).digest() == e.digest


def test_read_many_coalesces_and_checks(store: ObjectStore) -> None:
    items = blobs(400, seed=6)
    index = write_packs(store, items, target=256 * MiB)
    reader = PackReader(store)
    picked = index[10:20] + index[300:310] + [index[15]]  # two runs, one entry asked twice
    by_hash = dict(items)
    assert reader.read_many(picked, max_gap=0) == [by_hash[e.hash] for e in picked]
    assert reader.read_many([]) == []
    victim = next(e for e in index[300:310] if e.length > 10)
    _rewrite(store, victim.pack_key, victim.offset + 1)
    with pytest.raises(IntegrityError, match=victim.hash.hex()):
        reader.read_many(picked)


def test_index_rebuilt_from_the_trailer(store: ObjectStore) -> None:
    items = blobs(500, seed=2)
    index = write_packs(store, items, target=256 * MiB)  # one pack
    (key,) = {e.pack_key for e in index}
    assert PackReader(store).read_pack_index(key) == index
    v = PackReader(store).verify_pack(key)
    assert v.ok and v.blobs == 500 and v.bytes == sum(len(d) for _, d in items)


def _rewrite(store: ObjectStore, key: str, pos: int) -> None:
    raw = bytearray(store.get(key))
    raw[pos] ^= 0x01
    store.put(key, bytes(raw))


def test_a_flipped_bit_is_detected(store: ObjectStore) -> None:
    items = blobs(300, seed=3)
    index = write_packs(store, items, target=256 * MiB)
    key = index[0].pack_key
    victim = next(e for e in index[100:] if e.length > 10)
    _rewrite(store, key, victim.offset + victim.length // 2)

    reader = PackReader(store)
    with pytest.raises(IntegrityError, match=victim.hash.hex()) as ei:
        reader.read(victim)
    assert key in str(ei.value)
    by_hash = dict(items)
    for e in index:
        if e is not victim:
            assert reader.read(e) == by_hash[e.hash]
    v = reader.verify_pack(key)
    assert not v.ok and v.bad == [victim.hash] and v.blobs == 300


@pytest.mark.parametrize("where", ["index", "trailer", "header"])
def test_damaged_structure_is_detected(store: ObjectStore, where: str) -> None:
    index = write_packs(store, blobs(50, seed=4), target=256 * MiB)
    key = index[0].pack_key
    size = store.head(key).size
    index_offset = index[-1].offset + index[-1].length
    pos = {"index": index_offset + 20, "trailer": size - TRAILER.size + 3, "header": HEADER.size - 1}[where]
    _rewrite(store, key, pos)
    reader = PackReader(store)
    with pytest.raises(CorruptError, match=key):
        if where == "header":  # blobs and index are intact: only the full stream sees it
            reader.verify_pack(key)
        else:
            reader.read_pack_index(key)


def test_not_a_pack(store: ObjectStore) -> None:
    store.put("cold/packs/junk.pack", os.urandom(1000))
    with pytest.raises(CorruptError, match="no pack trailer"):
        PackReader(store).read_pack_index("cold/packs/junk.pack")
    store.put("cold/packs/tiny.pack", b"x")
    with pytest.raises(CorruptError, match="shorter than its trailer"):
        PackReader(store).read_pack_index("cold/packs/tiny.pack")


def test_verify_honours_the_rate_limit(store: ObjectStore) -> None:
    items = [(blake3(bytes([i])).digest(), os.urandom(100_000)) for i in range(10)]
    (key,) = {e.pack_key for e in write_packs(store, items, target=256 * MiB)}
    t = time.monotonic()
    assert PackReader(store).verify_pack(key, rate_limit=4e6).ok  # ~1 MB at 4 MB/s
    assert time.monotonic() - t >= 0.2


def test_writer_rules(store: ObjectStore) -> None:
    w = PackWriter(store, target_size=1000)
    h = blake3(b"a").digest()
    assert w.add(h, b"a" * 10) is False and w.add(h, b"a" * 10) is False  # same hash: kept once
    assert w.count == 1 and w.size == HEADER.size + 10
    assert w.add(blake3(b"b").digest(), b"b" * 1000) is True  # full
    with pytest.raises(Exception, match="32 bytes"):
        w.add(b"short", b"x")
    entries = w.seal()
    assert [e.length for e in entries] == [10, 1000] and w.count == 0 and w.seal() == []
    assert w.key != entries[0].pack_key  # the next pack has its own id
    w.close()


def test_crash_leftovers_and_retried_seal(store: ObjectStore, make_store: Callable[..., ObjectStore]) -> None:
    """A seal that fails (store down) uploads nothing and can be retried; a pack that reached
    the store but not the caller's index is found by the sweep and adopted after verifying."""
    down = ObjectStore(
        f"http://127.0.0.1:{free_ports(1)[0]}", store.bucket, access_key="a", secret_key="b", timeout=0.3
    )
    items = blobs(200, seed=5)
    w = PackWriter(down, prefix="cold/")
    for h, d in items:
        w.add(h, d)
    with pytest.raises(ObjectStoreUnavailableError, match=w.key):
        w.seal()
    assert list(store.list("cold/")) == []  # nothing half-visible
    w.store = store  # the store is back
    entries = w.seal()
    assert len(entries) == 200

    # "crash" before the caller recorded the entries: the pack is unreferenced
    orphans = unreferenced_packs(store, "cold/", referenced=set())
    assert orphans == [entries[0].pack_key]
    reader = PackReader(store)
    assert reader.verify_pack(orphans[0]).ok
    assert reader.read_pack_index(orphans[0]) == entries  # adopted: same entries as seal() gave
    assert unreferenced_packs(store, "cold/", referenced={entries[0].pack_key}) == []
    # the trailer layout is what the module docstring says
    tail, size = store.get_tail(orphans[0], TRAILER.size)
    off, length = struct.unpack_from("<QQ", tail)
    assert size == store.head(orphans[0]).size
    assert tail.endswith(b"DVPKEND\n") and off + length + TRAILER.size == size
