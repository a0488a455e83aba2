"""The analysis worker: one process per job attempt, at a CPU priority below ingest.

`python -m dicomvault.analysis.worker JOB_DIR` reads `JOB_DIR/spec.json` (written by runner.py),
opens the data directory read-only (beside the server that holds it), decodes the series'
instances with pydicom, calls the analyzer and leaves its result in `JOB_DIR`:
`result.json` (measurements, flags, summary, timings) and one Part-10 file per new object, or
`error.json` when the analyzer raised. It writes nothing to the archive: the server stores the
objects, so the index keeps one writer and a killed worker leaves nothing half-stored.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import signal
import sys
import time
import traceback
from dataclasses import asdict
from io import BytesIO
from pathlib import Path
from typing import Any

SPEC, RESULT, ERROR, LOG = "spec.json", "result.json", "error.json", "worker.log"
PR_SET_PDEATHSIG = 1
ANALYZER_FAILED = 3
# ioprio_set(2): the syscall's number per architecture, IOPRIO_WHO_PROCESS, the idle class
SYS_IOPRIO_SET = {"x86_64": 251, "aarch64": 30}
IOPRIO_WHO_PROCESS, IOPRIO_CLASS_IDLE, IOPRIO_CLASS_SHIFT = 1, 3, 13


def lower_priority(nice: int) -> list[str]:
    """Niceness `nice` and, above 0, SCHED_IDLE where the kernel allows it: ingest and retrieve
    then always win the cores. Returns what was applied, for the job's record."""
    applied = []
    if nice > 0:
        os.nice(nice)
        applied.append(f"nice {os.nice(0)}")
        idle = getattr(os, "SCHED_IDLE", None)
        if idle is not None:
            try:
                os.sched_setscheduler(0, idle, os.sched_param(0))
                applied.append("SCHED_IDLE")
            except OSError as exc:  # a container's seccomp policy may refuse it; nice still holds
                applied.append(f"no SCHED_IDLE ({exc.strerror})")
        if _idle_io():
            applied.append("I/O idle")
    return applied


def _idle_io() -> bool:
    """The idle I/O class (as `ionice -c3`): the series' reads wait for ingest's writes and syncs
    where the block scheduler honours classes (BFQ; mq-deadline and none ignore them)."""
    number = SYS_IOPRIO_SET.get(os.uname().machine)
    if number is None:
        return False
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.syscall(number, IOPRIO_WHO_PROCESS, 0, IOPRIO_CLASS_IDLE << IOPRIO_CLASS_SHIFT)) == 0
    except (OSError, AttributeError):
        return False


def die_with_parent() -> None:
    """A worker must not outlive the server that would store its result (kill -9 of serve)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the parent died before the call above
        os._exit(1)


def _dataset_of(engine: Any, sop_uid: str) -> Any:
    import pydicom

    return pydicom.dcmread(BytesIO(engine.read_file(sop_uid, background=True)))


def load_series(engine: Any, study_uid: str, series_uids: list[str]) -> list[Any]:
    """SeriesData of each series (those deleted since the job was queued are left out)."""
    from ..errors import UnknownObjectError
    from .api import SeriesData
    from .events import series_info

    out = []
    for uid in series_uids:
        try:
            recs = [r for r in engine.instances("series", uid) if r.study_uid == study_uid]
        except UnknownObjectError:
            continue
        rec = engine.index.get_series(uid)
        if rec is None or not recs:
            continue
        out.append(SeriesData(info=series_info(engine.index, rec),
                              datasets=[_dataset_of(engine, r.sop_uid) for r in recs]))
    return out


def _part10(ds: Any, path: Path) -> None:
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import dcmwrite
    from pydicom.uid import ExplicitVRLittleEndian

    meta = getattr(ds, "file_meta", None) or FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    if "TransferSyntaxUID" not in meta:
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    dcmwrite(path, ds, enforce_file_format=True)


def _jsonable(item: Any) -> dict[str, Any]:
    return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(item).items()}


def run(job_dir: Path) -> dict[str, Any]:
    spec = json.loads((job_dir / SPEC).read_text())
    timings: dict[str, float] = {}
    t = time.monotonic()
    from ..engine import Engine
    from .api import Result
    from .plugins import make

    analyzer = make(spec["instance"], spec["target"], spec["options"])
    timings["load"] = time.monotonic() - t
    t = time.monotonic()
    with Engine(spec["data_dir"], read_only=True) as engine:
        series = load_series(engine, spec["study_uid"], spec["series_uids"])
    timings["read"] = time.monotonic() - t
    wanted = [s for s in series if analyzer.wants(s.info)]
    out: dict[str, Any] = {"instances": sum(len(s.datasets) for s in wanted), "timings": timings,
                           "declined": not wanted, "objects": [], "measurements": [], "flags": [],
                           "summary": ""}
    if not wanted:
        out["summary"] = "nothing to analyse" if not series else "declined"
        return out
    t = time.monotonic()
    result = analyzer.run(wanted)
    timings["run"] = time.monotonic() - t
    if not isinstance(result, Result):
        raise TypeError(f"run() returned {type(result).__name__}, not analysis.api.Result")
    t = time.monotonic()
    for i, ds in enumerate(result.objects):
        name = f"object-{i:04d}.dcm"
        _part10(ds, job_dir / name)
        out["objects"].append(name)
    timings["write"] = time.monotonic() - t
    out.update(summary=result.summary, measurements=[_jsonable(m) for m in result.measurements],
               flags=[_jsonable(f) for f in result.flags])
    return out


def main(argv: list[str]) -> int:
    job_dir = Path(argv[0])
    spec = json.loads((job_dir / SPEC).read_text())
    die_with_parent()
    applied = lower_priority(int(spec.get("nice", 0)))
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("dicomvault.analysis").info(
        "job %s: %s on study %s (%s)", spec["job"], spec["instance"], spec["study_uid"], ", ".join(applied))
    try:
        out = run(job_dir)
    except Exception as exc:  # noqa: BLE001 - the analyzer's failure is the job's, reported in full
        (job_dir / ERROR).write_text(json.dumps({"error": f"{type(exc).__name__}: {exc}",
                                                 "traceback": traceback.format_exc()}))
        traceback.print_exc()
        return ANALYZER_FAILED
    out["priority"] = applied
    tmp = job_dir / (RESULT + ".part")
    tmp.write_text(json.dumps(out))
    os.replace(tmp, job_dir / RESULT)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
