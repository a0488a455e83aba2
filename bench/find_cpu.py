"""Server and client CPU per IMAGE-level C-FIND inside one large study, per code variant.

find_dv.py reports the server's CPU over all query kinds together; this isolates the two IMAGE
queries of find_dv's index (every image of a 2,000-image study, and the 500 images of one of
its series): dcmtk `findscu --repeat N` on one association, the server process's CPU (user +
system, /proc) and findscu's over the N queries, divided by N. Variants as in find_dv.py, each a
`dicomvault serve` with its own PYTHONPATH, interleaved round by round:

    .venv/bin/python bench/find_cpu.py --variant main=/tmp/main/python --variant new=python
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time

import dimse_compare as dc
import find_dv

from dicomvault.bench.procs import proc_cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=int, default=1_000_000,
                    help="index size (find_dv.py's; default %(default)s)")
    ap.add_argument("--repeat", type=int, default=30, help="queries per findscu run (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=3, help="rounds over all variants (default %(default)s)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PYTHONPATH",
                    help="a server code variant (default: current=<repo>/python)")
    args = ap.parse_args()
    variants = [tuple(v.split("=", 1)) for v in args.variant] or [("current", str(dc.ROOT.parent / "python"))]
    data = dc.ROOT / ".scratch" / "find-dv" / f"index-{args.index}"
    find_dv.ensure_index(data, args.index)
    env = {**os.environ, "TCP_NODELAY": "1"}
    # (variant, kind) -> per round (wall ms, server CPU ms, findscu CPU ms) per query
    res: dict[tuple[str, str], list[tuple[float, float, float]]] = {}
    for rnd in range(args.rounds):
        study = f"{dc.UID_ROOT}8.{rnd % dc.BIG_STUDIES}"
        kinds = {dc.IMAGES_IN_STUDY: [f"StudyInstanceUID={study}"],
                 dc.IMAGES_IN_SERIES: [f"StudyInstanceUID={study}", f"SeriesInstanceUID={study}.2"]}
        for name, path in variants:
            target, pid = find_dv.start_variant(data, path)
            try:
                for kind, keys in kinds.items():
                    cmd = ["findscu", "-S", "--repeat", str(args.repeat), "-aec", target.ae]
                    for k in [*dc.LEVEL_RETURN_KEYS["IMAGE"], *keys, "QueryRetrieveLevel=IMAGE"]:
                        cmd += ["-k", k]
                    cmd += [dc.HOST, str(target.port)]
                    out = subprocess.DEVNULL
                    subprocess.run(cmd, check=True, env=env, stdout=out, stderr=out)  # warm-up
                    kids0, cpu0, t0 = find_dv.children_cpu(), proc_cpu(pid), time.perf_counter()
                    subprocess.run(cmd, check=True, env=env, stdout=out, stderr=out)
                    n = args.repeat
                    v = ((time.perf_counter() - t0) / n * 1000, (proc_cpu(pid) - cpu0) / n * 1000,
                         (find_dv.children_cpu() - kids0) / n * 1000)
                    res.setdefault((name, kind), []).append(v)
                    dc.log(f"round {rnd} {name:>10} {kind:<30} wall {v[0]:7.2f} ms  "
                           f"server CPU {v[1]:6.2f} ms  findscu CPU {v[2]:6.2f} ms")
            finally:
                target.stop()
    print(f"IMAGE-level C-FIND, findscu --repeat {args.repeat} on one association, {args.rounds} round(s), "
          "medians; per query:")
    print("| variant | query | mean wall ms | server CPU ms | findscu CPU ms |")
    print("| --- | --- | --- | --- | --- |")
    for (name, kind), vs in res.items():
        print(f"| {name} | {kind} | {statistics.median(v[0] for v in vs):.2f} | "
              f"{statistics.median(v[1] for v in vs):.2f} | {statistics.median(v[2] for v in vs):.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
