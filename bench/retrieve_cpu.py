"""Server CPU per study retrieve, A/B between Python trees: `serve` is started with each tree
first on PYTHONPATH in turn, on one data directory, and each round retrieves the study `--runs`
times per tree (after one warm-up retrieve). Server CPU (utime + stime of the serve process
tree, from /proc) is the figure to compare: unlike wall MB/s it moves little with the other
load of a shared machine. Wall and first image are printed too.

    python bench/retrieve_cpu.py --runs 4 --rounds 4 /path/to/main/python /path/to/branch/python
    python bench/retrieve_cpu.py --workload small --move ...   # 200 CR objects, C-MOVE too

Workloads (bench/retrieve_ceiling.py's, cached under bench/.scratch/ceiling): `ct`, one
300-slice 512x512 16-bit CT study (157 MB), `small`, 200 CR objects of ~100 KB. The study is
sent by storescu and compacted to the warm tier (every object decoded from the hot codec and
BLAKE3-checked on the way out) once, into bench/.scratch/retrieve-cpu/<workload>, reused after.
The analysis pipeline is off in the servers measured: it would run its worker on the study after
every restart, a child of serve that the server CPU figure counts."""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dimse_compare as dc  # noqa: E402
import retrieve_ceiling as rc  # noqa: E402

from dicomvault.bench.dimse import start_serve, start_storescp  # noqa: E402

SCRATCH = Path(__file__).resolve().parent / ".scratch"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+", help="python/ folders to compare (PYTHONPATH of serve)")
    ap.add_argument("--runs", type=int, default=4, help="retrieves per tree per round")
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--workload", choices=("ct", "small"), default="ct")
    ap.add_argument("--move", action="store_true", help="C-MOVE (movescu to storescp) after the C-GETs")
    args = ap.parse_args()
    if args.workload == "ct":
        w = rc.workload("CT", dc.make_ct_input(SCRATCH / "ceiling" / "ct-1x300", 1, 300))
    else:
        w = rc.workload("small CR", dc.make_small_input(SCRATCH / "ceiling" / "small-200", 200))
    work = SCRATCH / "retrieve-cpu" / args.workload
    work.mkdir(parents=True, exist_ok=True)
    dest = start_storescp(work, log_name="storescp.log")
    data = work / "dv" / "data"
    try:
        if not (work / "dv" / "ready").exists():
            (work / "dv").mkdir(exist_ok=True)
            rc.start_dv(data, [w.folder], dest).stop()
            (work / "dv" / "ready").touch()
        cfg = work / "dcmtk.cfg"
        cfg.write_text(rc.LOG_CONFIG)
        config = work / "dv.toml"
        config.write_text(f'[analysis]\nenabled = false\n\n[[peers]]\nae_title = "{dest.ae}"\n'
                          f'host = "{rc.HOST}"\nport = {dest.port}\n')
        kinds = ["C-GET", "C-MOVE"] if args.move else ["C-GET"]
        figures: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
        for _ in range(args.rounds):
            for tree in args.trees:
                env = {**os.environ, "PYTHONPATH": tree}
                srv = start_serve(data, fresh=False, env=env, config=config, log_path=work / "serve.log")
                try:
                    for kind in kinds:
                        for i in range(args.runs + 1):
                            if kind == "C-GET":
                                r = rc.getscu(srv.ae, srv.port, w.uid, cfg, work / "client.log", srv.proc.pid)
                            else:
                                r = rc.movescu(srv.ae, srv.port, w.uid, dest, cfg, work / "client.log",
                                               srv.proc.pid)
                            if r.objects != w.objects:
                                raise RuntimeError(f"{tree}: {kind} delivered {r.objects} of {w.objects}")
                            if i:  # the first retrieve of a fresh server warms its caches
                                figures.setdefault((kind, tree), []).append(
                                    (r.server_cpu, r.seconds, r.first_ms or 0.0))
                            print(f"  {kind} {tree}: server CPU {r.server_cpu:.3f} s, wall {r.seconds:.3f} s"
                                  f"{'' if i else ' (warm-up, not counted)'}", flush=True)
                finally:
                    srv.stop()
        print(f"{w.name}: {w.objects} objects, {w.mb:.1f} MB; medians")
        for (kind, tree), rows in figures.items():
            scpu, wall, first = (statistics.median(c) for c in zip(*rows, strict=True))
            print(f"{kind} {tree}: n={len(rows)} server CPU {scpu:.3f} s per retrieve "
                  f"(min {min(r[0] for r in rows):.3f}), wall {wall:.3f} s ({w.mb / wall:.0f} MB/s), "
                  f"first image {first:.1f} ms", flush=True)
    finally:
        dest.stop()


if __name__ == "__main__":
    main()
