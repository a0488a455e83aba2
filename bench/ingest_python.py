"""The Python an ingested object costs on the engine path, in µs of CPU per object.

    .venv/bin/python bench/ingest_python.py [--mb 200] [--repeats 5]

On the CT workload of bench/tier_bench.py (`Workload("ct", seed=7)`, built in memory first),
into fresh data directories on /dev/shm with the default tiers, one thread (so the thread's CPU
clock counts this object's work only, whatever else the machine runs):

1. engine: `Engine.store_buffers` in batches of <= 32 files / 32 MB (tier_bench's); the thread's
   CPU in the whole call minus its CPU inside `Vault.ingest_buffers` (the native parse, BLAKE3,
   write and the building of its result dicts) = the Python around it: attributes, the index
   commit, the outcomes.
2. index: `Index.add_instances` alone, same batches, on the records the engine would pass.
3. C-STORE path: `Engine.store_dataset`, one data set per call (one index commit per object, as
   a DIMSE C-STORE makes), the Python around `Vault.ingest_dataset`; with the index's record
   cache (index/record_cache.py) and without it, alternating run by run.

Minimum over the repeats (a stall only ever adds), per object.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tier_bench import batches, make_workload

from dicomvault import _native
from dicomvault.attributes import decode_attrs
from dicomvault.engine import Engine
from dicomvault.index import Index
from dicomvault.storage.settings import DEFAULT_TIERS


class _TimedVault:
    """The engine's Vault, with the thread CPU spent in ingest_buffers added up."""

    def __init__(self, vault: Any) -> None:
        self._vault = vault
        self.native = 0.0

    def __getattr__(self, name: str) -> Any:
        return getattr(self._vault, name)

    def ingest_buffers(self, buffers: list[bytes]) -> list[Any]:
        t0 = time.thread_time()
        try:
            return self._vault.ingest_buffers(buffers)
        finally:
            self.native += time.thread_time() - t0

    def ingest_dataset(self, dataset: bytes, ts: str) -> Any:
        t0 = time.thread_time()
        try:
            return self._vault.ingest_dataset(dataset, ts)
        finally:
            self.native += time.thread_time() - t0


def engine_python(root: Path, bufs: list[bytes]) -> tuple[float, float]:
    """(µs of Python, µs of native) per object of one engine ingest."""
    with Engine(root, tiers=DEFAULT_TIERS) as engine:
        real = engine.vault
        timed = engine.vault = _TimedVault(real)  # type: ignore[assignment]
        t0 = time.thread_time()
        for batch in batches(bufs):
            engine.store_buffers(batch)
        cpu = time.thread_time() - t0
        engine.vault = real
    return (cpu - timed.native) / len(bufs) * 1e6, timed.native / len(bufs) * 1e6


def one_by_one_python(root: Path, datasets: list[tuple[bytes, str]], record_cache: bool) -> float:
    """µs of Python per object of `Engine.store_dataset` calls, one object each."""
    with Engine(root, tiers=DEFAULT_TIERS) as engine:
        if not record_cache:
            engine.index._records = None  # noqa: SLF001 - the A/B's other side: every load decodes
        real = engine.vault
        timed = engine.vault = _TimedVault(real)  # type: ignore[assignment]
        t0 = time.thread_time()
        for ds, ts in datasets:
            engine.store_dataset(ds, ts, calling_ae="BENCH")
        cpu = time.thread_time() - t0
        engine.vault = real
    return (cpu - timed.native) / len(datasets) * 1e6


def index_records(bufs: list[bytes]) -> list[dict[str, Any]]:
    """What the engine passes to add_instances for each object."""
    out = []
    for b in bufs:
        p = _native.parse(b)
        out.append({"attrs": decode_attrs(p["attrs"]), "hash": _native.blake3(b),
                    "prefix": b[: p["dataset_offset"]], "transfer_syntax": p["transfer_syntax"],
                    "logical_len": len(b), "stored_len": len(b), "codec": 0, "tier": "landing",
                    "received_at": time.time()})
    return out


def index_alone(root: Path, recs: list[dict[str, Any]]) -> float:
    """µs per object of Index.add_instances."""
    # fresh dicts each time, as the engine hands over
    todo = [[{**r, "attrs": dict(r["attrs"])} for r in recs[i : i + 32]] for i in range(0, len(recs), 32)]
    with Index.open(str(root)) as idx:
        t0 = time.thread_time()
        for b in todo:
            idx.add_instances(b)
        return (time.thread_time() - t0) / len(recs) * 1e6


def best(fn: Callable[[Path], Any], repeats: int, base: Path) -> Any:
    runs = []
    for r in range(repeats):
        runs.append(fn(base / f"run{r}"))
        shutil.rmtree(base / f"run{r}")
    return min(runs)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--mb", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    bufs, _ = make_workload(args.mb * 1_000_000, 7)
    recs = index_records(bufs)
    base = Path(tempfile.mkdtemp(dir="/dev/shm", prefix="dv-ingest-python-"))
    try:
        py, native = best(lambda d: engine_python(d, bufs), args.repeats, base)
        idx = best(lambda d: index_alone(d, recs), args.repeats, base)
        datasets = []
        for b in bufs:
            p = _native.parse(b)
            datasets.append((b[p["dataset_offset"]:], p["transfer_syntax"]))
        one: dict[bool, list[float]] = {True: [], False: []}
        for r in range(2 * args.repeats):
            on = r % 2 == 0
            one[on].append(one_by_one_python(base / f"one{r}", datasets, on))
            shutil.rmtree(base / f"one{r}")
    finally:
        shutil.rmtree(base, ignore_errors=True)
    print(f"{len(bufs)} CT objects, {sum(map(len, bufs)) / 1e6:.0f} MB, best of {args.repeats}, one thread:")
    print(f"  engine ingest: Python {py:.1f} us/object (native call {native:.1f} us/object)")
    print(f"  Index.add_instances alone: {idx:.1f} us/object")
    for on in (True, False):
        v = sorted(one[on])
        print(f"  store_dataset one by one, record cache {'on' if on else 'off'}: Python {v[0]:.1f} "
              f"us/object (median {v[len(v) // 2]:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
