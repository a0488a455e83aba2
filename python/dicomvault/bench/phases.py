"""The engine phases: ingest, query, retrieve, scrub. Each returns the dict documented in
docs/bench.md under `phases.<name>`."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..engine import Engine, StoreOutcome
from ..tiering.compactor import Compactor
from .device import drop_tree_cache
from .measure import Recorder, latency_histogram, latency_summary
from .source import ObjectSource
from .workloads import StudyInfo

Tick = Callable[[str], None]
MAX_QUERIES = 20_000
SCRUB_LATENCY_SAMPLE = 300


def _run_threads(n: int, fn: Callable[[], None]) -> None:
    with ThreadPoolExecutor(max_workers=n, thread_name_prefix="bench") as pool:
        for f in [pool.submit(fn) for _ in range(n)]:
            f.result()


def ingest(
    engine: Engine, source: ObjectSource, threads: int, duration: float | None, tick: Tick
) -> tuple[dict[str, Any], dict[str, list[int]]]:
    """N threads calling Engine.store_buffers on batches. An object's latency is the time from
    handing its batch to the engine to the batch being acknowledged (durable and indexed).
    Also returns, per study UID, the [objects, bytes] acknowledged."""
    rec = Recorder()
    ingested: dict[str, list[int]] = {}
    lock = threading.Lock()
    stop_at = None if duration is None else rec.t0 + duration
    source.start()

    def worker() -> None:
        while stop_at is None or time.perf_counter() < stop_at:
            batch = source.get()
            if batch is None:
                return
            t = time.perf_counter()
            results = engine.store_buffers([o.data for o in batch])
            dt = time.perf_counter() - t
            bad = sum(1 for r in results if not isinstance(r, StoreOutcome))
            with lock:
                for o in batch:
                    acc = ingested.setdefault(o.study_uid, [0, 0])
                    acc[0] += 1
                    acc[1] += len(o.data)
            rec.add_errors(bad)
            rec.add(sum(len(o.data) for o in batch), len(batch), [dt] * len(batch))
            el = time.perf_counter() - rec.t0
            tick(
                f"ingest {rec.objects:,} objects {rec.bytes / 1e6:,.0f} MB "
                f"{rec.bytes / el / 1e6:,.0f} MB/s {el:,.0f}s"
            )

    try:
        _run_threads(threads, worker)
    finally:
        source.stop()
    seconds = time.perf_counter() - rec.t0
    out = rec.summary(seconds)
    stats = engine.stats()
    stored = int(stats.get("stored_bytes") or 0)
    logical = int(stats.get("logical_bytes") or 0)
    out["stored_bytes"] = stored
    out["stored_mb_s"] = round(stored / seconds / 1e6, 2) if seconds > 0 else None
    out["compression_ratio"] = round(logical / stored, 3) if stored else None
    out["threads"] = threads
    out["batch_objects_max"] = 8
    return out, ingested


def _queries(studies: list[StudyInfo], rng: random.Random) -> list[tuple[str, str, dict[str, str]]]:
    """One round of the C-FIND-like mix: (kind, level, query) with typical return keys."""
    s = rng.choice(studies)
    day = s.study_date
    week = f"{day}-{_add_days(day, 6)}"
    study_keys = {
        "StudyInstanceUID": "",
        "StudyDate": "",
        "StudyDescription": "",
        "AccessionNumber": "",
        "ModalitiesInStudy": "",
        "NumberOfStudyRelatedInstances": "",
        "PatientName": "",
        "PatientID": "",
    }
    surname = s.patient_name.split("^")[0]
    return [
        ("study_patient_id", "STUDY", {**study_keys, "PatientID": s.patient_id}),
        ("study_patient_name_wildcard", "STUDY", {**study_keys, "PatientName": surname[:4] + "*"}),
        ("study_date_range", "STUDY", {**study_keys, "StudyDate": week}),
        (
            "study_modality_date_range",
            "STUDY",
            {**study_keys, "ModalitiesInStudy": s.modality, "StudyDate": week},
        ),
        (
            "series_of_study",
            "SERIES",
            {
                "StudyInstanceUID": s.uid,
                "SeriesInstanceUID": "",
                "Modality": "",
                "SeriesNumber": "",
                "SeriesDescription": "",
                "NumberOfSeriesRelatedInstances": "",
            },
        ),
        (
            "images_of_series",
            "IMAGE",
            {
                "StudyInstanceUID": s.uid,
                "SeriesInstanceUID": rng.choice(s.series_uids),
                "SOPInstanceUID": "",
                "SOPClassUID": "",
                "InstanceNumber": "",
            },
        ),
    ]


def _add_days(yyyymmdd: str, days: int) -> str:
    import datetime as dt

    d = dt.date(int(yyyymmdd[:4]), int(yyyymmdd[4:6]), int(yyyymmdd[6:])) + dt.timedelta(days=days)
    return d.strftime("%Y%m%d")


def query(
    engine: Engine, studies: list[StudyInfo], threads: int, seconds: float, seed: int, tick: Tick
) -> dict[str, Any]:
    """The mix in rounds (every kind once per round) from N threads for `seconds`."""
    rng = random.Random(seed)
    rounds = [_queries(studies, rng) for _ in range(max(1, MAX_QUERIES // 6))]
    lock = threading.Lock()
    by_kind: dict[str, list[float]] = {}
    matches: dict[str, int] = {}
    next_round = [0]
    t0 = time.perf_counter()

    def worker() -> None:
        while time.perf_counter() - t0 < seconds:
            with lock:
                if next_round[0] >= len(rounds):
                    return
                r = rounds[next_round[0]]
                next_round[0] += 1
            for kind, level, q in r:
                t = time.perf_counter()
                n = sum(1 for _ in engine.index.find(level, q))
                dt = time.perf_counter() - t
                with lock:
                    by_kind.setdefault(kind, []).append(dt)
                    matches[kind] = matches.get(kind, 0) + n
            done = sum(len(v) for v in by_kind.values())
            tick(f"query {done:,} queries {done / (time.perf_counter() - t0):,.0f}/s")

    _run_threads(threads, worker)
    elapsed = time.perf_counter() - t0
    all_lat = [x for v in by_kind.values() for x in v]
    return {
        "queries": len(all_lat),
        "seconds": round(elapsed, 4),
        "queries_s": round(len(all_lat) / elapsed, 2) if elapsed > 0 else None,
        "latency_ms": latency_summary(all_lat),
        "latency_histogram": latency_histogram(all_lat),
        "studies_indexed": len(studies),
        "by_kind": {
            k: {
                "queries": len(v),
                "mean_matches": round(matches[k] / len(v), 2),
                "latency_ms": latency_summary(v),
            }
            for k, v in sorted(by_kind.items())
        },
    }


def retrieve(
    engine: Engine,
    studies: list[StudyInfo],
    threads: int,
    seconds: float,
    seed: int,
    data_dir: Path | None,
    tick: Tick,
) -> dict[str, Any]:
    """Whole studies, object by object through Engine.read_file (index lookup, read, decode,
    hash check), page cache dropped first so the device is read, not memory."""
    dropped = drop_tree_cache(data_dir) if data_dir is not None else False
    order = list(studies)
    random.Random(seed).shuffle(order)
    rec = Recorder()
    first: list[float] = []
    study_rates: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        while time.perf_counter() - rec.t0 < seconds:
            with lock:
                if not order:
                    return
                s = order.pop()
            t_study = time.perf_counter()
            nbytes = 0
            for i, inst in enumerate(engine.index.instances_of("study", s.uid)):
                t = time.perf_counter()
                data = engine.read_file(inst.sop_uid)
                now = time.perf_counter()
                if i == 0:
                    with lock:
                        first.append(now - t_study)
                nbytes += len(data)
                rec.add(len(data), 1, [now - t])
            dt = time.perf_counter() - t_study
            with lock:
                study_rates.append(nbytes / dt / 1e6 if dt > 0 else 0.0)
            el = time.perf_counter() - rec.t0
            tick(
                f"retrieve {len(study_rates):,} studies {rec.bytes / 1e6:,.0f} MB "
                f"{rec.bytes / el / 1e6:,.0f} MB/s"
            )

    _run_threads(threads, worker)
    out = rec.summary(time.perf_counter() - rec.t0)
    rates = sorted(study_rates)
    out["studies"] = len(rates)
    out["first_object_ms"] = latency_summary(first)
    out["study_mb_s"] = {
        "p50": _pct(rates, 50),
        "min": round(rates[0], 2) if rates else None,
        "max": round(rates[-1], 2) if rates else None,
    }
    out["cache_dropped"] = dropped
    return out


def _pct(sorted_values: list[float], q: float) -> float | None:
    from .measure import percentile

    v = percentile(sorted_values, q)
    return None if v is None else round(v, 2)


def scrub(engine: Engine, data_dir: Path | None, tick: Tick) -> dict[str, Any]:
    """Engine.verify (every blob re-read, decoded, BLAKE3-checked; native, two threads) for the
    throughput; it is one native call, so per-object latency comes from a sample of blobs
    read and verified one at a time afterwards (cache dropped again)."""
    tick("scrub: verifying every blob")
    dropped = drop_tree_cache(data_dir) if data_dir is not None else False
    logical = int(engine.stats().get("logical_bytes") or 0)
    t0 = time.perf_counter()
    report = engine.verify()
    seconds = time.perf_counter() - t0
    if data_dir is not None:
        drop_tree_cache(data_dir)
    hashes = list(engine.vault.hashes())
    random.Random(0).shuffle(hashes)
    lat = []
    for h in hashes[:SCRUB_LATENCY_SAMPLE]:
        t = time.perf_counter()
        engine.vault.read(h)
        lat.append(time.perf_counter() - t)
    return {
        "objects": report.checked,
        "bytes": logical,
        "seconds": round(seconds, 4),
        "mb_s": round(logical / seconds / 1e6, 2) if seconds > 0 else None,
        "objects_s": round(report.checked / seconds, 2) if seconds > 0 else None,
        "stored_bytes": report.bytes,
        "stored_mb_s": round(report.bytes / seconds / 1e6, 2) if seconds > 0 else None,
        "latency_ms": latency_summary(lat),
        "latency_histogram": latency_histogram(lat),
        "latency_sample_objects": len(lat),
        "damaged": len(report.damaged) + len(report.missing),
        "errors": len(report.damaged) + len(report.missing),
        "cache_dropped": dropped,
    }


def compact(engine: Engine, tick: Callable[..., None]) -> dict[str, Any]:
    """The background compactor's work, timed alone: everything ingest landed (raw) moved to the
    warm tier's codec, on every core (what `serve` does while ingest is idle)."""
    tick("compact: landing -> warm", force=True)
    t0 = time.perf_counter()
    p = Compactor(engine).run_once()
    seconds = time.perf_counter() - t0
    r = p.report
    return {
        "blobs": r.blobs,
        "logical_bytes": r.logical_bytes,
        "stored_bytes": r.stored_bytes,
        "seconds": round(seconds, 4),
        "mb_s": round(r.logical_bytes / seconds / 1e6, 2) if seconds > 0 else None,
        "threads": p.threads,
        "compression_ratio": round(r.logical_bytes / r.stored_bytes, 3) if r.stored_bytes else None,
        "failed": len(r.failed),
    }
