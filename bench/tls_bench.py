"""DICOM TLS throughput against plain TCP, in one run: ingest and C-MOVE retrieve.

    .venv/bin/python bench/tls_bench.py [--slices 300] [--repeats 2] [--workers 1,2]

Certificates: a site CA and nodes it signed, made by openssl (dicomvault.bench.pki), mutual
authentication both ways, TLS 1.2+ as dimse/tls.py sets it (OpenSSL picks TLS 1.3 with
AES-256-GCM here). Workload: one synthetic CT series of 512x512 16-bit slices, written as Part-10
files before any clock starts.

- Ingest: four dcmtk `storescu` processes at once (the files split in four), into
  `dicomvault serve`: plain to the DIMSE port, `+tls` to the TLS port, a fresh data directory
  each time, the server with `[dimse] workers` = each value of --workers (1: the server process
  terminates TLS; N: the N receiver processes do, and relay to the writer).
- Retrieve: `movescu` asks (plain) for the whole study, sent to a dcmtk `storescp --ignore`
  destination over plain TCP or over TLS (`[[peers]] tls = true`); the time is movescu's.
- The retrieve's ceiling: one dcmtk `storescu` sends the same files, one association, to the same
  two destinations. A C-MOVE is that stream (one C-STORE at a time, each waiting for its
  response), so its TLS / plain is what a sender that only reads files reaches against this
  destination: the TLS peer's decryption and the record round trips bound it, not the sender.

Plain and TLS alternate within each repeat; the table gives medians, and TLS / plain.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pydicom

from dicomvault.bench.dimse import (
    DCMTK_ENV,
    HOST,
    movescu_study,
    split_files,
    start_serve,
    start_storescp,
    storescu_parallel,
)
from dicomvault.bench.orthanc import free_port
from dicomvault.bench.pki import Pki, dcmtk_tls_args, make_pki
from dicomvault.bench.synth import SeriesSpec, ct_series

AE = "DICOMVAULT"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def write_config(path: Path, pki: Pki, tls_port: int, workers: int,
                 peers: dict[str, tuple[int, bool]]) -> Path:
    key, crt = pki["server"]
    text = (f'[dimse]\nworkers = {workers}\ntls_port = {tls_port}\ntls_cert = "{crt}"\ntls_key = "{key}"\n'
            f'tls_ca = "{pki["ca"][1]}"\n')
    for ae, (port, tls) in peers.items():
        text += f'[[peers]]\nae_title = "{ae}"\nhost = "{HOST}"\nport = {port}\ntls = {str(tls).lower()}\n'
    path.write_text(text)
    return path


def ceiling_run(work: Path, pki: Pki, dirs: list[Path], mode: str) -> float:
    """Seconds for the four storescu to send everything to `storescp --fork --ignore`."""
    port = free_port()
    tls = mode == "tls"
    scp = subprocess.Popen(["storescp", "--fork", "--ignore", "-pdu", "131072",
                            *(dcmtk_tls_args(pki, "peer") if tls else []), str(port)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=DCMTK_ENV)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                socket.create_connection((HOST, port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise SystemExit("storescp --fork did not start") from None
                time.sleep(0.05)
        logs = work / f"logs-ceiling-{mode}"
        logs.mkdir(exist_ok=True)
        extra = dcmtk_tls_args(pki, "client") if tls else []
        run = storescu_parallel("STORESCP", port, dirs, logs, extra=extra)
        if run.errors:
            raise SystemExit(f"storescu to the no-op ceiling failed ({mode}):\n{run.errors[0]}")
        return run.seconds
    finally:
        scp.terminate()
        scp.wait(10)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--workers", default="1,2", help="comma list of [dimse] workers values")
    ap.add_argument("--scratch", type=Path, default=None)
    args = ap.parse_args()
    work = args.scratch or Path(tempfile.mkdtemp(prefix="dv-tls-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    pki = make_pki(work / "pki")
    series = work / "series"
    series.mkdir(exist_ok=True)
    files = []
    for i, raw in enumerate(ct_series(SeriesSpec(slices=args.slices, seed=3))):
        f = series / f"{i:05d}.dcm"
        f.write_bytes(raw)
        files.append(f)
    study_uid = str(pydicom.dcmread(files[0], stop_before_pixels=True).StudyInstanceUID)
    mb = sum(f.stat().st_size for f in files) / 1e6
    dirs = split_files(files, work / "split", 4)
    log(f"{len(files)} files, {mb:.0f} MB")
    # (workers, what, mode) -> MB/s per repeat; workers 0 is the no-op ceiling
    res: dict[tuple[int, str, str], list[float]] = {}

    # The machine's ceiling for the same clients: dcmtk storescp --fork --ignore (one process per
    # association, nothing stored), plain and TLS.
    for _ in range(args.repeats):
        for mode in ("plain", "tls"):
            res.setdefault((0, "ingest", mode), []).append(mb / ceiling_run(work, pki, dirs, mode))
    ceiling = {mode: statistics.median(res[(0, "ingest", mode)]) for mode in ("plain", "tls")}
    log(f"no-op ceiling (storescp --fork --ignore): plain {ceiling['plain']:.0f} MB/s, "
        f"TLS {ceiling['tls']:.0f} MB/s")
    plain_dest = start_storescp(work, "PLAINSCP", log_name="storescp-plain.log")
    tls_dest = start_storescp(work, "TLSSCP", extra=dcmtk_tls_args(pki, "peer"),
                              log_name="storescp-tls.log")
    peers = {"PLAINSCP": (plain_dest.port, False), "TLSSCP": (tls_dest.port, True)}
    try:
        for rep in range(args.repeats):
            for mode in ("plain", "tls") if rep % 2 == 0 else ("tls", "plain"):
                logs = work / f"logs-ceiling-move-{mode}-{rep}"
                logs.mkdir(exist_ok=True)
                dest_ae = "TLSSCP" if mode == "tls" else "PLAINSCP"
                port = (tls_dest if mode == "tls" else plain_dest).port
                extra = dcmtk_tls_args(pki, "client") if mode == "tls" else []
                run = storescu_parallel(dest_ae, port, [series], logs, extra=extra)
                if run.errors:
                    raise SystemExit(f"storescu to the C-MOVE destination failed ({mode}):\n{run.errors[0]}")
                res.setdefault((0, "C-MOVE", mode), []).append(mb / run.seconds)
        log(f"C-MOVE ceiling (one storescu to the same storescp): plain "
            f"{statistics.median(res[(0, 'C-MOVE', 'plain')]):.0f} MB/s, "
            f"TLS {statistics.median(res[(0, 'C-MOVE', 'tls')]):.0f} MB/s")
        for workers in (int(w) for w in args.workers.split(",")):
            for rep in range(args.repeats):
                for mode in ("plain", "tls") if rep % 2 == 0 else ("tls", "plain"):
                    tls_port = free_port()
                    cfg = write_config(work / f"dv-{workers}.toml", pki, tls_port, workers, peers)
                    srv = start_serve(work / "data", config=cfg)
                    try:
                        port = tls_port if mode == "tls" else srv.port
                        extra = dcmtk_tls_args(pki, "client") if mode == "tls" else []
                        if mode == "tls":
                            time.sleep(0.5)  # the receivers' TLS acceptors start with them
                        logs = work / f"logs-{workers}-{mode}-{rep}"
                        logs.mkdir(exist_ok=True)
                        run = storescu_parallel(AE, port, dirs, logs, extra=extra)
                        if run.errors:
                            raise SystemExit(f"storescu failed ({mode}, workers {workers}):\n{run.errors[0]}")
                        res.setdefault((workers, "ingest", mode), []).append(mb / run.seconds)
                        dest = tls_dest if mode == "tls" else plain_dest
                        mv = movescu_study(AE, srv.port, study_uid, dest, logs)
                        if mv.objects != len(files):
                            raise SystemExit(f"C-MOVE {mode}: {mv.objects} of {len(files)} objects:\n"
                                             f"{mv.log_tail}")
                        res.setdefault((workers, "C-MOVE", mode), []).append(mb / mv.seconds)
                        log(f"workers {workers} {mode:5} repeat {rep}: ingest {mb / run.seconds:6.0f} MB/s, "
                            f"C-MOVE {mb / mv.seconds:6.0f} MB/s")
                    finally:
                        srv.stop(30)
    finally:
        plain_dest.stop()
        tls_dest.stop()
    print(f"DICOM TLS vs plain, {len(files)} CT slices ({mb:.0f} MB), medians of {args.repeats}\n")
    print("| workers | transfer | plain MB/s | TLS MB/s | TLS / plain | TLS / the ceiling's TLS |")
    print("| --- | --- | --- | --- | --- | --- |")
    for workers in (0, *(int(w) for w in args.workers.split(","))):
        for what in ("ingest", "C-MOVE"):
            p = statistics.median(res[(workers, what, "plain")])
            t = statistics.median(res[(workers, what, "tls")])
            ceiling_tls = statistics.median(res[(0, what, "tls")])
            who = str(workers) if workers else {
                "ingest": "no-op ceiling (4 storescu to storescp --fork --ignore)",
                "C-MOVE": "C-MOVE ceiling (1 storescu to the C-MOVE's storescp --ignore)",
            }[what]
            print(f"| {who} | {what} | {p:.0f} | {t:.0f} | {t / p:.2f} | {t / ceiling_tls:.2f} |")
    if args.scratch is None:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
