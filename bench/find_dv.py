"""C-FIND latency of `dicomvault serve` alone, with A/B variants of the code in one run.

The C-FIND half of dimse_compare.py without Orthanc: the same synthetic index (written straight
into the engine's index, cached between runs), the same three study-level query kinds, 200
queries each, sent by dcmtk's C++ `findscu` (dimse_compare.find_latencies: one findscu process
and association per kind, per-query latency from its microsecond-stamped log). Each variant is
a `dicomvault serve` started with its own PYTHONPATH (e.g. a copy of python/ with the old
find.py), so two versions of the server code are measured against the same index, interleaved
round by round, on the same busy machine:

    .venv/bin/python bench/find_dv.py                                  # the working tree only
    .venv/bin/python bench/find_dv.py --variant before=/tmp/dvA/python --variant after=python

Prints p50/p95 per (variant, query kind) with the mean number of matches, the ratios to the
first variant, and the CPU per query of the server and of the findscu client processes.
`--pynetdicom` also times the same queries from this process's pynetdicom SCU (the former
method: its own ~6 ms CPU per query is in its figures) as a secondary table, with its client CPU;
`--tune-client` gives that client's associations the server's tuned reactors
(dimse/association.py); `--dcmtk N` also times dcmtk findscu/echoscu `--repeat N` (means only,
and C-ECHO); `--profile-dir` records a py-spy
profile (collapsed stacks) of every server.

`--ceiling` adds, in every round, the machine's ceiling for the same answers: per query kind, one
answer of that kind is captured from the first variant's server (pynetdicom SCU, once), and
bench/noop_find.py replays it to every query of that kind, so findscu receives answers of the
same size from a server that does nothing but write them. Its p50 is what no archive can beat
with this client on this machine at this moment; the table gives each variant's share of it.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import dimse_compare as dc
import noop_find

from dicomvault.bench.orthanc import free_port
from dicomvault.bench.procs import proc_cpu, terminate

DV = str(Path(sys.executable).with_name("dicomvault"))
AE = "DICOMVAULT"


KINDS = (*dc.QUERY_KINDS, *dc.IN_STUDY_KINDS)


def ensure_index(data: Path, n: int) -> None:
    """The synthetic index of n instances plus dc.BIG_STUDIES large studies at `data`, built once
    (marker file beside it)."""
    marker = data.parent / f"{data.name}.big{dc.BIG_STUDIES}.done"
    if marker.exists() and data.exists():
        dc.mark_warmed(data)  # (indexes cached before the mark existed)
        return
    marker.unlink(missing_ok=True)
    dc.log(f"building a {n:,}-instance index + {dc.BIG_STUDIES} studies of {dc.BIG_INSTANCES:,} at {data}")
    secs = dc.build_dv_index(data, n, dc.BIG_STUDIES)
    dc.log(f"  built in {secs:.1f} s")
    marker.touch()


def proc_memory(pid: int) -> tuple[float, float]:
    """(resident MB now, peak resident MB) of a process, from /proc/<pid>/status."""
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
                  if ":" in line)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def children_cpu() -> float:
    """CPU seconds (user + system) of this process's finished, waited-for children (findscu)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def dcmtk_means(port: int, pid: int, repeat: int, instances: int) -> dict[str, tuple[float, float]]:
    """kind -> (mean ms per query, server CPU ms per query) with dcmtk's C++ client: `findscu
    --repeat` on one association, over the first 5 queries of each kind (echoscu for C-ECHO).
    Only means: findscu does not time single queries. Shows the server without the pynetdicom
    SCU's own per-message cost."""
    env = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk leaves Nagle on unless told

    def timed(args: list[str], n: int) -> tuple[float, float]:
        t0, c0 = time.perf_counter(), proc_cpu(pid)
        subprocess.run(args, check=True, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return (time.perf_counter() - t0) / n * 1000, (proc_cpu(pid) - c0) / n * 1000

    out = {"C-ECHO": timed(["echoscu", "--repeat", str(repeat), "-aec", AE, dc.HOST, str(port)], repeat)}
    for kind in dc.QUERY_KINDS:
        walls, cpus = [], []
        for match in dc.queries(kind, 5, instances):
            kw = match[0].split("=", 1)[0]
            keys = [f"{k}" for k in dc.RETURN_KEYS if k != kw] + match + ["QueryRetrieveLevel=STUDY"]
            args = ["findscu", "-S", "--repeat", str(repeat), "-aec", AE]
            for k in keys:
                args += ["-k", k]
            w, c = timed([*args, dc.HOST, str(port)], repeat)
            walls.append(w)
            cpus.append(c)
        out[kind] = (statistics.mean(walls), statistics.mean(cpus))
    return out


def start_variant(data: Path, pythonpath: str) -> tuple[dc.Target, int]:
    """`dicomvault serve` on `data` with `pythonpath` first on its module path; (target, pid)."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        p for p in (str(Path(pythonpath).resolve()), os.environ.get("PYTHONPATH", "")) if p)}
    logf = data.parent / f"{data.name}-serve.log"
    with logf.open("wb") as out:
        proc = subprocess.Popen([DV, "serve", "--data", str(data), "--accept-unknown-callers",
                                 "--ae", AE, "--dimse-port", str(port),
                                 "--host", dc.HOST, "--http-port", "0"],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + 60
    while "serving DIMSE" not in logf.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"dicomvault serve on {data} did not start:\n{logf.read_text()[-3000:]}")
        time.sleep(0.05)

    def stop() -> None:
        if terminate(proc, 120) != 0:
            dc.log(f"dicomvault serve exited {proc.returncode}; see {logf}")

    return dc.Target("dicomvault", AE, port, stop, lambda: 0), proc.pid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--index", type=int, default=100_000,
                    help="index size in instances (default %(default)s)")
    ap.add_argument("--finds", type=int, default=200, help="C-FINDs per query type (default %(default)s)")
    ap.add_argument("--rounds", type=int, default=2, help="rounds over all variants (default %(default)s)")
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=PYTHONPATH",
                    help="a server code variant (default: current=<repo>/python)")
    ap.add_argument("--pynetdicom", action="store_true",
                    help="also time the queries with the pynetdicom SCU in this process (secondary table)")
    ap.add_argument("--tune-client", action="store_true",
                    help="the tuned reactors (dimse/association.py) in this process's pynetdicom SCU too")
    ap.add_argument("--dcmtk", type=int, default=0, metavar="N",
                    help="also time dcmtk findscu/echoscu --repeat N per query (means only)")
    ap.add_argument("--profile-dir", type=Path, help="py-spy record every server into this folder")
    ap.add_argument("--ceiling", action="store_true",
                    help="also the same answers replayed by a no-op SCP (bench/noop_find.py) each round")
    ap.add_argument("--scratch", type=Path, default=dc.ROOT / ".scratch" / "find-dv")
    args = ap.parse_args()
    variants = [tuple(v.split("=", 1)) for v in args.variant] or [("current", str(dc.ROOT.parent / "python"))]
    dc.scu._quiet_pynetdicom()  # the SCU's own pynetdicom logging is not what is measured
    data = args.scratch / f"index-{args.index}"
    ensure_index(data, args.index)
    queries = (args.finds + dc.WARMUP) * len(KINDS)
    # client -> (variant, kind) -> per-round (p50, p95, mean matches)
    res: dict[str, dict[tuple[str, str], list[tuple[float, float, float]]]] = {
        "findscu": {}, "pynetdicom": {}}
    # client -> variant -> per-round (server CPU ms per query, client CPU ms per query), all kinds together
    cpu: dict[str, dict[str, list[tuple[float, float]]]] = {"findscu": {}, "pynetdicom": {}}
    # (variant, kind) -> per-round (dcmtk mean ms per query, server CPU ms per query)
    dcmtk: dict[tuple[str, str], list[tuple[float, float]]] = {}
    # variant -> per-round (server resident MB after the findscu queries, peak resident MB)
    memory: dict[str, list[tuple[float, float]]] = {}
    answers: dict[str, Path] = {}  # kind -> one captured answer (--ceiling)
    for rnd in range(args.rounds):
        if answers:
            res["findscu"].update({("ceiling", k): res["findscu"].get(("ceiling", k), []) + [v]
                                   for k, v in ceiling_latencies(answers, args, rnd).items()})
        for name, path in variants:
            target, pid = start_variant(data, path)
            if args.ceiling and not answers:
                answers = capture_answers(target.port, args)
            spy = None
            if args.profile_dir is not None:
                args.profile_dir.mkdir(parents=True, exist_ok=True)
                out = args.profile_dir / f"{name}-r{rnd}.txt"  # collapsed stacks (flamegraph.pl input)
                pyspy = str(Path(sys.executable).with_name("py-spy"))
                spy = subprocess.Popen([pyspy, "record", "-o", str(out), "--pid", str(pid), "--rate", "200",
                                        "--format", "raw"],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                time.sleep(1)
            try:
                runs = {}
                # The primary client: dcmtk findscu (a C++ peer, its own processes).
                cpu0, kids0 = proc_cpu(pid), children_cpu()
                runs["findscu"] = dc.find_latencies(target.ae, target.port, args.finds, args.index,
                                                    args.scratch / "cfind" / f"{name}-r{rnd}", KINDS)
                memory.setdefault(name, []).append(proc_memory(pid))
                cpu["findscu"].setdefault(name, []).append(((proc_cpu(pid) - cpu0) / queries * 1000,
                                                            (children_cpu() - kids0) / queries * 1000))
                if args.pynetdicom:
                    cpu0, self0 = proc_cpu(pid), time.process_time()
                    runs["pynetdicom"] = dc.find_latencies_pynetdicom(target.ae, target.port, args.finds,
                                                                      args.index, args.tune_client)
                    cpu["pynetdicom"].setdefault(name, []).append(
                        ((proc_cpu(pid) - cpu0) / queries * 1000,
                         (time.process_time() - self0) / queries * 1000))
                if args.dcmtk:
                    for kind, v in dcmtk_means(target.port, pid, args.dcmtk, args.index).items():
                        dcmtk.setdefault((name, kind), []).append(v)
            finally:
                if spy is not None:
                    spy.send_signal(2)
                    spy.wait(60)
                target.stop()
            for client, lat in runs.items():
                for kind, v in lat.items():
                    res[client].setdefault((name, kind), []).append(v)
                    dc.log(f"round {rnd} {name:>10} {client:<10} {kind:<22} p50 {v[0]:6.2f} ms  "
                           f"p95 {v[1]:6.2f} ms  matches {v[2]:.1f}")
    if args.ceiling:  # the last round's ceiling, after every variant
        res["findscu"].update({("ceiling", k): res["findscu"].get(("ceiling", k), []) + [v]
                               for k, v in ceiling_latencies(answers, args, args.rounds).items()})
        variants = [*variants, ("ceiling", "")]
    base = variants[0][0]
    lines = [f"C-FIND, {args.index:,} instances + {dc.BIG_STUDIES} studies of {dc.BIG_INSTANCES:,}, "
             f"{args.finds} queries/type, "
             f"{args.rounds} round(s) (median of the rounds' p50/p95); client dcmtk findscu (C++), one "
             "association per type, latency from its log (1 us stamps)"]
    lines += table(res["findscu"], variants, base)
    lines += [""] + cpu_lines(cpu["findscu"], "findscu processes")
    for name, ms in memory.items():
        lines.append(f"{name}: server memory after the queries: resident {max(m[0] for m in ms):.0f} MB, "
                     f"peak {max(m[1] for m in ms):.0f} MB (VmRSS / VmHWM; RocksDB block cache included)")
    if args.pynetdicom:
        lines += ["", "Secondary: the same queries from the pynetdicom SCU in this process, one association; "
                  f"client tuned reactor: {args.tune_client}"]
        lines += table(res["pynetdicom"], variants, base)
        lines += [""] + cpu_lines(cpu["pynetdicom"], "pynetdicom SCU")
    if dcmtk:
        lines += ["", f"dcmtk findscu/echoscu --repeat {args.dcmtk}, one association (mean per query):",
                  "| variant | request | mean ms | server CPU ms |", "| --- | --- | --- | --- |"]
        for (name, kind), vs in dcmtk.items():
            lines.append(f"| {name} | {kind} | {statistics.median(v[0] for v in vs):.2f} | "
                         f"{statistics.median(v[1] for v in vs):.2f} |")
    print("\n".join(lines))
    return 0


def capture_answers(port: int, args: argparse.Namespace) -> dict[str, Path]:
    """kind -> a file of one answer of that kind (its first query's), from a running server."""
    peer = dc.scu.Peer(AE, dc.HOST, port)
    out = {}
    for kind in KINDS:
        keys = dc.queries(kind, 1, args.index)[0]
        rows = dc.scu.find(peer, dc.query_identifier(keys, dc.kind_level(kind)))
        path = args.scratch / "cfind" / f"answer-{kind.replace(' ', '-').replace(',', '')}.bin"
        path.parent.mkdir(parents=True, exist_ok=True)
        noop_find.write_answers(path, rows)
        out[kind] = path
    return out


def ceiling_latencies(answers: dict[str, Path], args: argparse.Namespace, rnd: int
                      ) -> dict[str, tuple[float, float, float]]:
    """kind -> (p50, p95, matches) of findscu against bench/noop_find.py replaying that kind's
    captured answer (one noop server per kind; the same query files as the variants)."""
    out = {}
    for kind, path in answers.items():
        proc = subprocess.Popen([sys.executable, str(Path(__file__).with_name("noop_find.py")), str(path)],
                                stdout=subprocess.PIPE, text=True)
        try:
            port = int((proc.stdout.readline() if proc.stdout else "").split()[3].rstrip(":"))
            out.update(dc.find_latencies("NOOPFIND", port, args.finds, args.index,
                                         args.scratch / "cfind" / f"ceiling-r{rnd}", [kind]))
        finally:
            terminate(proc, 10)
        v = out[kind]
        dc.log(f"round {rnd}    ceiling findscu    {kind:<22} p50 {v[0]:6.2f} ms  p95 {v[1]:6.2f} ms  "
               f"matches {v[2]:.1f}")
    return out


def table(res: dict[tuple[str, str], list[tuple[float, float, float]]], variants: list[tuple[str, ...]],
          base: str) -> list[str]:
    """p50/p95 per (variant, kind): the median over the rounds, and the p50 ratio to `base`."""
    lines = ["| variant | query | p50 ms | p95 ms | matches | p50 vs " + base + " |",
             "| --- | --- | --- | --- | --- | --- |"]
    for kind in KINDS:
        b50 = statistics.median(r[0] for r in res[(base, kind)])
        for name, *_ in variants:
            rs = res[(name, kind)]
            p50 = statistics.median(r[0] for r in rs)
            p95 = statistics.median(r[1] for r in rs)
            lines.append(f"| {name} | {kind} | {p50:.2f} | {p95:.2f} | {rs[0][2]:.1f} | {b50 / p50:.2f}x |")
    return lines


def cpu_lines(cpu: dict[str, list[tuple[float, float]]], client: str) -> list[str]:
    out = []
    for name, cs in cpu.items():
        srv = statistics.median(c[0] for c in cs)
        cli = statistics.median(c[1] for c in cs)
        out.append(f"{name}: CPU per query (all kinds, warm-up included): server {srv:.2f} ms, "
                   f"client ({client}) {cli:.2f} ms")
    if client.startswith("findscu"):
        out.append("(findscu's figure includes its 3 process starts, dictionary loads and associations.)")
    return out


if __name__ == "__main__":
    sys.exit(main())
