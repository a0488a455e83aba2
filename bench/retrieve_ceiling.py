"""`make bench-retrieve`: C-GET (and C-MOVE) study retrieve against the machine's ceiling for the
same work, in one run, interleaved.

The same client for every server: dcmtk `getscu -S -pdu 131072 --ignore` with `TCP_NODELAY=1`
(as bench/compare_all.py runs it), fetching one study at STUDY level from
  (a) the no-op retrieve SCP (bench/noop_get.py: the objects in memory, sent as C-STORE
      sub-operations with our native framing, each C-STORE-RSP awaited; nothing else),
  (b) `dicomvault serve`, the study ingested by storescu and compacted to the warm tier (hot codec:
      every object decoded and BLAKE3-checked on the way out), and
  (c) Orthanc 1.10 (python/dicomvault/bench/orthanc.py, uncompressed storage),
on two workloads: a CT study (`dicomvault.bench.synth.ct_series`, 300 slices 512x512 16-bit) and
200 small CR objects (~100 KB each, bench/dimse_compare.make_small_input). Unless --no-move, C-MOVE
by dcmtk `movescu` to a dcmtk `storescp --ignore` too, from all three (the no-op SCP opening its
sub-association to that storescp per C-MOVE, as any C-MOVE SCP must).

Per retrieve: MB/s and objects/s (study bytes / getscu wall time, process start to exit,
association set-up included), first image (getscu's log, stamped to the microsecond: "Sending
C-GET Request" to the first "Received C-STORE Request", which getscu logs once the whole object
is read: its C-STORE-RSP follows ~2 us later; for C-MOVE the storescp's first "Received Store
Request", stamped to the ms), association set-up (getscu's "Requesting Association" to
"Association Accepted"), CPU seconds of the client (wait4 rusage) and of the server process
tree (/proc/<pid>/stat utime + stime before and after). One untimed warm-up retrieve per server
and workload first; then --rounds rounds, the servers' order rotated each round; medians.
Page cache warm unless --cold (then the archives' files are evicted before each retrieve; the
no-op SCP holds its objects in memory either way).

    .venv/bin/python bench/retrieve_ceiling.py                 # 5 rounds, C-GET and C-MOVE
    .venv/bin/python bench/retrieve_ceiling.py --rounds 7 --cold --json out.json
    .venv/bin/python bench/retrieve_ceiling.py --cold --orthanc-storage-cache 0   # Orthanc cold too
    .venv/bin/python bench/retrieve_ceiling.py --no-orthanc --no-move --tree main=/work/main/python \
        --tree new=BRANCH/python                                 # A/B: one `serve` per tree, interleaved

With --tree, one `serve` per tree (PYTHONPATH = that folder, with the _native module it holds) on
its own copy of the same compacted data directory, measured in the same rotation as the others;
the table then has a column per tree, its share of the ceiling, and the last tree / the first.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dimse_compare as dc
from pydicom import dcmread

from dicomvault.bench import device
from dicomvault.bench.dimse import DCMTK_ENV, HOST, PDU, StoreScp, dicomvault_command, start_storescp
from dicomvault.bench.orthanc import start_orthanc
from dicomvault.bench.procs import terminate, tree_cpu

ROOT = Path(__file__).resolve().parent
NOOP = "no-op retrieve SCP (ceiling)"
DV = "dicomvault"
ORTHANC = "Orthanc"

# log4cplus: INFO lines stamped with epoch seconds.milliseconds.microseconds (%Q), progress off
LOG_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.logger.dcmtk.apps.getscu.progress = WARN
log4cplus.logger.dcmtk.apps.movescu.progress = WARN
log4cplus.logger.dcmtk.apps.storescp.progress = WARN
log4cplus.logger.dcmtk.dcmnet.responses = WARN
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.logToStderr = false
log4cplus.appender.console.ImmediateFlush = true
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%s.%Q} %m%n
"""
# %Q stamps (ours) and %q ones (the storescp of dicomvault.bench.dimse, a C-MOVE's destination)
_USTAMP = r"(\d{9,11})\.(\d{3})(?:\.(\d{3}))? "


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _stamp(text: str, pattern: str) -> float | None:
    m = re.search(_USTAMP + pattern, text)
    if m is None:
        return None
    return int(m.group(1)) + int(m.group(2)) / 1e3 + int(m.group(3) or 0) / 1e6


# -- CPU accounting ---------------------------------------------------------------------------------

# -- the clients ------------------------------------------------------------------------------------

@dataclass
class Retrieve:
    seconds: float
    objects: int
    first_ms: float | None
    client_cpu: float
    server_cpu: float
    exit_code: int
    assoc_ms: float | None = None  # "Requesting Association" to "Association Accepted"
    log_tail: str = ""


def _run_client(cmd: list[str], log_path: Path, server_pid: int, timeout: float = 300) -> tuple[
        float, int, float, float, str]:
    """(wall s, exit code, client CPU s from wait4, server CPU s, log text) of one dcmtk run."""
    cpu0 = tree_cpu(server_pid)
    t0 = time.monotonic()
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=DCMTK_ENV)
        killer = threading.Timer(timeout, proc.kill)
        killer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            killer.cancel()
    secs = time.monotonic() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    server = tree_cpu(server_pid) - cpu0
    text = log_path.read_text(errors="replace")
    return secs, proc.returncode, usage.ru_utime + usage.ru_stime, server, text


def _assoc_ms(text: str) -> float | None:
    rq, ac = _stamp(text, r"Requesting Association"), _stamp(text, r"Association Accepted")
    return (ac - rq) * 1e3 if rq and ac else None


def getscu(ae: str, port: int, uid: str, cfg: Path, log_path: Path, server_pid: int) -> Retrieve:
    cmd = ["getscu", "-lc", str(cfg), "-aet", "GETSCU", "-aec", ae, "-S", "-pdu", str(PDU), "--ignore",
           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}", HOST, str(port)]
    secs, rc, ccpu, scpu, text = _run_client(cmd, log_path, server_pid)
    sent = _stamp(text, r"Sending C-GET Request")
    first = _stamp(text, r"Received C-STORE Request")
    n = len(re.findall(r"Received C-STORE Request", text))
    first_ms = (first - sent) * 1e3 if sent and first else None
    return Retrieve(secs, n, first_ms, ccpu, scpu, rc, _assoc_ms(text), text[-600:])


def movescu(ae: str, port: int, uid: str, dest: StoreScp, cfg: Path, log_path: Path,
            server_pid: int) -> Retrieve:
    before = len(dest.log_text())
    cmd = ["movescu", "-lc", str(cfg), "-aet", "MOVESCU", "-aec", ae, "-aem", dest.ae, "-S",
           "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}", HOST, str(port)]
    secs, rc, ccpu, scpu, text = _run_client(cmd, log_path, server_pid)
    received = dest.log_text()[before:]
    sent = _stamp(text, r"Sending Move Request")
    first = _stamp(received, r"Received Store Request")
    n = len(re.findall(r"Received Store Request", received))
    first_ms = (first - sent) * 1e3 if sent and first else None
    return Retrieve(secs, n, first_ms, ccpu, scpu, rc, _assoc_ms(text), text[-600:])


# -- the servers ------------------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    ae: str
    port: int
    pid: int
    stop: Callable[[], None]
    files: Path | None = None  # what --cold evicts before each retrieve: stored objects and index


def start_noop(folders: list[Path], work: Path, dest: StoreScp | None = None) -> Server:
    log_path = work / "noop-get.log"
    move = ["--dest", f"{dest.ae}={HOST}:{dest.port}"] if dest is not None else []
    with log_path.open("wb") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "noop_get.py"), *move, *map(str, folders)],
                                stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while True:
        m = re.search(r"noop-get serving on (\d+)", log_path.read_text(errors="replace"))
        if m:
            return Server(NOOP, "NOOPGET", int(m.group(1)), proc.pid, lambda: terminate(proc, 10) and None)
        if proc.poll() is not None or time.monotonic() > deadline:
            terminate(proc, 5)
            raise RuntimeError(f"noop_get.py did not start:\n{log_path.read_text(errors='replace')[-2000:]}")
        time.sleep(0.1)


def start_dv(data: Path, folders: list[Path], dest: StoreScp, name: str = DV,
             env: dict[str, str] | None = None) -> Server:
    """`serve` on `data`: the inputs sent by storescu, the server left up for its metadata warmer,
    stopped, the landing tier compacted to warm (`dicomvault tier compact`), started again (with
    `env`, e.g. another tree's PYTHONPATH)."""
    config = data.parent / "dv.toml"
    # The analysis pipeline off: after the restart its worker would analyse the studies (a child
    # process at ~1 core, counted as server CPU, competing with the retrieves; Orthanc runs none).
    config.write_text(f'[analysis]\nenabled = false\n\n[[peers]]\nae_title = "{dest.ae}"\nhost = "{HOST}"\n'
                      f'port = {dest.port}\n')
    server = dc.start_serve(data, config=config, log_path=data.parent / "serve-ingest.log")
    try:
        dc.storescu(server.ae, server.port, folders)
        time.sleep(7)  # web/dicomweb/warmer.py reads a series quiet for 5 s: not during a measurement
    finally:
        server.stop()
    r = subprocess.run([*dicomvault_command(), "tier", "compact", "--data", str(data)], capture_output=True,
                       text=True, check=False)
    if r.returncode != 0:
        raise RuntimeError(f"dicomvault tier compact exited {r.returncode}: {r.stderr[-1000:]}")
    log(f"  compacted: {r.stdout.strip()[-300:]}")
    return restart_dv(data, name, env)


def restart_dv(data: Path, name: str = DV, env: dict[str, str] | None = None) -> Server:
    """`serve` on a data directory made by start_dv (or a copy of one, for another tree)."""
    server = dc.start_serve(data, config=data.parent / "dv.toml", fresh=False, env=env,
                            log_path=data.parent / ("serve.log" if name == DV else f"serve-{name}.log"))
    return Server(name, server.ae, server.port, server.proc.pid, lambda: server.stop() and None, data)


def start_orthanc_server(root: Path, folders: list[Path], dest: StoreScp,
                         storage_cache_mb: int | None = None) -> Server:
    # Orthanc 1.10 keeps recently read or written files in its own memory (default 128 MB), which
    # evicting the page cache does not clear: --orthanc-storage-cache 0 makes its cold runs cold.
    extra = None if storage_cache_mb is None else {"MaximumStorageCacheSize": storage_cache_mb}
    orth = start_orthanc(root, modalities={dest.ae: (dest.ae, HOST, dest.port)}, extra=extra)
    dc.storescu("ORTHANC", orth.dicom_port, folders)
    n = int(orth.statistics()["CountInstances"])
    log(f"  Orthanc holds {n} instances")
    # --cold evicts its storage and its SQLite index, as dicomvault's blobs and index
    return Server(ORTHANC, "ORTHANC", orth.dicom_port, orth.proc.pid, lambda: orth.stop(60) and None, root)


# -- the run ----------------------------------------------------------------------------------------

@dataclass
class Workload:
    name: str
    folder: Path
    uid: str
    objects: int
    mb: float


def workload(name: str, files: list[Path]) -> Workload:
    uid = str(dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    return Workload(name, files[0].parent, uid, len(files), sum(f.stat().st_size for f in files) / 1e6)


def measure(servers: list[Server], loads: list[Workload], rounds: int, move: bool, cold: bool,
            dest: StoreScp, work: Path) -> dict[tuple[str, str, str], list[Retrieve]]:
    cfg = work / "dcmtk-us.cfg"
    cfg.write_text(LOG_CONFIG)
    out: dict[tuple[str, str, str], list[Retrieve]] = {}
    kinds = ["C-GET", "C-MOVE"] if move else ["C-GET"]

    def one(kind: str, s: Server, w: Workload) -> Retrieve:
        if cold and s.files is not None:
            device.drop_tree_cache(s.files)
        lp = work / f"{kind}.log"
        if kind == "C-GET":
            return getscu(s.ae, s.port, w.uid, cfg, lp, s.pid)
        return movescu(s.ae, s.port, w.uid, dest, cfg, lp, s.pid)

    for kind in kinds:
        for s in servers:
            for w in loads:
                r = one(kind, s, w)  # warm-up, not counted
                if r.objects != w.objects or r.exit_code:
                    log(f"WARNING: warm-up {kind} {s.name} {w.name}: {r.objects}/{w.objects}, exit "
                        f"{r.exit_code}\n{r.log_tail}")
    for i in range(rounds):
        order = servers[i % len(servers):] + servers[:i % len(servers)]
        for w in loads:
            for kind in kinds:
                for s in order:
                    r = one(kind, s, w)
                    out.setdefault((kind, w.name, s.name), []).append(r)
                    log(f"round {i + 1} {kind} {w.name} {s.name}: {r.objects}/{w.objects} in "
                        f"{r.seconds:.3f} s = {w.mb / r.seconds:.0f} MB/s, "
                        f"first {_fmt(r.first_ms, '.2f')} ms, "
                        f"CPU client {r.client_cpu:.2f} s server {r.server_cpu:.2f} s")
                    if r.objects != w.objects or r.exit_code:
                        log(f"WARNING: incomplete retrieve, exit {r.exit_code}\n{r.log_tail}")
    return out


def _med(values: list[float | None]) -> float | None:
    vals = [v for v in values if v is not None]
    return statistics.median(vals) if vals else None


def _ratio(a: float | None, b: float | None, lower_better: bool = False) -> str:
    if not a or not b:
        return "-"
    return f"{(b / a if lower_better else a / b):.2f}x"


def _fmt(v: float | None, f: str) -> str:
    return "-" if v is None else format(v, f)


# (key, row label, format, lower is better)
FIGURES = (("mb_s", "MB/s", ",.0f", False), ("objects_s", "objects/s", ",.0f", False),
           ("first_ms", "first image, ms", ".2f", True),
           ("first_min_ms", "first image, best round, ms", ".2f", True),
           ("assoc_ms", "association set-up, ms", ".2f", True),
           ("client_cpu_s", "client CPU s per retrieve", ".2f", True),
           ("server_cpu_s", "server CPU s per retrieve", ".2f", True))


def _figures(runs: list[Retrieve], w: Workload) -> dict[str, float | None]:
    """The medians (and best first image) of one server's complete retrieves of `w`."""
    ok = [r for r in runs if r.objects == w.objects and r.exit_code == 0]
    return {
        "mb_s": _med([w.mb / r.seconds for r in ok]),
        "objects_s": _med([w.objects / r.seconds for r in ok]),
        "first_ms": _med([r.first_ms for r in ok]),
        "first_min_ms": min((r.first_ms for r in ok if r.first_ms is not None), default=None),
        "assoc_ms": _med([r.assoc_ms for r in ok]),
        "client_cpu_s": _med([r.client_cpu for r in ok]),
        "server_cpu_s": _med([r.server_cpu for r in ok]),
        "complete_runs": len(ok),
        "runs": len(runs),
    }


def _head(loads: list[Workload], rounds: int, cold: bool, started: dt.datetime,
          load0: tuple[float, ...]) -> str:
    return (f"Run {started:%Y-%m-%d %H:%M} UTC, `python bench/retrieve_ceiling.py {' '.join(sys.argv[1:])}`, "
            f"{rounds} interleaved rounds, medians, page cache {'dropped' if cold else 'warm'}; load average "
            f"{load0[0]:.2f} / {load0[1]:.2f} / {load0[2]:.2f} at the start and "
            f"{'/'.join(f'{x:.2f}' for x in os.getloadavg())} at the end. "
            + "; ".join(f"{w.name}: {w.objects} objects, {w.mb:.1f} MB" for w in loads) + ".")


def report(results: dict[tuple[str, str, str], list[Retrieve]], loads: list[Workload], rounds: int,
           cold: bool, started: dt.datetime, load0: tuple[float, ...]) -> tuple[str, dict[str, Any]]:
    rows = [f"| figure | {NOOP} | {DV} | {ORTHANC} | dicomvault / Orthanc | ceiling / Orthanc | "
            "dicomvault / ceiling |", "| --- " * 7 + "|"]
    summary: dict[str, Any] = {}
    for kind in ("C-GET", "C-MOVE"):
        for w in loads:
            per = {s: results.get((kind, w.name, s), []) for s in (NOOP, DV, ORTHANC)}
            if not any(per.values()):
                continue
            figs = {s: _figures(runs, w) for s, runs in per.items()}
            summary[f"{kind} {w.name}"] = figs
            for key, label, f, lower in FIGURES:
                n, d, o = (figs[s][key] for s in (NOOP, DV, ORTHANC))
                cpu = key.endswith("cpu_s")
                ratios = ["-"] * 3 if cpu else [_ratio(d, o, lower), _ratio(n, o, lower), _ratio(d, n, lower)]
                rows.append(f"| {kind} {w.name}, {label} | {_fmt(n, f)} | {_fmt(d, f)} | {_fmt(o, f)} | "
                            + " | ".join(ratios) + " |")
    head = _head(loads, rounds, cold, started, load0)
    note = ("Ratios: throughput a / b, latency b / a (above 1.00x = the first named is better). "
            "Medians of the rounds, except \"best round\": the lowest. "
            "CPU: utime + stime (10 ms ticks) of the client (getscu/movescu, wait4) and of the "
            "server's process tree (/proc/<pid>/stat) over one retrieve.")
    return "\n".join([head, "", *rows, "", note]), summary


def report_trees(results: dict[tuple[str, str, str], list[Retrieve]], loads: list[Workload], trees: list[str],
                 rounds: int, cold: bool, started: dt.datetime, load0: tuple[float, ...]) -> str:
    """--tree: a column per tree, each tree's share of the ceiling, the last tree / the first."""
    names = [NOOP, *trees]
    rows = [f"| figure | {' | '.join(names)} | " + " | ".join(f"{t} / ceiling" for t in trees)
            + f" | {trees[-1]} / {trees[0]} |", "| --- " * (2 * len(trees) + 3) + "|"]
    for kind in ("C-GET", "C-MOVE"):
        for w in loads:
            figs = {s: _figures(results.get((kind, w.name, s), []), w) for s in names}
            if not any(f["mb_s"] for f in figs.values()):
                continue
            for key, label, f, lower in FIGURES:
                cpu = key.endswith("cpu_s")
                ratios = (["-"] * (len(trees) + 1) if cpu else
                          [_ratio(figs[t][key], figs[NOOP][key], lower) for t in trees]
                          + [_ratio(figs[trees[-1]][key], figs[trees[0]][key], lower)])
                values = " | ".join(_fmt(figs[s][key], f) for s in names)
                rows.append(f"| {kind} {w.name}, {label} | {values} | " + " | ".join(ratios) + " |")
    head = _head(loads, rounds, cold, started, load0)
    return "\n".join([head, "", *rows])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--small", type=int, default=dc.SMALL_OBJECTS)
    ap.add_argument("--cold", action="store_true", help="evict the archives' files before each retrieve")
    ap.add_argument("--no-move", action="store_true", help="C-GET only")
    ap.add_argument("--no-orthanc", action="store_true")
    ap.add_argument("--orthanc-storage-cache", type=int, metavar="MB",
                    help="Orthanc's MaximumStorageCacheSize (its default: 128); 0 with --cold "
                         "makes Orthanc's cold runs read its files from the disk too")
    ap.add_argument("--scratch", type=Path, default=ROOT / ".scratch" / "ceiling")
    ap.add_argument("--json", type=Path, help="write the medians here too")
    ap.add_argument("--tree", action="append", default=[], metavar="LABEL=PYTHONPATH",
                    help="A/B: a `serve` per tree instead of one of this interpreter's (repeatable)")
    args = ap.parse_args()
    trees = [tuple(t.split("=", 1)) for t in args.tree]
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda signum, _f: sys.exit(128 + signum))
    started, load0 = dt.datetime.now(dt.UTC), os.getloadavg()
    args.scratch.mkdir(parents=True, exist_ok=True)
    work = args.scratch / f"run-{os.getpid()}"
    work.mkdir()
    ct = workload("CT", dc.make_ct_input(args.scratch / f"ct-1x{args.slices}", 1, args.slices))
    small = workload("small CR", dc.make_small_input(args.scratch / f"small-{args.small}", args.small))
    loads = [ct, small]
    folders = [w.folder for w in loads]
    servers: list[Server] = []
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        dest = start_storescp(work, log_name="storescp.log")
        stack.callback(dest.stop)
        log("no-op retrieve SCP: loading the objects")
        servers.append(start_noop(folders, work, dest))
        stack.callback(servers[-1].stop)
        log("dicomvault: ingest, compaction to warm")
        if not trees:
            (work / "dv").mkdir()
            servers.append(start_dv(work / "dv" / "data", folders, dest))
            stack.callback(servers[-1].stop)
        else:  # ingested and compacted once, by the first tree; a copy of that for each other
            first = work / "dv-0" / "data"
            first.parent.mkdir()
            start_dv(first, folders, dest, env=dict(os.environ, PYTHONPATH=trees[0][1])).stop()
            for k, (label, path) in enumerate(trees):
                if k:
                    shutil.copytree(first.parent, work / f"dv-{k}")
                env = dict(os.environ, PYTHONPATH=path)
                servers.append(restart_dv(work / f"dv-{k}" / "data", label, env))
                stack.callback(servers[-1].stop)
        if not args.no_orthanc:
            log("Orthanc: ingest")
            servers.append(start_orthanc_server(work / "orthanc", folders, dest,
                                                args.orthanc_storage_cache))
            stack.callback(servers[-1].stop)
        results = measure(servers, loads, args.rounds, not args.no_move, args.cold, dest, work)
    if trees:
        print(report_trees(results, loads, [t[0] for t in trees], args.rounds, args.cold, started, load0))
        return 0
    text, summary = report(results, loads, args.rounds, args.cold, started, load0)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
