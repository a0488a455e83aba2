"""When a series and a study are complete: the events that queue analysis jobs.

The reader follows the index's change feed from a durable cursor (`an/cursor`). Each stored
instance makes its series pending (`an/p/`, with the time of its last instance); a pending
series is complete when no instance arrived for `quiet_seconds`, or at once when an MPPS
COMPLETED listed it and the archive holds as many of its instances as the MPPS named. A study
is complete when none of its series is pending any more. The cursor, the pending series and the
jobs an event queues are written in one durable batch, so a restart neither loses nor repeats
an event. Series the pipeline stored itself (results, `an/o/`) make no events.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Any

from ..errors import RequestError, UnknownObjectError
from ..index import Index
from ..index import keys as K
from ..index.records import REPLACED, RESTORED, STORED, SeriesRecord
from .api import SERIES_COMPLETE, STUDY_COMPLETE, SeriesInfo
from .jobs import CURSOR, MPPS, PENDING, Batch, JobStore, decode, encode
from .plugins import Plugin

log = logging.getLogger("dicomvault.analysis")

PAGE = 1000
MAX_PAGES = 20  # per tick: a backlog is read in steps, so completions are not held up behind it
# An MPPS naming a series the archive has not seen yet is kept this long for it.
MPPS_KEEP = 24 * 3600.0
SWEEP_EVERY = 600.0  # seconds between looks for MPPS markers nobody came for


class UnknownAnalyzerError(RequestError):
    """A request names an analyzer instance that is not enabled here."""


def series_info(index: Index, rec: SeriesRecord) -> SeriesInfo:
    classes = frozenset(c for _, c, _ in index.syntaxes_of("series", rec.series_uid) if c)
    return SeriesInfo(study_uid=rec.study_uid, series_uid=rec.series_uid, modality=rec.modality,
                      num_instances=rec.num_instances, attrs=dict(rec.attrs), sop_class_uids=classes)


def _wants(plugin: Plugin, info: SeriesInfo) -> bool:
    """The analyzer's cheap decision. One that raises is given the series anyway: the worker
    asks again and the job records the error, where an operator sees it."""
    try:
        return bool(plugin.analyzer.wants(info))
    except Exception:  # noqa: BLE001 - a plugin's wants() may raise anything
        log.exception("analyzer %s: wants() raised on series %s of study %s", plugin.instance,
                      info.series_uid, info.study_uid)
        return True


class CompletionReader:
    """Reads the feed into pending series and turns completed ones into queued jobs."""

    def __init__(self, index: Index, store: JobStore, plugins: Sequence[Plugin], *, quiet_seconds: float,
                 max_attempts: int) -> None:
        self.index = index
        self.store = store
        self.plugins = list(plugins)
        self.quiet = quiet_seconds
        self.max_attempts = max_attempts
        self._swept = 0.0

    def start_cursor(self) -> None:
        """A first start reads from now: analysing every study already archived is a choice
        (`dicomvault jobs add`), not a side effect of turning analysis on."""
        if self.index.get_meta(CURSOR) is None:
            self.index.put_meta(CURSOR, K.u64(self.index.last_seq()))

    def cursor(self) -> int:
        raw = self.index.get_meta(CURSOR)
        return K.read_u64(raw) if raw else 0

    # -- reading the feed -------------------------------------------------------------------------

    def read_feed(self) -> int:
        """Pending series from the changes after the cursor; returns the changes read."""
        total = 0
        owned: dict[str, bool] = {}
        for _ in range(MAX_PAGES):
            cursor = self.cursor()
            changes = self.index.changes(cursor, PAGE)
            if not changes:
                break
            seen: dict[tuple[str, str], tuple[float, int, str]] = {}
            for ch in changes:
                if ch.kind not in (STORED, REPLACED, RESTORED) or not ch.series_uid:
                    continue
                if ch.series_uid not in owned:
                    owned[ch.series_uid] = self.store.owned(ch.series_uid)
                if owned[ch.series_uid]:
                    continue
                key = (ch.study_uid, ch.series_uid)
                at, n, _ = seen.get(key, (0.0, 0, ""))
                seen[key] = (max(at, ch.at), n + 1, ch.patient_id)
            writes: dict[bytes, bytes | None] = {CURSOR: K.u64(changes[-1].seq)}
            for (study, series), (at, n, patient) in seen.items():
                k = PENDING + K.pack(study, series)
                raw = self.index.get_meta(k)
                old = decode(raw, f"pending series {series}") if raw else {"count": 0, "first": at}
                writes[k] = encode({**old, "study_uid": study, "series_uid": series, "patient_id": patient,
                                    "last": max(at, float(old.get("last", 0.0))), "count": old["count"] + n})
            with self.store.lock:
                self.index.put_meta_many(writes)
            total += len(changes)
            if len(changes) < PAGE:
                break
        return total

    # -- completion -------------------------------------------------------------------------------

    def pending(self) -> list[dict[str, Any]]:
        return [decode(v, "pending series") for _, v in self.index.meta_items(PENDING)]

    def _mpps_ready(self, series_uid: str, now: float, b: Batch) -> bool:
        key = MPPS + K.encode(series_uid)
        raw = self.index.get_meta(key)
        if not raw:
            return False
        marker = decode(raw, f"MPPS marker {series_uid}")
        rec = self.index.get_series(series_uid)
        held = rec.num_instances if rec is not None else 0
        if held >= int(marker.get("images") or 0):
            b.writes[key] = None
            return True
        if now - float(marker.get("at", now)) > MPPS_KEEP:
            b.writes[key] = None
        return False

    def sweep_markers(self, now: float) -> int:
        """Drops MPPS markers older than MPPS_KEEP (their series was analysed before the MPPS
        came, or never arrived); returns how many."""
        old = [k for k, v in self.index.meta_items(MPPS)
               if now - float(decode(v, "MPPS marker").get("at", now)) > MPPS_KEEP]
        if old:
            with self.store.lock:
                self.index.put_meta_many(dict.fromkeys(old))
        return len(old)

    def complete_due(self, now: float | None = None) -> list[dict[str, Any]]:
        """Queues the jobs of the series (and studies) complete by `now`; returns the jobs."""
        now = time.time() if now is None else now
        if now - self._swept > SWEEP_EVERY:
            self._swept = now
            self.sweep_markers(now)
        queued: list[dict[str, Any]] = []
        with self.store.batch() as b:
            pending = self.pending()
            done: list[dict[str, Any]] = []
            for p in pending:
                by_mpps = self._mpps_ready(p["series_uid"], now, b)
                if by_mpps or now - float(p["last"]) >= self.quiet:
                    done.append({**p, "reason": "mpps-completed" if by_mpps else "quiet"})
            if not done:
                return []
            still = {(p["study_uid"], p["series_uid"]) for p in pending}
            for p in done:
                b.writes[PENDING + K.pack(p["study_uid"], p["series_uid"])] = None
                still.discard((p["study_uid"], p["series_uid"]))
                queued += self._series_complete(b, p, now)
            for study, patient, reason in {(p["study_uid"], p["patient_id"], p["reason"]) for p in done}:
                if not any(s == study for s, _ in still):
                    queued += self._study_complete(b, study, patient, reason, now)
        for job in queued:
            log.info("analysis job %d queued: %s on %s %s (%s)", job["id"], job["analyzer"], job["event"],
                     job["scope"] or job["study_uid"], job["reason"])
        return queued

    def analyse_study(self, study_uid: str, analyzers: Sequence[str] = ()) -> list[dict[str, Any]]:
        """Queues the jobs of a study already archived, as if each of its series had just become
        complete (`dicomvault jobs add`); `analyzers`: only these instances."""
        unknown = sorted(set(analyzers) - {p.instance for p in self.plugins})
        if unknown:
            raise UnknownAnalyzerError(f"no analyzer instance {', '.join(unknown)} is enabled (enabled: "
                                       f"{', '.join(p.instance for p in self.plugins) or 'none'})")
        study = self.index.get_study(study_uid)
        if study is None:
            raise UnknownObjectError("study", study_uid)
        now = time.time()
        only = set(analyzers) or None
        with self.store.batch() as b:
            queued = []
            for rec in self.index.series_of(study_uid):
                if not self.store.owned(rec.series_uid):
                    p = {"study_uid": study_uid, "series_uid": rec.series_uid, "patient_id": study.patient_id,
                         "reason": "requested"}
                    queued += self._series_complete(b, p, now, only)
            queued += self._study_complete(b, study_uid, study.patient_id, "requested", now, only)
        return queued

    def _of(self, event: str, only: set[str] | None) -> list[Plugin]:
        return [p for p in self.plugins if p.event == event and (only is None or p.instance in only)]

    def _series_complete(self, b: Batch, p: dict[str, Any], now: float,
                         only: set[str] | None = None) -> list[dict[str, Any]]:
        plugins = self._of(SERIES_COMPLETE, only)
        rec = self.index.get_series(p["series_uid"])
        if not plugins or rec is None:  # deleted since
            return []
        info = series_info(self.index, rec)
        return [b.queue(instance=pl.instance, event=SERIES_COMPLETE, study_uid=p["study_uid"],
                        series_uids=[p["series_uid"]], scope=p["series_uid"], patient_id=p["patient_id"],
                        reason=p["reason"], max_attempts=self.max_attempts, now=now)
                for pl in plugins if _wants(pl, info)]

    def _study_complete(self, b: Batch, study: str, patient: str, reason: str, now: float,
                        only: set[str] | None = None) -> list[dict[str, Any]]:
        plugins = self._of(STUDY_COMPLETE, only)
        if not plugins:
            return []
        infos = [series_info(self.index, s) for s in self.index.series_of(study)
                 if not self.store.owned(s.series_uid)]
        out = []
        for pl in plugins:
            wanted = [i.series_uid for i in infos if _wants(pl, i)]
            if wanted:
                out.append(b.queue(instance=pl.instance, event=STUDY_COMPLETE, study_uid=study,
                                   series_uids=wanted, scope="", patient_id=patient, reason=reason,
                                   max_attempts=self.max_attempts, now=now))
        return out


def mpps_marker_writes(record: dict[str, Any], now: float | None = None) -> dict[bytes, bytes | None]:
    """The markers an MPPS COMPLETED record leaves for its performed series."""
    now = time.time() if now is None else now
    out: dict[bytes, bytes | None] = {}
    for s in record.get("performed_series", []) or []:
        uid = str(s.get("series_uid") or "")
        if uid:
            images = int(s.get("images") or 0) + int(s.get("other_objects") or 0)
            out[MPPS + K.encode(uid)] = encode({"images": images, "at": now, "mpps": record.get("uid", "")})
    return out
