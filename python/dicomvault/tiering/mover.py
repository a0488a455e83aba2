"""Moving blobs between tiers: copy → read back and verify → index switch → free the old copy.

Every step is crash-safe. Until the index switch (one RocksDB batch, `Index.set_placements`)
the index names the old copy, which is still there; after it, the new copy, which was read back
and checked against the blob's BLAKE3 before the switch. What a crash can leave is a second
copy nobody names: a local one is freed by the next move or by `reclaim()`, a pack in the
object store by the orphan sweep. Nothing is freed before the switch is durable.

All of a batch runs under the engine's shared lock: ingest and reads go on, a delete (which
takes the exclusive lock) waits for the batch, so a blob cannot vanish between "copied" and
"switched".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from .. import (
    _native,  # type: ignore[attr-defined]
    failpoints,
)
from ..engine import Engine
from ..errors import DicomVaultError
from ..index import BlobRecord, Placement

# How much one batch copies: big enough that a sync and an index commit are amortised, small
# enough that a delete never waits long behind the shared lock.
BATCH_BYTES = 32 << 20
BATCH_BLOBS = 512


@dataclass
class MoveReport:
    blobs: int = 0  # switched to the destination
    logical_bytes: int = 0
    stored_bytes: int = 0  # in the destination
    skipped: int = 0  # already there, or placed elsewhere by someone else meanwhile
    failed: list[tuple[str, str]] = field(default_factory=list)  # (hash hex, reason)
    seconds: float = 0.0

    def add(self, other: MoveReport) -> None:
        self.blobs += other.blobs
        self.logical_bytes += other.logical_bytes
        self.stored_bytes += other.stored_bytes
        self.skipped += other.skipped
        self.failed.extend(other.failed)
        self.seconds += other.seconds


def recode_for(dest_codec: int, codec: int, stored: bytes, logical_len: int) -> tuple[int, bytes]:
    """Stored bytes re-encoded for a local tier's codec when they come from a denser one: a
    blob back from the cold tier must not keep the cold codec's decode cost on every read."""
    if codec <= dest_codec:
        return codec, stored
    used, out = _native.recode(codec, stored, logical_len, dest_codec)
    return int(used), bytes(out)


def fetch_to_local(
    engine: Engine, blobs: Sequence[BlobRecord], dest: int
) -> list[tuple[int, int] | Exception]:
    """Copies object-store blobs into local tier `dest`, recoded for its codec and verified by
    `put_stored`; per blob, (codec, stored length) of the local copy or why not. The caller
    holds the engine's shared lock."""
    dest_codec = engine.local_tiers[dest].codec_id
    got = engine.read_remote_many(blobs)
    # Every blob read is replaced below by its put's outcome; a failed read stays its error.
    out: list[Any] = list(got)
    items, idx = [], []
    for i, (b, r) in enumerate(zip(blobs, got, strict=True)):
        if not isinstance(r, Exception):
            codec, stored = recode_for(dest_codec, r[0], r[1], b.logical_len)
            items.append((b.hash, codec, b.logical_len, stored))
            idx.append(i)
    if items:
        for i, item, res in zip(idx, items, engine.vault.put_stored(items, tier=dest), strict=True):
            out[i] = res if isinstance(res, Exception) else (item[1], len(item[3]))
    return out


def batches(blobs: Iterable[BlobRecord], max_bytes: int = BATCH_BYTES) -> Iterable[list[BlobRecord]]:
    batch: list[BlobRecord] = []
    size = 0
    for b in blobs:
        batch.append(b)
        size += b.stored_len
        if size >= max_bytes or len(batch) >= BATCH_BLOBS:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


class Mover:
    """Moves blobs of one engine. `pace(nbytes)` is called after each batch (rate limits)."""

    def __init__(self, engine: Engine, *, pace: Callable[[int], None] | None = None) -> None:
        self.engine = engine
        self.pace = pace or (lambda _n: None)

    def move(
        self, blobs: Sequence[BlobRecord], to_tier: str, *, sources: Collection[str] | None = None
    ) -> MoveReport:
        """Moves the given blobs (index records as read by the caller) to `to_tier`. With
        `sources`, only blobs still placed in one of those tiers when their batch runs (the
        compactor: a blob a study move took to another tier meanwhile stays there)."""
        report = MoveReport()
        for batch in batches(blobs):
            t0 = time.perf_counter()
            if to_tier in self.engine.remote_tiers:
                r = self._to_remote(batch, to_tier)
            else:
                r = self._to_local(batch, to_tier, sources)
            r.seconds = time.perf_counter() - t0
            report.add(r)
            self.pace(r.stored_bytes)
        return report

    # -- local destination -------------------------------------------------------------------
    def _to_local(
        self, batch: Sequence[BlobRecord], to_tier: str, sources: Collection[str] | None
    ) -> MoveReport:
        eng = self.engine
        dest = eng.local_index(to_tier)
        spec = eng.tiers[[t.name for t in eng.tiers].index(to_tier)]
        report = MoveReport()
        with eng._lock.shared():
            fresh = [b for b in map(eng.index.blob, [b.hash for b in batch]) if b is not None]
            todo = [b for b in fresh if eng.placed_tier(b) != to_tier
                    and (sources is None or b.tier in sources or eng.placed_tier(b) in sources)]
            report.skipped += len(batch) - len(todo)
            local = [b for b in todo if b.tier not in eng.remote_tiers]
            remote = [b for b in todo if b.tier in eng.remote_tiers]
            moves: list[Placement] = []
            # Local → local: natively, by whichever tier holds the copy now.
            by_source: dict[int, list[BlobRecord]] = {}
            for b in local:
                holders = [i for i in eng.vault.holders(b.hash) if i != dest]
                if not holders:
                    if dest in eng.vault.holders(b.hash):
                        # The copy is already there (an interrupted move): just switch.
                        moves.append(Placement(b.hash, b.tier, to_tier, b.codec, b.stored_len))
                    else:
                        report.failed.append((b.hash.hex(), "no local copy"))
                    continue
                by_source.setdefault(holders[0], []).append(b)
            for src, group in by_source.items():
                results = eng.vault.copy_between([b.hash for b in group], src, dest, spec.codec_id)
                for b, res in zip(group, results, strict=True):
                    if isinstance(res, Exception):
                        report.failed.append((b.hash.hex(), str(res)))
                    else:
                        moves.append(Placement(b.hash, b.tier, to_tier, res[0], res[1]))
            # Object store → local: fetched, verified by put_stored, then switched.
            if remote:
                self._fetch_into(remote, dest, moves, report, to_tier)
            failpoints.hit("move.local.copied")
            switched = set(eng.index.set_placements(moves))
            failpoints.hit("move.local.switched")
            self._account(moves, switched, report, {b.hash: b.logical_len for b in fresh})
            self._free_old(moves, switched, dest)
            failpoints.hit("move.local.freed")
        eng.free_packs()
        return report

    def _fetch_into(
        self, blobs: Sequence[BlobRecord], dest: int, moves: list[Placement], report: MoveReport, to_tier: str
    ) -> None:
        for b, res in zip(blobs, fetch_to_local(self.engine, blobs, dest), strict=True):
            if isinstance(res, Exception):
                report.failed.append((b.hash.hex(), str(res)))
            else:
                moves.append(Placement(b.hash, b.tier, to_tier, res[0], res[1]))

    # -- object-store destination --------------------------------------------------------------
    def _to_remote(self, batch: Sequence[BlobRecord], to_tier: str) -> MoveReport:
        eng = self.engine
        report = MoveReport()
        with eng._lock.shared():
            fresh = [b for b in map(eng.index.blob, [b.hash for b in batch]) if b is not None]
            todo = [b for b in fresh if b.tier != to_tier and b.tier not in eng.remote_tiers]
            report.skipped += len(batch) - len(todo)
            items, keep = [], []
            for b in todo:
                try:
                    codec, logical_len, stored = eng.vault.read_stored(b.hash)
                except DicomVaultError as exc:
                    report.failed.append((b.hash.hex(), str(exc)))
                    continue
                items.append((b.hash, codec, logical_len, stored))
                keep.append(b)
            if not items:
                return report
            # Uploads, reads back and verifies every blob before returning placements; raises
            # (and leaves the index as it was) if the store is down or a blob does not verify.
            placements = eng.remote(to_tier).put(items)
            failpoints.hit("move.remote.uploaded")
            moves = [
                Placement(b.hash, b.tier, to_tier, p.codec, p.length, p.pack_key, p.offset, p.digest)
                for b, p in zip(keep, placements, strict=True)
            ]
            switched = set(eng.index.set_placements(moves))
            failpoints.hit("move.remote.switched")
            self._account(moves, switched, report, {b.hash: b.logical_len for b in fresh})
            if switched:
                eng.vault.delete(list(switched))
            failpoints.hit("move.remote.freed")
        return report

    # -- shared ----------------------------------------------------------------------------
    @staticmethod
    def _account(
        moves: Sequence[Placement], switched: set[bytes], report: MoveReport, logical: dict[bytes, int]
    ) -> None:
        for m in moves:
            if m.hash in switched:
                report.blobs += 1
                report.stored_bytes += m.stored_len
                report.logical_bytes += logical.get(m.hash, 0)
            else:
                report.skipped += 1

    def _free_old(self, moves: Sequence[Placement], switched: set[bytes], dest: int) -> None:
        eng = self.engine
        for i, _t in enumerate(eng.local_tiers):
            if i != dest:
                eng.vault.delete_in(i, [m.hash for m in moves if m.hash in switched])
