"""What IOCM costs the index: query latency and durable insert rate, with no rejection note and
with many instances hidden. Run it with two PYTHONPATHs (before/after) on the same machine:

    PYTHONPATH=/work/main/python .venv/bin/python bench/iocm_overhead.py 100000   # before
    PYTHONPATH=python            .venv/bin/python bench/iocm_overhead.py 100000   # after

The "after" run also hides 1 % of the instances (a rejection applied at the index, as a stored
note does) and measures again: queries must not get slower, since hidden instances leave the
hierarchy instead of being filtered per match.
"""

from __future__ import annotations

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
PER_SERIES, SERIES_PER_STUDY, BATCH = 25, 4, 500


def synth(n: int, offset: int = 0) -> list[dict[str, Any]]:
    out = []
    for i in range(offset, offset + n):
        se = i // PER_SERIES
        st = se // SERIES_PER_STUDY
        sop = f"1.2.826.0.1.3680043.10.1.{i}"
        out.append({"attrs": {
            "PatientID": f"PID{st // 3:06d}", "PatientName": f"Name{st % 997}^G",
            "StudyInstanceUID": f"1.2.826.0.1.3680043.10.2.{st}",
            "SeriesInstanceUID": f"1.2.826.0.1.3680043.10.3.{se}", "SOPInstanceUID": sop,
            "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "Modality": "CT",
            "StudyDate": f"2024{1 + st % 12:02d}{1 + st % 28:02d}", "InstanceNumber": str(i % PER_SERIES + 1),
        }, "hash": hashlib.blake2b(sop.encode(), digest_size=32).digest(),
            "transfer_syntax": "1.2.840.10008.1.2.1", "logical_len": 1000, "stored_len": 1000})
    return out


def p50(fn: Any, reps: int) -> float:
    times = []
    for r in range(reps):
        t = time.perf_counter()
        list(fn(r))
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def measure(idx: Index, label: str, studies: int) -> None:
    rnd = random.Random(7)
    sts = [f"1.2.826.0.1.3680043.10.2.{rnd.randrange(studies)}" for _ in range(300)]
    pids = [f"PID{rnd.randrange(studies // 3):06d}" for _ in range(300)]
    ret = {"StudyInstanceUID": "", "PatientName": "", "StudyDate": "", "NumberOfStudyRelatedInstances": ""}
    study = p50(lambda r: idx.find("STUDY", {**ret, "PatientID": pids[r]}), 300)
    image = p50(lambda r: idx.find("IMAGE", {"StudyInstanceUID": sts[r], "SOPInstanceUID": ""}), 300)
    retrieve = p50(lambda r: idx.sop_uids_of("study", sts[r]), 300)
    get = p50(lambda r: [idx.get_instance(f"1.2.826.0.1.3680043.10.1.{rnd.randrange(N)}")], 3000)
    extra = synth(5000, N + 10_000_000)
    t = time.perf_counter()
    for i in range(0, len(extra), BATCH):
        idx.add_instances(extra[i:i + BATCH])
    rate = len(extra) / (time.perf_counter() - t)
    print(f"{label:<28} STUDY by PatientID p50 {study:.3f} ms | IMAGE of a study p50 {image:.3f} ms | "
          f"study SOP list p50 {retrieve:.3f} ms | get_instance p50 {get * 1000:.1f} us | "
          f"insert {rate:,.0f}/s")


def main() -> None:
    base = tempfile.mkdtemp(prefix="dv-iocm-bench-")
    try:
        with Index.open(f"{base}/index") as idx:
            data = synth(N)
            for i in range(0, N, BATCH):
                idx.add_instances(data[i:i + BATCH])
            studies = idx.stats()["studies"]
            measure(idx, "no rejection", studies)
            if not hasattr(idx, "rejected"):
                return
            from dicomvault.index import Reference, Rejection

            rnd = random.Random(3)
            hide = rnd.sample(data, N // 100)
            refs = tuple(Reference(d["attrs"]["StudyInstanceUID"], d["attrs"]["SeriesInstanceUID"],
                                   d["attrs"]["SOPInstanceUID"]) for d in hide)
            note = synth(1, N + 20_000_000)[0]
            note["rejection"] = Rejection(note["attrs"]["SOPInstanceUID"], "113001", refs)
            idx.add_instances([note])
            assert len(idx.rejected()) == len(refs)
            measure(idx, f"{len(refs):,} instances hidden", studies)
    finally:
        shutil.rmtree(base)


if __name__ == "__main__":
    main()
