"""A/B of `dicomvault serve` DIMSE ingest settings (and Orthanc) in one run, repeated, interleaved.

For tuning the receive path (dimse/association.py, dimse/workers.py) on a shared, noisy machine:
every variant is measured in every round, so compare ratios within a round, and medians.
bench/dimse_compare.py is the full side-by-side benchmark (make bench-dimse).

    .venv/bin/python bench/dimse_ab.py --orthanc --reps 3 \\
        --variant 'before=tuned_reactor = false' --variant 'tuned=' \\
        --variant 'w2=workers = 2' --variant 'w3=workers = 3'

Input: 3 synthetic CT series x 100 slices of 512x512 (525 KB each, bench/synth.py), sent with
dcmtk `storescu -pdu 131072` over 1 association (all 300 files) and over 4 parallel associations
(4 storescu processes, 75 files each); wall time = first start to last exit. Each run starts
from an empty data directory. A variant is `name=<lines for the [dimse] table>` (\\n between
lines). Also printed: server CPU (all its processes) per object, from /proc.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

from dicomvault.bench.orthanc import free_port, start_orthanc
from dicomvault.bench.procs import terminate, tree_cpu
from dicomvault.bench.synth import SeriesSpec, ct_series

DV = str(Path(sys.executable).with_name("dicomvault"))
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}  # dcmtk leaves Nagle on unless told


def make_input(root: Path) -> tuple[Path, list[Path]]:
    """root/ct/study*/NNNN.dcm (3 x 100 slices) and root/q0..q3 (hard links, a quarter each)."""
    ct = root / "ct"
    marker = root / "ct.done"
    if not marker.exists():
        shutil.rmtree(ct, ignore_errors=True)
        for k in range(3):
            d = ct / f"study{k}"
            d.mkdir(parents=True)
            for i, data in enumerate(ct_series(SeriesSpec(slices=100, seed=k + 1, patient_id=f"B{k}"))):
                (d / f"{i:04d}.dcm").write_bytes(data)
        marker.touch()
    files = sorted(ct.glob("study*/*.dcm"))
    quarters = []
    for q in range(4):
        d = root / f"q{q}"
        shutil.rmtree(d, ignore_errors=True)
        d.mkdir()
        for i, f in enumerate(files[q * 75:(q + 1) * 75]):
            os.link(f, d / f"{i:04d}.dcm")
        quarters.append(d)
    return ct, quarters


def storescu(port: int, dirs: list[Path], ae: str) -> float:
    t0 = time.monotonic()
    procs = [subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", ae, "-pdu", "131072", "+sd", "+r",
                               "127.0.0.1", str(port), str(d)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=DCMTK_ENV) for d in dirs]
    errors = [p.communicate()[1] for p in procs]
    elapsed = time.monotonic() - t0
    for p, err in zip(procs, errors, strict=True):
        if p.returncode:
            print(f"storescu failed: {err.decode(errors='replace')[-300:]}", file=sys.stderr)
    return elapsed


def run_dicomvault(root: Path, dimse_toml: str, dirs: list[Path], n: int) -> tuple[float, float]:
    """(seconds, server CPU ms per object)."""
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    port = free_port()
    cfg = root / "dicomvault.toml"
    cfg.write_text(f'data = "{root}/data"\n[dimse]\nport = {port}\naccept_unknown_callers = true\n'
                   f'{dimse_toml}\n'
                   f'[replication]\nhttp_port = {free_port()}\n')
    log = root / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([DV, "serve", "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while "serving DIMSE" not in log.read_text(errors="replace"):
        if proc.poll() is not None or time.monotonic() > deadline:
            raise SystemExit(f"dicomvault serve did not start:\n{log.read_text()[-3000:]}")
        time.sleep(0.05)
    try:
        c0 = tree_cpu(proc.pid)
        secs = storescu(port, dirs, "DICOMVAULT")
        cpu = (tree_cpu(proc.pid) - c0) / n * 1000
    finally:
        if terminate(proc, 120) != 0:
            print(f"serve exited {proc.returncode}: {log.read_text()[-2000:]}", file=sys.stderr)
    return secs, cpu


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--variant", action="append", default=[], metavar="NAME=TOML")
    ap.add_argument("--orthanc", action="store_true", help="also Orthanc 1.10 (uncompressed, tuned)")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dicomvault-dimse-ab"))
    args = ap.parse_args()
    variants: list[tuple[str, str | None]] = [
        (v.split("=", 1)[0], v.split("=", 1)[1].replace("\\n", "\n")) for v in args.variant
    ] or [("default", "")]
    if args.orthanc:
        variants.append(("orthanc", None))
    whole, quarters = make_input(args.work)
    files = sorted(whole.glob("study*/*.dcm"))
    mb = sum(f.stat().st_size for f in files) / 1e6
    results: dict[tuple[str, int], list[tuple[float, float | None]]] = {}
    for rep in range(args.reps):
        for name, toml in variants:
            for assocs, dirs in ((1, [whole]), (4, quarters)):
                run_root = args.work / "run"
                if toml is None:
                    orth = start_orthanc(run_root, compression=False, threads=4)
                    try:
                        secs, cpu = storescu(orth.dicom_port, dirs, "ORTHANC"), None
                    finally:
                        orth.stop(120)
                else:
                    secs, cpu = run_dicomvault(run_root, toml, dirs, len(files))
                results.setdefault((name, assocs), []).append((len(files) / secs, cpu))
                print(f"round {rep}: {name:10s} {assocs} assoc  {len(files) / secs:6.1f} inst/s "
                      f"{mb / secs:6.1f} MB/s" + (f"  cpu {cpu:.2f} ms/obj" if cpu else ""), flush=True)
    print(f"\nmedians over {args.reps} rounds ({len(files)} files, {mb:.0f} MB):")
    print("| variant | assoc | inst/s | MB/s | server CPU ms/obj | all rounds inst/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for (name, assocs), rows in results.items():
        ips = statistics.median(r[0] for r in rows)
        cpus = [r[1] for r in rows if r[1] is not None]
        cpu = f"{statistics.median(cpus):.2f}" if cpus else "-"
        print(f"| {name} | {assocs} | {ips:.0f} | {ips * mb / len(files):.0f} | {cpu} | "
              f"{', '.join(f'{r[0]:.0f}' for r in rows)} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
