"""Load: what `dicomvault serve` with its default limits sustains at 32, 64 and 128 concurrent
associations (issue 14, item 4).

Per level, a fresh server with the default limits (max_associations 128,
max_associations_per_peer 64, ...) on its own data directory, its clients declared as peers
allowed to store (unknown callers are refused by default). Clients: a few processes, each
with one thread per association, each association from its own calling AE title (a modality
each; the per-peer default of 64 would refuse more than that from a single title). Every client
first establishes its association, all wait at a barrier, then each stores N small real objects
(pydicom's test files: CT, MR, RT dose, with new UIDs) back to back. Reported per level:

- associations established and refused (client side), refusals in /metrics (server side);
- throughput (objects/s and MB/s over the wall time from the barrier to the last response);
- per-object latency (C-STORE request to response): p50, p99, max;
- server RSS: the peak sampled every 0.2 s, and the kernel's high-water mark (VmHWM);
- objects lost: every acknowledged SOP Instance UID is looked up in the index afterwards.

    .venv/bin/python bench/load_bench.py                 # 32/64/128 x 20 objects -> bench/RESULTS.md
    .venv/bin/python bench/load_bench.py --quick         # 8/32 x 4 objects, nothing written

Exit code 1 if an acknowledged object is missing or an association was refused.
"""

from __future__ import annotations

import argparse
import datetime as dt
import multiprocessing as mp
import os
import re
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

HOST = "127.0.0.1"
FILES = ("CT_small.dcm", "MR_small.dcm", "rtdose.dcm")
RESULTS = Path(__file__).resolve().parent / "RESULTS.md"


# -- clients (run in child processes) ----------------------------------------------------------------

def _client_thread(index: int, port: int, n_objects: int, barrier: Any, out: list[Any]) -> None:
    from pydicom import dcmread
    from pydicom.data import get_testdata_file
    from pydicom.uid import generate_uid

    from dicomvault.dimse.association import requestor_ae

    originals = [dcmread(get_testdata_file(name)) for name in FILES]
    ae = requestor_ae(f"LOAD{index:03d}")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 120
    for ds in originals:
        ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate(HOST, port, ae_title="DICOMVAULT")
    established = assoc.is_established
    try:
        barrier.wait(timeout=300)
    except threading.BrokenBarrierError:
        pass
    records: list[tuple[str, int, float, int]] = []
    if established:
        for i in range(n_objects):
            ds = originals[i % len(originals)]
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            if i % 10 == 0:  # a new study now and then, as a modality's stream has
                ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
            t0 = time.perf_counter()
            try:
                rsp = assoc.send_c_store(ds)
                status = int(rsp.Status) if "Status" in rsp else -1
            except (RuntimeError, ValueError, OSError):
                status = -2
            records.append((str(ds.SOPInstanceUID), status, time.perf_counter() - t0, len(ds.PixelData)))
        assoc.release()
    out.append((established, time.perf_counter(), records))


def _client_process(first: int, count: int, port: int, n_objects: int, barrier: Any,
                    results: Any) -> None:
    out: list[Any] = []
    threads = [threading.Thread(target=_client_thread, args=(first + i, port, n_objects, barrier, out))
               for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put(out)


# -- the server ------------------------------------------------------------------------------------

def _rss(pid: int) -> tuple[int, int]:
    """(VmRSS, VmHWM) of `pid` in bytes."""
    text = Path(f"/proc/{pid}/status").read_text()
    vals = {k: int(v.split()[0]) * 1024 for k, v in re.findall(r"^(VmRSS|VmHWM):\s+(.*)$", text, re.M)}
    return vals.get("VmRSS", 0), vals.get("VmHWM", 0)


def _metrics_refused(http_url: str) -> dict[str, int]:
    with urllib.request.urlopen(f"{http_url}/metrics", timeout=30) as r:
        text = r.read().decode()
    found = re.findall(r'^dicomvault_refused_total\{kind="(\w+)",reason="(\w+)"\} (\d+)$', text, re.M)
    return {f"{kind}/{reason}": int(n) for kind, reason, n in found if int(n)}


@dataclass
class Level:
    associations: int
    established: int
    refused_client: int
    objects_ok: int
    objects_failed: int
    seconds: float
    mbytes: float
    p50_ms: float
    p99_ms: float
    max_ms: float
    rss_peak_mb: float
    rss_hwm_mb: float
    refused_metrics: dict[str, int]
    lost: int


def run_level(n: int, n_objects: int, workdir: Path) -> Level:
    from dicomvault.bench.dimse import start_serve
    from dicomvault.engine import Engine

    # The defaults, and the callers declared as peers (unknown callers are refused by default).
    config = workdir / f"load-{n}.toml"
    config.write_text("".join(f'[[peers]]\nae_title = "LOAD{i:03d}"\nhost = "{HOST}"\nallow = ["store"]\n\n'
                              for i in range(1, n + 1)))
    server = start_serve(workdir / f"data-{n}", config=config)
    http = re.search(r"dicomvault serving HTTP (\S+)", server.log_text())
    deadline = time.monotonic() + 30
    while http is None and time.monotonic() < deadline:
        time.sleep(0.1)
        http = re.search(r"dicomvault serving HTTP (\S+)", server.log_text())
    assert http is not None, server.log_text()[-2000:]
    try:
        ctx = mp.get_context("spawn")
        procs_n = min(8, n)
        barrier = ctx.Manager().Barrier(n + 1)
        results = ctx.Queue()
        per = [n // procs_n + (1 if i < n % procs_n else 0) for i in range(procs_n)]
        procs, first = [], 1
        for count in per:
            p = ctx.Process(target=_client_process,
                            args=(first, count, server.port, n_objects, barrier, results))
            p.start()
            procs.append(p)
            first += count
        peak = [0]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                try:
                    peak[0] = max(peak[0], _rss(server.proc.pid)[0])
                except OSError:
                    return

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        barrier.wait(timeout=300)  # every client has its association (or its refusal)
        t0 = time.perf_counter()
        outs: list[Any] = []
        for _ in procs:
            outs += results.get(timeout=1800)
        for p in procs:
            p.join(60)
        stop.set()
        sampler.join()
        end = max(o[1] for o in outs)
        records = [r for o in outs for r in o[2]]
        lat = sorted(r[2] for r in records)
        ok = [r for r in records if r[1] == 0]
        refused_metrics = _metrics_refused(http.group(1))
        _, hwm = _rss(server.proc.pid)
        with Engine(server.data, read_only=True) as eng:
            lost = sum(1 for r in ok if eng.instance(r[0]) is None)

        def pct(q: float) -> float:
            return 1000 * lat[min(len(lat) - 1, int(q * len(lat)))] if lat else 0.0

        established = sum(1 for o in outs if o[0])
        return Level(n, established, n - established, len(ok), len(records) - len(ok), end - t0,
                     sum(r[3] for r in ok) / 1e6, pct(0.5), pct(0.99), 1000 * lat[-1] if lat else 0.0,
                     peak[0] / 2**20, hwm / 2**20, refused_metrics, lost)
    finally:
        code = server.stop(120)
        if code != 0:
            print(f"serve exited {code}:\n{server.log_text()[-2000:]}", file=sys.stderr)


def table(levels: list[Level]) -> str:
    rows = ["| associations | established / refused | objects stored / failed | objects/s | pixel MB/s | "
            "p50 ms | p99 ms | max ms | server RSS peak (HWM) MB | refusals in /metrics | lost |",
            "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for lv in levels:
        refused = ", ".join(f"{k} {v}" for k, v in lv.refused_metrics.items()) or "none"
        rows.append(f"| {lv.associations} | {lv.established} / {lv.refused_client} | {lv.objects_ok} / "
                    f"{lv.objects_failed} | {lv.objects_ok / lv.seconds:.0f} | {lv.mbytes / lv.seconds:.1f} "
                    f"| "
                    f"{lv.p50_ms:.0f} | {lv.p99_ms:.0f} | {lv.max_ms:.0f} | {lv.rss_peak_mb:.0f} "
                    f"({lv.rss_hwm_mb:.0f}) | {refused} | {lv.lost} |")
    return "\n".join(rows)


def append_results(text: str, command: str, load: float) -> None:
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    head = RESULTS.read_text()
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                            cwd=RESULTS.parent).stdout.strip() or "?"
    section = (f"\n## Load (make bench-load)\n\n### {stamp}, `{command}` (code {commit}, load average "
               f"{load:.1f} at the start)\n\n"
               f"`dicomvault serve` with the default limits (the clients declared as peers), one fresh\n"
               f"server per row; clients in 8 processes on the same 2-core machine (client and server\n"
               f"share the "
               f"cores), one association per calling AE title, each storing small real objects\n"
               f"(pydicom's {', '.join(FILES)}, new UIDs) back to back after all associations are up.\n"
               f"Lost = acknowledged but not in the index afterwards.\n\n{text}\n")
    if "\n## Load (make bench-load)\n" in head:
        before, after = head.split("\n## Load (make bench-load)\n", 1)
        nxt = after.find("\n## ")
        rest = after[nxt:] if nxt >= 0 else ""
        old = after[:nxt] if nxt >= 0 else after
        old_runs = old.split("\n### ", 1)[1] if "\n### " in old else ""
        section = section + (f"\n### {old_runs}" if old_runs else "")
        RESULTS.write_text(before + section + rest)
    else:
        RESULTS.write_text(head.rstrip("\n") + "\n" + section)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--levels", default="32,64,128",
                    help="concurrent associations per run (default: %(default)s)")
    ap.add_argument("--objects", type=int, default=20,
                    help="objects stored per association (default: %(default)s)")
    ap.add_argument("--quick", action="store_true",
                    help="8 and 32 associations x 4 objects; RESULTS.md untouched")
    ap.add_argument("--no-results", action="store_true", help="do not append to bench/RESULTS.md")
    args = ap.parse_args(argv)
    levels = [8, 32] if args.quick else [int(x) for x in args.levels.split(",")]
    objects = 4 if args.quick else args.objects
    load = os.getloadavg()[0]  # the machine is shared: the figures depend on it
    with tempfile.TemporaryDirectory(prefix="dv-load-") as tmp:
        done = []
        for n in levels:
            lv = run_level(n, objects, Path(tmp))
            done.append(lv)
            print(table([lv]).splitlines()[-1], flush=True)
    text = table(done)
    print(text)
    if not (args.quick or args.no_results):
        command = "python bench/load_bench.py " + " ".join(shlex.quote(a) for a in (argv or sys.argv[1:]))
        append_results(text, command.strip(), load)
    bad = any(lv.lost or lv.refused_client for lv in done)
    return 1 if bad else 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
