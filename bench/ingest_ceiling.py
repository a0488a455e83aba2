"""DIMSE ingest against the machine's no-op ceiling, with the same clients, in one run.

    .venv/bin/python bench/ingest_ceiling.py [--slices 400] [--rounds 3] [--workers 1,2]
        [--data shm,disk] [--tree NAME=PYTHONPATH ...] [--variant NAME=TOML ...]

Clients: four dcmtk `storescu -pdu 131072 +sd +r` at once (`TCP_NODELAY=1`), a quarter of a
synthetic CT series (512x512 16-bit slices, written as Part-10 files before any clock starts)
each. Receivers, every one in every round, the order reversed on odd rounds:

- the ceiling: dcmtk `storescp --fork --ignore -pdu 131072` (one process per association, as a
  multi-association archive works; it stores nothing);
- `files`: the same `storescp --fork` writing each object as a file to each --data place (`-od`;
  no hash, no fsync, no index): what storing the bytes at all costs next to the same clients;
- Orthanc (when installed; `--no-orthanc` leaves it out), storage and index on each --data place,
  configured as in bench/orthanc.py (fsync per file, 4 DICOM threads);
- `dicomvault serve` with `[dimse] workers` = each value of --workers, its data directory on
  /dev/shm (`shm`: the CPU path shows whatever the disk) and on the working disk (`disk`), a
  fresh directory each run; with several --tree values, each tree's code (PYTHONPATH) in turn,
  so a before/after comparison alternates within the run; each --variant adds a run with more
  config lines (e.g. `late=[tiering]\ncompact_after = 3600`: no compaction during the ingest).

Per run: wall time (first storescu start to last exit), instances/s, MB/s, CPU seconds of the
server (its process tree, reaped children included, from /proc/<pid>/stat) and of the four clients
(their rusage at exit), and objects acknowledged (storescu exit codes; the server's per-association
summary lines). The table gives medians over the rounds and each rate over the ceiling of the same
round (median of the per-round ratios).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from dicomvault.bench.dimse import DCMTK_ENV, HOST, PDU, dicomvault_command, split_files, start_serve
from dicomvault.bench.orthanc import ORTHANC_BIN, free_port, start_orthanc
from dicomvault.bench.procs import tree_cpu
from dicomvault.bench.synth import SeriesSpec, ct_series

AE = "DICOMVAULT"
CLIENTS = 4


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def machine_ticks() -> tuple[int, int]:
    """(busy, total) clock ticks of every CPU since boot, from /proc/stat."""
    f = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = f[3] + f[4]  # idle + iowait
    return sum(f) - idle, sum(f)


@dataclass
class Run:
    seconds: float
    server_cpu: float
    client_cpu: float
    acked: int  # objects the clients sent without a failure (exit code 0 means every one)
    stored: int | None  # objects in the archive afterwards (`stats --json`; None: the ceiling)
    busy: float = 0.0  # share of the machine's CPU time busy during the run (everyone's processes)


def run_clients(port: int, dirs: list[Path], per_dir: list[int]) -> tuple[float, float, int, float]:
    """(wall seconds, client CPU seconds, objects sent by clients that exited 0, machine busy share)."""
    b0, t0_ticks = machine_ticks()
    t0 = time.monotonic()
    procs = [subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", AE, "-pdu", str(PDU), "+sd", "+r",
                               HOST, str(port), str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=DCMTK_ENV) for d in dirs]
    cpu, acked, errors = 0.0, 0, []
    for p, n in zip(procs, per_dir, strict=True):
        assert p.stderr is not None
        err = p.stderr.read()  # storescu writes little; read before wait so it never blocks
        _, status, usage = os.wait4(p.pid, 0)
        p.returncode = os.waitstatus_to_exitcode(status)
        cpu += usage.ru_utime + usage.ru_stime
        if p.returncode == 0:
            acked += n
        else:
            errors.append(err.decode(errors="replace")[-400:])
    seconds = time.monotonic() - t0
    b1, t1_ticks = machine_ticks()
    if errors:
        log(f"storescu failed: {errors[0]}")
    return seconds, cpu, acked, (b1 - b0) / max(1, t1_ticks - t0_ticks)


def wait_port(port: int, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            socket.create_connection((HOST, port), timeout=0.5).close()
            return
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit("storescp --fork did not start") from None
            time.sleep(0.05)


def ceiling_run(dirs: list[Path], per_dir: list[int], out: Path | None = None) -> Run:
    """dcmtk's `storescp --fork` with the same clients: `--ignore` (receives, stores nothing: the
    no-op ceiling), or with `out`, writing each object as a file there (`-od`; no hash, no
    fsync, no index: what merely storing the bytes costs this machine, the floor under any
    archive's ingest)."""
    port = free_port()
    store = ["-od", str(out)] if out is not None else ["--ignore"]
    scp = subprocess.Popen(["storescp", "--fork", *store, "-pdu", str(PDU), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    try:
        wait_port(port, scp)
        time.sleep(0.2)  # the probe connection's forked child exits
        c0 = tree_cpu(scp.pid)
        seconds, client_cpu, acked, busy = run_clients(port, dirs, per_dir)
        time.sleep(0.1)  # the last children finish their release
        server_cpu = tree_cpu(scp.pid) - c0
    finally:
        scp.terminate()
        scp.wait(10)
    stored = None if out is None else sum(1 for _ in out.iterdir())
    return Run(seconds, server_cpu, client_cpu, acked, stored, busy)


def orthanc_run(root: Path, dirs: list[Path], per_dir: list[int]) -> Run:
    """Orthanc (bench/orthanc.py's configuration: fsync per file, as durable as ours) with its
    storage and index under `root`."""
    orthanc = start_orthanc(root)
    try:
        time.sleep(0.3)
        c0 = tree_cpu(orthanc.proc.pid)
        seconds, client_cpu, acked, busy = run_clients(orthanc.dicom_port, dirs, per_dir)
        server_cpu = tree_cpu(orthanc.proc.pid) - c0
        stored = int(orthanc.statistics()["CountInstances"])
    finally:
        orthanc.stop()
    return Run(seconds, server_cpu, client_cpu, acked, stored, busy)


def serve_run(data: Path, cfg: Path, env: dict[str, str], dirs: list[Path], per_dir: list[int]) -> Run:
    srv = start_serve(data, config=cfg, env=env)
    try:
        time.sleep(0.3)  # receiver processes (workers >= 2) come up after the ready line
        c0 = tree_cpu(srv.proc.pid)
        seconds, client_cpu, acked, busy = run_clients(srv.port, dirs, per_dir)
        server_cpu = tree_cpu(srv.proc.pid) - c0
    finally:
        code = srv.stop(60)
    if code != 0:
        log(f"serve exited {code}:\n{srv.log_text()[-2000:]}")
    out = subprocess.run([*dicomvault_command(), "stats", "--data", str(data), "--json"], env=env,
                         capture_output=True, text=True, check=False)
    stored = int(json.loads(out.stdout)["objects"]) if out.returncode == 0 else -1
    shutil.rmtree(data, ignore_errors=True)
    return Run(seconds, server_cpu, client_cpu, acked, stored, busy)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=400)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--workers", default="1,2", help="comma list of [dimse] workers values")
    ap.add_argument("--data", default="shm,disk", help="comma list of: shm (/dev/shm), disk (--disk-dir)")
    ap.add_argument("--disk-dir", type=Path, default=Path(tempfile.gettempdir()),
                    help="the working disk's scratch folder for `disk` (default: the temp dir)")
    ap.add_argument("--tree", action="append", default=[], metavar="NAME=PYTHONPATH",
                    help="code to run `serve` from (several: alternated; default: this interpreter's)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=TOML",
                    help="also serve with these config lines (\\n between lines), this interpreter's code")
    ap.add_argument("--no-orthanc", action="store_true", help="leave Orthanc out (it runs when installed)")
    ap.add_argument("--json", type=Path, default=None, help="also write every run here")
    args = ap.parse_args()
    # (name, PYTHONPATH or "" for this interpreter's, extra config lines)
    serves = [(t.split("=", 1)[0], t.split("=", 1)[1], "") for t in args.tree] or [("serve", "", "")]
    serves += [(v.split("=", 1)[0], "", v.split("=", 1)[1].replace("\\n", "\n")) for v in args.variant]
    workers = [int(w) for w in args.workers.split(",")]
    data_roots = {"shm": Path("/dev/shm"), "disk": args.disk_dir}
    places = args.data.split(",")
    work = Path(tempfile.mkdtemp(prefix="dv-ingest-ceiling-", dir=args.disk_dir))
    try:
        files = []
        series = work / "series"
        series.mkdir()
        for i, raw in enumerate(ct_series(SeriesSpec(slices=args.slices, seed=5))):
            f = series / f"{i:05d}.dcm"
            f.write_bytes(raw)
            files.append(f)
        mb = sum(f.stat().st_size for f in files) / 1e6
        dirs = split_files(files, work / "split", CLIENTS)
        per_dir = [len(list(d.iterdir())) for d in dirs]
        log(f"{len(files)} files, {mb:.0f} MB, {CLIENTS} storescu; load {os.getloadavg()}")
        cfgs: dict[tuple[str, int], Path] = {}
        for name, _, extra in serves:
            for w in workers:
                cfgs[(name, w)] = work / f"{name}-workers-{w}.toml"
                cfgs[(name, w)].write_text(f"[dimse]\nworkers = {w}\n{extra}\n")
        variants = [("ceiling", "", 0, "")] + [("files", "", 0, place) for place in places]
        if Path(ORTHANC_BIN).exists() and not args.no_orthanc:
            variants += [("orthanc", "", 0, place) for place in places]
        variants += [(name, path, w, place) for name, path, _ in serves for w in workers for place in places]
        runs: dict[tuple[str, int, str], list[Run]] = {}
        ratios: dict[tuple[str, int, str], list[float]] = {}
        vs_orthanc: dict[tuple[str, int, str], list[float]] = {}  # dicomvault / Orthanc, same data place
        for rnd in range(args.rounds):
            order = variants if rnd % 2 == 0 else variants[::-1]
            done: dict[tuple[str, int, str], Run] = {}
            for name, path, w, place in order:
                if name == "ceiling":
                    run = ceiling_run(dirs, per_dir)
                elif name == "orthanc":
                    root = Path(tempfile.mkdtemp(prefix="dv-ingest-orthanc-", dir=data_roots[place]))
                    run = orthanc_run(root / "orthanc", dirs, per_dir)
                    shutil.rmtree(root, ignore_errors=True)
                elif name == "files":
                    out = Path(tempfile.mkdtemp(prefix="dv-ingest-files-", dir=data_roots[place]))
                    run = ceiling_run(dirs, per_dir, out)
                    shutil.rmtree(out, ignore_errors=True)
                else:
                    env = {**os.environ}
                    if path:
                        env["PYTHONPATH"] = path
                    data = Path(tempfile.mkdtemp(prefix="dv-ingest-data-", dir=data_roots[place])) / "data"
                    run = serve_run(data, cfgs[(name, w)], env, dirs, per_dir)
                    shutil.rmtree(data.parent, ignore_errors=True)
                key = (name, w, place)
                done[key] = run
                runs.setdefault(key, []).append(run)
                n = len(files)
                log(f"round {rnd} {name:8} workers {w} {place:4}: {n / run.seconds:7.0f} inst/s "
                    f"{mb / run.seconds:6.0f} MB/s  server {run.server_cpu * 1e6 / n:6.0f} us/obj  "
                    f"clients {run.client_cpu * 1e6 / n:6.0f} us/obj  busy {run.busy:4.0%}  acked {run.acked}"
                    + ("" if run.stored is None else f" stored {run.stored}"))
            ceiling = done[("ceiling", 0, "")]
            for key, run in done.items():
                ratios.setdefault(key, []).append(ceiling.seconds / run.seconds)
                peer = done.get(("orthanc", 0, key[2]))
                if peer is not None and key[0] not in ("ceiling", "files", "orthanc"):
                    vs_orthanc.setdefault(key, []).append(peer.seconds / run.seconds)
        n = len(files)
        print(f"\nDIMSE ingest, {CLIENTS} x storescu, {n} CT slices ({mb:.0f} MB), medians of {args.rounds} "
              f"rounds; load average at the end {', '.join(f'{x:.2f}' for x in os.getloadavg())}\n")
        print("| receiver | workers | data | inst/s | MB/s | / ceiling (same round) | / Orthanc (same data, "
              "same round) | server CPU us/obj | clients CPU us/obj | machine busy | acked / stored |")
        print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
        for key in [v[0:1] + v[2:4] for v in variants]:
            rs = runs[key]
            name, w, place = key
            secs = statistics.median(r.seconds for r in rs)
            srv = statistics.median(r.server_cpu for r in rs) * 1e6 / n
            cli = statistics.median(r.client_cpu for r in rs) * 1e6 / n
            who = {"ceiling": "storescp --fork --ignore (no-op ceiling)",
                   "files": "storescp --fork -od (writes files: no hash, fsync or index)",
                   "orthanc": "Orthanc (fsync per file)"}.get(name, name)
            stored = "-" if rs[0].stored is None else str(min(r.stored or 0 for r in rs))
            print(f"| {who} | {w or '-'} | {place or '-'} | {n / secs:.0f} | {mb / secs:.0f} | "
                  f"{statistics.median(ratios[key]):.2f} | "
                  f"{f'{statistics.median(vs_orthanc[key]):.2f}x' if key in vs_orthanc else '-'} | "
                  f"{srv:.0f} | {cli:.0f} | "
                  f"{statistics.median(r.busy for r in rs):.0%} | "
                  f"{min(r.acked for r in rs)} / {stored} |")
        if args.json:
            args.json.write_text(json.dumps({f"{k[0]}/{k[1]}/{k[2]}": [r.__dict__ for r in v]
                                             for k, v in runs.items()}, indent=1))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
