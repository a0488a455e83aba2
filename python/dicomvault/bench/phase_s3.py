"""The object-store phases of `bench --target s3://BUCKET`: what an S3-compatible store sustains
for the cold tier's traffic, with the workload's own objects. Each returns the same block as an
engine phase (measure.Recorder.summary) plus its concurrency; see docs/bench.md.

- object_put: N threads PUT the workload's DICOM objects, one request per object (what storing
  instances as objects would cost; packing exists to avoid it).
- pack_put: N threads PUT pack-sized objects of incompressible bytes (multipart above the
  store's threshold, its parts in parallel): the cold tier's writes.
- object_get: the objects back, once each in random order; `first_byte_ms` is request to the
  first body byte, the time a viewer waits before anything arrives.
- pack_get: whole packs streamed (verification, promotion of a study).
- ranged_read: RANGE_BYTES at random offsets inside the packs, one ranged GET each: the cold
  tier's read of one instance.
"""

from __future__ import annotations

import io
import itertools
import math
import os
import random
import threading
import time
from collections.abc import Callable
from typing import Any

from ..storage.objectstore import ObjectStore
from .measure import Recorder, latency_histogram, latency_summary
from .phases import _run_threads
from .source import ObjectSource

Tick = Callable[[str], None]
PACK_BYTES = 256 << 20  # the cold tier's pack target (storage/packs.py), times --scale
MIN_PACK_BYTES = 6 << 20
RANGE_BYTES = 64 << 10
MAX_RANGED_READS = 20_000


class _PackBody(io.RawIOBase):
    """A pack-sized body over one shared random buffer (no copy per pack); the first 16 bytes
    are the pack's own, so no two packs are identical for a deduplicating store."""

    def __init__(self, buf: memoryview, tag: bytes) -> None:
        self._buf = buf
        self._tag = tag.ljust(16, b"\0")[:16]
        self._pos = 0

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        end = len(self._buf) if n < 0 else min(len(self._buf), self._pos + n)
        out = bytes(self._buf[self._pos : end])
        if self._pos < 16 and out:
            k = min(16 - self._pos, len(out))
            out = self._tag[self._pos : self._pos + k] + out[k:]
        self._pos = end
        return out

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: len(self._buf)}[whence]
        self._pos = base + offset
        return self._pos


def pack_bytes(scale: float) -> int:
    return max(MIN_PACK_BYTES, int(PACK_BYTES * scale))


def object_put(
    store: ObjectStore, prefix: str, source: ObjectSource, threads: int, duration: float | None, tick: Tick
) -> tuple[dict[str, Any], dict[str, list[int]], list[str]]:
    """Also returns, per study UID, the [objects, bytes] stored, and the keys written."""
    rec = Recorder()
    stored: dict[str, list[int]] = {}
    keys: list[str] = []
    lock = threading.Lock()
    stop_at = None if duration is None else rec.t0 + duration
    source.start()

    def worker() -> None:
        while stop_at is None or time.perf_counter() < stop_at:
            batch = source.get()
            if batch is None:
                return
            for o in batch:
                key = f"{prefix}objects/{o.study_uid}/{o.sop_uid}.dcm"
                t = time.perf_counter()
                store.put(key, o.data)
                rec.add(len(o.data), 1, [time.perf_counter() - t])
                with lock:
                    acc = stored.setdefault(o.study_uid, [0, 0])
                    acc[0] += 1
                    acc[1] += len(o.data)
                    keys.append(key)
            el = time.perf_counter() - rec.t0
            tick(f"s3 PUT objects {rec.objects:,} {rec.bytes / 1e6:,.0f} MB {rec.bytes / el / 1e6:,.0f} MB/s")

    try:
        _run_threads(threads, worker)
    finally:
        source.stop()
    out = rec.summary(time.perf_counter() - rec.t0)
    out["concurrency"] = threads
    return out, stored, keys


def pack_put(
    store: ObjectStore,
    prefix: str,
    size: int,
    count: int,
    threads: int,
    max_seconds: float,
    tick: Tick,
) -> tuple[dict[str, Any], list[str]]:
    """`count` packs of `size` bytes (at least one per thread), no new one after max_seconds."""
    buf = memoryview(os.urandom(size))  # before the clock starts
    rec = Recorder()
    numbers = itertools.count()
    keys: list[str] = []
    lock = threading.Lock()

    def worker() -> None:
        mine = 0
        while not mine or time.perf_counter() - rec.t0 < max_seconds:
            mine += 1
            n = next(numbers)
            if n >= count:
                return
            key = f"{prefix}packs/{n:06d}.pack"
            t = time.perf_counter()
            store.put(key, _PackBody(buf, n.to_bytes(8, "little") + os.urandom(8)), size)
            rec.add(size, 1, [time.perf_counter() - t])
            with lock:
                keys.append(key)
            tick(f"s3 PUT packs {rec.objects:,} x {size / 1e6:,.0f} MB")

    _run_threads(threads, worker)
    out = rec.summary(time.perf_counter() - rec.t0)
    multipart = size > store.multipart_threshold
    out.update(
        concurrency=threads,
        pack_bytes=size,
        part_bytes=store.part_size if multipart else None,
        parts_in_flight=store.max_concurrency if multipart else None,
    )
    return out, sorted(keys)


def object_get(
    store: ObjectStore, keys: list[str], threads: int, max_seconds: float, seed: int, tick: Tick
) -> dict[str, Any]:
    """Every object once in random order (until max_seconds), streamed; first byte timed."""
    rec = Recorder()
    todo = random.Random(seed).sample(keys, len(keys))
    first: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        while time.perf_counter() - rec.t0 < max_seconds:
            with lock:
                if not todo:
                    return
                key = todo.pop()
            t = time.perf_counter()
            chunks = store.stream(key, first_chunk=1)
            n = len(next(chunks, b""))
            fb = time.perf_counter() - t
            n += sum(len(c) for c in chunks)
            rec.add(n, 1, [time.perf_counter() - t])
            with lock:
                first.append(fb)
            tick(f"s3 GET objects {rec.objects:,} {rec.bytes / 1e6:,.0f} MB")

    _run_threads(threads, worker)
    out = rec.summary(time.perf_counter() - rec.t0)
    out.update(
        concurrency=threads,
        first_byte_ms=latency_summary(first),
        first_byte_histogram=latency_histogram(first),
    )
    return out


def pack_get(
    store: ObjectStore, keys: list[str], threads: int, max_seconds: float, tick: Tick
) -> dict[str, Any]:
    """Whole packs streamed, each at most once; no new one after max_seconds."""
    rec = Recorder()
    todo = list(keys)
    lock = threading.Lock()

    def worker() -> None:
        mine = 0
        while not mine or time.perf_counter() - rec.t0 < max_seconds:
            mine += 1
            with lock:
                if not todo:
                    return
                key = todo.pop()
            t = time.perf_counter()
            n = sum(len(c) for c in store.stream(key, chunk_size=4 << 20))
            rec.add(n, 1, [time.perf_counter() - t])
            tick(f"s3 GET packs {rec.objects:,} {rec.bytes / 1e6:,.0f} MB")

    _run_threads(threads, worker)
    out = rec.summary(time.perf_counter() - rec.t0)
    out["concurrency"] = threads
    return out


def ranged_read(
    store: ObjectStore,
    keys: list[str],
    size: int,
    threads: int,
    max_seconds: float,
    seed: int,
    tick: Tick,
) -> dict[str, Any]:
    """RANGE_BYTES at random 4 KiB-aligned offsets of random packs, for max_seconds."""
    rec = Recorder()
    span = max(1, (size - RANGE_BYTES) // 4096)
    done = itertools.count()

    def worker() -> None:
        rng = random.Random(f"{seed}-{threading.get_ident()}")
        while time.perf_counter() - rec.t0 < max_seconds and next(done) < MAX_RANGED_READS:
            key = rng.choice(keys)
            start = rng.randrange(span) * 4096
            t = time.perf_counter()
            data = store.get_range(key, start, start + RANGE_BYTES)
            rec.add(len(data), 1, [time.perf_counter() - t])
            tick(f"s3 ranged reads {rec.objects:,}")

    _run_threads(threads, worker)
    out = rec.summary(time.perf_counter() - rec.t0)
    out.update(concurrency=threads, range_bytes=RANGE_BYTES, pack_bytes=size)
    return out


def run(
    store: ObjectStore,
    prefix: str,
    source: ObjectSource,
    *,
    threads: int,
    duration: float | None,
    budget: int | None,
    scale: float,
    phase_seconds: float,
    seed: int,
    tick: Tick,
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """Every object-store phase in order; returns the phases and what object_put stored."""
    out: dict[str, Any] = {}
    out["object_put"], stored, keys = object_put(store, prefix, source, threads, duration, tick)
    size = pack_bytes(scale)
    written = budget if budget is not None else out["object_put"]["bytes"]
    count = max(threads, math.ceil(written / size))
    out["pack_put"], packs = pack_put(store, prefix, size, count, threads, phase_seconds, tick)
    if keys:
        out["object_get"] = object_get(store, keys, threads, phase_seconds, seed, tick)
    out["pack_get"] = pack_get(store, packs, threads, phase_seconds, tick)
    out["ranged_read"] = ranged_read(store, packs, size, threads, phase_seconds, seed, tick)
    return out, stored
