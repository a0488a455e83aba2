"""A study read from the object-store tier comes in windows (one coalesced ranged GET for the
blobs that follow in its pack), not one GET per instance; every blob is still checked."""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path
from typing import Any

from dicomvault import _native
from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.engine import Engine
from dicomvault.errors import IntegrityError
from dicomvault.readahead import read_ahead
from dicomvault.storage.settings import TierSpec
from dicomvault.tiering import jobs
from dicomvault.tiering.compactor import Compactor
from seaweed_server import SeaweedServer


def tiers(seaweed: SeaweedServer, bucket: str) -> tuple[TierSpec, ...]:
    return (
        TierSpec("landing", "local", "raw", path="landing"),
        TierSpec("warm", "local", "hot", path="warm"),
        TierSpec("cold", "s3", "cold", endpoint=seaweed.endpoint, bucket=bucket,
                 access_key=seaweed.access_key, secret_key=seaweed.secret_key),
    )


class CountingGets:
    """Counts the ranged GETs of an ObjectStore (our own client), passing them through."""

    def __init__(self, store: Any) -> None:
        self.calls = 0
        self._inner = store.get_range

        def get_range(key: str, start: int, end: int) -> bytes:
            self.calls += 1
            return self._inner(key, start, end)

        store.get_range = get_range


def cold_study(tmp_path: Path, seaweed: SeaweedServer, spec: SeriesSpec, damaged: int | None = None
               ) -> tuple[Path, list[bytes], list[Any]]:
    """(data directory, files, store outcomes) of a CT series stored, compacted and moved to the
    object-store tier; with `damaged`, that instance's blob has a byte flipped in its pack."""
    files = list(ct_series(spec))
    data = tmp_path / "d"
    with Engine(data, tiers=tiers(seaweed, f"t-{uuid.uuid4().hex[:12]}")) as e:
        outs = e.store_buffers(files)
        Compactor(e).run_once()
        assert jobs.move_study(e, outs[0].study_instance_uid, "cold").blobs == len(files)
        if damaged is not None:
            victim = e.index.blob(outs[damaged].hash)
            store = e.remote("cold").store
            pack = bytearray(store.get(victim.pack_key))
            pack[victim.pack_offset + victim.stored_len // 2] ^= 0xFF
            store.put(victim.pack_key, bytes(pack))
    return data, files, outs


def test_a_cold_study_is_read_in_coalesced_windows(tmp_path: Path, seaweed: SeaweedServer) -> None:
    data, files, outs = cold_study(tmp_path, seaweed, SeriesSpec(slices=40, rows=64, columns=64, seed=11))
    study = outs[0].study_instance_uid
    with Engine(data) as e:  # a fresh engine: nothing cached
        gets = CountingGets(e.remote("cold").store)
        for out, f in zip(outs, files, strict=True):
            assert e.read_file(out.sop_instance_uid) == f
        assert gets.calls <= 2, f"{gets.calls} GETs for 40 instances"
        assert e.cold_reads == {study}


def test_a_blob_damaged_in_the_store_is_refused_even_when_read_ahead(
    tmp_path: Path, seaweed: SeaweedServer
) -> None:
    data, files, outs = cold_study(tmp_path, seaweed, SeriesSpec(slices=6, rows=64, columns=64, seed=12),
                                   damaged=3)
    with Engine(data) as e:
        assert e.read_file(outs[0].sop_instance_uid) == files[0]
        try:
            e.read_file(outs[3].sop_instance_uid)
        except IntegrityError as exc:
            assert outs[3].hash.hex() in str(exc)
        else:
            raise AssertionError("a damaged cold blob was served")
        assert e.read_file(outs[5].sop_instance_uid) == files[5]


def test_a_cold_retrieve_decodes_on_two_readers_in_order_and_a_damaged_blob_fails_alone(
    tmp_path: Path, seaweed: SeaweedServer
) -> None:
    """The retrieve path (read_ahead over Engine.read_for_sending, as the C-GET does) of a study
    in the dense codec on the object store: its objects are decoded on two reader threads, come
    back bit-exact and in order, and a blob damaged in the store, in the middle of a coalesced
    window, fails that object only (IntegrityError naming it), before and after it all sound."""
    data, files, outs = cold_study(tmp_path, seaweed, SeriesSpec(slices=40, rows=96, columns=96, seed=13),
                                   damaged=17)
    with Engine(data) as e:  # a fresh engine: nothing cached, the study read in windows
        assert {e.index.blob(o.hash).codec for o in outs} == {_native.CODEC_COLD}
        readers: set[int] = set()

        def load(uid: str) -> tuple[bytes, str, _native.DecodedObject]:
            readers.add(threading.get_ident())
            rec, ts, decoded = e.read_for_sending(uid)
            assert isinstance(decoded, _native.DecodedObject)
            return rec.prefix, ts, decoded

        got: list[bytes | None] = []
        for uid, fut in read_ahead(load, [o.sop_instance_uid for o in outs]):
            if uid == outs[17].sop_instance_uid:
                try:
                    fut.result(30)
                except IntegrityError as exc:
                    assert outs[17].hash.hex() in str(exc)
                    got.append(None)
                    continue
                raise AssertionError("a damaged cold blob was served")
            prefix, _, decoded = fut.result(30)
            got.append(prefix + decoded.bytes())
        assert len(readers) == 2, readers
        assert got == [None if i == 17 else f for i, f in enumerate(files)]


def test_the_next_window_is_fetched_in_the_background_from_the_middle_of_the_last(
    tmp_path: Path, seaweed: SeaweedServer, monkeypatch: Any
) -> None:
    """Reading a cold study in order: once the middle blob of a window is read, the window after
    it is fetched on the prefetch thread, before any reader asks for it, and the reads of that
    window then need no GET of their own. Every blob still comes back bit-exact."""
    from dicomvault.storage import coldcache

    data, files, outs = cold_study(tmp_path, seaweed, SeriesSpec(slices=40, rows=64, columns=64, seed=14))
    with Engine(data) as e:
        stored = max(e.index.blob(o.hash).stored_len for o in outs)
    monkeypatch.setattr(coldcache, "FIRST_WINDOW", 3 * stored)  # windows of ~3, 6, 12, 19 blobs
    with Engine(data) as e:
        cache = e._cold_cache
        gets = CountingGets(e.remote("cold").store)
        threads: list[str] = []
        inner = e.remote("cold").store.get_range

        def get_range(key: str, start: int, end: int) -> bytes:
            threads.append(threading.current_thread().name)
            return inner(key, start, end)

        e.remote("cold").store.get_range = get_range
        prefetched = 0
        for out, f in zip(outs, files, strict=True):
            trigger = out.hash in cache._triggers
            before = len(threads)
            assert e.read_file(out.sop_instance_uid) == f
            if trigger:  # the next window comes without being asked for
                deadline = time.monotonic() + 10
                while len(threads) == before and time.monotonic() < deadline:
                    time.sleep(0.01)
                assert threads[before:] == [t for t in threads[before:] if t.startswith("dv-cold-prefetch")]
                assert len(threads) == before + 1
                prefetched += 1
            else:
                assert len(threads) == before or before == 0, f"a GET of its own for {out.hash.hex()}"
        assert prefetched >= 2 and threads[0] != threads[1] and gets.calls == len(threads) == prefetched + 1


def test_concurrent_first_uses_of_an_object_store_tier_share_one_connection(
    tmp_path: Path, seaweed: SeaweedServer
) -> None:
    """`serve` connects to the store at start while the first retrieve's readers may already
    read: one client is made (the others wait for it), not one each, left unclosed."""
    with Engine(tmp_path / "d", tiers=tiers(seaweed, f"t-{uuid.uuid4().hex[:12]}")) as e:
        start = threading.Barrier(4)
        got: list[Any] = []

        def first_use() -> None:
            start.wait(10)
            got.append(e.remote("cold"))

        threads = [threading.Thread(target=first_use) for _ in range(4)]
        for th in threads:
            th.start()
        for th in threads:
            th.join(30)
        assert len(got) == 4 and all(r is got[0] for r in got)
