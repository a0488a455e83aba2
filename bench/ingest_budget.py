"""The CPU budget of 4-association DIMSE ingest on this machine, measured in one run.

Issue 3's target is dicomvault >= 3x Orthanc with 4 storescu associations, hashing and
compressing. On a machine whose cores the storescu clients share with the archive, that target
has a budget that can be measured: at T = 3 x Orthanc's rate, the clients take T x (client CPU per
object) of the cores, and what is left, divided by T, is all the CPU the archive may spend per
object. This script measures, with the same 300 CT slices (bench/dimse_ab.py's input):

  1. Orthanc (tuned, uncompressed; bench/dicomvault/bench/orthanc.py) over 4 associations: T.
  2. dcmtk `storescp --ignore` (receives, discards) fed by the same 4 storescu: the storescu
     CPU per object (from rusage of the children) and the receiving side's CPU per object.
  3. `dicomvault serve`: its rate and its CPU per object (the clients do the same work as in 2).
  4. The archive's native floor per object, in process: `Vault.ingest_dataset` (parse, BLAKE3,
     hot codec, durable append), with no network, no index, no Python around it.

and prints the budget against (receive floor + native floor): if the two floors alone exceed the
budget, no implementation of the same work reaches T on this machine.

    .venv/bin/python bench/ingest_budget.py [--reps 2] [--work /tmp/dicomvault-dimse-ab]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path

from dimse_ab import DCMTK_ENV, make_input, run_dicomvault, storescu, tree_cpu

from dicomvault import _native
from dicomvault.bench.orthanc import free_port, start_orthanc
from dicomvault.bench.procs import terminate


def children_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def clients(port: int, dirs: list[Path], ae: str) -> tuple[float, float]:
    """(seconds, storescu CPU seconds) of the 4 storescu processes."""
    c0 = children_cpu()
    secs = storescu(port, dirs, ae)
    return secs, children_cpu() - c0


def noop_receiver(work: Path, dirs: list[Path]) -> tuple[float, float, float]:
    """(seconds, client CPU s, receiver CPU s) for storescp --ignore."""
    port = free_port()
    log = work / "storescp-ignore.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(["storescp", "--ignore", "-pdu", "131072", str(port)], stdout=out,
                                stderr=subprocess.STDOUT, env=DCMTK_ENV)
    time.sleep(1.0)
    try:
        r0 = tree_cpu(proc.pid)
        secs, client = clients(port, dirs, "ANY-SCP")
        receiver = tree_cpu(proc.pid) - r0
    finally:
        terminate(proc, 10)
    return secs, client, receiver


def native_floor(files: list[Path], work: Path) -> float:
    """CPU seconds per object of Vault.ingest_dataset alone (one thread)."""
    datasets = []
    for f in files:
        raw = f.read_bytes()
        meta_len = struct.unpack("<I", raw[140:144])[0]  # (0002,0000) group length, explicit VR LE
        datasets.append(raw[144 + meta_len:])
    root = work / "vault"
    shutil.rmtree(root, ignore_errors=True)
    vault = _native.Vault(str(root))
    try:
        t0 = time.process_time()
        for ds in datasets:
            vault.ingest_dataset(ds, "1.2.840.10008.1.2.1")
        return (time.process_time() - t0) / len(datasets)
    finally:
        vault.close()
        shutil.rmtree(root, ignore_errors=True)


def verdict(med: dict[str, float], target_x: float, cores: int) -> str:
    """The budget at target_x times Orthanc against the floors, from the medians above."""
    orthanc = med["orthanc inst/s"]
    target = target_x * orthanc
    clients_cores = target * med["client ms/obj (ceiling)"] / 1000
    budget_ms = (cores - clients_cores) / target * 1000
    floor_ms = med["receive floor ms/obj"] + med["native floor ms/obj"]
    best = cores / ((med["client ms/obj (ceiling)"] + floor_ms) / 1000)
    reach = "out of reach on this machine" if floor_ms > budget_ms else "within the floors' reach"
    return (f"target {target_x:g}x Orthanc = {target:.0f} inst/s. The clients then take "
            f"{clients_cores:.2f} of {cores} cores, leaving the archive {budget_ms:.2f} ms of CPU per "
            f"object. Floors: receiving {med['receive floor ms/obj']:.2f} + native ingest "
            f"{med['native floor ms/obj']:.2f} = {floor_ms:.2f} ms per object, before any index, "
            f"durability wait or Python; dicomvault spends {med['dicomvault server ms/obj']:.2f}.\n"
            f"An archive doing nothing but the floors, with the cores fully used, would reach "
            f"{best:.0f} inst/s = {best / orthanc:.2f}x Orthanc.\n"
            f"verdict: {reach} (floors / budget = {floor_ms / budget_ms:.2f})")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--work", type=Path, default=Path("/tmp/dicomvault-dimse-ab"))
    ap.add_argument("--target", type=float, default=3.0, help="multiple of Orthanc's rate (default 3)")
    args = ap.parse_args()
    whole, quarters = make_input(args.work)
    files = sorted(whole.glob("study*/*.dcm"))
    n = len(files)
    cores = os.cpu_count() or 1
    rows: dict[str, list[float]] = {}

    def note(key: str, value: float) -> None:
        rows.setdefault(key, []).append(value)

    for rep in range(args.reps):
        run_root = args.work / "run"
        orth = start_orthanc(run_root, compression=False, threads=4)
        try:
            secs, client = clients(orth.dicom_port, quarters, "ORTHANC")
        finally:
            orth.stop(120)
        note("orthanc inst/s", n / secs)
        secs, client, receiver = noop_receiver(args.work, quarters)
        note("ceiling inst/s", n / secs)
        note("client ms/obj (ceiling)", client / n * 1000)
        note("receive floor ms/obj", receiver / n * 1000)
        secs, server_ms = run_dicomvault(run_root, "", quarters, n)
        note("dicomvault inst/s", n / secs)
        note("dicomvault server ms/obj", server_ms)
        note("native floor ms/obj", native_floor(files, args.work) * 1000)
        print(f"round {rep}: " + ", ".join(f"{k} {v[-1]:.2f}" for k, v in rows.items()), flush=True)

    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\nmedians of {args.reps} rounds, {n} CT slices, 4 associations, {cores} cores:")
    print("| measure | value |\n| --- | --- |")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} |")
    print(f"| dicomvault / Orthanc | {med['dicomvault inst/s'] / med['orthanc inst/s']:.2f}x |")
    print(f"| ceiling / Orthanc | {med['ceiling inst/s'] / med['orthanc inst/s']:.2f}x |")
    print()
    print(verdict(med, args.target, cores))
    return 0


if __name__ == "__main__":
    sys.exit(main())
