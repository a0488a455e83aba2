"""Study read-ahead for the object-store tiers: one coalesced ranged GET for many blobs.

A study moved to an object store sits contiguously in a pack (moves are by study, in instance
order). Reading it instance by instance costs one GET round trip per instance (a few ms on a
local SeaweedFS, 20-50 ms on a remote S3), which a retrieve of 500 instances cannot afford. So
the first read of a study's blob fetches a window of the study's blobs that follow it in the
pack with one coalesced read (`ColdTier.read_many`) and keeps their stored bytes here; the next
reads of the retrieve find them. Stored bytes are kept (dense, a fraction of the logical size),
bounded, least recently used out first; every blob is still decoded and checked against its
hash when it is read.

The next window is fetched in the background once the retrieve reads the middle of the one
before (`PREFETCH_AT`): a fetch of 8-16 MiB took 25-35 ms, and with it in the foreground the
retrieve's readers both waited for it (the second one for the study's fetch lock) ~4 times per
study of 117 MB. A background fetch takes that lock too, so a reader that needs its blobs waits
for it rather than issuing a GET of its own; one that fails is only logged, and the reader then
fetches (and reports) as before.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from ..errors import DicomVaultError
from .cold import ColdPlacement, ColdTier

log = logging.getLogger(__name__)

# Stored bytes per read-ahead of a study: the first window is small (the first image must not
# wait for tens of MB), each next one doubles, up to the largest.
FIRST_WINDOW = 2 << 20
WINDOW_BYTES = 64 << 20
CACHE_BYTES = 256 << 20
# The blob of a window (as a fraction of its blobs) whose read starts the next window's fetch.
PREFETCH_AT = 0.5


class ColdReadCache:
    def __init__(self, max_bytes: int = CACHE_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[bytes, tuple[int, bytes]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()
        # One fetch per study at a time: the retrieve's read-ahead threads ask for neighbours
        # together, and the second must wait for the first's GET rather than issue its own.
        self._fetching = [threading.Lock() for _ in range(64)]
        self._windows: OrderedDict[str, int] = OrderedDict()
        # blob hash -> the fetch its read starts: (tier, study key, the study's blobs after the
        # window that holds it, in pack order)
        self._triggers: dict[bytes, tuple[ColdTier, str, list[ColdPlacement]]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._closed = False

    def get(self, blob_hash: bytes) -> tuple[int, bytes] | None:
        with self._lock:
            hit = self._items.get(blob_hash)
            if hit is not None:
                self._items.move_to_end(blob_hash)
            nxt = self._triggers.pop(blob_hash, None) if self._triggers else None
            if nxt is not None and not self._closed:
                if self._pool is None:
                    self._pool = ThreadPoolExecutor(1, thread_name_prefix="dv-cold-prefetch")
                self._pool.submit(self._prefetch, *nxt)
            return hit

    def close(self) -> None:
        """Stops the prefetches (those not started are dropped; the one running ends)."""
        with self._lock:
            self._closed = True
            pool, self._pool = self._pool, None
            self._triggers.clear()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    def put_many(self, items: dict[bytes, tuple[int, bytes]]) -> None:
        with self._lock:
            for h, v in items.items():
                if h in self._items:
                    continue
                self._items[h] = v
                self._size += len(v[1])
            while self._size > self.max_bytes and self._items:
                _, old = self._items.popitem(last=False)
                self._size -= len(old[1])

    def read_ahead(
        self, tier: ColdTier, p: ColdPlacement, key: str, study: Callable[[], Iterable[ColdPlacement]]
    ) -> tuple[int, bytes] | None:
        """(codec, stored bytes) of `p`, fetched with the blobs of `study` (called only on a
        miss) that follow it in its pack, up to the next window of `key`; None if `p` itself
        could not be read (the caller reads it alone and reports why)."""
        with self._fetching[hash(key) % len(self._fetching)]:
            hit = self.get(p.hash)
            if hit is not None:
                return hit
            following = sorted((q for q in study() if q.pack_key == p.pack_key and q.offset >= p.offset),
                               key=lambda q: q.offset)
            return self._fetch(tier, key, following).get(p.hash)

    def _fetch(
        self, tier: ColdTier, key: str, following: Sequence[ColdPlacement]
    ) -> dict[bytes, tuple[int, bytes]]:
        """Fetches the next window of `following` (the caller holds the study's fetch lock),
        keeps what was read, and arms the prefetch of the window after it."""
        window, size, limit = [], 0, self._next_window(key)
        for q in following:
            window.append(q)
            size += q.length
            if size >= limit:
                break
        got = tier.read_many(window)
        fetched = {q.hash: r for q, r in zip(window, got, strict=True) if not isinstance(r, Exception)}
        self.put_many(fetched)
        if len(window) < len(following):
            with self._lock:
                if not self._closed:
                    trigger = window[min(int(len(window) * PREFETCH_AT), len(window) - 1)].hash
                    self._triggers[trigger] = (tier, key, list(following[len(window):]))
        return fetched

    def _prefetch(self, tier: ColdTier, key: str, following: list[ColdPlacement]) -> None:
        with self._fetching[hash(key) % len(self._fetching)]:
            if self._closed or self.get(following[0].hash) is not None:
                return  # a reader fetched it meanwhile
            try:
                self._fetch(tier, key, following)
            except DicomVaultError as exc:  # the reader that needs these blobs fetches them
                log.info("cold read-ahead of %s: prefetch failed: %s", key, exc)
            except Exception:  # noqa: BLE001 - a bug here must not vanish into the pool's future
                log.exception("cold read-ahead of %s: prefetch failed", key)

    def _next_window(self, key: str) -> int:
        """The size of the next read-ahead of `key` (a study in a pack): doubles each time."""
        with self._lock:
            size = min(self._windows.pop(key, FIRST_WINDOW // 2) * 2, WINDOW_BYTES)
            self._windows[key] = size
            while len(self._windows) > 1024:
                self._windows.popitem(last=False)
            return size
