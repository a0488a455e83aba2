"""Replication and DR figures, in one run on one disk (a script, not a pytest suite):

1. local ingest: the engine stores a backlog (default 1 GB of synthetic 512x512 CT slices) with
   2 threads, durably: the reference rate;
2. catch-up: a fresh replica (`dicomvault replicate --once`, a separate process) pulls that backlog
   from the primary served over loopback HTTP (`python -m dicomvault.site`): MB/s and ratio to 1.;
3. backup of the primary, then restore of the backup: MB/s each (stored bytes copied);
4. RPO under sustained ingest at the engine's full rate: a primary process ingests as fast as it
   can for --rpo-seconds while a `dicomvault replicate` process follows it; the primary's tracker
   reports, at each pull, how long ago the oldest change the replica lacks was acknowledged.

    .venv/bin/python bench/replication.py [--gb 1.0] [--rpo-seconds 20] [--scratch DIR]

Figures are logical (DICOM file) bytes per second unless marked "stored".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pydicom

ROOT = Path(__file__).resolve().parents[1]
CLI = str(Path(sys.executable).with_name("dicomvault"))
TOKEN = "bench-token"


def base_slices(n: int) -> list[bytes]:
    from dicomvault.bench.synth import SeriesSpec, ct_series

    return list(ct_series(SeriesSpec(slices=n, rows=512, columns=512, seed=42)))


def variants(bases: list[bytes], start: int = 0) -> Iterator[bytes]:
    """Endless distinct objects from a few real-looking slices: the SOP Instance UID is rewritten
    in place (same length), so every object has its own UID and its own hash, at no synth cost."""
    uids = [str(pydicom.dcmread(__import__("io").BytesIO(b), stop_before_pixels=True).SOPInstanceUID)
            for b in bases]
    i = start
    while True:
        for b, uid in zip(bases, uids, strict=True):
            tail = f"{i:08d}"
            new = (uid[: len(uid) - len(tail)] + tail).encode()
            yield b.replace(uid.encode(), new)
            i += 1


def ingest(engine: object, objs: Iterator[bytes], total: int, threads: int = 2, batch: int = 16) -> float:
    """Stores `total` bytes of objects with `threads` writers; returns seconds."""
    lock = threading.Lock()
    done = [0]

    def worker() -> None:
        while True:
            with lock:
                if done[0] >= total:
                    return
                chunk = [next(objs) for _ in range(batch)]
                done[0] += sum(map(len, chunk))
            for r in engine.store_buffers(chunk):  # type: ignore[attr-defined]
                if isinstance(r, Exception):
                    raise r

    t0 = time.perf_counter()
    ts = [threading.Thread(target=worker) for _ in range(threads)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return time.perf_counter() - t0


def start_site(data: Path, *extra: str) -> tuple[subprocess.Popen[str], str]:
    p = subprocess.Popen([sys.executable, "-m", "dicomvault.site", "--data", str(data), "--http-port", "0",
                          "--replication-token", TOKEN, *extra], stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None
    line = p.stdout.readline()
    if not line.startswith("dicomvault site "):
        raise RuntimeError(f"site on {data} did not start: {line!r}")
    return p, line.split()[2]


def stop(p: subprocess.Popen[str]) -> None:
    p.terminate()
    p.wait(60)


def logical_bytes(data: Path) -> int:
    from dicomvault.engine import Engine

    with Engine(data, read_only=True) as e:
        return int(e.index.stats()["logical_bytes"])


def primary_child(data: str, seconds: float) -> None:
    """--primary-child: engine + site in one process, ingesting at full rate for `seconds`."""
    from dicomvault.engine import Engine
    from dicomvault.site import Site, SiteOptions

    bases = base_slices(24)
    with Engine(data) as eng:
        site = Site(eng, SiteOptions(port=0, replication_tokens=[TOKEN]))
        site.start()
        print(f"dicomvault site {site.url}", flush=True)
        sys.stdin.readline()  # the parent starts the replica, then says go
        objs = variants(bases)
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < seconds:
            ingest(eng, objs, 16 << 20)
        print(json.dumps({"ingest_seconds": time.perf_counter() - t0,
                          "logical_bytes": eng.index.stats()["logical_bytes"],
                          "last_seq": eng.index.last_seq()}), flush=True)
        sys.stdin.readline()  # the parent says stop once the replica drained
        site.stop()


def status(url: str) -> dict:
    import msgpack

    req = urllib.request.Request(url + "/replication/status", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return msgpack.unpackb(r.read(), raw=False)


def rpo(scratch: Path, seconds: float) -> dict[str, float]:
    p_data, r_data = scratch / "rpo-primary", scratch / "rpo-replica"
    child = subprocess.Popen([sys.executable, __file__, "--primary-child", str(p_data), str(seconds)],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert child.stdin is not None and child.stdout is not None
    url = child.stdout.readline().split()[2]
    rep = subprocess.Popen([CLI, "replicate", "--data", str(r_data), "--from", url, "--token", TOKEN,
                            "--http-port", "0"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(2)
    child.stdin.write("go\n")
    child.stdin.flush()
    samples: list[float] = []
    t0 = time.monotonic()
    while time.monotonic() - t0 < seconds:
        time.sleep(0.5)
        for r in status(url)["replicas"].values():
            samples.append(float(r["lag_seconds"]))
    result = json.loads(child.stdout.readline())
    t_end = time.monotonic()
    while True:
        reps = list(status(url)["replicas"].values())
        if reps and all(r["lag_events"] == 0 for r in reps) and reps[0]["acked_seq"] >= result["last_seq"]:
            break
        time.sleep(0.1)
    drain = time.monotonic() - t_end
    child.stdin.write("stop\n")
    child.stdin.flush()
    child.wait(60)
    rep.terminate()
    rep.wait(60)
    samples.sort()
    return {
        "ingest_mb_s": result["logical_bytes"] / 1e6 / result["ingest_seconds"],
        "rpo_p50_s": statistics.median(samples) if samples else 0.0,
        "rpo_p95_s": samples[int(len(samples) * 0.95) - 1] if samples else 0.0,
        "rpo_max_s": max(samples) if samples else 0.0,
        "drain_after_stop_s": drain,
        "samples": len(samples),
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0, help="backlog size (default: %(default)s GB)")
    ap.add_argument("--rpo-seconds", type=float, default=20.0)
    ap.add_argument("--scratch", default=str(ROOT / "bench" / ".scratch" / "replication"))
    ap.add_argument("--primary-child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.primary_child:
        primary_child(args.primary_child[0], float(args.primary_child[1]))
        return 0

    from dicomvault.dr.backup import backup, restore
    from dicomvault.engine import Engine

    scratch = Path(args.scratch)
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    total = int(args.gb * 1e9)
    bases = base_slices(24)
    out: dict[str, object] = {}

    primary = scratch / "primary"
    with Engine(primary) as eng:
        secs = ingest(eng, variants(bases), total)
    logical = logical_bytes(primary)
    local = logical / 1e6 / secs
    out["local_ingest"] = {"mb": round(logical / 1e6), "seconds": round(secs, 2), "mb_s": round(local, 1)}
    print(f"local ingest: {logical / 1e6:,.0f} MB in {secs:.1f} s = {local:,.0f} MB/s", flush=True)

    site, url = start_site(primary)
    try:
        t0 = time.perf_counter()
        r = subprocess.run([CLI, "replicate", "--once", "--data", str(scratch / "replica"), "--from", url,
                            "--token", TOKEN], capture_output=True, text=True, check=True)
        secs = time.perf_counter() - t0
    finally:
        stop(site)
    got = json.loads(r.stdout)
    rate = logical / 1e6 / secs
    out["catch_up"] = {"seconds": round(secs, 2), "mb_s": round(rate, 1),
                       "ratio_to_local": round(rate / local, 2),
                       "stored_mb_fetched": round(got["bytes_fetched"] / 1e6)}
    print(f"catch-up: {logical / 1e6:,.0f} MB in {secs:.1f} s = {rate:,.0f} MB/s = {rate / local:.2f} x "
          f"local ingest ({got['bytes_fetched'] / 1e6:,.0f} MB stored bytes on the wire)", flush=True)

    with Engine(primary) as eng:
        b = backup(eng, scratch / "backup")
    print(f"backup: {b.bytes_copied / 1e6:,.0f} MB stored in {b.seconds:.1f} s = {b.mb_per_s:,.0f} MB/s "
          f"(= {logical / 1e6 / b.seconds:,.0f} MB/s logical)", flush=True)
    rs = restore(scratch / "backup", scratch / "restored", verify=False)
    print(f"restore: {rs.bytes_copied / 1e6:,.0f} MB stored in {rs.seconds:.1f} s = {rs.mb_per_s:,.0f} MB/s "
          f"(= {logical / 1e6 / rs.seconds:,.0f} MB/s logical)", flush=True)
    out["backup"] = b.as_dict()
    out["restore"] = rs.as_dict()
    for d in ("primary", "replica", "backup", "restored"):
        shutil.rmtree(scratch / d, ignore_errors=True)

    rp = rpo(scratch, args.rpo_seconds)
    out["rpo"] = {k: round(v, 2) for k, v in rp.items()}
    print(f"RPO under sustained ingest ({rp['ingest_mb_s']:,.0f} MB/s for {args.rpo_seconds:.0f} s): "
          f"p50 {rp['rpo_p50_s']:.2f} s, p95 {rp['rpo_p95_s']:.2f} s, max {rp['rpo_max_s']:.2f} s; "
          f"replica drained {rp['drain_after_stop_s']:.1f} s after ingest stopped", flush=True)
    res = ROOT / "bench" / ".results"
    res.mkdir(parents=True, exist_ok=True)
    (res / f"replication-{time.strftime('%Y%m%d-%H%M%S')}.json").write_text(json.dumps(out, indent=1))
    shutil.rmtree(scratch, ignore_errors=True)
    print(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
