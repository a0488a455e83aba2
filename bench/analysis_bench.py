"""Analysis on ingest: does it slow ingest down, and how long does each analyzer take per CT?

    .venv/bin/python bench/analysis_bench.py [--slices 300] [--studies 4] [--associations 4]
        [--repeats 2] [--quiet 0.5] [--analyzers FILE] [--no-sample] [--quick]

Workload: `--studies` synthetic CTs of `--slices` 512x512 16-bit slices (dicomvault.bench.synth),
or with `--phantom` the chest phantom of tests/analysis/phantoms.py (lungs of known volume and
emphysema, trachea, vessels: what the ct-chest analyzer segments), written as Part-10 files before
any clock starts.

- Ingest, analysis off and on in the same run: a fresh `dicomvault serve` per mode; the studies
  are sent one after the other, each by `--associations` dcmtk storescu processes at once.
  With analysis on (quiet time `--quiet` seconds), the analysis of one study runs while the next
  one arrives: that is the contention measured. The rate is instances over the summed send times;
  the table gives both and on / off.
- Analysis time per CT, for each analyzer instance configured: from the jobs' records (wall time
  of the attempt: worker start, reading and decoding the series, run(), writing and storing the
  result), while ingest ran, then once more with the machine otherwise idle (a retry of the first
  study's job), with the worker's own split: load (import and make the analyzer), read (the
  series' bytes out of the archive and parsed by pydicom; pixel data is decoded lazily, so inside
  run), run, write (the result objects as files), store (checked, stored, recorded).

Analyzers: every entry point of the group `dicomvault.analyzers` the venv holds (the built-ins,
as `serve` runs them), plus the sample analyzer of the tests (`mean`: the mean value over every
pixel and a key image; `--no-sample` leaves it out), plus the `[analysis.analyzers.*]` tables of
`--analyzers FILE` (appended to the server's configuration as they are).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from dicomvault.bench.dimse import ServeProcess, split_files, start_serve, storescu_parallel
from dicomvault.bench.synth import SeriesSpec, ct_series

AE = "DICOMVAULT"
ROOT = Path(__file__).resolve().parents[1]
SAMPLE = '[analysis.analyzers.mean]\nclass = "tests.analysis.sample_analyzers:MeanValue"\nkey_image = true\n'


def phantom_series(slices: int, seed: int) -> list[bytes]:
    """One chest phantom CT (300 mm of chest over `slices` slices of 512 x 512 at 0.625 mm), each
    slice as Part-10 bytes."""
    import io

    sys.path.insert(0, str(ROOT / "tests" / "analysis"))
    from phantoms import chest_phantom, study_attributes
    from phantoms import ct_series as phantom_ct

    study = study_attributes(patient_id=f"BENCH{seed:03d}")
    ph = chest_phantom(shape=(slices, 512, 512), spacing=(300.0 / slices, 0.625, 0.625), seed=seed,
                       with_datasets=False)
    out = []
    for ds in phantom_ct(ph.hu, ph.spacing, study=study):
        buf = io.BytesIO()
        ds.save_as(buf, enforce_file_format=True)
        out.append(buf.getvalue())
    return out


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def api(data: Path, method: str, path: str) -> Any:
    info = json.loads((data / "http.json").read_text())
    req = urllib.request.Request(info["url"] + path, method=method,
                                 headers={"Authorization": f"Bearer {info['admin_token']}"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read() or b"null")


def write_config(path: Path, on: bool, quiet: float, tables: str) -> Path:
    on_text = f"enabled = true\nquiet_seconds = {quiet}\n\n{tables}"
    text = "[analysis]\n" + (on_text if on else "enabled = false\n")
    path.write_text(text)
    return path


def analysis_jobs(data: Path) -> list[dict[str, Any]]:
    return [api(data, "GET", f"/api/jobs/{j['id']}")
            for j in api(data, "GET", "/api/jobs?kind=analysis&limit=100000")]


def wait_idle(data: Path, timeout: float) -> list[dict[str, Any]]:
    """The jobs, once no series is pending and no job is queued or running (twice in a row)."""
    deadline = time.monotonic() + timeout
    calm = 0
    while calm < 2:
        st = api(data, "GET", "/api/analysis/status")
        busy = st["pending_series"] + st["counts"]["queued"] + st["counts"]["running"]
        calm = calm + 1 if busy == 0 else 0
        if time.monotonic() > deadline:
            raise SystemExit(f"analysis not finished after {timeout} s: {st}")
        time.sleep(0.5)
    return analysis_jobs(data)


def send_studies(srv: ServeProcess, studies: list[list[Path]], logs: Path) -> tuple[int, float]:
    objects, seconds = 0, 0.0
    for i, dirs in enumerate(studies):
        d = logs / f"study-{i}"
        d.mkdir(parents=True, exist_ok=True)
        run = storescu_parallel(AE, srv.port, dirs, d)
        if run.errors or run.failed:
            raise SystemExit(f"storescu failed: {run.errors[:1]} ({run.failed} failed)")
        objects += run.objects
        seconds += run.seconds
        log(f"  study {i}: {run.objects} instances in {run.seconds:.2f} s "
            f"({run.objects / run.seconds:.0f}/s)")
    return objects, seconds


def wait_for_analysis(srv: ServeProcess, quiet: float) -> list[dict[str, Any]]:
    status = api(srv.data, "GET", "/api/analysis/status")
    if not status["enabled"]:
        log("  analysis does not run: no analyzer enabled")
        return []
    log(f"  waiting for the jobs of {', '.join(status['analyzers'])}")
    time.sleep(quiet + 1)  # the last series becomes pending, then complete
    return wait_idle(srv.data, 3600)


def idle_rerun(srv: ServeProcess, jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first study's jobs once more, one at a time, nothing else running."""
    out = []
    for j in [j for j in jobs if j["study_uid"] == jobs[-1]["study_uid"]]:
        api(srv.data, "POST", f"/api/jobs/{j['id']}/retry")
        deadline = time.monotonic() + 3600
        while (again := api(srv.data, "GET", f"/api/jobs/{j['id']}"))["runs"] < j["runs"] + 1:
            if again["state"] == "failed" or time.monotonic() > deadline:
                raise SystemExit(f"idle rerun of job {j['id']} failed: {again['last_error']}")
            time.sleep(0.2)
        out.append(again)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--slices", type=int, default=300)
    ap.add_argument("--studies", type=int, default=4, help="studies sent per mode")
    ap.add_argument("--associations", type=int, default=4)
    ap.add_argument("--repeats", type=int, default=2, help="off/on pairs, the order alternating")
    # short, so that each study's analysis runs while the next ones arrive (the contention measured)
    ap.add_argument("--quiet", type=float, default=0.5, help="[analysis] quiet_seconds")
    ap.add_argument("--analyzers", type=Path, help="a TOML file of [analysis.analyzers.NAME] tables")
    ap.add_argument("--no-sample", action="store_true", help="leave the tests' sample analyzer out")
    ap.add_argument("--quick", action="store_true", help="2 studies of 100 slices")
    ap.add_argument("--phantom", action="store_true",
                    help="chest phantoms with lungs (tests/analysis/phantoms.py), not synthetic noise CTs")
    ap.add_argument("--scratch", type=Path)
    args = ap.parse_args()
    if args.quick:
        args.slices, args.studies, args.repeats = 100, 2, 1
    tables = ("" if args.no_sample else SAMPLE) + (args.analyzers.read_text() if args.analyzers else "")
    work = args.scratch or Path(tempfile.mkdtemp(prefix="dv-analysis-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    # the sample analyzer is the tests' (tests/analysis/sample_analyzers.py): the repository on the path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH"))
                                                       if p)}
    studies: list[list[Path]] = []
    mb = 0.0
    for s in range(args.studies):
        folder = work / f"series-{s}"
        folder.mkdir(exist_ok=True)
        files = []
        series = phantom_series(args.slices, s) if args.phantom else ct_series(
            SeriesSpec(slices=args.slices, seed=100 + s, patient_id=f"BENCH{s:03d}"))
        for i, raw in enumerate(series):
            f = folder / f"{i:05d}.dcm"
            f.write_bytes(raw)
            files.append(f)
        mb += sum(f.stat().st_size for f in files) / 1e6
        studies.append(split_files(files, work / f"split-{s}", args.associations))
    log(f"{args.studies} studies x {args.slices} slices, {mb:.0f} MB")

    rates: dict[str, list[float]] = {"off": [], "on": []}
    jobs: list[dict[str, Any]] = []
    idle: list[dict[str, Any]] = []
    for rep in range(args.repeats):
        for mode in ("off", "on") if rep % 2 == 0 else ("on", "off"):
            cfg = write_config(work / f"dv-{mode}.toml", mode == "on", args.quiet, tables)
            srv = start_serve(work / f"data-{mode}", config=cfg, env=env)
            try:
                log(f"repeat {rep}, analysis {mode}:")
                objects, seconds = send_studies(srv, studies, work / f"logs-{mode}-{rep}")
                rates[mode].append(objects / seconds)
                if mode == "on":
                    run_jobs = wait_for_analysis(srv, args.quiet)
                    jobs += run_jobs
                    if not idle and run_jobs:
                        idle = idle_rerun(srv, run_jobs)
            finally:
                srv.stop(120)
    rate = {mode: statistics.median(r) for mode, r in rates.items()}
    ratio = rate["on"] / rate["off"]
    print(f"\nAnalysis on ingest: {args.studies} CT studies x {args.slices} slices ({mb:.0f} MB), "
          f"{args.associations} storescu associations each, quiet time {args.quiet:g} s; median of "
          f"{args.repeats} repeats (order alternating)\n")
    print("| analysis | ingest inst/s | on / off |")
    print("| --- | --- | --- |")
    print(f"| off | {rate['off']:.0f} | |")
    print(f"| on | {rate['on']:.0f} | {ratio:.2f} |")
    pairs = [on / off for on, off in zip(rates["on"], rates["off"], strict=True)]
    spread = ", ".join(f"{p:.2f}" for p in pairs)
    print(f"\non / off per repeat: {spread} (the spread is this machine's noise)")
    print(f"\nAnalysis time per {args.slices}-slice CT (seconds; median over the studies of the runs with "
          "analysis on, then one rerun with nothing else running)\n")
    print("| analyzer | state | in the runs | idle | load | read | run | write | store |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name in sorted({j["analyzer"] for j in jobs}):
        mine = [j for j in jobs if j["analyzer"] == name]
        states = ",".join(sorted({j["state"] for j in mine}))
        during = statistics.median(j["seconds"] or 0 for j in mine)
        quiet = next((j for j in idle if j["analyzer"] == name), None)
        t = quiet["timings"] if quiet else {}
        cells = [f"{t.get(k, 0):.2f}" for k in ("load", "read", "run", "write", "store")]
        idle_s = f"{quiet['seconds']:.2f}" if quiet else "-"
        print(f"| {name} | {states} | {during:.2f} | {idle_s} | {' | '.join(cells)} |")
    failed = [j for j in jobs if j["state"] == "failed"]
    for j in failed:
        print(f"\njob {j['id']} ({j['analyzer']}) failed: {j['last_error']}")
    if args.scratch is None:
        shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
