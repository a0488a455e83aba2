"""Tier jobs: study moves (by command or by policy), promotion of studies read from an object
store, demotion when the promotion ends, and the reclaim of what crashes leave behind.

A policy run is a job whose plan (the list of study moves) is stored in the index meta
(`tier/job`) before the first move, with a count of the moves done: a run interrupted by a
crash, a stop, the end of its time window or an object-store outage resumes where it stopped
(a study move is idempotent: blobs already in the destination are skipped). Moves are paced by
the configured rate limit.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime
from typing import Any

import msgpack

from ..engine import Engine
from ..errors import RequestError, UnavailableError, UnknownObjectError
from ..storage.settings import DAY, TieringSettings
from . import studies
from .mover import Mover, MoveReport, fetch_to_local
from .policy import PlannedMove, plan_all

log = logging.getLogger(__name__)

JOB_KEY = b"tier/job"


class Pacer:
    """Sleeps so that the bytes reported stay under `rate` bytes/s on average."""

    def __init__(self, rate: int | None) -> None:
        self.rate = rate
        self.start = time.monotonic()
        self.sent = 0

    def __call__(self, nbytes: int) -> None:
        if not self.rate:
            return
        self.sent += nbytes
        ahead = self.sent / self.rate - (time.monotonic() - self.start)
        if ahead > 0:
            time.sleep(ahead)


def move_study(
    engine: Engine, study_uid: str, to_tier: str, *, pace: Callable[[int], None] | None = None,
    promoted_until: float | None = None,
) -> MoveReport:
    """Moves every blob of a study to `to_tier` and records the study there. Raises
    UnknownObjectError for an unknown study, the store's error when it is down."""
    if to_tier not in {t.name for t in engine.tiers}:
        raise RequestError(f"no tier named {to_tier!r} (tiers: {[t.name for t in engine.tiers]})")
    blobs = engine.study_blobs(study_uid)
    report = Mover(engine, pace=pace).move(blobs, to_tier)
    if not report.failed:
        studies.put(engine, study_uid, studies.StudyTier(to_tier, time.time(), promoted_until))
    return report


def promote(engine: Engine, study_uid: str, days: float) -> int:
    """A study read from an object store: its blobs are copied to the first local tier that
    compresses and kept there (the object-store copy stays the placement, so promotion ends by
    just dropping the local copies). Returns the number of blobs copied."""
    dest = engine.local_index(studies.home_tier(engine))
    items = []
    for b in engine.study_blobs(study_uid):
        if b.tier not in engine.remote_tiers or engine.vault.holders(b.hash):
            continue
        items.append(b)
    with engine._lock.shared():
        # What the retrieve that caused the promotion fetched is still in the read cache.
        copied = sum(not isinstance(r, Exception) for r in fetch_to_local(engine, items, dest))
    st = studies.get(engine, study_uid)
    studies.put(engine, study_uid, studies.StudyTier(st.tier, st.moved_at, time.time() + days * DAY))
    return copied


def demote_expired(engine: Engine, now: float | None = None) -> int:
    """Drops the local copies of promoted studies whose promotion ended; how many blobs."""
    now = now or time.time()
    freed = 0
    for uid, st in studies.all_tiers(engine).items():
        if st.promoted_until is None or st.promoted_until > now or st.tier not in engine.remote_tiers:
            continue
        try:
            hashes = [b.hash for b in engine.study_blobs(uid) if b.tier in engine.remote_tiers]
        except UnknownObjectError:
            hashes = []
        with engine._lock.shared():
            freed += engine.vault.delete(hashes) if hashes else 0
        studies.put(engine, uid, studies.StudyTier(st.tier, st.moved_at, None))
    return freed


def reclaim(engine: Engine) -> dict[str, int]:
    """What crashes leave: local blobs no index record names (a crash between the durable put
    and the index commit of an ingest), local copies in a tier other than the one named, and
    object-store packs no blob lives in. Candidates are found without a lock, then re-checked
    and freed under the exclusive lock (a store of the same hash cannot interleave)."""
    out = {"orphans": 0, "extra_copies": 0, "packs": 0}
    now = time.time()
    promoted: set[bytes] = set()
    for uid, st in studies.all_tiers(engine).items():
        if st.promoted_until is not None and st.promoted_until > now:
            try:
                promoted.update(b.hash for b in engine.study_blobs(uid))
            except UnknownObjectError:
                continue

    def extra(i: int, h: bytes, rec: Any) -> bool:
        if rec.tier in engine.remote_tiers:
            # A local copy of an object-store blob is a promotion, or what a crash between the
            # index switch and the free of a move to the store left.
            return h not in promoted
        return engine.placed_tier(rec) != engine.local_tiers[i].name and len(engine.vault.holders(h)) > 1

    candidates: list[tuple[int, bytes]] = []
    for i, _t in enumerate(engine.local_tiers):
        for h in engine.vault.tier_hashes(i):
            rec = engine.index.blob(h)
            if rec is None or extra(i, h, rec):
                candidates.append((i, h))
    if candidates:
        with engine._lock.exclusive():
            for i, h in candidates:
                rec = engine.index.blob(h)
                if rec is None:
                    out["orphans"] += engine.vault.delete_in(i, [h])
                elif extra(i, h, rec):
                    out["extra_copies"] += engine.vault.delete_in(i, [h])
    engine.free_packs()
    live = set(engine.index.live_packs())
    for name in engine.remote_tiers:
        try:
            for key in engine.remote(name).orphan_packs(live):
                engine.remote(name).delete_pack(key)
                out["packs"] += 1
        except UnavailableError as exc:
            log.warning("tier %s: orphan sweep skipped: %s", name, exc)
    return out


@dataclass
class Job:
    id: str
    started: float
    moves: list[dict[str, Any]]
    done: int = 0
    bytes: int = 0
    failed: list[str] = field(default_factory=list)
    state: str = "running"  # running, paused (window, outage), done

    def to_bytes(self) -> bytes:
        return msgpack.packb(asdict(self))

    @classmethod
    def from_bytes(cls, raw: bytes) -> Job:
        return cls(**msgpack.unpackb(raw))

    def progress(self) -> dict[str, Any]:
        return {"id": self.id, "state": self.state, "moves": len(self.moves), "done": self.done,
                "bytes": self.bytes, "failed": list(self.failed), "started": self.started}


def current_job(engine: Engine) -> Job | None:
    raw = engine.index.get_meta(JOB_KEY)
    return Job.from_bytes(raw) if raw else None


def plan(engine: Engine, settings: TieringSettings, policy: str | None = None) -> list[PlannedMove]:
    """The moves the policies (or the one named) would make now."""
    policies = tuple(p for p in settings.policies if policy is None or p.name == policy)
    if policy is not None and not policies:
        raise RequestError(f"no policy named {policy!r} (policies: {[p.name for p in settings.policies]})")
    stats = engine.tier_stats()
    return plan_all(
        replace(settings, policies=policies),
        studies.placements(engine),
        now=time.time(),
        tier_used={k: v["used_bytes"] for k, v in stats.items()},
        tier_capacity={k: v["capacity"] for k, v in stats.items()},
    )


def run_policies(
    engine: Engine,
    settings: TieringSettings,
    *,
    policy: str | None = None,
    stop: threading.Event | None = None,
    now: Callable[[], datetime] = datetime.now,
    ignore_window: bool = False,
) -> Job | None:
    """Resumes the stored job, or plans and starts a new one; runs it until done, stopped, out
    of its window or the object store is down (then it is left `paused` to resume)."""
    job = current_job(engine)
    if job is None or job.state == "done":
        moves = plan(engine, settings, policy)
        if not moves:
            return job
        job = Job(id=f"tier-{int(time.time())}", started=time.time(),
                  moves=[{"study": m.study_uid, "to": m.to_tier, "policy": m.policy, "reason": m.reason}
                         for m in moves])
    job.state = "running"
    engine.index.put_meta(JOB_KEY, job.to_bytes())
    pacer = Pacer(settings.rate_limit)
    while job.done < len(job.moves):
        if stop is not None and stop.is_set():
            job.state = "paused"
            break
        if not ignore_window and not settings.in_window(now()):
            job.state = "paused"
            break
        m = job.moves[job.done]
        try:
            r = move_study(engine, m["study"], m["to"], pace=pacer)
            job.bytes += r.stored_bytes
            if r.failed:
                job.failed.append(f"{m['study']}: {len(r.failed)} blobs: {r.failed[0][1]}")
        except UnknownObjectError:
            pass  # deleted since it was planned
        except UnavailableError as exc:
            log.warning("tier job %s paused: %s", job.id, exc)
            job.state = "paused"
            break
        job.done += 1
        engine.index.put_meta(JOB_KEY, job.to_bytes())
    else:
        job.state = "done"
    engine.index.put_meta(JOB_KEY, job.to_bytes())
    return job


def status(engine: Engine, settings: TieringSettings | None = None) -> dict[str, Any]:
    """`tier status`: per tier objects, bytes, capacity, free, ratio; pending moves; the job."""
    out: dict[str, Any] = {"tiers": engine.tier_stats()}
    placed = studies.placements(engine) if settings is not None else []
    per: dict[str, int] = {}
    for s in placed:
        per[s.tier] = per.get(s.tier, 0) + 1
    for name, row in out["tiers"].items():
        row["studies"] = per.get(name, 0)
        row["pending_moves_out"] = 0
    if settings is not None and settings.policies:
        for m in plan(engine, settings):
            out["tiers"][m.from_tier]["pending_moves_out"] += 1
    job = current_job(engine)
    out["job"] = job.progress() if job else None
    out["promoted"] = sum(1 for st in studies.all_tiers(engine).values()
                          if st.promoted_until and st.promoted_until > time.time())
    return out


def promote_pending(engine: Engine, settings: TieringSettings) -> int:
    """Promotes the studies read from an object store since the last call."""
    pending, engine.cold_reads = engine.cold_reads, set()
    n = 0
    for uid in sorted(pending):
        try:
            n += promote(engine, uid, settings.promote_days)
        except (UnknownObjectError, UnavailableError) as exc:
            log.warning("promotion of study %s skipped: %s", uid, exc)
    return n


def moves_summary(moves: Sequence[PlannedMove]) -> list[dict[str, Any]]:
    return [{"study": m.study_uid, "from": m.from_tier, "to": m.to_tier, "policy": m.policy,
             "reason": m.reason, "stored_bytes": m.stored_bytes} for m in moves]
