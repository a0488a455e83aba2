"""FHIR ImagingStudy search latency on ~1,000 studies (make bench-fhir).

Builds an archive of N studies (default 1,000: 200 patients x 5 studies, 2 series x 2 instances
each, copies of pydicom's CT_small.dcm with fresh UIDs, dates spread over two years) through the
engine's ingest path, starts the real HTTP app and times, from an httpx client on loopback:

  by-patient     GET /fhir/r4/ImagingStudy?patient.identifier=|P<n>   (5 studies, 20 instances)
  by-patient+date  ... &started=ge<year>-01-01                         (fewer)
  patient-name   GET /fhir/r4/Patient?name=<family>
  page-20        GET /fhir/r4/ImagingStudy?_count=20                  (a whole page, 80 instances)

and, for by-patient, the same search called in-process (search.search_imaging_studies) to tell
the index work from HTTP and JSON. Prints p50/p95 (ms) per kind.

    .venv/bin/python bench/fhir_search.py [--studies 1000] [--queries 300]
"""

from __future__ import annotations

import argparse
import io
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import httpx
import pydicom
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from dicomvault.engine import Engine
from dicomvault.integration.fhir import search
from dicomvault.site import Site, SiteOptions

PER_PATIENT = 5
SERIES = 2
INSTANCES = 2


def build(eng: Engine, studies: int) -> None:
    base = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    rng = random.Random(15)
    batch: list[bytes] = []
    for n in range(studies):
        p = n // PER_PATIENT
        study = generate_uid()
        date = f"{2023 + n % 2}{rng.randint(1, 12):02d}{rng.randint(1, 28):02d}"  # over two years
        for s in range(SERIES):
            series = generate_uid()
            for i in range(INSTANCES):
                ds = base.copy()
                ds.PatientID, ds.PatientName = f"P{p:05d}", f"FAMILY{p:05d}^GIVEN"
                ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID = study, series, generate_uid()
                ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
                ds.StudyDate, ds.AccessionNumber = date, f"A{n:06d}"
                ds.SeriesNumber, ds.InstanceNumber = s + 1, i + 1
                buf = io.BytesIO()
                ds.save_as(buf, enforce_file_format=True)
                batch.append(buf.getvalue())
        if len(batch) >= 400:
            _store(eng, batch)
            batch = []
    if batch:
        _store(eng, batch)


def _store(eng: Engine, batch: list[bytes]) -> None:
    for out in eng.store_buffers(batch):
        if isinstance(out, Exception):
            raise out


def pct(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--studies", type=int, default=1000)
    ap.add_argument("--queries", type=int, default=300)
    args = ap.parse_args()
    patients = max(1, args.studies // PER_PATIENT)
    rng = random.Random(1)
    with tempfile.TemporaryDirectory(prefix="fhir-bench-") as tmp, \
            Engine(Path(tmp) / "data", min_free_bytes=0) as eng:
        t0 = time.perf_counter()
        build(eng, args.studies)
        print(f"stored {args.studies} studies ({args.studies * SERIES * INSTANCES} instances) "
              f"in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        site = Site(eng, SiteOptions(port=0))
        site.start()
        try:
            kinds = {
                "by-patient": lambda: ("/fhir/r4/ImagingStudy",
                                       {"patient.identifier": f"|P{rng.randrange(patients):05d}"}),
                "by-patient+date": lambda: ("/fhir/r4/ImagingStudy",
                                            {"patient.identifier": f"|P{rng.randrange(patients):05d}",
                                             "started": "ge2024-01-01"}),
                "patient-name": lambda: ("/fhir/r4/Patient",
                                         {"name": f"family{rng.randrange(patients):05d}"}),
                "page-20": lambda: ("/fhir/r4/ImagingStudy", {"_count": "20"}),
            }
            with httpx.Client(base_url=site.url, timeout=30) as c:
                for _ in range(20):  # warm-up
                    path, params = kinds["by-patient"]()
                    c.get(path, params=params).raise_for_status()
                print(f"{'kind':<18}{'p50 ms':>9}{'p95 ms':>9}{'entries':>9}")
                for kind, make in kinds.items():
                    times, sizes = [], []
                    for _ in range(args.queries):
                        path, params = make()
                        t = time.perf_counter()
                        r = c.get(path, params=params)
                        times.append((time.perf_counter() - t) * 1000)
                        r.raise_for_status()
                        sizes.append(len(r.json().get("entry", [])))
                    print(f"{kind:<18}{pct(times, .5):>9.2f}{pct(times, .95):>9.2f}"
                          f"{statistics.mean(sizes):>9.1f}")
            times = []
            for _ in range(args.queries):
                groups = {"patient.identifier": [f"|P{rng.randrange(patients):05d}"]}
                t = time.perf_counter()
                search.search_imaging_studies(eng.index, groups)
                times.append((time.perf_counter() - t) * 1000)
            print(f"{'by-patient (call)':<18}{pct(times, .5):>9.2f}{pct(times, .95):>9.2f}")
        finally:
            site.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
