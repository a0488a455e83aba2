"""Study read-ahead for the object-store tiers: one coalesced ranged GET for many blobs.

A study moved to an object store sits contiguously in a pack (moves are by study, in instance
order). Reading it instance by instance costs one GET round trip per instance (a few ms on a
local SeaweedFS, 20-50 ms on a remote S3), which a retrieve of 500 instances cannot afford. So
the first read of a study's blob fetches a window of the study's blobs that follow it in the
pack with one coalesced read (`ColdTier.read_many`) and keeps their stored bytes here; the next
reads of the retrieve find them. Stored bytes are kept (dense, a fraction of the logical size),
bounded, least recently used out first; every blob is still decoded and checked against its
hash when it is read.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable

from .cold import ColdPlacement, ColdTier

# Stored bytes per read-ahead of a study: the first window is small (the first image must not
# wait for tens of MB), each next one doubles, up to the largest.
FIRST_WINDOW = 2 << 20
WINDOW_BYTES = 64 << 20
CACHE_BYTES = 256 << 20


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

    def get(self, blob_hash: bytes) -> tuple[int, bytes] | None:
        with self._lock:
            hit = self._items.get(blob_hash)
            if hit is not None:
                self._items.move_to_end(blob_hash)
            return hit

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
            window, size, limit = [], 0, self._next_window(key)
            for q in following:
                window.append(q)
                size += q.length
                if size >= limit:
                    break
            got = tier.read_many(window)
            fetched = {q.hash: r for q, r in zip(window, got, strict=True) if not isinstance(r, Exception)}
            self.put_many(fetched)
            return fetched.get(p.hash)

    def _next_window(self, key: str) -> int:
        """The size of the next read-ahead of `key` (a study in a pack): doubles each time."""
        with self._lock:
            size = min(self._windows.pop(key, FIRST_WINDOW // 2) * 2, WINDOW_BYTES)
            self._windows[key] = size
            while len(self._windows) > 1024:
                self._windows.popitem(last=False)
            return size
