"""DIMSE side by side: dicomvault serve vs Orthanc 1.10, in one run, on the same disk.

1. Ingest: synthetic CT studies (512x512 16-bit slices) sent by dcmtk `storescu -pdu 131072`
   over 1 association and over 4 parallel associations (4 storescu processes, a quarter of the
   files each), to: Orthanc storing uncompressed, Orthanc with its zlib StorageCompression (the
   like-for-like: we store compressed too), and `dicomvault serve` (BLAKE3 + hot codec, durable);
   then to the machine's own ceiling, dcmtk `storescp --fork -pdu 131072 --ignore` (one process
   per association; receives every object and discards it: no disk write, no hash). On 2 cores
   the storescu clients share the CPUs with the server, so no archive can go faster than that
   no-op receiver fed by the same clients.
   Each (target, mode) starts from an empty store. Wall time = first storescu start to last exit.
2. C-FIND study level: an index of N instances in both systems, then 200 C-FINDs per query type
   (PatientID exact, PatientName wildcard, StudyDate range) sent by dcmtk's C++ `findscu`, one
   process (one association) per type, one query file per C-FIND; p50/p95 latency from findscu's
   log (request sent to final response, 1 us timestamps). `--pynetdicom-find` adds the same
   queries from this process's pynetdicom SCU as a secondary table.

    .venv/bin/python bench/dimse_compare.py            # full: 3 x 300 slices, 100k-instance index
    .venv/bin/python bench/dimse_compare.py --quick    # 1 x 100 slices, 5k index, < 3 minutes

Prints a markdown table and writes it to bench/.results/dimse-<date>.md. See bench/README.md.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import hashlib
import io
import itertools
import os
import random
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ComputedRadiographyImageStorage,
    CTImageStorage,
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)
from pynetdicom import build_context
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelFind

from dicomvault.analysis.settings import AnalysisSettings
from dicomvault.bench.dimse import (
    DCMTK_ENV,
    DV_AE,
    HOST,
    FindTiming,
    findscu_queries,
    landing_empty,
    start_serve,
    start_storescp,
    storescu_parallel,
    write_find_queries,
)
from dicomvault.bench.measure import latency_summary
from dicomvault.bench.orthanc import Orthanc, start_orthanc
from dicomvault.bench.procs import terminate, tree_cpu
from dicomvault.bench.synth import UID_ROOT, SeriesSpec, cr_image, ct_series
from dicomvault.dimse import scu
from dicomvault.engine import Engine
from dicomvault.web.dicomweb.metadata import MetadataCache, metadata_cache_path

ROOT = Path(__file__).resolve().parent
INSTANCES_PER_STUDY = 10  # index shape: 10 instances per study, 2 studies per patient
STUDIES_PER_PATIENT = 2


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- targets ---------------------------------------------------------------------------------------

@dataclass
class Target:
    name: str
    ae: str
    port: int
    stop: Callable[[], None]
    count: Callable[[], int]  # instances stored (for the no-op ceiling: received)
    root: Path | None = None  # its data directory (dicomvault) or storage directory (Orthanc)
    # Waits until the archive's background work after an ingest is done; the seconds it took.
    settle: Callable[[], float] = lambda: 0.0


IDLE_CPU = 0.05  # CPU seconds per second of the server's process tree below which it is idle
SETTLE_TIMEOUT = 900.0


def wait_idle(pid: int, done: Callable[[], bool] = lambda: True, timeout: float = SETTLE_TIMEOUT) -> float:
    """Seconds until `done()` holds and the process tree of `pid` used under IDLE_CPU per second
    in two one-second windows in a row (its background work after an ingest finished), at most
    `timeout` (then it says so and returns)."""
    t0 = time.monotonic()
    quiet = 0
    cpu = tree_cpu(pid)
    while time.monotonic() - t0 < timeout:
        time.sleep(1.0)
        now = tree_cpu(pid)
        quiet = quiet + 1 if now - cpu < IDLE_CPU and done() else 0
        cpu = now
        if quiet >= 2:
            return time.monotonic() - t0
    log(f"  pid {pid} still busy after {timeout:.0f} s; measuring anyway")
    return time.monotonic() - t0


def start_dicomvault(data: Path, fresh: bool = True, config: Path | None = None) -> Target:
    server = start_serve(data, ae=DV_AE, config=config, fresh=fresh)

    def stop() -> None:
        if server.stop() != 0:
            log(f"dicomvault serve exited {server.proc.returncode}; see {server.log_path}")

    def count() -> int:
        with Engine(data, read_only=True) as eng:
            return int(eng.stats()["objects"])

    def settle() -> float:
        # What follows a burst in `serve`: the compactor moves the landing tier to warm (the
        # hot codec: "compressed at rest"), the analysis pipeline runs on each new series once
        # it has been quiet for quiet_seconds (the default here), the metadata warmer fills its
        # cache. A study retrieved later (a prior, the next day's reading) is past all that, so
        # size and retrieve are measured once it is done.
        t0 = time.monotonic()
        time.sleep(AnalysisSettings().quiet_seconds + 2.0)
        return time.monotonic() - t0 + wait_idle(server.proc.pid, lambda: landing_empty(data))

    return Target("dicomvault", DV_AE, server.port, stop, count, data, settle)


def start_orthanc_target(root: Path, compression: bool,
                         modalities: dict[str, tuple[str, str, int]] | None = None) -> tuple[Target, Orthanc]:
    # DicomThreadsCount 4: one thread per parallel association (fewer would queue them);
    # ConcurrentJobs 2 = the cores. The rest of the tuning is in orthanc_config().
    orth = start_orthanc(root, compression=compression, threads=4, modalities=modalities)
    name = "Orthanc zlib" if compression else "Orthanc"

    def stop() -> None:
        orth.stop(120)

    def count() -> int:
        return int(orth.statistics()["CountInstances"])

    return (Target(name, "ORTHANC", orth.dicom_port, stop, count, root / "storage",
                   lambda: wait_idle(orth.proc.pid)), orth)


def start_ceiling(folder: Path) -> Target:
    """The machine's own ceiling for DIMSE receive: dcmtk `storescp --fork -pdu 131072 --ignore`
    with `TCP_NODELAY=1` on a free port (`dicomvault.bench.dimse.start_storescp`). It reads every
    object off the wire and discards it (no disk write, no hash, no index), so it bounds what any
    archive fed by the same storescu clients on this machine can reach. `--fork` gives each
    association its own process, as a multi-association archive receives them: dcmtk's default
    single-process mode serves parallel associations one after another and reports about half the
    4-association ceiling (issue 13). Its timestamped log (one line per object received, the forked
    children writing to the same file: `count` reads them) goes to `folder`/storescp.log, not the
    terminal. It has no option to bind 127.0.0.1 only, so it listens on every interface (the
    clients connect to 127.0.0.1)."""
    scp = start_storescp(folder, extra=("--fork",))

    def stop() -> None:
        rc = terminate(scp.proc, 10)
        if rc != -signal.SIGTERM:  # it should still have been running, until our SIGTERM
            log(f"{CEILING} exited {rc} before it was stopped; see {scp.log_path}")

    def count() -> int:
        return scp.log_text().count("Received Store Request")

    return Target(CEILING, scp.ae, scp.port, stop, count)


TARGETS = ("Orthanc", "Orthanc zlib", "dicomvault")  # the archives compared
CEILING = "storescp --fork --ignore (no-op ceiling)"  # measured after them, from the same clients


def start_target(which: str, store: Path, move_dest: tuple[str, int] | None = None) -> Target:
    """One of TARGETS (or CEILING) on an empty store under `store`; `move_dest` (AE, port on
    loopback) is made a known C-MOVE destination (not for CEILING, which serves no C-MOVE)."""
    if which == CEILING:
        return start_ceiling(store / "storescp")
    if which == "dicomvault":
        config = None
        if move_dest is not None:
            config = store.parent / f"{store.name}-dv.toml"
            config.write_text(f'[[peers]]\nae_title = "{move_dest[0]}"\nhost = "{HOST}"\n'
                              f"port = {move_dest[1]}\n")
        return start_dicomvault(store / "dv", config=config)
    mods = {move_dest[0]: (move_dest[0], HOST, move_dest[1])} if move_dest else None
    return start_orthanc_target(store / "orthanc", compression=which == "Orthanc zlib", modalities=mods)[0]


# -- ingest ----------------------------------------------------------------------------------------

def make_ct_input(folder: Path, studies: int, slices: int) -> list[Path]:
    """The studies as Part-10 files, written once and reused by later runs."""
    marker = folder.parent / f"{folder.name}.done"  # outside the folder: storescu scans it
    if not marker.exists():
        if folder.exists():
            shutil.rmtree(folder)
        for k in range(studies):
            d = folder / f"study{k}"
            d.mkdir(parents=True)
            spec = SeriesSpec(slices=slices, seed=k, patient_id=f"BENCH{k:04d}")
            for i, data in enumerate(ct_series(spec)):
                (d / f"{i:04d}.dcm").write_bytes(data)
            log(f"generated study {k + 1}/{studies} ({slices} slices)")
        marker.touch()
    return sorted(folder.glob("study*/*.dcm"))


SMALL_OBJECTS = 200  # the many-small-objects retrieve: a CR/DX-like study of ~100 KB images
SMALL_SIZE = 224  # 224 x 224 x 16 bit = 100 KB of pixels


def make_small_input(folder: Path, n: int = SMALL_OBJECTS) -> list[Path]:
    """One study of n small CR images (synth.cr_image, 16-bit), written once and reused."""
    marker = folder.parent / f"{folder.name}.done"
    if not marker.exists():
        if folder.exists():
            shutil.rmtree(folder)
        folder.mkdir(parents=True)
        rng = np.random.default_rng(11)
        study, series = generate_uid(), generate_uid()
        for i in range(n):
            ds = Dataset()
            ds.SOPClassUID = ComputedRadiographyImageStorage
            ds.SOPInstanceUID = generate_uid()
            ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
            ds.PatientID, ds.PatientName = "SMALL0001", "SMALL^OBJECTS"
            ds.PatientBirthDate = ds.PatientSex = ""
            ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20260101", "120000", "SMALL1", "1"
            ds.ReferringPhysicianName, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "", "CR", 1, i + 1
            ds.BodyPartExamined, ds.ViewPosition, ds.PatientOrientation = "CHEST", "PA", ""
            ds.Manufacturer = "dicomvault bench"
            ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
            ds.Rows = ds.Columns = SMALL_SIZE
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
            ds.PixelData = cr_image(SMALL_SIZE, SMALL_SIZE, rng).tobytes()
            ds.file_meta = FileMetaDataset()
            ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
            ds.save_as(folder / f"{i:04d}.dcm", enforce_file_format=True)
        log(f"generated the small-objects study ({n} CR images of {SMALL_SIZE}x{SMALL_SIZE})")
        marker.touch()
    return sorted(folder.glob("*.dcm"))


def quarters(files: list[Path], folder: Path, n: int = 4) -> list[Path]:
    """n folders of hard links, a contiguous share of the files each (so storescu +sd scans one)."""
    out = []
    per = -(-len(files) // n)
    for q in range(n):
        d = folder / f"q{q}"
        if d.exists():
            shutil.rmtree(d)
        d.mkdir(parents=True)
        for f in files[q * per:(q + 1) * per]:
            os.link(f, d / f"{f.parent.name}-{f.name}")
        out.append(d)
    return out


def storescu(ae: str, port: int, dirs: list[Path]) -> float:
    """Wall seconds from the first storescu start to the last exit (one process per folder)."""
    return storescu_run(ae, port, dirs)[0]


def storescu_run(ae: str, port: int, dirs: list[Path]) -> tuple[float, int]:
    """storescu() and how many of the storescu processes exited non-zero (errors logged)."""
    t0 = time.monotonic()
    procs = [subprocess.Popen(["storescu", "-aet", "STORESCU", "-aec", ae, "-pdu", "131072", "+sd", "+r",
                               HOST, str(port), str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              env=DCMTK_ENV)
             for d in dirs]
    errors = []
    for p in procs:
        _, err = p.communicate()
        if p.returncode != 0:
            errors.append(err.decode(errors="replace")[-500:])
    elapsed = time.monotonic() - t0
    if errors:
        log("storescu reported errors:\n" + "\n".join(errors))
    return elapsed, len(errors)


@dataclass
class IngestResult:
    target: str
    associations: int
    seconds: float
    instances: int
    stored: int
    mb: float
    latency_p50_ms: float | None = None  # per object, from storescu's log (ingest_into with log_dir)
    latency_p95_ms: float | None = None
    client_failures: int = 0  # storescu processes that exited non-zero

    @property
    def ips(self) -> float:
        return self.instances / self.seconds

    @property
    def mbps(self) -> float:
        return self.mb / self.seconds


def ingest_into(target: Target, files: list[Path], dirs: list[Path],
                log_dir: Path | None = None) -> IngestResult:
    """Sends `files` (laid out in `dirs`, one storescu each) to a running target. With `log_dir`,
    storescu logs timestamped lines there and the per-object latencies are parsed from them."""
    log(f"{target.name}: sending {len(files)} files over {len(dirs)} association(s)")
    p50 = p95 = None
    if log_dir is None:
        secs, failed = storescu_run(target.ae, target.port, dirs)
    else:
        log_dir.mkdir(parents=True, exist_ok=True)
        run = storescu_parallel(target.ae, target.port, dirs, log_dir)
        secs, failed = run.seconds, sum(1 for c in run.exit_codes if c != 0)
        if run.errors:
            log("storescu reported errors:\n" + "\n".join(run.errors))
        lat = latency_summary(run.latencies)
        p50, p95 = lat["p50"], lat["p95"]
    stored = target.count()
    r = IngestResult(target.name, len(dirs), secs, len(files), stored,
                     sum(f.stat().st_size for f in files) / 1e6, p50, p95, failed)
    what = "received" if target.name == CEILING else "stored"
    log(f"  {r.ips:.1f} inst/s, {r.mbps:.1f} MB/s, {stored} {what}")
    if stored != len(files):
        log(f"  WARNING: {target.name} {what} {stored} of {len(files)} instances")
    if failed:
        log(f"  WARNING: {failed} of {len(dirs)} storescu process(es) exited non-zero")
    return r


def run_ingest(files: list[Path], scratch: Path) -> list[IngestResult]:
    whole = [files[0].parent.parent]
    quarter_dirs = quarters(files, scratch / "quarters")
    results = []
    for which in (*TARGETS, CEILING):
        for dirs in (whole, quarter_dirs):
            store = scratch / "store"
            if store.exists():
                shutil.rmtree(store)
            target = start_target(which, store)
            try:
                results.append(ingest_into(target, files, dirs))
            finally:
                target.stop()
            shutil.rmtree(store, ignore_errors=True)
    return results


# -- C-FIND ----------------------------------------------------------------------------------------

def surnames(n: int = 2000) -> list[str]:
    rng = random.Random(7)
    letters = "ABCDEFGHIJKLMNOPRSTUVWYZ"
    names: dict[str, None] = {}
    while len(names) < n:
        names["".join(rng.choice(letters) for _ in range(7))] = None
    return list(names)


SURNAMES = surnames()
DATE0 = dt.date(2010, 1, 1)
DAYS = 16 * 365


def index_attrs(i: int) -> dict[str, str]:
    """Attributes of synthetic instance i (deterministic; the same in both systems)."""
    study = i // INSTANCES_PER_STUDY
    patient = study // STUDIES_PER_PATIENT
    rng = random.Random(study)
    return {
        "PatientID": f"P{patient:07d}",
        "PatientName": f"{SURNAMES[patient % len(SURNAMES)]}^{'ABCDEFGH'[patient % 8]}",
        "PatientBirthDate": "19600101",
        "PatientSex": "MF"[patient % 2],
        "StudyInstanceUID": f"{UID_ROOT}9.{study}",
        "SeriesInstanceUID": f"{UID_ROOT}9.{study}.1",
        "SOPInstanceUID": f"{UID_ROOT}9.{study}.1.{i % INSTANCES_PER_STUDY + 1}",
        "SOPClassUID": SecondaryCaptureImageStorage,
        "StudyDate": (DATE0 + dt.timedelta(days=rng.randrange(DAYS))).strftime("%Y%m%d"),
        "StudyTime": "120000",
        "AccessionNumber": f"A{study:08d}",
        "StudyDescription": "BENCH INDEX",
        "StudyID": "1",
        "Modality": "OT",
        "SeriesNumber": "1",
        "InstanceNumber": str(i % INSTANCES_PER_STUDY + 1),
    }


def tiny_file(i: int) -> bytes:
    """An 8x8 secondary capture of instance i: index attributes at the cost of no pixels."""
    a = index_attrs(i)
    ds = Dataset()
    for kw in ("SOPClassUID", "SOPInstanceUID", "StudyDate", "StudyTime", "AccessionNumber", "Modality",
               "StudyDescription", "PatientName", "PatientID", "PatientBirthDate", "PatientSex",
               "StudyInstanceUID", "SeriesInstanceUID", "StudyID", "SeriesNumber", "InstanceNumber"):
        setattr(ds, kw, a[kw])
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes(range(64))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = a["SOPClassUID"]
    ds.file_meta.MediaStorageSOPInstanceUID = a["SOPInstanceUID"]
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def tiny_chunk(folder: Path, start: int, n: int) -> list[Path]:
    """Instances [start, start+n) as files in 4 shard folders (one storescu each); cached."""
    d = folder / f"chunk-{start}-{n}"
    if not (d / ".done").exists():
        if d.exists():
            shutil.rmtree(d)
        for q in range(4):
            (d / f"s{q}").mkdir(parents=True)
        for i in range(start, start + n):
            (d / f"s{i % 4}" / f"{i}.dcm").write_bytes(tiny_file(i))
        (d / ".done").touch()
    return [d / f"s{q}" for q in range(4)]


# Large studies added to dicomvault's index for the queries inside one study (find_dv.py): a
# thin-slice CT's size, in BIG_SERIES series.
BIG_STUDIES = 10
BIG_INSTANCES = 2000
BIG_SERIES = 4


def big_study_attrs(k: int, j: int) -> dict[str, str]:
    """Attributes of instance j of large study k."""
    per_series = BIG_INSTANCES // BIG_SERIES
    series = j // per_series + 1
    return {
        "PatientID": f"PBIG{k:03d}", "PatientName": f"BIGSTUDY^{k}", "PatientBirthDate": "19600101",
        "PatientSex": "F", "StudyInstanceUID": f"{UID_ROOT}8.{k}",
        "SeriesInstanceUID": f"{UID_ROOT}8.{k}.{series}",
        "SOPInstanceUID": f"{UID_ROOT}8.{k}.{series}.{j + 1}",
        "SOPClassUID": CTImageStorage, "StudyDate": "20200101", "StudyTime": "120000",
        "AccessionNumber": f"BIG{k:05d}", "StudyDescription": "BENCH LARGE STUDY", "StudyID": "1",
        "Modality": "CT", "SeriesNumber": str(series), "SeriesDescription": f"RECON {series}",
        "InstanceNumber": str(j % per_series + 1),
    }


def build_dv_index(data: Path, n: int, big: int = 0) -> float:
    """Index records straight into the engine's index (no blobs: C-FIND never reads them): n
    instances of index_attrs, then `big` studies of big_study_attrs."""
    if data.exists():
        shutil.rmtree(data)
    t0 = time.monotonic()
    attrs = itertools.chain((index_attrs(i) for i in range(n)),
                            (big_study_attrs(k, j) for k in range(big) for j in range(BIG_INSTANCES)))
    with Engine(data) as eng:
        batch: list[dict[str, Any]] = []
        for a in attrs:
            h = hashlib.blake2b(a["SOPInstanceUID"].encode(), digest_size=32).digest()
            batch.append({"attrs": a, "hash": h,
                          "prefix": b"", "transfer_syntax": ExplicitVRLittleEndian, "logical_len": 500,
                          "stored_len": 400, "codec": 1, "tier": "hot", "received_at": time.time()})
            if len(batch) == 5000:
                eng.index.add_instances(batch)
                batch = []
        if batch:
            eng.index.add_instances(batch)
    mark_warmed(data)
    return time.monotonic() - t0


def mark_warmed(data: Path) -> None:
    """Starts the metadata cache of a blob-less index at the end of its change feed: there is
    nothing to warm, and the DICOMweb warmer of each benchmark server would otherwise spend its
    first ~20 s going through the newest 10,000 series (each failing on its missing blob) beside
    the queries being timed; a server stopped before that ends saves no progress."""
    with Engine(data, read_only=True) as eng:
        last = eng.index.last_seq()
    cache = MetadataCache(str(metadata_cache_path(data)))
    try:
        cache.set_cursor(last)
    finally:
        cache.close()


def build_orthanc_index(orth: Orthanc, folder: Path, target: int, chunk: int, budget: float) -> int:
    """Sends tiny instances in chunks over 4 associations until `target` or until the time the
    next chunk would take (extrapolated from the ones so far) exceeds `budget` seconds."""
    sent, spent = 0, 0.0
    while sent < target:
        n = min(chunk, target - sent)
        if sent and spent + spent / sent * n > budget:
            log(f"  Orthanc: stopping at {sent} instances: {sent / spent:.0f} inst/s, "
                f"the next {n} would pass the {budget:.0f} s budget")
            break
        dirs = tiny_chunk(folder, sent, n)
        secs = storescu("ORTHANC", orth.dicom_port, dirs)
        spent += secs
        sent += n
        log(f"  Orthanc index: {sent} instances, {n / secs:.0f} inst/s this chunk "
            f"(100k extrapolated: {100_000 / (sent / spent):.0f} s)")
    return int(orth.statistics()["CountInstances"])


def queries(kind: str, n: int, instances: int, seed: int = 1) -> list[list[str]]:
    """n query key lists of one kind, over the first `instances` instances' patients (or over the
    BIG_STUDIES large studies for IN_STUDY_KINDS)."""
    rng = random.Random(seed)
    studies = max(1, instances // INSTANCES_PER_STUDY)
    patients = max(1, studies // STUDIES_PER_PATIENT)
    out = []
    for _ in range(n):
        big = rng.randrange(BIG_STUDIES)
        if kind == "PatientID exact":
            k = [f"PatientID=P{rng.randrange(patients):07d}"]
        elif kind == "AccessionNumber exact":
            k = [f"AccessionNumber=A{rng.randrange(studies):08d}"]
        elif kind == SERIES_IN_STUDY:
            k = [f"StudyInstanceUID={UID_ROOT}8.{big}"]
        elif kind == IMAGES_IN_SERIES:
            k = [f"StudyInstanceUID={UID_ROOT}8.{big}",
                 f"SeriesInstanceUID={UID_ROOT}8.{big}.{rng.randrange(BIG_SERIES) + 1}"]
        elif kind == IMAGES_IN_STUDY:
            k = [f"StudyInstanceUID={UID_ROOT}8.{big}"]
        elif kind == "PatientName wildcard":
            k = [f"PatientName={SURNAMES[rng.randrange(min(patients, len(SURNAMES)))][:5]}*"]
        else:
            d0 = DATE0 + dt.timedelta(days=rng.randrange(DAYS - 7))
            k = [f"StudyDate={d0:%Y%m%d}-{d0 + dt.timedelta(days=6):%Y%m%d}"]
        out.append(k)
    return out


QUERY_KINDS = ("PatientID exact", "AccessionNumber exact", "PatientName wildcard", "StudyDate range")
SERIES_IN_STUDY = "Series of a 2,000-image study"
IMAGES_IN_SERIES = "Images of a 500-image series"
IMAGES_IN_STUDY = "Images of a 2,000-image study"
# Queries inside one of the BIG_STUDIES (find_dv.py): SERIES level, then IMAGE level with and
# without the series (the second is a relational query: every image of the study).
IN_STUDY_KINDS = (SERIES_IN_STUDY, IMAGES_IN_SERIES, IMAGES_IN_STUDY)
RETURN_KEYS = ["StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "AccessionNumber",
               "StudyDescription", "NumberOfStudyRelatedInstances"]
LEVEL_RETURN_KEYS = {
    "STUDY": RETURN_KEYS,
    "SERIES": ["StudyInstanceUID", "SeriesInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "NumberOfSeriesRelatedInstances"],
    "IMAGE": ["StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "InstanceNumber"],
}


def kind_level(kind: str) -> str:
    return {SERIES_IN_STUDY: "SERIES", IMAGES_IN_SERIES: "IMAGE", IMAGES_IN_STUDY: "IMAGE"}.get(kind, "STUDY")


FindStats = dict[str, tuple[float, float, float]]  # kind -> (p50 ms, p95 ms, mean matches)
WARMUP = 10  # the first queries of each kind warm caches up and are not timed


def find_summary(lat: list[float], hits: list[int]) -> tuple[float, float, float]:
    """(p50 ms, p95 ms, mean matches) of the timed queries."""
    lat = sorted(lat)
    return statistics.median(lat), lat[int(0.95 * (len(lat) - 1))], statistics.mean(hits)


def query_identifier(keys: list[str], level: str = "STUDY") -> Dataset:
    """The C-FIND identifier of one query: the level's return keys empty, `keys` the matching."""
    return scu.build_identifier(level, [*LEVEL_RETURN_KEYS[level], *keys], use_defaults=False)


def findscu_all(ae: str, port: int, files: list[Path], folder: Path) -> list[FindTiming]:
    """Every query file through `findscu` on one association, in order; one timing per file. A
    query without a (successful) final response (seen once with Orthanc right after its index
    build: no answer until a 30 s timeout) is logged and counted in FIND_RETRIES, and the files
    from it on go again on a new association (a new findscu); its failed attempt is not a latency."""
    done: list[FindTiming] = []
    attempt = 0
    while len(done) < len(files):
        run = findscu_queries(ae, port, files[len(done):], folder / f"findscu-{attempt}.log")
        ok = list(itertools.takewhile(lambda t: t.ok, run.timings))
        done += ok
        if len(done) < len(files):
            FIND_RETRIES[ae] = FIND_RETRIES.get(ae, 0) + 1
            bad = run.timings[len(ok)].status if len(run.timings) > len(ok) else "no final response"
            log(f"  {ae}: findscu stopped at query {len(done)} of {len(files)} ({bad}, exit {run.exit_code}; "
                f"log {run.log_path}):\n{run.log_tail}")
            attempt += 1
            if attempt > 3:
                raise RuntimeError(f"findscu against {ae}:{port} failed {attempt} times; see {folder}")
            log("  retrying the rest on a new association")
        elif run.exit_code != 0:
            log(f"  {ae}: findscu exited {run.exit_code} after every query answered; see {run.log_path}")
    return done


def find_latencies(ae: str, port: int, n: int, instances: int, work: Path | None = None,
                   kinds: Sequence[str] = QUERY_KINDS) -> FindStats:
    """kind -> (p50 ms, p95 ms, mean matches) with dcmtk's C++ `findscu` as the client: per kind,
    WARMUP + n query files and one `findscu -S` (one association) sending them in order; each
    query's latency is findscu's own log, request sent to final response read (1 us stamps, see
    dicomvault.bench.dimse.findscu_queries), and its matches the pending responses. Query files
    and logs go to `work`/<kind> (a temporary folder, removed afterwards, without `work`)."""
    with contextlib.ExitStack() as stack:
        if work is None:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cfind-")))
        out = {}
        for kind in kinds:
            folder = work / kind.replace(" ", "-").replace(",", "")
            level = kind_level(kind)
            files = write_find_queries(folder / "queries", [query_identifier(k, level)
                                                            for k in queries(kind, n + WARMUP, instances)])
            timed = findscu_all(ae, port, files, folder)[WARMUP:]
            out[kind] = find_summary([t.latency_ms for t in timed], [t.matches for t in timed])
        return out


def find_latencies_pynetdicom(ae: str, port: int, n: int, instances: int, tuned_client: bool = False
                              ) -> FindStats:
    """The same queries with this process's pynetdicom SCU (dicomvault.dimse.scu) on one persistent
    association: the time around scu.find(), so it includes the Python client's own cost (~6 ms
    CPU per query measured: more than the server's). Secondary figure; find_latencies() is the
    primary one. `tuned_client`: the SCU's associations with the server's tuned reactors."""
    peer = scu.Peer(ae, HOST, port)

    def connect() -> Any:
        return scu.associate(scu.make_ae("FINDSCU", tuned=tuned_client), peer,
                             [build_context(StudyRootQueryRetrieveInformationModelFind)])

    assoc = connect()
    out = {}
    try:
        for kind in QUERY_KINDS:
            qs = queries(kind, n + WARMUP, instances)
            lat, hits = [], []
            for j, keys in enumerate(qs):
                ident = query_identifier(keys)
                for attempt in range(3):
                    t0 = time.perf_counter()
                    try:
                        rows = scu.find(peer, ident, assoc=assoc)
                        break
                    except scu.ScuError as exc:
                        # Seen once right after Orthanc's index build: a C-FIND without an answer
                        # until its 30 s SCP timeout. Logged, retried on a new association, and
                        # the failed attempt is not counted as a latency.
                        FIND_RETRIES[ae] = FIND_RETRIES.get(ae, 0) + 1
                        log(f"  {ae}: {exc}; retrying on a new association")
                        if assoc.is_established:
                            assoc.abort()
                        assoc = connect()
                        if attempt == 2:
                            raise
                if j >= WARMUP:
                    lat.append((time.perf_counter() - t0) * 1000)
                    hits.append(len(rows))
            out[kind] = find_summary(lat, hits)
    finally:
        if assoc.is_established:
            assoc.release()
    return out


FIND_RETRIES: dict[str, int] = {}
FIND_METHOD = (
    "Client: dcmtk `findscu` 3.6.7 (C++, as real workstations' C++/Java clients, not this harness's "
    "Python), Study Root, one `findscu -S` process and so one association per query kind, "
    "`TCP_NODELAY=1`, one query file per C-FIND (STUDY level, the matching key and 7 empty return "
    f"keys), {WARMUP} warm-up queries per kind not timed. Latency per query from findscu's own "
    "log4cplus log, stamped `%D{%s.%Q}` (wall clock, 1 us resolution): \"Sending Find Request\" "
    "to \"Received Final Find Response\" (request encoded and sent, server work, every pending "
    "response read, final response read); matches = pending responses.")


# -- report ----------------------------------------------------------------------------------------

def ingest_table(results: list[IngestResult]) -> str:
    """One row per (target, associations); "instances" is stored/sent (received/sent for CEILING,
    which stores nothing); "this / ceiling" is the share of the no-op ceiling's inst/s with the
    same associations (dicomvault / ceiling on dicomvault's row, Orthanc / ceiling on Orthanc's)."""
    lines = ["| target | assocs | instances | seconds | inst/s | MB/s | dicomvault / this | this / ceiling |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    dv = {r.associations: r for r in results if r.target == "dicomvault"}
    top = {r.associations: r for r in results if r.target == CEILING}
    for r in results:
        d, c = dv.get(r.associations), top.get(r.associations)
        ratio = "" if r.target == "dicomvault" or d is None else f"{d.ips / r.ips:.2f}x"
        share = "" if r.target == CEILING or c is None else f"{r.ips / c.ips:.2f}x"
        count = f"{r.stored}/{r.instances}"
        if r.client_failures:
            count += f" ({r.client_failures} storescu failed)"
        lines.append(f"| {r.target} | {r.associations} | {count} | {r.seconds:.1f} | "
                     f"{r.ips:.1f} | {r.mbps:.1f} | {ratio} | {share} |")
    return "\n".join(lines)


def ceiling_note(results: list[IngestResult]) -> str:
    """How to read the other rows against the no-op ceiling (empty without a ceiling row)."""
    by = {(r.target, r.associations): r for r in results}
    parts = []
    for a in sorted({r.associations for r in results}):
        c = by.get((CEILING, a))
        if c is None:
            continue
        part = f"{a} association(s): ceiling {c.ips:.0f} inst/s"
        if ("Orthanc", a) in by:
            part += f" = {c.ips / by[('Orthanc', a)].ips:.2f}x Orthanc"
        shares = [f"{t} {by[(t, a)].ips / c.ips:.2f}" for t in TARGETS if (t, a) in by]
        if shares:
            part += "; share of it reached: " + ", ".join(shares)
        parts.append(part)
    if not parts:
        return ""
    return ("No-op ceiling: dcmtk `storescp --fork -pdu 131072 --ignore` (one process per association, "
            "`TCP_NODELAY=1`) "
            "receives and discards every object (no disk write, no hash) sent by the same storescu runs; "
            "its instances column counts objects received. The storescu clients share this machine's "
            "CPUs with the server, so no receiver, archive or not, goes faster here: an archive can be "
            "at most ceiling / Orthanc times Orthanc, which is how to read the target \"dicomvault >= 3x "
            "Orthanc with 4 associations\". " + "; ".join(parts) + ".")


def find_table(dv: FindStats, orth: FindStats, n_dv: int, n_orth: int) -> str:
    lines = [f"| query (study level) | dicomvault p50 / p95 ms ({n_dv:,} inst.) | "
             f"Orthanc p50 / p95 ms ({n_orth:,} inst.) | Orthanc / dicomvault (p50) | matches dv / Orthanc |",
             "| --- | --- | --- | --- | --- |"]
    for kind in QUERY_KINDS:
        a, b = dv[kind], orth[kind]
        lines.append(f"| {kind} | {a[0]:.2f} / {a[1]:.2f} | {b[0]:.2f} / {b[1]:.2f} | {b[0] / a[0]:.1f}x | "
                     f"{a[2]:.1f} / {b[2]:.1f} |")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="1 x 100 slices, 5k-instance index, 100 C-FINDs")
    ap.add_argument("--studies", type=int, help="CT studies (default 3; quick 1)")
    ap.add_argument("--slices", type=int, help="slices per study (default 300; quick 100)")
    ap.add_argument("--index", type=int, help="index size in instances (default 100000; quick 5000)")
    ap.add_argument("--finds", type=int, help="C-FINDs per query type (default 200; quick 100)")
    ap.add_argument("--orthanc-index-budget", type=float, default=600,
                    help="seconds Orthanc's index build may take (default %(default)s)")
    ap.add_argument("--scratch", type=Path, default=ROOT / ".scratch" / "dimse",
                    help="work folder, on the disk under test (default %(default)s)")
    ap.add_argument("--skip-ingest", action="store_true")
    ap.add_argument("--skip-find", action="store_true")
    ap.add_argument("--pynetdicom-find", action="store_true",
                    help="also time the C-FINDs with the pynetdicom SCU (secondary table; the primary "
                    "client is dcmtk findscu)")
    args = ap.parse_args()
    studies = args.studies or (1 if args.quick else 3)
    slices = args.slices or (100 if args.quick else 300)
    n_index = args.index or (5000 if args.quick else 100_000)
    n_find = args.finds or (100 if args.quick else 200)
    scratch: Path = args.scratch
    scratch.mkdir(parents=True, exist_ok=True)
    t_start = time.monotonic()
    out = [f"# DIMSE comparison, {dt.datetime.now():%Y-%m-%d %H:%M}", "",
           f"Command: `{' '.join([Path(sys.executable).name, *sys.argv])}`; machine: {os.cpu_count()} CPUs; "
           f"scratch: {scratch}; Orthanc 1.10.1 (TcpNoDelay, PDU 131072, SyncStorageArea true, "
           "SQLite default, no plugins, 4 DICOM threads); "
           "dicomvault serve (BLAKE3 + hot codec, durable); "
           "no-op ceiling: dcmtk storescp --fork -pdu 131072 --ignore (one process per association; "
           "receives, stores nothing).", ""]

    if not args.skip_ingest:
        files = make_ct_input(scratch / f"ct-{studies}x{slices}", studies, slices)
        mb = sum(f.stat().st_size for f in files) / 1e6
        log(f"ingest: {len(files)} files, {mb:.0f} MB")
        res = run_ingest(files, scratch)
        out += [f"## Ingest: dcmtk storescu -pdu 131072, {studies} x {slices} CT slices 512x512 "
                f"({len(files)} files, {mb:.0f} MB)", "", ingest_table(res), ""]
        note = ceiling_note(res)
        if note:
            out += [note, ""]

    if not args.skip_find:
        dv_data = scratch / "index-dv"
        log(f"C-FIND: dicomvault index of {n_index} instances")
        secs = build_dv_index(dv_data, n_index)
        log(f"  built in {secs:.1f} s")
        logs = scratch / "cfind"  # query files and findscu logs, kept for inspection
        dv_py: FindStats = {}
        orth_py: FindStats = {}
        dvt = start_dicomvault(dv_data, fresh=False)
        try:
            dv_lat = find_latencies(dvt.ae, dvt.port, n_find, n_index, logs / "dicomvault")
            if args.pynetdicom_find:
                dv_py = find_latencies_pynetdicom(dvt.ae, dvt.port, n_find, n_index)
        finally:
            dvt.stop()
        log("C-FIND: Orthanc index (tiny 8x8 instances over 4 storescu associations)")
        ot, orth = start_orthanc_target(scratch / "index-orthanc", compression=False)
        try:
            n_orth = build_orthanc_index(orth, scratch / "tiny", n_index, min(10_000, n_index),
                                         args.orthanc_index_budget)
            orth_lat = find_latencies(ot.ae, ot.port, n_find, n_orth, logs / "orthanc")
            if args.pynetdicom_find:
                orth_py = find_latencies_pynetdicom(ot.ae, ot.port, n_find, n_orth)
        finally:
            ot.stop()
        out += [f"## C-FIND study level: {n_find} queries per type, dcmtk findscu, one association per type, "
                "p50/p95 in ms", "",
                find_table(dv_lat, orth_lat, n_index, n_orth), "",
                f"{FIND_METHOD} Query files and findscu logs: {logs}.", "",
                f"Index shape: {INSTANCES_PER_STUDY} instances per study, {STUDIES_PER_PATIENT} studies per "
                "patient, StudyDate uniform over 16 years, PatientName `XXXXX*` prefixes of 2,000 surnames. "
                "dicomvault's records were written straight into its index; Orthanc's came over DIMSE. "
                "C-FIND retries (new association after a query without a successful answer): "
                f"{FIND_RETRIES or 'none'}.", ""]
        if dv_py and orth_py:
            out += ["### Secondary: the same queries from the pynetdicom SCU (Python), one association",
                    "", find_table(dv_py, orth_py, n_index, n_orth), "",
                    "Time around `dicomvault.dimse.scu.find()` in this process: includes the Python client's "
                    "own cost per query (encode, decode, its reactor), not only the server's.", ""]
        shutil.rmtree(scratch / "index-orthanc", ignore_errors=True)
        shutil.rmtree(dv_data, ignore_errors=True)

    out.append(f"Total run time: {time.monotonic() - t_start:.0f} s.")
    text = "\n".join(out) + "\n"
    print(text)
    results = ROOT / ".results"
    results.mkdir(exist_ok=True)
    path = results / f"dimse-{dt.datetime.now():%Y%m%d-%H%M%S}.md"
    path.write_text(text)
    log(f"written to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
