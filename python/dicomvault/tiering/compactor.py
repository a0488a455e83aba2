"""The background compactor: landing (raw, written at disk speed) → the next local tier (hot
codec), blob by blob, on every core when ingest is idle; while ingest is busy it waits, unless the
landing tier is filling up (then one low-priority thread drains it).

Why per blob and not per study: the landing tier exists so ingest costs only the disk and a
hash; it should drain as fast as the codec allows, whatever study a blob belongs to. Each batch
is a `Mover` batch (copy, read back and verify, index switch, free); a landing volume whose
records all left is then removed by the store's own compaction (threshold 1.0: only fully dead
volumes, nothing is copied).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ..engine import Engine
from ..index import BlobRecord
from .mover import Mover, MoveReport, batches

log = logging.getLogger(__name__)

# Ingest counts as busy if it committed within this many seconds.
BUSY_WINDOW = 1.0
# While ingest or a retrieve is busy, compaction threads look again this often.
YIELD_SLEEP = 0.05
# While ingest is busy, one thread compacts anyway once the landing tier holds this share of its
# capacity or, with no capacity set, once its file system has less than FS_FREE_FLOOR of its
# size free. Why wait at all: a compaction thread, even at nice 19, takes the GIL for its index
# work and the CPU for the codec; measured in a DIMSE burst, ~300 us per ingested object on disk
# (bench/RESULTS.md, "late" rows). Why not always: a burst that never stops must not fill the disk.
LANDING_PRESSURE = 0.5
FS_FREE_FLOOR = 0.2
PRESSURE_CHECK = 1.0  # seconds a landing-pressure verdict is kept
# A background pass that found nothing to do lists the landing tier again at the latest after
# this long (a blob landed by a path that does not count as ingest: a replica's apply, a restore).
RESCAN_S = 60.0


def lower_priority() -> None:
    """This thread at nice 19 (Linux: per thread), so ingest and retrieval always win the CPU."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (OSError, AttributeError):  # not Linux or not permitted: run at normal priority
        pass


def compaction_target(engine: Engine) -> str | None:
    """The tier the compactor fills: the first local tier after landing, when landing is raw."""
    if engine.tiers[0].codec != "raw":
        return None
    for t in engine.local_tiers[1:]:
        return t.name
    return None


@dataclass
class CompactionPass:
    report: MoveReport
    extra_copies_freed: int = 0
    volumes_removed: int = 0
    threads: int = 1


class Compactor:
    def __init__(self, engine: Engine, *, threads: int = 0, compact_after: float = 0.0) -> None:
        self.engine = engine
        self.target = compaction_target(engine)
        self.threads = threads or os.cpu_count() or 1
        self.compact_after = compact_after
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.totals = MoveReport()
        self._lock = threading.Lock()
        self._pressure_at = float("-inf")
        self._pressed = False
        # When the last listing of the landing tier started (monotonic and wall clock), and when
        # the earliest blob it found not yet due (compact_after) becomes due (wall clock).
        self._listed_mono = float("-inf")
        self._listed_wall = 0.0
        self._pending_due = float("inf")

    # -- one pass --------------------------------------------------------------------------
    def _landing_blobs(self, extra: list[bytes], not_due: list[float]) -> Iterator[BlobRecord]:
        eng = self.engine
        landing = eng.tiers[0].name
        known = {t.name for t in eng.tiers}
        now = time.time()
        for h in eng.vault.tier_hashes(0):
            rec = eng.index.blob(h)
            if rec is None:
                continue  # being ingested right now, or an orphan (reclaim() handles those)
            placed = eng.placed_tier(rec)
            if placed != landing and placed in known:
                extra.append(h)  # a copy left by an interrupted move, or a re-sent duplicate
                continue
            # Placed here, or in a tier this layout does not have (a restored backup of a
            # tiered archive): compacted like any landed blob, which also fixes its record.
            if now - rec.created_at >= self.compact_after:
                yield rec
            else:
                not_due.append(rec.created_at + self.compact_after)

    def run_once(self, *, threads: int | None = None) -> CompactionPass:
        """Moves every eligible landing blob to the target tier; returns what it did."""
        eng = self.engine
        if self.target is None:
            return CompactionPass(MoveReport())
        extra: list[bytes] = []
        not_due: list[float] = []
        listed_mono, listed_wall = time.monotonic(), time.time()
        work = list(batches(self._landing_blobs(extra, not_due)))
        known = {t.name for t in eng.tiers}
        # Landed blobs, and blobs placed in a tier this layout lacks; never one a study move
        # placed elsewhere after the listing above.
        sources = {eng.tiers[0].name} | {b.tier for batch in work for b in batch if b.tier not in known}
        n = max(1, min(threads or self.threads, len(work) or 1))
        result = CompactionPass(MoveReport(), threads=n)
        if extra:
            with eng._lock.shared():
                # Re-checked under the lock: only copies of blobs placed where a copy exists.
                gone = [h for h in extra if (r := eng.index.blob(h)) is not None
                        and self._held_elsewhere(eng.placed_tier(r), h)]
                result.extra_copies_freed = eng.vault.delete_in(0, gone)
        if work:
            slots = iter(range(n))
            slot_lock = threading.Lock()

            def init() -> None:
                lower_priority()
                with slot_lock:
                    threading.current_thread().dv_slot = next(slots, n)  # type: ignore[attr-defined]

            def one(batch: list[BlobRecord]) -> MoveReport:
                if self._stop.is_set():
                    return MoveReport()
                slot = getattr(threading.current_thread(), "dv_slot", 0)
                # Every thread waits while objects are being retrieved (a radiologist opening the
                # study just received must not share the CPU and the GIL with its compaction) and
                # while ingest is busy, but for one once the landing tier fills up.
                while not self._stop.is_set() and (
                        self.retrieve_busy()
                        or (self.ingest_busy() and (slot > 0 or not self.landing_pressed()))):
                    time.sleep(YIELD_SLEEP)
                return Mover(eng).move(batch, self.target or "", sources=sources)

            with ThreadPoolExecutor(n, thread_name_prefix="dv-compact", initializer=init) as pool:
                for r in pool.map(one, work):
                    result.report.add(r)
        if result.report.blobs or result.extra_copies_freed:
            result.volumes_removed = int(eng.compact(1.0).get("volumes_compacted", 0))
        with self._lock:
            self.totals.add(result.report)
            self._listed_mono, self._listed_wall = listed_mono, listed_wall
            # Blobs that failed to move (or were left at a stop) are due again at once.
            self._pending_due = listed_wall if result.report.failed or self._stop.is_set() else min(
                not_due, default=float("inf"))
        return result

    def pass_worthwhile(self) -> bool:
        """Whether a background pass could move anything now. A pass lists the landing tier,
        reading the index record of every blob in it (~10 µs each, with the GIL): once a second
        during an ingest burst that was ~7 % of the server's samples with 2,400 objects landed
        (py-spy, 4 storescu), for nothing, as the movers then only wait. So no pass while reads
        or ingest would hold the movers back (unless the landing tier fills up), and, with
        compact_after, none before the earliest landed blob is due: what lands later is due later
        still. A pass at least every RESCAN_S all the same."""
        if self.retrieve_busy() or (self.ingest_busy() and not self.landing_pressed()):
            return False
        with self._lock:
            listed_mono, listed_wall, due = self._listed_mono, self._listed_wall, self._pending_due
        if time.monotonic() - listed_mono >= RESCAN_S:
            return True
        if self.engine.last_ingest >= listed_mono:  # stored since that listing began
            due = min(due, listed_wall + self.compact_after)
        return time.time() >= due

    def _held_elsewhere(self, placed: str, blob_hash: bytes) -> bool:
        eng = self.engine
        if placed == eng.tiers[0].name:
            return False
        if placed in eng.remote_tiers:
            return True  # read back and verified in the object store before it was placed there
        return eng.local_index(placed) in eng.vault.holders(blob_hash)

    def ingest_busy(self) -> bool:
        return time.monotonic() - self.engine.last_ingest < BUSY_WINDOW

    def retrieve_busy(self) -> bool:
        return time.monotonic() - self.engine.last_read < BUSY_WINDOW

    def landing_pressed(self) -> bool:
        """The landing tier is filling up (see LANDING_PRESSURE): kept for PRESSURE_CHECK seconds."""
        now = time.monotonic()
        with self._lock:
            if now - self._pressure_at < PRESSURE_CHECK:
                return self._pressed
        landing = self.engine.tiers[0]
        if landing.capacity:
            used = dict(self.engine.vault.tier_stats()).get(landing.name, {}).get("disk_bytes", 0)
            pressed = used >= LANDING_PRESSURE * landing.capacity
        else:
            fs = os.statvfs(self.engine.data_dir / "blobs" / (landing.path or ""))
            pressed = fs.f_bavail < FS_FREE_FLOOR * fs.f_blocks
        with self._lock:
            self._pressure_at, self._pressed = now, pressed
        return pressed

    # -- in the background -------------------------------------------------------------------
    def start(self, interval: float = 1.0) -> None:
        if self.target is None or self._thread is not None:
            return

        def loop() -> None:
            lower_priority()
            while not self._stop.wait(interval):
                if not self.pass_worthwhile():
                    continue
                try:
                    p = self.run_once()
                    if p.report.failed:
                        log.warning("compaction: %d blobs not moved, first: %s", len(p.report.failed),
                                    p.report.failed[0])
                except Exception:  # keep compacting after a transient failure (disk full, ...)
                    log.exception("compaction pass failed; retrying in %.0f s", interval)

        self._thread = threading.Thread(target=loop, name="dv-compactor", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
