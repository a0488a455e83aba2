"""Cold C-GET, A/B between Python trees: server CPU and wall per retrieve of one study from the
object-store tier, trees interleaved (bench/retrieve_cpu.py's method, for the cold tier).

    python bench/cold_cpu.py --rounds 5 /path/to/main/python /path/to/branch/python

The tier bench's cold study (`Workload("ct", seed=7)`'s first: 222 CT files, 116.6 MB) is
ingested, compacted and moved to a local SeaweedFS once per run. Then per round and tree: a
fresh `serve` (its read cache empty, the promotion of cold-read studies held off as in
tier_bench.py's held runs), `--settle` seconds for its start-up work (the tiering service
connects to the store), one `getscu` of the study. Server CPU is utime + stime of the serve
process tree over the retrieve (/proc): on a shared 2-core machine it moves far less with the
other load than the wall time does. Wall and first image are printed too."""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import tier_bench as tb  # noqa: E402  (also puts tests/ on the path: seaweed_server)

from dicomvault.bench.dimse import getscu_study, start_serve  # noqa: E402
from dicomvault.bench.procs import tree_cpu  # noqa: E402
from dicomvault.engine import Engine  # noqa: E402
from dicomvault.tiering import jobs  # noqa: E402
from dicomvault.tiering.compactor import Compactor  # noqa: E402
from seaweed_server import start_seaweed  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+", help="python/ folders to compare (PYTHONPATH of serve)")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--settle", type=float, default=0.5, help="seconds between serve's start and the C-GET")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="dv-cold-cpu-"))
    bufs, studies = tb.make_workload(130 << 20, 7)
    uid = studies[0]
    study = [b for b, s in zip(bufs, studies, strict=True) if s == uid]
    mb = sum(map(len, study)) / 1e6
    server = start_seaweed(root / "seaweed")
    try:
        data = root / "data"
        tiers = tb.cold_tiers(server)
        tb.ingest(data, study, tiers, 4)
        with Engine(data, tiers=tiers) as engine:
            Compactor(engine, threads=2).run_once()
        tb.settle(data, root / "getscu")
        with Engine(data, tiers=tiers) as engine:
            jobs.move_study(engine, uid, "cold")
        site = root / "hold-promotion"
        site.mkdir()
        (site / "sitecustomize.py").write_text(tb.HOLD_PROMOTION)
        rows: dict[str, list[tuple[float, float, float]]] = {t: [] for t in args.trees}
        for r in range(args.rounds):
            for tree in args.trees:
                env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), tree])}
                srv = start_serve(data, fresh=False, env=env, log_path=root / "serve.log")
                try:
                    time.sleep(args.settle)
                    c0 = tree_cpu(srv.proc.pid)
                    run = getscu_study(tb.DV_AE, srv.port, uid, root / "getscu")
                    cpu = tree_cpu(srv.proc.pid) - c0
                finally:
                    srv.stop()
                if run.objects != len(study):
                    raise RuntimeError(f"{tree}: C-GET sent {run.objects} of {len(study)}\n{run.log_tail}")
                rows[tree].append((cpu, run.seconds, run.first_object_ms or 0.0))
                print(f"  {r} {tree}: server CPU {cpu:.3f} s, wall {run.seconds:.3f} s, "
                      f"first image {run.first_object_ms or 0:.0f} ms", flush=True)
        print(f"cold study: {len(study)} objects, {mb:.1f} MB; medians of {args.rounds}")
        for tree, got in rows.items():
            cpu, wall, first = (statistics.median(c) for c in zip(*got, strict=True))
            print(f"{tree}: server CPU {cpu:.3f} s per retrieve (min {min(g[0] for g in got):.3f}), "
                  f"wall {wall:.3f} s ({mb / wall:.0f} MB/s), first image {first:.0f} ms", flush=True)
    finally:
        server.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
