"""One `dicomvault bench` run: device probes, engine phases, ratios; returns the result dict
that --json writes (every field is listed in docs/bench.md)."""

from __future__ import annotations

import itertools
import os
import platform
import shutil
import socket
import sys
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from ..errors import DicomVaultError
from . import device, phase_s3, phases
from .measure import Progress
from .source import ObjectSource
from .targets import S3Target, Target, parse_target
from .workloads import Workload

SCHEMA = "dicomvault-bench/1"
PHASES = ("ingest", "query", "retrieve", "scrub")
OPTIONAL_PHASES = ("dimse",)  # run only when asked for (--dimse or --phases ...,dimse)
DEVICE_MIN_BYTES = 32 << 20
DEVICE_MAX_BYTES = 1 << 30
GENERATOR_PROBE_SECONDS = 1.0
S3_SKIP_REASON = (
    "needs the engine on a local device; the engine cannot keep blobs on an object store yet, "
    "so an s3:// target measures the store itself"
)


@dataclass
class BenchConfig:
    target: str
    workload: str = "mixed"
    duration: float | None = None
    size_gb: float | None = None
    seed: int = 0
    threads: int = 4
    phases: list[str] = field(default_factory=lambda: list(PHASES))
    scale: float = 1.0
    phase_seconds: float = 10.0
    keep: bool = False
    progress: bool = False
    dimse: bool = False
    associations: int = 4
    endpoint: str | None = None
    sse: str | None = None


def _mem_available() -> int:
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 1 << 30


def _generator_speed(w: Workload, seconds: float) -> dict[str, Any]:
    """Objects/s and MB/s of one thread generating this workload on an otherwise idle run."""
    probe = Workload(w.name, w.seed + 1, w.scale)
    probe.pools = w.pools  # same templates, other plan: no rebuild, same per-object cost
    n = nbytes = 0
    t0 = time.perf_counter()
    for obj in itertools.islice(probe.objects(), 10_000):
        n += 1
        nbytes += len(obj.data)
        if time.perf_counter() - t0 > seconds:
            break
    dt = time.perf_counter() - t0
    return {"mb_s": round(nbytes / dt / 1e6, 2), "objects_s": round(n / dt, 2)}


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def run(cfg: BenchConfig) -> dict[str, Any]:
    unknown = [p for p in cfg.phases if p not in PHASES + OPTIONAL_PHASES]
    if unknown:
        raise DicomVaultError(
            f"unknown phase(s) {unknown}; choose from {', '.join(PHASES + OPTIONAL_PHASES)}"
        )
    if "ingest" not in cfg.phases:
        raise DicomVaultError("the ingest phase is required: the other phases work on what it stored")
    # --dimse and a `dimse` phase name are the same request; the config records both as one.
    cfg.dimse = cfg.dimse or "dimse" in cfg.phases
    if cfg.dimse and "dimse" not in cfg.phases:
        cfg.phases = [*cfg.phases, "dimse"]
    if cfg.duration is None and cfg.size_gb is None:
        cfg.size_gb = 1.0
    budget = None if cfg.size_gb is None else int(cfg.size_gb * 1e9)
    progress = Progress(cfg.progress)
    tick = progress.update
    started = time.time()
    target = parse_target(cfg.target, cfg.endpoint, cfg.sse)
    if isinstance(target, S3Target) and cfg.dimse:
        target.cleanup(keep=True)
        raise DicomVaultError("--dimse needs a local target directory (the server's data lives there)")
    result: dict[str, Any] = {"schema": SCHEMA}
    try:
        probe_bytes = min(max(budget or DEVICE_MAX_BYTES, DEVICE_MIN_BYTES), DEVICE_MAX_BYTES)
        free = target.free_bytes()
        # The DIMSE phase holds the input files and a second store at once.
        need = (budget or 0) * (3 if cfg.dimse else 1) + probe_bytes + (256 << 20)
        if free is not None and free < need:
            raise DicomVaultError(
                f"target has {free / 1e9:.2f} GB free, the run needs about {need / 1e9:.2f} GB"
            )

        tick("building pixel templates", force=True)
        workload = Workload(cfg.workload, cfg.seed, cfg.scale)
        t = time.perf_counter()
        workload.prepare()
        templates_s = time.perf_counter() - t
        tick("measuring the generator", force=True)
        gen = _generator_speed(workload, min(GENERATOR_PROBE_SECONDS, cfg.phase_seconds))
        gen.update(templates_seconds=round(templates_s, 3), template_bytes=workload.template_bytes)

        # The device first (nothing else of ours is writing), the synced write once more after
        # the ingest: the mean of the two smooths a shared, noisy disk.
        dev: dict[str, Any] = {}
        ddir = target.device_dir()
        if ddir is not None:
            probe = ddir / "sequential.bin"
            tick("device: synced sequential write", force=True)
            dev["seq_write"] = device.seq_write(probe, probe_bytes, cfg.phase_seconds)
            tick("device: sequential read", force=True)
            dev["seq_read"] = device.seq_read(probe, cfg.phase_seconds)
            probe.unlink()
            tick("device: synced small files", force=True)
            dev["small_files"] = device.small_files(
                ddir / "small",
                workload.size_sample(),
                min(probe_bytes, 256 << 20),
                cfg.phase_seconds,
                tick=lambda n, b: tick(f"device: small files {n:,} files {b / 1e6:,.0f} MB"),
            )

        pregenerate = budget is not None and budget <= min(2 << 30, int(_mem_available() * 0.3))
        if pregenerate:
            tick("pre-generating the workload", force=True)
        source = ObjectSource(workload, budget, pregenerate)
        out_phases: dict[str, Any] = {}
        if isinstance(target, S3Target):
            result.update(_s3_run(cfg, target, source, budget, started, gen, progress))
            return result
        with target.open_engine() as engine:
            out_phases["ingest"], ingested = phases.ingest(engine, source, cfg.threads, cfg.duration, tick)
            if ddir is not None:
                probe = ddir / "sequential.bin"
                tick("device: synced sequential write (after ingest)", force=True)
                after = device.seq_write(probe, probe_bytes, cfg.phase_seconds)
                probe.unlink()
                before = dev["seq_write"]
                dev["seq_write"] = {
                    "bytes": before["bytes"] + after["bytes"],
                    "seconds": round(before["seconds"] + after["seconds"], 4),
                    "mb_s": round((before["mb_s"] + after["mb_s"]) / 2, 2),
                    "mb_s_before": before["mb_s"],
                    "mb_s_after": after["mb_s"],
                }
            out_phases["compact"] = phases.compact(engine, tick)
            studies = [s for s in source.catalog if s.uid in ingested]
            if "query" in cfg.phases and studies:
                out_phases["query"] = phases.query(
                    engine, studies, cfg.threads, cfg.phase_seconds, cfg.seed, tick
                )
            if "retrieve" in cfg.phases and studies:
                out_phases["retrieve"] = phases.retrieve(
                    engine, studies, cfg.threads, cfg.phase_seconds, cfg.seed, target.engine_dir(), tick
                )
            if "scrub" in cfg.phases:
                out_phases["scrub"] = phases.scrub(engine, target.engine_dir(), tick)
        if cfg.dimse:
            out_phases["dimse_ingest"] = _dimse_phase(
                cfg, workload, target, budget, out_phases["ingest"], tick
            )
        progress.done()

        ing = out_phases["ingest"]
        result.update(_common(cfg, started, target, gen, source, studies, ingested, ing))
        result.update(
            device=dev,
            phases=out_phases,
            ratios=_ratios(dev, out_phases),
        )
        return result
    finally:
        progress.done()
        target.cleanup(cfg.keep)


def _s3_run(
    cfg: BenchConfig,
    target: S3Target,
    source: ObjectSource,
    budget: int | None,
    started: float,
    gen: dict[str, Any],
    progress: Progress,
) -> dict[str, Any]:
    """The object-store phases in place of the device probes and the engine phases, which
    need a local device: the result names them under `skipped`."""
    out, stored = phase_s3.run(
        target.store,
        target.run_prefix,
        source,
        threads=cfg.threads,
        duration=cfg.duration,
        budget=budget,
        scale=cfg.scale,
        phase_seconds=cfg.phase_seconds,
        seed=cfg.seed,
        tick=progress.update,
    )
    progress.done()
    studies = [s for s in source.catalog if s.uid in stored]
    return {
        **_common(cfg, started, target, gen, source, studies, stored, out["object_put"]),
        "device": {},
        "phases": out,
        "skipped": {
            **{p: S3_SKIP_REASON for p in cfg.phases if p in PHASES},
            "device": "no local device: the object-store phases measure the store's own limits",
        },
        "ratios": {"object_put_vs_pack_put": _ratio(out["object_put"]["mb_s"], out["pack_put"]["mb_s"])},
    }


def _common(
    cfg: BenchConfig,
    started: float,
    target: Target,
    gen: dict[str, Any],
    source: ObjectSource,
    studies: list[Any],
    stored: dict[str, list[int]],
    first: dict[str, Any],
) -> dict[str, Any]:
    """The result fields every target has: the run, the machine, the generator and the
    workload as stored by the first phase (a --duration run may end inside a study)."""
    gen.update(
        mode=source.mode,
        busy_seconds=round(source.busy_seconds, 3),
        consumer_wait_seconds=round(source.wait_seconds, 3),
    )
    by_mod: dict[str, dict[str, int]] = {}
    for s in studies:
        m = by_mod.setdefault(s.modality, {"studies": 0, "objects": 0, "bytes": 0})
        m["studies"] += 1
        m["objects"] += stored[s.uid][0]
        m["bytes"] += stored[s.uid][1]
    return {
        "version": _version(),
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(started)),
        "seconds": round(time.time() - started, 3),
        "command": sys.argv,
        "config": {k: v for k, v in asdict(cfg).items() if k not in ("progress",)},
        "machine": {
            "hostname": socket.gethostname(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "cpus": os.cpu_count(),
        },
        "target": target.describe(),
        "generator": gen,
        "workload": {
            "name": cfg.workload,
            "studies": len(studies),
            "objects": first["objects"],
            "bytes": first["bytes"],
            "mean_object_bytes": round(first["bytes"] / first["objects"]) if first["objects"] else 0,
            "by_modality": by_mod,
        },
    }


def _dimse_phase(
    cfg: BenchConfig,
    workload: Workload,
    target: Target,
    budget: int | None,
    ingest: dict[str, Any],
    tick: Any,
) -> dict[str, Any]:
    """After the engine phases (the engine is closed): the same objects over DIMSE into a fresh
    `dicomvault serve` under the target. A --duration run sends what the engine ingest stored."""
    from .phase_dimse import dimse_ingest

    work = target.work_dir("dimse")
    if work is None:
        raise DicomVaultError("--dimse needs a local target directory (the server's data lives there)")
    nbytes = budget if budget is not None else int(ingest["bytes"])
    free = shutil.disk_usage(work).free
    if free < 2 * nbytes + (256 << 20):
        raise DicomVaultError(
            f"dimse: {free / 1e9:.2f} GB free, the phase needs about {2 * nbytes / 1e9:.2f} GB"
        )
    again = Workload(cfg.workload, cfg.seed, cfg.scale)
    again.pools = workload.pools  # same templates, same seed: the same objects, no rebuild
    try:
        return dimse_ingest(again, nbytes, cfg.associations, work, tick)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _ratios(dev: dict[str, Any], ph: dict[str, Any]) -> dict[str, float | None]:
    """Engine figure / matching device limit (see docs/bench.md, "Reading the ratios")."""

    def g(d: dict[str, Any], *path: str) -> float | None:
        for p in path:
            if not isinstance(d, dict) or p not in d:
                return None
            d = d[p]
        return d  # type: ignore[return-value]

    return {
        "ingest_vs_seq_write": _ratio(g(ph, "ingest", "mb_s"), g(dev, "seq_write", "mb_s")),
        "ingest_stored_vs_seq_write": _ratio(g(ph, "ingest", "stored_mb_s"), g(dev, "seq_write", "mb_s")),
        "ingest_vs_small_files": _ratio(g(ph, "ingest", "mb_s"), g(dev, "small_files", "mb_s")),
        "ingest_objects_vs_small_files": _ratio(
            g(ph, "ingest", "objects_s"), g(dev, "small_files", "files_s")
        ),
        "dimse_ingest_vs_seq_write": _ratio(g(ph, "dimse_ingest", "mb_s"), g(dev, "seq_write", "mb_s")),
        "dimse_ingest_stored_vs_seq_write": _ratio(
            g(ph, "dimse_ingest", "stored_mb_s"), g(dev, "seq_write", "mb_s")
        ),
        "dimse_ingest_vs_small_files": _ratio(g(ph, "dimse_ingest", "mb_s"), g(dev, "small_files", "mb_s")),
        "dimse_ingest_vs_engine_ingest": _ratio(g(ph, "dimse_ingest", "mb_s"), g(ph, "ingest", "mb_s")),
        "retrieve_vs_seq_read": _ratio(g(ph, "retrieve", "mb_s"), g(dev, "seq_read", "mb_s")),
        "scrub_vs_seq_read": _ratio(g(ph, "scrub", "mb_s"), g(dev, "seq_read", "mb_s")),
        "scrub_stored_vs_seq_read": _ratio(g(ph, "scrub", "stored_mb_s"), g(dev, "seq_read", "mb_s")),
    }


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("dicomvault")
    except PackageNotFoundError:  # running from a source tree without install metadata
        return "unknown"
