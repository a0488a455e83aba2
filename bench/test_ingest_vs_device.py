"""End-to-end durable ingest of a synthetic CT series, against the raw device in the same run.

Prints `engine ingest: X MB/s = R x raw synced write`. Both sides write to the same directory
(DV_BENCH_DIR, default bench/.scratch); the device figure is a dd-style sequential write of the
same number of bytes ending in fdatasync. The engine figure counts input bytes acknowledged per
second with hashing, the hot codec, group-committed fsync and the synced index all on.
"""

from __future__ import annotations

import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from dicomvault.engine import Engine, StoreOutcome


def raw_synced_write(directory: Path, nbytes: int, chunk: int = 1 << 20) -> float:
    """MB/s of a sequential write of nbytes, fdatasync included (like dd conv=fdatasync)."""
    block = os.urandom(chunk)
    path = directory / "raw-device.bin"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = time.perf_counter()
        written = 0
        while written < nbytes:
            written += os.write(fd, block)
        os.fdatasync(fd)
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
        path.unlink()
    return written / elapsed / 1e6


def engine_ingest(directory: Path, files: list[bytes], threads: int, batch: int) -> tuple[float, dict]:
    batches = [files[i : i + batch] for i in range(0, len(files), batch)]
    with Engine(directory / "engine", min_free_bytes=0) as engine:
        t0 = time.perf_counter()
        with ThreadPoolExecutor(max_workers=threads) as pool:
            results = [r for rs in pool.map(engine.store_buffers, batches) for r in rs]
        elapsed = time.perf_counter() - t0
        stats = engine.stats()
    bad = [r for r in results if not isinstance(r, StoreOutcome)]
    assert not bad, bad[:3]
    return sum(map(len, files)) / elapsed / 1e6, stats


def test_engine_ingest_vs_raw_device(
    benchmark, scratch: Path, ct_files: list[bytes], report: list[str]
) -> None:  # type: ignore[no-untyped-def]
    total = sum(map(len, ct_files))
    threads = int(os.environ.get("DV_BENCH_THREADS", "4"))
    # Raw device before and after the engine; the mean smooths a noisy shared disk.
    raw_before = raw_synced_write(scratch, total)
    result: dict = {}

    def run() -> None:
        d = scratch / f"round{len(result)}"
        d.mkdir()
        result[len(result)] = engine_ingest(d, ct_files, threads=threads, batch=8)

    benchmark.pedantic(run, rounds=1, iterations=1)
    raw_after = raw_synced_write(scratch, total)
    raw = (raw_before + raw_after) / 2
    mbs, stats = result[0]
    ratio = mbs / raw
    benchmark.extra_info.update(
        engine_mb_s=round(mbs, 1),
        raw_mb_s=round(raw, 1),
        ratio=round(ratio, 3),
        compression=stats["compression_ratio"],
    )
    report.append(
        f"engine ingest: {mbs:,.0f} MB/s = {ratio:.2f} x raw synced write ({raw:,.0f} MB/s; "
        f"{len(ct_files)} CT slices, {total / 1e6:,.0f} MB, {threads} threads, "
        f"stored at ratio {stats['compression_ratio']})"
    )
