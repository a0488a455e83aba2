"""The analysis results store: what each analyzer run found on a study (measurements, flags, the
objects it stored), durable in the index's `meta` column family beside the worklist.

    an/r/s/ E(study uid) E(analyzer instance)                     -> the run's record
    an/r/p/ E(patient id) E(study date) E(study uid) E(analyzer)  -> its measurements (trends)
    an/r/f/ E(study uid)                                          -> the study's flag summary
    an/r/v/ <severity rank> E(study date) E(study uid)            -> b"1" (flagged studies)

`E()` is the index's order-preserving component encoding (index/keys.py); records are a version
byte + msgpack, like the worklist's. The `p` keys repeat the measurements of the `s` record so a
patient's trends are one prefix scan of their own keys, already in study date order; the `f` and
`v` keys exist for the study list and QIDO (integration of issue 16 item 3): the highest severity
and the reasons of one study in one read, and every flagged study without a scan of all studies,
by severity and then date (so the flagged studies' newest page needs only its own records).
A new run of an analyzer instance on a study replaces its previous run, and every key it touches
changes in one synced batch.

Deleting a study does not reach here: `study_results` and `trends` skip studies the index no
longer holds, and `forget_study` drops a study's results for whoever deletes it.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ..index import Index
from ..index import keys as K
from ..index.meta_records import decode, encode, lock_for
from .api import INFO, SEVERITIES, URGENT, WARNING, Result

RUN, BY_PATIENT, FLAGS, BY_SEVERITY = b"an/r/s/", b"an/r/p/", b"an/r/f/", b"an/r/v/"
# Higher asks for attention sooner; the byte in the `v` keys.
RANK: dict[str, int] = {INFO: 1, WARNING: 2, URGENT: 3}



def _lock_for(index: Index) -> threading.RLock:
    # One writer process per index; inside it, record() is a read-modify-write of the study's keys.
    return lock_for(index.path, "analysis-results")


def _run_key(study_uid: str, analyzer: str) -> bytes:
    return RUN + K.pack(study_uid, analyzer)


def _patient_key(patient_id: str, study_date: str, study_uid: str, analyzer: str) -> bytes:
    return BY_PATIENT + K.pack(patient_id, study_date, study_uid, analyzer)


def _severity_key(rank: int, study_date: str, study_uid: str) -> bytes:
    return BY_SEVERITY + bytes((rank,)) + K.pack(study_date, study_uid)


def _finite(value: float, what: str) -> float:
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{what} is {v}: only finite numbers can be stored")
    return v


def _run_record(*, study_uid: str, patient_id: str, study_date: str, result: Result,
                stored: Iterable[tuple[str, str, str]]) -> dict[str, Any]:
    where = f"analysis result of {result.analyzer!r} on study {study_uid}"
    measurements = [{"key": m.key, "label": m.label, "unit": m.unit, "series_uid": m.series_uid,
                     "value": _finite(m.value, f"{where}: measurement {m.key!r}")}
                    for m in result.measurements]
    flags = []
    for f in result.flags:
        if f.severity not in SEVERITIES:
            raise ValueError(f"{where}: flag {f.code!r} has severity {f.severity!r}, "
                             f"not one of {', '.join(SEVERITIES)}")
        score = None if f.score is None else _finite(f.score, f"{where}: score of flag {f.code!r}")
        flags.append({"code": f.code, "reason": f.reason, "severity": f.severity, "score": score,
                      "series_uid": f.series_uid})
    objects = [{"sop_uid": sop, "series_uid": series, "sop_class_uid": cls} for sop, series, cls in stored]
    return {"analyzer": result.analyzer, "study_uid": study_uid, "patient_id": patient_id,
            "study_date": study_date, "recorded": time.time(), "summary": result.summary,
            "measurements": measurements, "flags": flags, "objects": objects}


def _summary(runs: Iterable[Mapping[str, Any]], study_date: str) -> dict[str, Any] | None:
    """The study list's view of a study's flags: the highest severity, and every reason, most
    severe first. None when no run flagged anything."""
    flags = [(RANK[f["severity"]], run["analyzer"], f) for run in runs for f in run["flags"]]
    if not flags:
        return None
    flags.sort(key=lambda t: (-t[0], t[1]))
    top = flags[0][2]["severity"]
    return {"severity": top, "rank": RANK[top], "reasons": [f["reason"] for _, _, f in flags],
            "codes": [f["code"] for _, _, f in flags], "study_date": study_date}


def _runs(index: Index, study_uid: str) -> dict[str, dict[str, Any]]:
    out = {}
    for k, v in index.meta_items(RUN + K.encode(study_uid)):
        rec = decode(v, f"analysis result {k!r}")
        out[rec["analyzer"]] = rec
    return out


def _flag_writes(index: Index, study_uid: str, runs: Iterable[Mapping[str, Any]], study_date: str
                 ) -> dict[bytes, bytes | None]:
    out: dict[bytes, bytes | None] = {}
    old = flag_summary(index, study_uid)
    new = _summary(runs, study_date)
    if old is not None:
        out[_severity_key(old["rank"], old["study_date"], study_uid)] = None
    if new is None:
        out[FLAGS + K.encode(study_uid)] = None
    else:
        out[FLAGS + K.encode(study_uid)] = encode(new)
        out[_severity_key(new["rank"], study_date, study_uid)] = b"1"  # after the delete: same key kept
    return out


def record(index: Index, *, study_uid: str, patient_id: str, study_date: str, result: Result,
           stored: list[tuple[str, str, str]]) -> None:
    """Keeps what `result` found on the study (stored: (SOP instance UID, series UID, SOP class
    UID) of the objects the pipeline stored for it), replacing the previous result of the same
    analyzer instance (`result.analyzer`) on that study. One durable batch."""
    if not result.analyzer:
        raise ValueError(f"analysis result on study {study_uid}: no analyzer name")
    if not study_uid:
        raise ValueError(f"analysis result of {result.analyzer!r}: no study UID")
    rec = _run_record(study_uid=study_uid, patient_id=patient_id, study_date=K.norm_date(study_date),
                      result=result, stored=stored)
    with _lock_for(index):
        runs = _runs(index, study_uid)
        old = runs.get(result.analyzer)
        writes: dict[bytes, bytes | None] = {}
        if old is not None:
            writes[_patient_key(old["patient_id"], old["study_date"], study_uid, old["analyzer"])] = None
        runs[result.analyzer] = rec
        writes[_run_key(study_uid, result.analyzer)] = encode(rec)
        writes[_patient_key(patient_id, rec["study_date"], study_uid, result.analyzer)] = encode(
            {"measurements": rec["measurements"]})
        writes.update(_flag_writes(index, study_uid, runs.values(), rec["study_date"]))
        index.put_meta_many(writes)


def forget_study(index: Index, study_uid: str) -> int:
    """Drops every result recorded on the study (it was deleted); how many runs there were."""
    with _lock_for(index):
        runs = _runs(index, study_uid)
        writes: dict[bytes, bytes | None] = {}
        for run in runs.values():
            writes[_run_key(study_uid, run["analyzer"])] = None
            writes[_patient_key(run["patient_id"], run["study_date"], study_uid, run["analyzer"])] = None
        writes.update(_flag_writes(index, study_uid, (), ""))
        index.put_meta_many(writes)
    return len(runs)


def flag_summary(index: Index, study_uid: str) -> dict[str, Any] | None:
    """{"severity", "rank", "reasons", "codes", "study_date"} of a flagged study; None if nothing
    flagged it."""
    raw = index.get_meta(FLAGS + K.encode(study_uid))
    return decode(raw, f"flag summary of study {study_uid}") if raw else None


def flagged(index: Index, severity: str) -> list[tuple[str, str]]:
    """(study date, study UID) of the studies whose highest severity is `severity`, oldest first:
    a scan of those studies' keys only."""
    prefix = BY_SEVERITY + bytes((RANK[severity],))
    out = []
    for k, _ in index.meta_items(prefix):
        date, uid = K.unpack(k, len(prefix))
        out.append((date, uid))
    return out


def flagged_studies(index: Index, severities: Iterable[str] = SEVERITIES) -> dict[str, str]:
    """Study UID -> highest severity, for the studies whose highest severity is one of
    `severities`."""
    return {uid: s for s in severities for _, uid in flagged(index, s)}


def study_results(index: Index, study_uid: str) -> dict[str, Any]:
    """`GET /api/studies/{uid}/analysis`: every analyzer's flags (most severe first),
    measurements and stored objects on the study."""
    runs = sorted(_runs(index, study_uid).values(), key=lambda r: r["analyzer"])
    flags = [{"analyzer": r["analyzer"], **f} for r in runs for f in r["flags"]]
    flags.sort(key=lambda f: -RANK[f["severity"]])
    return {
        "study_uid": study_uid,
        "flags": [{k: f[k] for k in ("analyzer", "code", "reason", "severity", "score", "series_uid")}
                  for f in flags],
        "measurements": [{"analyzer": r["analyzer"], **{k: m[k] for k in ("key", "label", "value", "unit",
                                                                          "series_uid")}}
                         for r in runs for m in r["measurements"]],
        "objects": [{"analyzer": r["analyzer"], **o} for r in runs for o in r["objects"]],
    }


def _change(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    if len(points) < 2:
        return None
    prev, last = points[-2], points[-1]
    delta = last["value"] - prev["value"]
    return {"absolute": delta, "relative": delta / prev["value"] if prev["value"] else None,
            "since": prev["study_date"]}


def _ids_of(index: Index, patient_id: str) -> list[str]:
    """The patient's ID and every ID merged into it (whose studies it now holds): results are
    keyed by the ID a study had when it was measured."""
    into: dict[str, list[str]] = {}
    for m in index.merges():
        into.setdefault(m.survivor_id, []).append(m.prior_id)
    ids, todo = [patient_id], [patient_id]
    while todo:
        for prior in into.get(todo.pop(), []):
            if prior not in ids:
                ids.append(prior)
                todo.append(prior)
    return ids


def trends(index: Index, patient_id: str) -> dict[str, Any]:
    """`GET /api/patients/{patient_id}/trends`: each measurement (analyzer instance and key)
    across the patient's studies, oldest first, with the change from the study before the last.
    One point per study: a key measured twice in one study (two series) keeps its first value.
    Studies the index no longer holds are left out; after a patient merge the survivor's trends
    include the merged patient's studies (and the merged ID's no longer do)."""
    series: dict[tuple[str, str], dict[str, Any]] = {}
    known: dict[str, bool] = {}
    entries = [(K.unpack(k, len(BY_PATIENT)), k, v) for pid in _ids_of(index, patient_id)
               for k, v in index.meta_items(BY_PATIENT + K.encode(pid))]
    entries.sort(key=lambda e: (e[0][1], e[0][2], e[0][3]))  # by study date across merged IDs
    for (_, study_date, study_uid, analyzer), k, v in entries:
        if study_uid not in known:
            study = index.get_study(study_uid)
            # gone, or moved to another patient by a merge since it was measured
            known[study_uid] = study is not None and study.patient_id == patient_id
        if not known[study_uid]:
            continue
        for m in decode(v, f"trend entry {k!r}")["measurements"]:
            t = series.setdefault((analyzer, m["key"]), {"analyzer": analyzer, "key": m["key"],
                                                        "label": m["label"], "unit": m["unit"], "points": []})
            if t["points"] and t["points"][-1]["study_uid"] == study_uid:
                continue
            t["label"], t["unit"] = m["label"], m["unit"]  # the latest study's words
            t["points"].append({"study_uid": study_uid, "study_date": study_date, "value": m["value"]})
    out = sorted(series.values(), key=lambda t: (t["analyzer"], t["key"]))
    for t in out:
        t["change"] = _change(t["points"])
    return {"patient_id": patient_id, "trends": out}


__all__ = ["RANK", "flag_summary", "flagged", "flagged_studies", "forget_study", "record", "study_results",
           "trends"]
