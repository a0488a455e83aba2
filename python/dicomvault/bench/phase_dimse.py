"""The DIMSE ingest phase of `dicomvault bench` (`--dimse`, or `dimse` in `--phases`): the
workload's objects as Part-10 files, sent by N parallel dcmtk storescu processes to a
`dicomvault serve` on a fresh data directory under the target. Returns `phases.dimse_ingest`
(docs/bench.md)."""

from __future__ import annotations

import os
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..errors import DicomVaultError
from .dimse import DV_AE, PDU, start_serve, storescu_parallel, wait_compacted
from .measure import Recorder
from .workloads import Workload

Tick = Callable[[str], None]


def write_objects(workload: Workload, budget: int, folder: Path, associations: int) -> tuple[int, int]:
    """The workload's objects (the same sequence the engine ingest got: same seed, same budget)
    as files in `associations` folders, contiguous shares of about equal bytes, so each
    association sends whole studies. Returns (files, bytes)."""
    if folder.exists():
        shutil.rmtree(folder)
    dirs = [folder / f"a{q}" for q in range(associations)]
    for d in dirs:
        d.mkdir(parents=True)
    n = total = 0
    for obj in workload.objects():
        if total >= budget:
            break
        q = min(associations - 1, total * associations // budget)
        (dirs[q] / f"{n:07d}.dcm").write_bytes(obj.data)
        n += 1
        total += len(obj.data)
    # Flush the input now, outside the timed region: otherwise its writeback competes with the
    # server's own fdatasyncs on the same device while we measure.
    os.sync()
    return n, total


def _progress(log_dir: Path, associations: int, stop: threading.Event, tick: Tick, t0: float) -> None:
    """Counts store responses in the storescu logs as they grow (new bytes only)."""
    offsets = [0] * associations
    done = 0
    while not stop.wait(0.5):
        for i in range(associations):
            p = log_dir / f"storescu-{i}.log"
            try:
                with p.open("rb") as f:
                    f.seek(offsets[i])
                    chunk = f.read()
            except OSError:
                continue
            cut = chunk.rfind(b"\n") + 1  # whole lines only; the rest is read next time
            offsets[i] += cut
            done += chunk[:cut].count(b"Received Store Response")
        tick(f"dimse ingest {done:,} objects {time.monotonic() - t0:,.0f}s")


def dimse_ingest(
    workload: Workload, budget: int, associations: int, work: Path, tick: Tick
) -> dict[str, Any]:
    """Writes the input (untimed), starts `dicomvault serve` on `work/data`, sends, waits for the
    background compactor to move the landing tier on (the stored size and ratio are those of the
    archive at rest, not of the raw landing copies), SIGTERMs the server and checks it exits 0.
    Latency per object is storescu's own: "Sending file" to "Received Store Response" (read,
    transfer, durable commit, response)."""
    tick("dimse: writing the workload's objects to files")
    t = time.perf_counter()
    files, nbytes = write_objects(workload, budget, work / "input", associations)
    prepare_s = time.perf_counter() - t
    if not files:
        raise DicomVaultError("dimse: the workload produced no objects")
    data = work / "data"
    tick("dimse: starting dicomvault serve")
    server = start_serve(data, log_path=work / "serve.log")
    stop = threading.Event()
    watcher = threading.Thread(
        target=_progress, args=(work, associations, stop, tick, time.monotonic()), daemon=True
    )
    watcher.start()
    try:
        run = storescu_parallel(
            DV_AE, server.port, [work / "input" / f"a{q}" for q in range(associations)], work
        )
        tick("dimse: waiting for the compactor")
        wait_compacted(data)
    finally:
        stop.set()
        watcher.join()
        exit_code = server.stop()
    if exit_code != 0:
        raise DicomVaultError(f"dimse: dicomvault serve exited {exit_code}:\n{server.log_text()[-2000:]}")
    with Engine(data, read_only=True) as engine:
        stats = engine.stats()
    rec = Recorder()
    rec.events, rec.latencies = run.events, run.latencies
    rec.errors = files - run.objects  # refused, failed or never sent
    out = rec.summary(run.seconds)
    stored = int(stats.get("stored_bytes") or 0)
    logical = int(stats.get("logical_bytes") or 0)
    out.update(
        stored_bytes=stored,
        stored_mb_s=round(stored / run.seconds / 1e6, 2) if run.seconds > 0 else None,
        compression_ratio=round(logical / stored, 3) if stored else None,
        associations=associations,
        pdu=PDU,
        objects_stored=int(stats.get("objects") or 0),
        association_objects_s=[round(n / s, 2) if s > 0 else None for n, s in run.per_association],
        prepare_seconds=round(prepare_s, 3),
        server_exit_code=exit_code,
        storescu_failures=sum(1 for c in run.exit_codes if c != 0),
    )
    return out
