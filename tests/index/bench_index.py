"""Timing script (not a test): 100k synthetic instances, then query latencies.

Run: /work/main/.venv/bin/python tests/index/bench_index.py [N] [DIR]
"""

from __future__ import annotations

import datetime as dt
import hashlib
import random
import shutil
import statistics
import sys
import tempfile
import time
from typing import Any

from dicomvault.index import Index

N = int(sys.argv[1]) if len(sys.argv) > 1 else 100_000
BATCH = 500
PER_SERIES = 25
SERIES_PER_STUDY = 4
STUDIES_PER_PATIENT = 3
START = dt.date(2021, 1, 1)


def synth(n: int) -> list[dict[str, Any]]:
    rnd = random.Random(1)
    out = []
    for i in range(n):
        se = i // PER_SERIES
        st = se // SERIES_PER_STUDY
        pa = st // STUDIES_PER_PATIENT
        date = START + dt.timedelta(days=(st * 7919) % 1095)
        sop = f"1.2.826.0.1.3680043.10.1.{i}"
        out.append({
            "attrs": {
                "PatientID": f"PID{pa:06d}", "PatientName": f"Name{pa % 997}^Given{pa % 13}",
                "PatientBirthDate": "19700101", "PatientSex": "O",
                "StudyInstanceUID": f"1.2.826.0.1.3680043.10.2.{st}",
                "SeriesInstanceUID": f"1.2.826.0.1.3680043.10.3.{se}",
                "SOPInstanceUID": sop, "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2",
                "Modality": rnd.choice(["CT", "MR", "CR", "US"]), "StudyDate": date.strftime("%Y%m%d"),
                "StudyTime": "101500", "AccessionNumber": f"ACC{st:07d}", "StudyDescription": "Synthetic",
                "SeriesNumber": str(se % SERIES_PER_STUDY + 1), "InstanceNumber": str(i % PER_SERIES + 1),
            },
            "hash": hashlib.blake2b(sop.encode(), digest_size=32).digest(),
            "prefix": b"\x00" * 128 + b"DICM" + b"\x02" * 200, "transfer_syntax": "1.2.840.10008.1.2.1",
            "logical_len": 520_000, "stored_len": 260_000, "codec": 1, "tier": "hot",
            "received_at": time.time(),
        })
    return out


def p50(fn: Any, reps: int) -> tuple[float, float, int]:
    times, n = [], 0
    for r in range(reps):
        t = time.perf_counter()
        n = len(list(fn(r)))
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times), sorted(times)[int(len(times) * 0.95) - 1], n


def main() -> None:
    base = sys.argv[2] if len(sys.argv) > 2 else tempfile.mkdtemp(prefix="dv-bench-")
    path = f"{base}/index"
    data = synth(N)
    t = time.perf_counter()
    with Index.open(path) as idx:
        for i in range(0, N, BATCH):
            idx.add_instances(data[i:i + BATCH])
        ins = time.perf_counter() - t
        st = idx.stats()
        print(f"inserted {N} in {ins:.1f}s ({N / ins:,.0f}/s, batches of {BATCH}, durable); "
              f"{st['studies']} studies, {st['series']} series, {st['patients']} patients; "
              f"{idx.commit_stats}")
        rnd = random.Random(2)
        pids = [f"PID{rnd.randrange(st['patients']):06d}" for _ in range(300)]
        ret = {"StudyInstanceUID": "", "PatientName": "", "StudyDate": "", "AccessionNumber": "",
               "ModalitiesInStudy": "", "NumberOfStudyRelatedInstances": ""}
        m, p95, n = p50(lambda r: idx.find("STUDY", {**ret, "PatientID": pids[r]}), 300)
        print(f"STUDY PatientID=<one>: p50 {m:.3f} ms, p95 {p95:.3f} ms ({n} studies/result)")
        days = [START + dt.timedelta(days=rnd.randrange(1000)) for _ in range(100)]

        def rng(r: int, width: int) -> Any:
            a = days[r]
            b = a + dt.timedelta(days=width)
            return idx.find("STUDY", {**ret, "StudyDate": f"{a:%Y%m%d}-{b:%Y%m%d}"})

        for width in (0, 6, 30):
            m, p95, n = p50(lambda r, w=width: rng(r, w), 100)
            print(f"STUDY StudyDate range {width + 1:>2} days: p50 {m:.3f} ms, p95 {p95:.3f} ms "
                  f"({n} studies last result)")
        m, p95, n = p50(lambda r: idx.find("STUDY", {**ret, "PatientName": f"NAME{r % 997}*"}), 100)
        print(f"STUDY PatientName=NAMEk* (wildcard): p50 {m:.3f} ms, p95 {p95:.3f} ms ({n} last)")
        sts = [f"1.2.826.0.1.3680043.10.2.{rnd.randrange(st['studies'])}" for _ in range(100)]
        m, p95, n = p50(lambda r: idx.find("IMAGE", {"StudyInstanceUID": sts[r], "SOPClassUID": "",
                                                     "InstanceNumber": ""}), 100)
        print(f"IMAGE StudyInstanceUID=<one>: p50 {m:.3f} ms, p95 {p95:.3f} ms ({n} instances)")
        t = time.perf_counter()
        problems = idx.check()
        print(f"check(): {len(problems)} problems in {time.perf_counter() - t:.1f}s")
    if len(sys.argv) <= 2:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
