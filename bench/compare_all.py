"""`make bench-compare`: dicomvault, Orthanc 1.10 and the raw device side by side, in one run, on
the same machine, disk and data; writes bench/RESULTS.md (one markdown table of every headline
figure with ratios, the date, the machine, the load average).

    .venv/bin/python bench/compare_all.py            # full: 2 x 300 CT slices, 100k-instance index
    .venv/bin/python bench/compare_all.py --quick    # 1 x 100 slices, 5k index (~2 minutes)

Steps: raw device (synced sequential write, sequential read: dicomvault.bench.device); DIMSE ingest
over 1 and 4 associations into Orthanc, Orthanc with zlib and dicomvault (dimse_compare.py); after
the 4-association ingest, on the same store: bytes on disk, C-GET (getscu) and C-MOVE (movescu to a
dcmtk storescp of ours) of one 300-slice study with first-image latency, and `dicomvault verify`;
the same two ingests into the machine's no-op ceiling (dcmtk `storescp --fork --ignore`: one
process per association, receives, stores nothing); then C-FIND latency at 100k instances
(dimse_compare.py: dcmtk findscu as the client, per-query latency from its microsecond-stamped
log). Every server is stopped and the run's work directory removed even on failure; the
generated input is cached under --scratch.
See bench/README.md, "Side by side: make bench-compare".
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import dimse_compare as dc
from pydicom import dcmread

from dicomvault.bench import device
from dicomvault.bench.dimse import (
    RetrieveRun,
    StoreScp,
    dicomvault_command,
    getscu_study,
    movescu_study,
    start_storescp,
    tree_bytes,
)

ROOT = Path(__file__).resolve().parent
DEADLINE_S = 20 * 60  # the budget on 2 cores
FIND_RESERVE_S = 150  # C-FIND queries on both systems + the report, after Orthanc's index build


# Each retrieve figure: the median of this many, the page cache dropped before each. Why 5: one
# retrieve moves by +-30 % on this shared machine, and of 3 the first (the first C-GET the server
# process ever runs, with its one-time costs) was one of the two that set the median.
RETRIEVES = 5


def cold_median(root: Path, retrieve: Callable[[], RetrieveRun]) -> RetrieveRun:
    """RETRIEVES runs of `retrieve`, `root`'s files evicted from the page cache before each: the
    run of median wall time, with the median first image of all of them. Why: one retrieve of a
    study takes 0.1-0.5 s here, where a neighbour's burst moved a single run by +-30 %."""
    runs = []
    for _ in range(RETRIEVES):
        device.drop_tree_cache(root)
        runs.append(retrieve())
    mid = sorted(runs, key=lambda r: r.seconds)[len(runs) // 2]
    firsts = [r.first_object_ms for r in runs if r.first_object_ms is not None]
    return replace(mid, first_object_ms=statistics.median(firsts) if firsts else None)


def machine() -> dict[str, str]:
    """nproc, memory, the scratch disk (df), kernel and CPU model, for the results header."""
    cpu = "unknown"
    with contextlib.suppress(OSError), open("/proc/cpuinfo", encoding="utf-8") as f:
        cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    mem = "unknown"
    with contextlib.suppress(OSError), open("/proc/meminfo", encoding="utf-8") as f:
        kb = next((int(ln.split()[1]) for ln in f if ln.startswith("MemTotal:")), 0)
        mem = f"{kb / 2**20:.1f} GiB"
    return {"nproc": str(os.cpu_count()), "memory": mem, "cpu": cpu, "kernel": platform.release()}


def df_line(path: Path) -> str:
    out = subprocess.run(["df", "-hT", str(path)], capture_output=True, text=True, check=False).stdout
    lines = out.strip().splitlines()
    return " ".join(lines[-1].split()) if len(lines) > 1 else "unknown"


def study_uid(files: list[Path]) -> str:
    return str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)


def dv_cli(*args: str) -> dict[str, Any]:
    r = subprocess.run([*dicomvault_command(), *args], capture_output=True, text=True, check=False)
    if r.returncode not in (0, 2):  # verify exits 2 on damage: its JSON still says what
        raise RuntimeError(f"dicomvault {' '.join(args)} exited {r.returncode}: {r.stderr[-1000:]}")
    return dict(json.loads(r.stdout))


class Run:
    """Everything one comparison measures, and what to clean up."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.t0 = time.monotonic()
        self.scratch: Path = args.scratch
        self.work = self.scratch / f"run-{os.getpid()}"
        self.cleanup = contextlib.ExitStack()
        self.dev: dict[str, Any] = {}
        self.ingest: list[dc.IngestResult] = []
        self.size: dict[str, dict[str, int]] = {}
        self.get: dict[str, RetrieveRun] = {}
        self.small: tuple[str, Path, int] | None = None  # (study UID, folder, objects) of the small study
        self.small_get: dict[str, RetrieveRun] = {}
        self.small_move: dict[str, RetrieveRun] = {}
        self.move: dict[str, RetrieveRun] = {}
        self.verify: dict[str, Any] = {}
        self.find: dict[str, Any] = {}
        self.notes: list[str] = []
        self.scp: StoreScp | None = None
        self.settled: dict[str, float] = {}  # seconds each archive's background work took

    def elapsed(self) -> float:
        return time.monotonic() - self.t0

    def devices(self) -> None:
        d = self.work / "device"
        d.mkdir(parents=True)
        probe = d / "sequential.bin"
        dc.log("device: synced sequential write, sequential read")
        self.dev["seq_write"] = device.seq_write(probe, 1 << 30, 10.0)
        self.dev["seq_read"] = device.seq_read(probe, 10.0)
        probe.unlink()

    def target_round(self, which: str, files: list[Path], whole: list[Path], quarters: list[Path],
                     scp: Any, uid: str, study_mb: float) -> None:
        """1-association ingest on an empty store, then the 4-association ingest on another empty
        store, which then serves the size, retrieve and verify measurements."""
        for dirs in (whole, quarters):
            store = self.work / "store"
            shutil.rmtree(store, ignore_errors=True)
            target = dc.start_target(which, store, move_dest=(scp.ae, scp.port))
            try:
                self.ingest.append(dc.ingest_into(target, files, dirs, self.work / "logs"))
                if dirs is quarters:
                    self.after_ingest(which, target, uid, study_mb)
            finally:
                target.stop()
            if which == "dicomvault" and dirs is quarters:
                assert target.root is not None
                device.drop_tree_cache(target.root)
                self.verify = dv_cli("verify", "--json", "--data", str(target.root))
                dc.log(f"  verify: {self.verify['checked']} blobs in {self.verify['seconds']} s")
            shutil.rmtree(store, ignore_errors=True)

    def ceiling_round(self, files: list[Path], whole: list[Path], quarters: list[Path]) -> None:
        """The same 1- and 4-association ingests into the no-op ceiling (dcmtk storescp --fork --ignore),
        a fresh one each time: what the machine allows any receiver fed by these clients."""
        for dirs in (whole, quarters):
            store = self.work / "store"
            shutil.rmtree(store, ignore_errors=True)
            target = dc.start_target(dc.CEILING, store)
            try:
                self.ingest.append(dc.ingest_into(target, files, dirs, self.work / "logs"))
            finally:
                target.stop()
            shutil.rmtree(store, ignore_errors=True)

    def after_ingest(self, which: str, target: dc.Target, uid: str, study_mb: float) -> None:
        assert target.root is not None
        root = target.root
        waited = target.settle()
        self.settled[which] = waited
        dc.log(f"  {which}: background work after the ingest done in {waited:.0f} s")
        size = {"disk_bytes": tree_bytes(root)}
        if which == "dicomvault":
            size["stored_bytes"] = int(dv_cli("stats", "--json", "--data", str(root))["stored_bytes"])
        else:
            size["index_bytes"] = tree_bytes(root.parent / "index")
        self.size[which] = size
        logs = self.work / "logs"
        # Cold caches for both retrieves: the store's files (and index) evicted, as after a night.
        scp = self.scp
        assert scp is not None
        self.get[which] = cold_median(root.parent, lambda: getscu_study(target.ae, target.port, uid, logs))
        self.move[which] = cold_median(root.parent,
                                       lambda: movescu_study(target.ae, target.port, uid, scp, logs))
        for kind, r in (("C-GET", self.get[which]), ("C-MOVE", self.move[which])):
            dc.log(f"  {kind}: {r.objects} objects in {r.seconds:.2f} s = {study_mb / r.seconds:.0f} MB/s, "
                   f"first image {r.first_object_ms} ms, exit {r.exit_code}")
        if self.small:
            # The many-small-objects study (CR/DX-like): sent, then retrieved with cold caches.
            small_uid, small_dir, n = self.small
            dc.storescu(target.ae, target.port, [small_dir])
            target.settle()
            self.small_get[which] = cold_median(
                root.parent, lambda: getscu_study(target.ae, target.port, small_uid, logs))
            self.small_move[which] = cold_median(
                root.parent, lambda: movescu_study(target.ae, target.port, small_uid, scp, logs))
            for kind, r in (("C-GET", self.small_get[which]), ("C-MOVE", self.small_move[which])):
                dc.log(f"  {kind} small objects: {r.objects}/{n} in {r.seconds:.2f} s = "
                       f"{r.objects / r.seconds:.0f} objects/s, first image {r.first_object_ms} ms")

    def cfind(self, n_index: int, n_find: int) -> None:
        """C-FIND latency from dcmtk findscu (dimse_compare.find_latencies), and with
        --pynetdicom-find also from the pynetdicom SCU (secondary rows)."""
        dv_data = self.work / "index-dv"
        logs = self.work / "cfind"
        dc.log(f"C-FIND: dicomvault index of {n_index} instances")
        dc.build_dv_index(dv_data, n_index)
        dvt = dc.start_dicomvault(dv_data, fresh=False)
        py: dict[str, dc.FindStats] = {}
        try:
            dv_lat = dc.find_latencies(dvt.ae, dvt.port, n_find, n_index, logs / "dicomvault")
            if self.args.pynetdicom_find:
                py["dv"] = dc.find_latencies_pynetdicom(dvt.ae, dvt.port, n_find, n_index)
        finally:
            dvt.stop()
        budget = min(self.args.orthanc_index_budget, DEADLINE_S - FIND_RESERVE_S - self.elapsed())
        dc.log(f"C-FIND: Orthanc index, build budget {budget:.0f} s")
        ot, orth = dc.start_orthanc_target(self.work / "index-orthanc", compression=False)
        try:
            n_orth = dc.build_orthanc_index(orth, self.scratch / "tiny", n_index, min(10_000, n_index),
                                            max(budget, 30.0))
            orth_lat = dc.find_latencies(ot.ae, ot.port, n_find, n_orth, logs / "orthanc")
            if self.args.pynetdicom_find:
                py["orthanc"] = dc.find_latencies_pynetdicom(ot.ae, ot.port, n_find, n_orth)
        finally:
            ot.stop()
        self.find = {"dv": dv_lat, "orthanc": orth_lat, "n_dv": n_index, "n_orthanc": n_orth,
                     "n_find": n_find, "pynetdicom": py}


def _x(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else "-"


def _n(v: float | None, fmt: str = ",.1f") -> str:
    return "-" if v is None else format(v, fmt)


def ingest_bound(dv: dc.IngestResult | None, ceiling: dc.IngestResult | None, device_mb_s: float
                 ) -> float | None:
    """dicomvault's ingest MB/s over the lower of the no-op ceiling's (same clients, same run) and
    the device's synced sequential write: the bound issue 13's ingest target is stated against
    ("or of the disk's synced sequential write of the same bytes, where that is lower")."""
    if dv is None or ceiling is None or not device_mb_s or not ceiling.mbps:
        return None
    return dv.mbps / min(ceiling.mbps, device_mb_s)


def report(r: Run, files: list[Path], study_files: int, study_mb: float, load0: tuple[float, ...],
           load1: tuple[float, ...], started: dt.datetime) -> str:
    m = machine()
    input_mb = sum(f.stat().st_size for f in files) / 1e6
    ing = {(i.target, i.associations): i for i in r.ingest}
    sw, sr = r.dev["seq_write"]["mb_s"], r.dev["seq_read"]["mb_s"]
    head = (f"| figure | dicomvault | Orthanc | Orthanc zlib | {dc.CEILING} | device | "
            "dicomvault vs Orthanc | dicomvault vs Orthanc zlib | dicomvault / ceiling | "
            "dicomvault / device |")
    rows = [head, "| --- " * 10 + "|"]

    def row(name: str, vals: dict[str, float | None], dev: float | None, fmt: str,
            lower_better: bool) -> None:
        dv = vals.get("dicomvault")

        def vs(other: float | None) -> str:
            return _x(other, dv) if lower_better else _x(dv, other)

        ceiling = vals.get(dc.CEILING)
        rows.append(f"| {name} | {_n(dv, fmt)} | {_n(vals.get('Orthanc'), fmt)} | "
                    f"{_n(vals.get('Orthanc zlib'), fmt)} | {_n(ceiling, fmt)} | {_n(dev, fmt)} | "
                    f"{vs(vals.get('Orthanc'))} | {vs(vals.get('Orthanc zlib'))} | "
                    f"{'-' if lower_better else _x(dv, ceiling)} | {'-' if lower_better else _x(dv, dev)} |")

    for a in (1, 4):
        done = [t for t in (*dc.TARGETS, dc.CEILING) if (t, a) in ing]
        row(f"DIMSE ingest, {a} assoc., instances/s", {t: ing[(t, a)].ips for t in done}, None, ",.1f", False)
        row(f"DIMSE ingest, {a} assoc., MB/s", {t: ing[(t, a)].mbps for t in done}, sw, ",.1f", False)
        row(f"DIMSE ingest, {a} assoc., p50 ms per instance",
            {t: ing[(t, a)].latency_p50_ms for t in done}, None, ",.0f", True)
        bound = ingest_bound(ing.get(("dicomvault", a)), ing.get((dc.CEILING, a)), sw)
        if bound is not None:
            rows.append(f"| DIMSE ingest, {a} assoc., / min(no-op ceiling, device synced write) "
                        f"(issue 13: >= 0.8 with 4) | {bound:.2f}x | | | | | | | | |")
    if r.find:
        for kind in dc.QUERY_KINDS:
            row(f"C-FIND {kind}, p50 ms", {"dicomvault": r.find["dv"][kind][0],
                                            "Orthanc": r.find["orthanc"][kind][0]}, None, ",.2f", True)
            row(f"C-FIND {kind}, p95 ms", {"dicomvault": r.find["dv"][kind][1],
                                            "Orthanc": r.find["orthanc"][kind][1]}, None, ",.2f", True)
        py = r.find.get("pynetdicom") or {}
        if "dv" in py and "orthanc" in py:
            for kind in dc.QUERY_KINDS:
                row(f"C-FIND {kind}, pynetdicom SCU, p50 ms", {"dicomvault": py["dv"][kind][0],
                                                                "Orthanc": py["orthanc"][kind][0]},
                    None, ",.2f", True)
    for kind, runs in (("C-GET", r.get), ("C-MOVE", r.move)):
        for t, x in runs.items():
            if x.objects != study_files or x.exit_code != 0:
                # A partial retrieve's MB/s (whole study / wall time) is not a throughput: say so.
                scu = "getscu" if kind == "C-GET" else "movescu"
                r.notes.append(f"**{kind} from {t} incomplete: {x.objects}/{study_files} objects received, "
                               f"{scu} exit {x.exit_code}, {x.seconds:.1f} s**; "
                               "its MB/s row is study bytes / wall time, not a throughput.")
        row(f"{kind} study retrieve, MB/s", {t: study_mb / x.seconds for t, x in runs.items()}, sr, ",.1f",
            False)
        row(f"{kind} first image, ms", {t: x.first_object_ms for t, x in runs.items()}, None, ",.2f", True)
    small_n = r.small[2] if r.small else 0
    for kind, runs in (("C-GET", r.small_get), ("C-MOVE", r.small_move)):
        if not runs:
            continue
        name = f"{kind} {small_n} small objects ({dc.SMALL_SIZE}x{dc.SMALL_SIZE} CR)"
        row(f"{name}, objects/s", {t: x.objects / x.seconds for t, x in runs.items()}, None, ",.0f", False)
        row(f"{name}, first image ms", {t: x.first_object_ms for t, x in runs.items()}, None, ",.2f", True)
    row("storage after ingest, MB on disk (data files)",
        {t: s["disk_bytes"] / 1e6 for t, s in r.size.items()}, None, ",.1f", True)
    row("compression ratio (input bytes / bytes on disk)",
        {t: input_mb * 1e6 / s["disk_bytes"] for t, s in r.size.items() if s["disk_bytes"]}, None, ",.2f",
        False)
    if r.verify:
        v = r.verify
        secs = v["seconds"] or None
        row("verify (scrub), logical MB/s", {"dicomvault": input_mb / secs if secs else None}, sr, ",.1f",
            False)
        row("verify (scrub), stored MB/s read", {"dicomvault": v["bytes"] / 1e6 / secs if secs else None}, sr,
            ",.1f", False)
    rows.append(f"| device synced sequential write, MB/s | | | | | {sw:,.1f} | | | | |")
    rows.append(f"| device sequential read (cache dropped), MB/s | | | | | {sr:,.1f} | | | | |")

    dv_size = r.size.get("dicomvault", {})
    details = [
        f"- Input: {len(files)} synthetic CT slices 512x512 16-bit ({input_mb:,.0f} MB, "
        f"`dicomvault.bench.synth.ct_series`), retrieve study: {study_files} slices ({study_mb:,.0f} MB).",
        "- Ingest: dcmtk `storescu -pdu 131072 +sd +r` with `TCP_NODELAY=1`, one process per association "
        "(4 associations: 4 processes, a quarter of the files each); wall time first start to last exit; "
        "every (target, associations) starts from an empty store. Per-instance latency from storescu's "
        "timestamped log (Sending file to Received Store Response, 1 ms resolution). Stored counts "
        "(received, for the ceiling, which stores nothing): "
        + ", ".join(f"{i.target}/{i.associations}: {i.stored}/{i.instances}"
                    + (f" ({i.client_failures} storescu exited non-zero)" if i.client_failures else "")
                    for i in r.ingest) + ".",
        "- Settling: after the 4-association ingest (and after the small study's), each archive is left "
        "until its background work is done: the server's process tree under 0.05 CPU-s per second in two "
        "one-second windows in a row, and for dicomvault its landing tier empty (compacted to the hot "
        "codec: compressed at rest) and the analysis pipeline through the new series (which it starts once a "
        "series has been quiet for `[analysis] quiet_seconds`, 30 s by default), as a study "
        "retrieved later (a prior) is. Seconds it took after the CT ingest: "
        + (", ".join(f"{t} {w:.0f}" for t, w in r.settled.items()) or "-") + ".",
        "- Retrieve: after the 4-association ingest, the store's files evicted from the page cache "
        "(`posix_fadvise DONTNEED`), then `getscu -S -pdu 131072 --ignore` (C-GET, study level) and "
        "`movescu -S` to a dcmtk `storescp -pdu 131072 --ignore` started by the harness (C-MOVE); MB/s = "
        "study bytes / client wall time (process start to exit, association set-up included); first "
        "image = request sent (SCU log) to first C-STORE received (SCU or storescp log), us stamps; "
        f"each the median of {RETRIEVES} retrieves, the page cache dropped before each. "
        "Objects received: " + ", ".join(f"{t} {r.get[t].objects}/{r.move[t].objects}" for t in r.get) + ".",
        "- Storage: bytes allocated on disk (`du`-style, st_blocks) by the data files: dicomvault's whole "
        f"data directory (index included; `stats --json` stored_bytes {dv_size.get('stored_bytes', 0):,}), "
        "Orthanc's StorageDirectory (its SQLite index, not included: "
        + ", ".join(f"{t} {s['index_bytes'] / 1e6:,.1f} MB" for t, s in r.size.items() if "index_bytes" in s)
        + "). Compression ratio = input bytes / that.",
        "- Verify: `dicomvault verify --json` after the server stopped, page cache dropped first (every blob "
        "re-read, decoded, BLAKE3-checked); logical MB/s = input bytes / its `seconds`. Orthanc has no "
        "equivalent, so the comparison is the device's sequential read.",
    ]
    ceiling = dc.ceiling_note(r.ingest)
    if ceiling:
        details.append(f"- {ceiling} Started fresh for each ingest, after the archives' rounds; its "
                       "other rows are empty (it stores and serves nothing).")
    if r.find:
        matches = ", ".join(f"{k} {r.find['dv'][k][2]:.1f} / {r.find['orthanc'][k][2]:.1f}"
                            for k in dc.QUERY_KINDS)
        details.append(
            f"- C-FIND: {r.find['n_find']} study-level queries per kind (PatientID exact, PatientName "
            "`ABCDE*`, StudyDate one-week range), index of "
            f"{r.find['n_dv']:,} instances in dicomvault and "
            f"{r.find['n_orthanc']:,} in Orthanc ({dc.INSTANCES_PER_STUDY} per study, "
            f"{dc.STUDIES_PER_PATIENT} studies per patient; dicomvault's written straight into its index, "
            "Orthanc's sent over DIMSE as 8x8 secondary captures; a smaller Orthanc index only flatters "
            f"Orthanc); mean matches dicomvault / Orthanc: {matches}. {dc.FIND_METHOD} Method as "
            "`bench/dimse_compare.py`; retries (new association after a query without a successful "
            f"answer): {dc.FIND_RETRIES or 'none'}.")
        if r.find.get("pynetdicom"):
            details.append(
                "- C-FIND, pynetdicom SCU rows (secondary, `--pynetdicom-find`): the same queries from the "
                "harness's own Python client (`dicomvault.dimse.scu`, pynetdicom) on one persistent "
                "association, timed around each `find()`: they include that client's own CPU per query "
                "(~6 ms measured, more than the server's), so they measure the Python client more than "
                "the server.")
    details += [
        "- Device: `dicomvault.bench.device` on the scratch directory: 1 MiB writes of random data ending "
        "in one fdatasync (up to 1 GiB or 10 s), then that file read back after evicting it from the cache.",
        "- \"vs\" columns: how many times better dicomvault is (throughput and ratio: dicomvault / other; "
        "latency and size: other / dicomvault). \"dicomvault / ceiling\": dicomvault's share of the no-op "
        "ceiling's ingest rate (1.00x = as fast as a receiver that does nothing). \"dicomvault / device\": "
        "against synced sequential write for ingest, sequential read for retrieve and verify.",
        *[f"- {n}" for n in r.notes],
    ]
    cfg = ("Orthanc 1.10 (Debian package) as generated by `python/dicomvault/bench/orthanc.py`: "
           "StorageCompression false (\"Orthanc\") or true (\"Orthanc zlib\"), SyncStorageArea true "
           "(fsync per file: acknowledged = durable, as ours), SQLite index in its default synchronous mode, "
           "no plugins, SaveJobs false, DicomThreadsCount 4, ConcurrentJobs 2, MaximumPduLength 131072, "
           "TcpNoDelay true and `TCP_NODELAY=1` in its environment (its DICOM side is DCMTK, which leaves "
           "Nagle on otherwise), SynchronousCMove true, StableAge 3600. dicomvault: `dicomvault serve` with "
           "its defaults (received bytes BLAKE3-hashed into the raw landing tier, fdatasync'd volumes and a "
           "synced index before each C-STORE response; compacted to the hot codec in the background, "
           "before the retrieves; reads checked by the stored checksum, pending responses every 0.1 s).")
    cmd = " ".join([Path(sys.executable).name, "bench/compare_all.py", *sys.argv[1:]])
    return "\n".join([
        "# dicomvault vs Orthanc vs the raw device",
        "",
        f"Run {started:%Y-%m-%d %H:%M} ({started.astimezone().tzname()}), `{cmd}`, "
        f"{r.elapsed() / 60:.1f} minutes. Written by `make bench-compare` (bench/compare_all.py).",
        "",
        f"Machine: {m['nproc']} CPUs ({m['cpu']}), {m['memory']} memory, kernel {m['kernel']}; "
        f"scratch disk: `{df_line(r.scratch)}` (df -hT). **Shared machine, load average "
        f"{load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} (1/5/15 min) at the start and "
        f"{load1[0]:.2f} / {load1[1]:.2f} / {load1[2]:.2f} at the end of the run**: other developers' builds "
        "and tests ran alongside, so read the ratios (each measured minutes apart on the same disk) "
        "rather than the absolute figures; run-to-run noise here is about +-30 %.",
        "",
        *rows,
        "",
        "## How each figure was measured",
        "",
        *details,
        "",
        "## Configurations",
        "",
        cfg,
        "",
    ])


def parse_args() -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 x 100 slices, 5k-instance index, 50 C-FINDs")
    ap.add_argument("--studies", type=int, help="CT studies sent in the ingest (default 2; quick 1)")
    ap.add_argument("--slices", type=int, help="slices per study (default 300; quick 100)")
    ap.add_argument("--index", type=int, help="C-FIND index size in instances (default 100000; quick 5000)")
    ap.add_argument("--finds", type=int, help="C-FINDs per query kind (default 200; quick 50)")
    ap.add_argument("--orthanc-index-budget", type=float, default=480,
                    help="max seconds for Orthanc's index build (less if the 20 min budget needs it)")
    ap.add_argument("--scratch", type=Path, default=ROOT / ".scratch" / "compare",
                    help="work folder on the disk under test; input cached here (default %(default)s)")
    ap.add_argument("--out", type=Path, default=ROOT / "RESULTS.md", help="(default %(default)s)")
    ap.add_argument("--skip-find", action="store_true")
    ap.add_argument("--pynetdicom-find", action="store_true",
                    help="also time the C-FINDs with the pynetdicom SCU (extra rows; the primary "
                    "client is dcmtk findscu)")
    return ap.parse_args()


def _terminate(signum: int, _frame: Any) -> None:
    # SIGTERM/SIGHUP become SystemExit so the finally blocks stop every server and clean up.
    raise SystemExit(128 + signum)


def _keep_other_sections(out: Path, text: str) -> str:
    """The new report plus every section other benchmarks wrote into the same file (DICOMweb,
    viewer, tiers, C-FIND at 1M, TLS: each runs on its own, within its own time budget): the
    `## ` sections of the old file whose heading the new report does not have."""
    old = out.read_text() if out.exists() else ""
    ours = {line for line in text.splitlines() if line.startswith("## ")}
    kept = []
    for part in ("\n" + old).split("\n## ")[1:]:
        heading = "## " + part.split("\n", 1)[0]
        if heading not in ours:
            kept.append(("## " + part).rstrip())
    return "\n\n".join([text.rstrip(), *kept]) + "\n"


def main() -> int:
    args = parse_args()
    studies = args.studies or (1 if args.quick else 2)
    slices = args.slices or (100 if args.quick else 300)
    n_index = args.index or (5000 if args.quick else 100_000)
    n_find = args.finds or (50 if args.quick else 200)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _terminate)
    started = dt.datetime.now()
    load0 = os.getloadavg()
    r = Run(args)
    r.scratch.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(r.work, ignore_errors=True)
    r.work.mkdir(parents=True)
    try:
        r.devices()
        files = dc.make_ct_input(r.scratch / f"ct-{studies}x{slices}", studies, slices)
        study_files = [f for f in files if f.parent == files[0].parent]
        study_mb = sum(f.stat().st_size for f in study_files) / 1e6
        uid = study_uid(study_files)
        whole = [files[0].parent.parent]
        quarters = dc.quarters(files, r.work / "quarters")
        small = dc.make_small_input(r.scratch / f"small-{dc.SMALL_OBJECTS}")
        r.small = (study_uid(small), small[0].parent, len(small))
        r.scp = start_storescp(r.work / "logs")
        r.cleanup.callback(r.scp.stop)
        for which in dc.TARGETS:
            r.target_round(which, files, whole, quarters, r.scp, uid, study_mb)
        r.ceiling_round(files, whole, quarters)
        dc.log(f"ingest, retrieve, size, verify, no-op ceiling done at {r.elapsed():.0f} s")
        if not args.skip_find:
            r.cfind(n_index, n_find)
        if r.find and r.find["n_orthanc"] < n_index:
            r.notes.append(f"Orthanc's C-FIND index stopped at {r.find['n_orthanc']:,} instances to stay "
                           "within the 20-minute budget.")
        text = report(r, files, len(study_files), study_mb, load0, os.getloadavg(), started)
    finally:
        r.cleanup.close()
        shutil.rmtree(r.work, ignore_errors=True)
    args.out.write_text(_keep_other_sections(args.out, text))
    print(text)
    dc.log(f"written to {args.out} after {r.elapsed():.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
