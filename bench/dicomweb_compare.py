"""`make bench-dicomweb`: dicomvault's DICOMweb and Orthanc 1.10 with its DICOMweb plugin (Debian
orthanc-dicomweb 1.7) side by side, in one run, on the same machine, disk and data.

    .venv/bin/python bench/dicomweb_compare.py            # 100k-instance index, < 15 minutes
    .venv/bin/python bench/dicomweb_compare.py --quick    # 5k-instance index, < 2 minutes

Figures (each measured on both servers in the same run, requests interleaved, medians):
1. QIDO-RS study search p50/p95 at N instances: PatientID exact, PatientName wildcard, StudyDate
   one-week range (the query shapes of bench/dimse_compare.py's C-FIND, over the same synthetic
   index: 10 instances per study, 2 studies per patient, 8x8 secondary captures).
2. Series metadata (`/studies/{s}/series/{se}/metadata`) of a 1,000-instance CT series with a
   realistic header and 16x16 pixels: the first request after the server started (cold), then p50
   of warm repeats.
3. WADO-RS study retrieve (`transfer-syntax=*`, multipart/related) of a real-size CT study
   (512x512 16-bit slices): MB/s of the body, median of 3 per server.
4. STOW-RS instances/s, 4 concurrent clients, one instance per request (what a modality gateway
   sends), CT slices of fresh studies; two rounds, the servers' order swapped in the second.
5. `/rendered` (image/jpeg) p50 of a 512x512 CT instance.

Loading: ours by `dicomvault ingest` of the generated files before `serve` starts (the data
directory has one writer); Orthanc by dcmtk storescu over 4 associations (the index within a time
budget, as bench/dimse_compare.py). Timing clients: httpx with keep-alive, one connection per
server (dicomweb-client's parsing would dominate the figures); study retrieves with curl, since a
Python client cannot read faster than either server sends. Generated input is cached under
--scratch; servers are stopped and the run's work directory removed even on failure.
If `dicomvault serve` does not come up, Orthanc's figures are still measured and ours are "-".
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import io
import os
import random
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import dimse_compare as dc
import httpx
import orjson

from dicomvault.bench.dimse import dicomvault_command
from dicomvault.bench.orthanc import Orthanc, free_port, start_orthanc
from dicomvault.bench.procs import terminate
from dicomvault.bench.synth import SeriesSpec, ct_series

ROOT = Path(__file__).resolve().parent
DV, ORTHANC = "dicomvault", "Orthanc-dicomweb"
NOOP = "no-op STOW server"
QIDO_KINDS = dc.QUERY_KINDS
DICOM_MULTIPART = 'multipart/related; type="application/dicom"'
SECTION = "## DICOMweb: dicomvault vs Orthanc-dicomweb"


def log(msg: str) -> None:
    dc.log(msg)


# -- arithmetic and tables (unit-tested in tests/bench/test_dicomweb_compare.py) --------------------

def p50_p95(samples_s: Sequence[float]) -> tuple[float | None, float | None]:
    """(p50, p95) in ms by nearest rank; (None, None) without samples."""
    if not samples_s:
        return None, None
    ms = sorted(x * 1e3 for x in samples_s)
    rank = max(0, min(len(ms) - 1, -(-95 * len(ms) // 100) - 1))
    return statistics.median(ms), ms[rank]


def better(dv: float | None, other: float | None, higher_is_better: bool) -> float | None:
    """How many times better dicomvault is: dv/other for throughput, other/dv for latency."""
    if not dv or not other:
        return None
    return dv / other if higher_is_better else other / dv


def fmt(x: float | None, digits: int = 2) -> str:
    if x is None:
        return "-"
    return f"{x:,.{digits}f}"


@dataclass
class Figure:
    """One table row: a name, both servers' values, and which direction is better."""

    name: str
    dv: float | None
    orthanc: float | None
    higher_is_better: bool
    target: str = ""
    digits: int = 2

    def cells(self) -> list[str]:
        r = better(self.dv, self.orthanc, self.higher_is_better)
        return [self.name, fmt(self.dv, self.digits), fmt(self.orthanc, self.digits),
                f"{r:.2f}x" if r is not None else "-", self.target or "-"]


HEADER = ["figure", DV, ORTHANC, "dicomvault vs Orthanc", "issue 10 target"]


def markdown_table(figures: Iterable[Figure]) -> str:
    rows = [HEADER, ["---"] * len(HEADER), *(f.cells() for f in figures)]
    return "\n".join("| " + " | ".join(r) + " |" for r in rows)


def replace_section(text: str, heading: str, body: str) -> str:
    """`text` with the section that starts at `heading` (up to the next heading of the same level)
    replaced by `heading` + `body`, or with it appended when there is none."""
    level = heading.split(" ", 1)[0]
    block = f"{heading}\n\n{body.strip()}\n"
    start = text.find(heading + "\n")
    if start < 0:
        return text.rstrip() + "\n\n" + block if text.strip() else block
    nxt = re.search(rf"^{re.escape(level)} ", text[start + len(heading):], flags=re.M)
    end = start + len(heading) + nxt.start() if nxt else len(text)
    rest = text[end:]
    return text[:start] + block + ("\n" + rest if rest else "")


def multipart_related(parts: Sequence[bytes], boundary: str, media: str = "application/dicom"
                      ) -> tuple[bytes, str]:
    """(body, Content-Type) of a multipart/related message of `parts` (RFC 2387, PS3.18 8.7.1)."""
    chunks = []
    for p in parts:
        chunks += [f"--{boundary}\r\nContent-Type: {media}\r\n\r\n".encode(), p, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="{media}"; boundary={boundary}'


def interleaved(names: Sequence[str], n: int) -> list[tuple[int, str]]:
    """(round, server) pairs: every round visits every server, the order rotated each round so
    neither always goes first (warm caches, a noisy neighbour's burst)."""
    out = []
    for i in range(n):
        k = i % len(names)
        out += [(i, s) for s in (*names[k:], *names[:k])]
    return out


def query_string(params: dict[str, str]) -> str:
    """"?k=v&..." with wildcards, ranges and lists left literal: Orthanc 1.10's plugin does not
    decode %2A, so a percent-encoded "ABC*" would match nothing there and time an empty answer."""
    if not params:
        return ""
    return "?" + "&".join(f"{quote(k)}={quote(v, safe='*?,-^')}" for k, v in params.items())


def mb_per_s(n_bytes: int, seconds: float) -> float | None:
    return n_bytes / 1e6 / seconds if seconds > 0 else None


# -- servers --------------------------------------------------------------------------------------

@dataclass
class Server:
    name: str
    root: str  # DICOMweb root URL, no trailing slash
    stop: Callable[[], None]
    http: httpx.Client = field(init=False)

    def __post_init__(self) -> None:
        self.http = httpx.Client(timeout=300, limits=httpx.Limits(max_keepalive_connections=8))

    def get(self, path: str, accept: str = "application/dicom+json", **params: str) -> httpx.Response:
        r = self.http.get(self.root + path + query_string(params), headers={"Accept": accept})
        if r.status_code != 200:
            raise RuntimeError(f"{self.name} GET {path} {params} -> {r.status_code}: {r.text[:300]}")
        return r


def start_dv_serve(data: Path, log_path: Path, timeout: float = 60) -> Server:
    """`dicomvault serve` on `data` (already ingested), HTTP on a free port; returns once its
    "dicomvault serving HTTP <url> ..." line is out."""
    cmd = [*dicomvault_command(), "serve", "--data", str(data), "--dimse-port", str(free_port()),
           "--accept-unknown-callers",
           "--http-port", str(free_port())]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        m = re.search(r"dicomvault serving HTTP (\S+)", log_path.read_text(errors="replace"))
        if m:
            return Server(DV, m.group(1).rstrip("/") + "/dicom-web", lambda: _stop(proc))
        if proc.poll() is not None:
            break
        time.sleep(0.1)
    _stop(proc)
    raise RuntimeError(f"dicomvault serve did not start: {log_path.read_text(errors='replace')[-1500:]}")


def start_noop_stow(log_path: Path, timeout: float = 30) -> Server:
    """bench/noop_stow.py on uvicorn: reads STOW bodies, stores nothing (the clients' ceiling)."""
    port = free_port()
    cmd = [sys.executable, "-m", "uvicorn", "--app-dir", str(ROOT), "noop_stow:app", "--port", str(port),
           "--loop", "uvloop", "--http", "httptools", "--log-level", "warning", "--no-access-log"]
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
    root = f"http://127.0.0.1:{port}/dicom-web"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            httpx.post(root + "/studies", content=b"", timeout=2)
            return Server(NOOP, root, lambda: _stop(proc))
        except httpx.HTTPError:
            if proc.poll() is not None:
                break
            time.sleep(0.1)
    _stop(proc)
    raise RuntimeError(f"the no-op STOW server did not start: {log_path.read_text(errors='replace')[-800:]}")


def native_read_ceiling(data: Path, study: str, reps: int = 3) -> float | None:
    """MB/s of reading the study's objects natively (decode + BLAKE3 verify, GIL released) on two
    threads, read-only beside the running server: what any retrieve of this stored study costs
    before a byte reaches the network."""
    from concurrent.futures import ThreadPoolExecutor

    from dicomvault.engine import Engine

    with Engine(data, read_only=True) as eng, ThreadPoolExecutor(2) as pool:
        recs = eng.index.instances_of("study", study)
        list(pool.map(eng.read_record, recs))
        best = None
        for _ in range(reps):
            t0 = time.perf_counter()
            n = sum(len(ds) for _, ds in pool.map(eng.read_record, recs))
            rate = mb_per_s(n, time.perf_counter() - t0)
            best = rate if best is None or (rate or 0) > best else best
        return best


def _stop(proc: subprocess.Popen[bytes]) -> None:
    terminate(proc, 60)


def start_orthanc_server(root: Path) -> tuple[Server, Orthanc]:
    # HttpThreadsCount 4: the STOW round's 4 clients each get a thread (the bench's default tuning
    # otherwise, see orthanc_config).
    orth = start_orthanc(root, dicomweb=True, threads=4, extra={"HttpThreadsCount": 4})
    return Server(ORTHANC, orth.dicomweb_url, lambda: orth.stop(120)), orth


# -- inputs ---------------------------------------------------------------------------------------

@dataclass
class Inputs:
    index_dirs: list[list[Path]]  # chunks of the QIDO index, 4 shard folders each
    n_index: int
    series_dir: Path  # the 1,000-instance series
    series_uids: tuple[str, str]  # (study, series)
    study_dir: Path  # the real-size CT study
    study_uid: str
    study_bytes: int
    render_uids: tuple[str, str, str]
    stow: list[list[bytes]]  # per STOW client, the Part-10 files it sends


def _series(folder: Path, spec: SeriesSpec) -> tuple[Path, tuple[str, str, str], int]:
    """The series as files (cached); (folder, (study, series, a middle SOP UID), bytes)."""
    marker = folder.parent / f"{folder.name}.done"
    if not marker.exists():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        for i, data in enumerate(ct_series(spec)):
            (folder / f"{i:05d}.dcm").write_bytes(data)
        marker.touch()
    files = sorted(folder.glob("*.dcm"))
    from pydicom import dcmread
    mid = dcmread(files[len(files) // 2], stop_before_pixels=True)
    return folder, (str(mid.StudyInstanceUID), str(mid.SeriesInstanceUID), str(mid.SOPInstanceUID)), \
        sum(f.stat().st_size for f in files)


def make_inputs(scratch: Path, n_index: int, series_n: int, study_slices: int, stow_each: int) -> Inputs:
    t0 = time.monotonic()
    chunk = min(10_000, n_index)
    starts = list(range(0, n_index, chunk))
    # pydicom writes ~400 tiny files/s per core: 100k take minutes on one, so every core writes
    # chunks (cached for later runs)
    with ProcessPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        dirs = list(pool.map(dc.tiny_chunk, [scratch / "tiny"] * len(starts), starts,
                             [min(chunk, n_index - s) for s in starts]))
    log(f"index input: {n_index} tiny instances ({time.monotonic() - t0:.0f} s)")
    sdir, (s_study, s_series, _), _ = _series(
        scratch / f"series-{series_n}", SeriesSpec(slices=series_n, rows=16, columns=16, seed=9001,
                                                    patient_id="BENCHMETA"))
    cdir, render, study_bytes = _series(
        scratch / f"ct-{study_slices}", SeriesSpec(slices=study_slices, seed=9002, patient_id="BENCHWADO"))
    stow = [list(ct_series(SeriesSpec(slices=stow_each, seed=9100 + k, patient_id=f"BENCHSTOW{k}")))
            for k in range(8)]  # 4 clients x 2 rounds, each round's studies new to both servers
    log(f"inputs ready ({time.monotonic() - t0:.0f} s)")
    return Inputs(dirs, n_index, sdir, (s_study, s_series), cdir, render[0], study_bytes, render, stow)


def load_dicomvault(data: Path, inp: Inputs, log_dir: Path) -> float:
    """`dicomvault ingest` of everything (the server is not running yet); seconds."""
    t0 = time.monotonic()
    paths = [str(d) for dirs in inp.index_dirs for d in dirs] + [str(inp.series_dir), str(inp.study_dir)]
    r = subprocess.run([*dicomvault_command(), "ingest", "--data", str(data), *paths],
                       capture_output=True, text=True, check=False)
    (log_dir / "dv-ingest.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"dicomvault ingest exited {r.returncode}: {(r.stdout + r.stderr)[-1500:]}")
    return time.monotonic() - t0


def load_orthanc(orth: Orthanc, inp: Inputs, budget: float) -> int:
    """The series and study by storescu, then the index within `budget` seconds; instances held."""
    dc.storescu("ORTHANC", orth.dicom_port, [inp.series_dir])
    dc.storescu("ORTHANC", orth.dicom_port, [inp.study_dir])
    sent, spent = 0, 0.0
    for dirs in inp.index_dirs:
        n = sum(1 for d in dirs for _ in d.glob("*.dcm"))
        if sent and spent + spent / sent * n > budget:
            log(f"  Orthanc: index stops at {sent} instances, the next {n} would pass {budget:.0f} s")
            break
        secs = dc.storescu("ORTHANC", orth.dicom_port, dirs)
        spent, sent = spent + secs, sent + n
        log(f"  Orthanc index: {sent} instances, {n / secs:.0f} inst/s")
    return sent


# -- measurements ---------------------------------------------------------------------------------

class Failures:
    """Servers that failed a request in some round: they sit out the rest of that round (the
    other server is still measured) and the reason goes into the report's notes."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self._out: set[tuple[str, str]] = set()

    def call(self, what: str, name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        if (what, name) in self._out:
            return None
        try:
            return fn(*args, **kwargs)
        except (RuntimeError, httpx.HTTPError, OSError, ValueError) as exc:
            self._out.add((what, name))
            self.notes.append(f"{what}, {name}: {exc}"[:600])
            log(f"{what} FAILED on {name}: {exc}")
            return None

    def ok(self, what: str, name: str) -> bool:
        return (what, name) not in self._out

    def record(self, what: str, name: str, why: str) -> None:
        self.call(what, name, _raise, why)


def _raise(why: str) -> None:
    raise RuntimeError(why)


def _timed_get(srv: Server, path: str, accept: str = "application/dicom+json", **params: str) -> float:
    """Seconds of one GET, body read to the end; the answer must be of the media type asked for."""
    t0 = time.perf_counter()
    rsp = srv.get(path, accept, **params)
    _ = rsp.content
    secs = time.perf_counter() - t0
    ctype = rsp.headers.get("content-type", "")
    if not ctype.startswith(accept.split(";")[0]):
        raise RuntimeError(f"GET {path} answered {ctype!r} to Accept: {accept}")
    return secs


def _qido(srv: Server, params: dict[str, str]) -> tuple[float, int]:
    """(seconds, studies in the answer) of one /studies query."""
    t0 = time.perf_counter()
    rsp = srv.get("/studies", **params)
    body = rsp.content
    secs = time.perf_counter() - t0
    return secs, len(orjson.loads(body)) if body else 0


def qido_round(servers: dict[str, Server], n_queries: int, n_index: int, fail: Failures
               ) -> tuple[dict[str, dict[str, list[float]]], dict[str, dict[str, float]]]:
    """(kind -> server -> latencies s, kind -> server -> mean matches) of /studies queries; the
    same queries on both, interleaved. The matches show both answered the same question."""
    out: dict[str, dict[str, list[float]]] = {}
    hits: dict[str, dict[str, float]] = {}
    for kind in QIDO_KINDS:
        qs = dc.queries(kind, n_queries + 5, n_index)
        lat: dict[str, list[float]] = {s: [] for s in servers}
        found: dict[str, list[int]] = {s: [] for s in servers}
        for i, name in interleaved(list(servers), len(qs)):
            key, value = qs[i][0].split("=", 1)
            res = fail.call(f"QIDO-RS {kind}", name, _qido, servers[name],
                            {key: value, "includefield": "StudyDescription"})
            if res is not None and i >= 5:  # the first queries of each kind warm caches up
                lat[name].append(res[0])
                found[name].append(res[1])
        out[kind] = lat
        hits[kind] = {s: statistics.mean(v) for s, v in found.items() if v}
    return out, hits


def metadata_round(servers: dict[str, Server], uids: tuple[str, str], n: int, n_expected: int,
                   fail: Failures) -> dict[str, tuple[float, list[float], int]]:
    """server -> (cold s, warm latencies s, instances in the answer)."""
    path = f"/studies/{uids[0]}/series/{uids[1]}/metadata"
    what = "series metadata"
    res: dict[str, tuple[float, list[float], int]] = {}
    for name, srv in servers.items():
        t0 = time.perf_counter()
        rsp = fail.call(what, name, srv.get, path)
        doc = rsp.json() if rsp is not None else None
        if doc is not None:
            res[name] = (time.perf_counter() - t0, [], len(doc))
            if len(doc) != n_expected:
                fail.record(what, name, f"{len(doc)} instances in the answer, {n_expected} expected")
                del res[name]
    for _, name in interleaved(list(res), n):
        secs = fail.call(what, name, _timed_get, servers[name], path)
        if secs is not None:
            res[name][1].append(secs)
    return res


def _retrieve(srv: Server, study: str, at_least: int) -> int:
    """Bytes of one study retrieve, read by curl: a Python client reading 60 MB is itself the
    bottleneck (httpx held Orthanc to 775 MB/s where curl reads 1.35 GB/s from it)."""
    out = subprocess.run(
        ["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code} %{size_download}",
         "-H", "Accept: " + DICOM_MULTIPART + "; transfer-syntax=*", f"{srv.root}/studies/{study}"],
        capture_output=True, text=True, timeout=300)
    code, _, got = out.stdout.partition(" ")
    if out.returncode != 0 or code != "200":
        raise RuntimeError(f"study retrieve -> {code or out.returncode}: {out.stderr[:300]}")
    size = int(got)
    if size < at_least:
        raise RuntimeError(f"study retrieve gave {size} bytes, the study's files hold more than {at_least}")
    return size


def retrieve_round(servers: dict[str, Server], study: str, n: int, at_least: int, fail: Failures
                   ) -> dict[str, tuple[list[float], int]]:
    """server -> (seconds per study retrieve, body bytes)."""
    res: dict[str, tuple[list[float], int]] = {}
    for _, name in interleaved(list(servers), n):
        t0 = time.perf_counter()
        size = fail.call("WADO-RS retrieve", name, _retrieve, servers[name], study, at_least)
        if size is not None:
            secs = time.perf_counter() - t0
            res[name] = ([*res.get(name, ([], 0))[0], secs], size)
    return res


def stow_clients(srv: Server, batches: list[list[bytes]]) -> tuple[float, int, list[str]]:
    """len(batches) concurrent clients, each POSTing its files one per request;
    (wall s, instances stored, errors)."""
    stored = [0] * len(batches)
    errors: list[str] = []

    def client(k: int) -> None:
        with httpx.Client(timeout=300) as http:
            for data in batches[k]:
                body, ctype = multipart_related([data], uuid.uuid4().hex)
                try:
                    r = http.post(srv.root + "/studies", content=body, headers={
                        "Content-Type": ctype, "Accept": "application/dicom+json"})
                except httpx.HTTPError as exc:
                    errors.append(f"{type(exc).__name__}: {exc}")
                    return
                if r.status_code == 200:
                    stored[k] += 1
                else:
                    errors.append(f"HTTP {r.status_code}: {r.text[:200]}")

    threads = [threading.Thread(target=client, args=(k,)) for k in range(len(batches))]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, sum(stored), errors


def stow_round(servers: dict[str, Server], stow: list[list[bytes]], fail: Failures) -> dict[str, list[float]]:
    """Two rounds of 4 clients; round r sends stow[4r:4r+4] to every server, order swapped.
    A round with any failed request does not count (a rate of partial stores means nothing)."""
    rates: dict[str, list[float]] = {s: [] for s in servers}
    for rnd, name in interleaved(list(servers), 2):
        if not fail.ok("STOW-RS", name):
            continue
        secs, stored, errors = stow_clients(servers[name], stow[4 * rnd:4 * rnd + 4])
        if errors:
            fail.record("STOW-RS", name, f"{len(errors)} failed requests, first: {errors[0]}")
        else:
            rates[name].append(stored / secs)
    return rates


def _check_jpeg(srv: Server, path: str, size: tuple[int, int]) -> None:
    """The answer is a JPEG of the frame's full size (a cached thumbnail would time nothing)."""
    from PIL import Image

    img = Image.open(io.BytesIO(srv.get(path, accept="image/jpeg").content))
    if img.format != "JPEG" or img.size != size:
        raise RuntimeError(f"/rendered gave {img.format} {img.size}, expected JPEG {size}")


def rendered_round(servers: dict[str, Server], uids: tuple[str, str, str], n: int, fail: Failures
                   ) -> dict[str, list[float]]:
    path = f"/studies/{uids[0]}/series/{uids[1]}/instances/{uids[2]}/rendered"
    for name, srv in servers.items():
        fail.call("/rendered", name, _check_jpeg, srv, path, (512, 512))
    lat: dict[str, list[float]] = {s: [] for s in servers}
    for i, name in interleaved(list(servers), n + 2):
        secs = fail.call("/rendered", name, _timed_get, servers[name], path, "image/jpeg")
        if secs is not None and i >= 2:
            lat[name].append(secs)
    return lat


# -- the run --------------------------------------------------------------------------------------

def safe(what: str, fn: Callable[[], Any], notes: list[str]) -> Any:
    """fn(), or None with a note: one failing measurement must not cost the others."""
    try:
        return fn()
    except (RuntimeError, httpx.HTTPError, OSError, ValueError) as exc:
        notes.append(f"{what}: {exc}"[:600])
        log(f"{what} FAILED: {exc}")
        return None


def figures(r: dict[str, Any], n_index: int, n_orth: int) -> list[Figure]:
    f: list[Figure] = []
    for kind, lat in (r.get("qido") or {}).items():
        a, b = p50_p95(lat.get(DV, [])), p50_p95(lat.get(ORTHANC, []))
        target = "<= 5 ms, >= 20x" if n_index >= 100_000 else ""
        f.append(Figure(f"QIDO-RS /studies {kind}, p50 ms", a[0], b[0], False, target))
        f.append(Figure(f"QIDO-RS /studies {kind}, p95 ms", a[1], b[1], False))
    meta = r.get("metadata") or {}
    if meta:
        cold = {k: v[0] * 1e3 for k, v in meta.items()}
        warm = {k: p50_p95(v[1])[0] for k, v in meta.items()}
        f.append(Figure("series metadata (1,000 instances), cold first request ms", cold.get(DV),
                        cold.get(ORTHANC), False))
        f.append(Figure("series metadata (1,000 instances), warm p50 ms", warm.get(DV), warm.get(ORTHANC),
                        False, "<= 50 ms, >= 10x"))
    ret = r.get("retrieve") or {}
    if ret:
        speed = {k: mb_per_s(v[1], statistics.median(v[0])) for k, v in ret.items()}
        f.append(Figure("WADO-RS study retrieve, MB/s", speed.get(DV), speed.get(ORTHANC), True, ">= 1.5x"))
    if r.get("read_ceiling"):
        f.append(Figure("ceiling: native read of the stored study (decode + verify, 2 threads), MB/s",
                        r["read_ceiling"], speed.get(ORTHANC) if ret else None, True))
    stow = r.get("stow") or {}
    if stow:
        rate = {k: statistics.median(v) for k, v in stow.items() if v}
        f.append(Figure("STOW-RS, 4 clients, instances/s", rate.get(DV), rate.get(ORTHANC), True, ">= 2x", 1))
        if r.get("stow_ceiling"):
            f.append(Figure("ceiling: the same clients against a no-op server, instances/s",
                            statistics.median(r["stow_ceiling"]), rate.get(ORTHANC), True, "", 1))
    ren = r.get("rendered") or {}
    if ren:
        p = {k: p50_p95(v)[0] for k, v in ren.items()}
        f.append(Figure("/rendered 512x512 CT JPEG, p50 ms", p.get(DV), p.get(ORTHANC), False, "<= 15 ms"))
    return f


def report(args: argparse.Namespace, r: dict[str, Any], inp: Inputs, minutes: float) -> str:
    n_orth = r.get("n_orthanc", 0)
    lines = [
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} (UTC), `python bench/dicomweb_compare.py"
        f"{' --quick' if args.quick else ''}`, {minutes:.1f} minutes; load average at the end "
        f"{' / '.join(f'{x:.2f}' for x in os.getloadavg())}. Shared machine: read the ratios.",
        "",
        markdown_table(figures(r, inp.n_index, n_orth)),
        "",
        f"- Index: {inp.n_index:,} instances in dicomvault, {n_orth:,} in Orthanc (10 per study, 2 studies "
        f"per patient, 8x8 secondary captures; a smaller Orthanc index only flatters Orthanc); "
        f"{args.queries} queries per kind after 5 warm-up ones, `includefield=StudyDescription`, "
        "the two servers' requests interleaved; mean studies per answer "
        + "; ".join(f"{k}: " + " / ".join(f"{s} {v:.1f}" for s, v in h.items())
                    for k, h in (r.get("qido_hits") or {}).items()) + ".",
        f"- Series metadata: {r.get('series_n')} CT instances (realistic header, 16x16 pixels); cold = the "
        f"first request after the server started; warm = p50 of {args.meta_reps} repeats.",
        f"- WADO-RS: study of {args.study_slices} CT slices 512x512 16-bit ({inp.study_bytes / 1e6:.0f} MB "
        f"as files), `Accept: {DICOM_MULTIPART}; transfer-syntax=*`, body MB/s, median of "
        f"{args.retrieve_reps}; dicomvault stores it with its hot codec, Orthanc uncompressed.",
        f"- STOW-RS: 4 httpx clients, one instance per POST, {args.stow_each} CT slices each per round, "
        "2 rounds (order swapped), median instances/s; both store durably (Orthanc SyncStorageArea).",
        "- Ceilings (in the 'vs Orthanc' column: the ceiling over Orthanc's figure): the same 4 STOW "
        "clients against bench/noop_stow.py (the same HTTP stack, reading each body, storing "
        "nothing); the stored study read natively on 2 threads, read-only beside the server. "
        "1.5x Orthanc's retrieve or 2x its STOW rate is out of reach where it exceeds its ceiling.",
        "- /rendered: `Accept: image/jpeg` of the study's middle slice, p50 of "
        f"{args.render_reps} after 2 warm-up requests.",
        "- Orthanc 1.10.1 + DICOMweb plugin 1.7 configured by `python/dicomvault/bench/orthanc.py` "
        "(`dicomweb=True`: StudiesMetadata/SeriesMetadata Full, HttpThreadsCount 4).",
    ]
    lines += [f"- Note: {n}" for n in r.get("notes", [])]
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    t_start = time.monotonic()
    scratch: Path = args.scratch
    work = scratch / f"run-{os.getpid()}"
    work.mkdir(parents=True)
    inp = make_inputs(scratch, args.index, args.series, args.study_slices, args.stow_each)
    r: dict[str, Any] = {"notes": [], "series_n": args.series}
    notes: list[str] = r["notes"]
    servers: dict[str, Server] = {}
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        dv_data = work / "dv-data"
        ok = safe("dicomvault ingest", lambda: load_dicomvault(dv_data, inp, work), notes)
        if ok is not None:
            log(f"dicomvault: ingested in {ok:.0f} s")
            srv = safe("dicomvault serve", lambda: start_dv_serve(dv_data, work / "dv-serve.log"), notes)
            if srv is not None:
                servers[DV] = srv
                stack.callback(srv.stop)
        osrv, orth = start_orthanc_server(work / "orthanc")
        stack.callback(osrv.stop)
        servers[ORTHANC] = osrv
        budget = max(30.0, args.orthanc_budget - (time.monotonic() - t_start))
        r["n_orthanc"] = load_orthanc(orth, inp, budget)
        log(f"measuring: {', '.join(servers)}")
        fail = Failures()
        r["metadata"] = metadata_round(servers, inp.series_uids, args.meta_reps, args.series, fail)
        r["qido"], r["qido_hits"] = qido_round(servers, args.queries, min(inp.n_index, r["n_orthanc"]), fail)
        r["retrieve"] = retrieve_round(servers, inp.study_uid, args.retrieve_reps,
                                       int(0.9 * inp.study_bytes), fail)
        r["rendered"] = rendered_round(servers, inp.render_uids, args.render_reps, fail)
        r["stow"] = stow_round(servers, inp.stow, fail)
        noop = safe("no-op STOW server", lambda: start_noop_stow(work / "noop.log"), notes)
        if noop is not None:
            stack.callback(noop.stop)
            r["stow_ceiling"] = stow_round({NOOP: noop}, inp.stow, fail)[NOOP]
        if DV in servers:
            r["read_ceiling"] = safe("native read", lambda: native_read_ceiling(dv_data, inp.study_uid),
                                     notes)
        notes += fail.notes
        if DV in servers and any(n.startswith(("dicomvault", f"{DV}")) or f", {DV}:" in n for n in notes):
            keep = ROOT / ".results" / f"dicomweb-serve-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M}.log"
            keep.parent.mkdir(exist_ok=True)
            shutil.copy(work / "dv-serve.log", keep)
            notes.append(f"dicomvault's server log kept as {keep.relative_to(ROOT)}")
    text = report(args, r, inp, (time.monotonic() - t_start) / 60)
    publish(SECTION, text, "dicomweb", args.results)
    return 0


def publish(section: str, text: str, stem: str, results: Path | None) -> Path:
    """Prints a run's report, keeps it as bench/.results/<stem>-<time>.md and, with `results`,
    replaces its section of that file (RESULTS.md); the kept file's path."""
    print(section + "\n\n" + text)
    out = ROOT / ".results" / f"{stem}-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M}.md"
    out.parent.mkdir(exist_ok=True)
    out.write_text(section + "\n\n" + text + "\n")
    if results is not None:
        old = results.read_text() if results.exists() else ""
        results.write_text(replace_section(old, section, text))
        log(f"wrote {out} and the section '{section}' of {results}")
    return out


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true",
                    help="5k index, smaller study and fewer repeats (< 2 min)")
    ap.add_argument("--index", type=int, help="QIDO index size in instances (default 100000; quick 5000)")
    ap.add_argument("--queries", type=int, help="QIDO queries per kind (default 200; quick 50)")
    ap.add_argument("--series", type=int, default=1000, help="instances of the metadata series (%(default)s)")
    ap.add_argument("--study-slices", type=int,
                    help="CT slices of the retrieved study (default 150; quick 60)")
    ap.add_argument("--stow-each", type=int,
                    help="instances per STOW client per round (default 50; quick 15)")
    ap.add_argument("--orthanc-budget", type=float, default=480,
                    help="seconds Orthanc's index build may take, from the start of the run (%(default)s)")
    ap.add_argument("--scratch", type=Path, default=ROOT / ".scratch" / "dicomweb",
                    help="cached inputs and the run's work directory (default %(default)s)")
    ap.add_argument("--results", type=Path, default=ROOT / "RESULTS.md",
                    help="markdown file whose DICOMweb section is replaced (default %(default)s)")
    ap.add_argument("--no-results", dest="results", action="store_const", const=None,
                    help="print and keep bench/.results/ only")
    a = ap.parse_args(argv)
    q = a.quick
    a.index = a.index or (5_000 if q else 100_000)
    a.queries = a.queries or (50 if q else 200)
    a.study_slices = a.study_slices or (60 if q else 150)
    a.stow_each = a.stow_each or (15 if q else 50)
    a.meta_reps = 5 if q else 20
    a.retrieve_reps = 3
    a.render_reps = 20 if q else 50
    if q:
        a.orthanc_budget = min(a.orthanc_budget, 45)
    return a


def main(argv: Sequence[str] | None = None) -> int:
    random.seed(1)
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
