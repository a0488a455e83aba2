"""C-GET time to first image, A/B between Python trees and against Orthanc, page cache dropped
("cold") and not ("warm"), in interleaved rounds.

One data directory is filled once (bench/retrieve_ceiling.py's workloads: a 300-slice CT study and
200 small CR objects, sent by storescu and compacted to the warm tier) and copied per tree; a
`serve` runs on each copy with that tree first on PYTHONPATH, all at once, with Orthanc 1.10 (its
defaults: its 128 MB storage cache stays) beside them. Each round retrieves each study from every
server (`getscu -S`, as `make bench-retrieve` runs it), the servers' order rotated each round,
first with each server's files evicted from the page cache, then without. First image: getscu's
microsecond stamps, "Sending C-GET Request" to the first "Received C-STORE Request". Medians.

    .venv/bin/python bench/first_image_ab.py --rounds 13 main=/work/main/python new=python
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dimse_compare as dc  # noqa: E402
import retrieve_ceiling as rc  # noqa: E402

from dicomvault.bench import device  # noqa: E402
from dicomvault.bench.dimse import HOST, start_serve, start_storescp  # noqa: E402

SCRATCH = Path(__file__).resolve().parent / ".scratch"


@dataclass
class Target:
    ae: str
    port: int
    pid: int
    files: Path  # what a cold retrieve evicts first
    stop: Callable[[], None]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("trees", nargs="+", help="name=python/ folder (PYTHONPATH of its serve)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--no-orthanc", action="store_true")
    ap.add_argument("--modes", default="cold,warm")
    args = ap.parse_args()
    modes = args.modes.split(",")
    ct = rc.workload("CT", dc.make_ct_input(SCRATCH / "ceiling" / "ct-1x300", 1, 300))
    small = rc.workload("small CR", dc.make_small_input(SCRATCH / "ceiling" / "small-200", 200))
    loads = [ct, small]
    work = SCRATCH / "first-image-ab"
    work.mkdir(parents=True, exist_ok=True)
    base = work / "base" / "data"
    targets: dict[str, Target] = {}
    with contextlib.ExitStack() as stack:
        dest = start_storescp(work, log_name="storescp.log")
        stack.callback(dest.stop)
        if not (work / "base" / "ready").exists():
            shutil.rmtree(work / "base", ignore_errors=True)
            (work / "base").mkdir()
            rc.start_dv(base, [w.folder for w in loads], dest).stop()
            (work / "base" / "ready").touch()
        for spec in args.trees:
            name, _, tree = spec.partition("=")
            data = work / f"tree-{name}" / "data"
            shutil.rmtree(data.parent, ignore_errors=True)
            shutil.copytree(base, data)
            config = data.parent / "dv.toml"
            config.write_text("[analysis]\nenabled = false\n")
            env = {**os.environ, "PYTHONPATH": str(Path(tree).resolve())}
            srv = start_serve(data, config=config, fresh=False, env=env)
            stack.callback(srv.stop)
            targets[name] = Target(srv.ae, srv.port, srv.proc.pid, data.parent, srv.stop)
        if not args.no_orthanc:
            orth = rc.start_orthanc_server(work / "orthanc", [w.folder for w in loads], dest)
            stack.callback(orth.stop)
            assert orth.files is not None
            targets["Orthanc"] = Target(orth.ae, orth.port, orth.pid, orth.files, orth.stop)
        cfg = work / "dcmtk.cfg"
        cfg.write_text(rc.LOG_CONFIG)

        def one(t: Target, w: rc.Workload, cold: bool) -> rc.Retrieve:
            if cold:
                device.drop_tree_cache(t.files)
            r = rc.getscu(t.ae, t.port, w.uid, cfg, work / "client.log", t.pid)
            if r.objects != w.objects or r.exit_code:
                raise RuntimeError(f"{w.name}: {r.objects} of {w.objects} delivered\n{r.log_tail}")
            return r

        results: dict[tuple[str, str, str], list[rc.Retrieve]] = {}
        load0 = os.getloadavg()
        for w in loads:
            for t in targets.values():
                one(t, w, False)  # warm-up, not counted
            for i in range(args.rounds):
                names = list(targets)
                names = names[i % len(names):] + names[:i % len(names)]
                for mode in modes:
                    for name in names:
                        r = one(targets[name], w, mode == "cold")
                        results.setdefault((w.name, mode, name), []).append(r)
    print(f"{args.rounds} interleaved rounds on {HOST}, medians; load average {load0[0]:.2f} at the start, "
          f"{os.getloadavg()[0]:.2f} at the end")
    print("| workload | page cache | server | first image ms (median) | best | MB/s | server CPU s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    mb = {w.name: w.mb for w in loads}
    for (wname, mode, name), rs in results.items():
        firsts = [r.first_ms for r in rs if r.first_ms is not None]
        print(f"| {wname} | {mode} | {name} | {statistics.median(firsts):.2f} | {min(firsts):.2f} | "
              f"{statistics.median(mb[wname] / r.seconds for r in rs):.0f} | "
              f"{statistics.median(r.server_cpu for r in rs):.3f} |", flush=True)


if __name__ == "__main__":
    main()
