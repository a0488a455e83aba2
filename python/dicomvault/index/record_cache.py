"""Decoded study, series and patient records kept between write transactions.

Why: a C-STORE commits one instance per transaction (each sender has one object in flight, so
commits rarely coincide), and each transaction loaded, decoded and re-derived the secondary
entries of the same study, series and patient records that the previous one had just written:
~150 µs of fixed Python per commit on top of ~55 µs per object in a batch of 32 (measured,
bench/RESULTS.md "Index commit per object"). Every write goes through a :class:`~.txn.Txn`
under the index's write lock, so the records a transaction wrote are exactly what the database
holds until the next transaction, which takes them from here instead of decoding them again.

Safety: a transaction *takes* a record out of the cache when it loads it, and records go back
only when their batch was written, as written (the record and its secondary entries). A
transaction that fails, or a record loaded and not written, leaves nothing here, so the next
load reads the database.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from .schema import CF_PATIENTS, CF_SERIES, CF_STUDIES

# Aggregates that every store in a study rewrites; instance and blob records are written once.
CACHED_CFS = frozenset((CF_STUDIES, CF_SERIES, CF_PATIENTS))
MAX_RECORDS = 1024  # the studies arriving now, each with its series and patient: a few dozen


class RecordCache:
    """LRU of (record, its secondary entries) by (column family, key); write lock held by callers."""

    def __init__(self, max_records: int = MAX_RECORDS) -> None:
        self.max_records = max_records
        self._items: OrderedDict[tuple[str, bytes], tuple[Any, Mapping[bytes, bytes]]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._items)

    def take(self, cf: str, key: bytes) -> tuple[Any, Mapping[bytes, bytes]] | None:
        """The record last written under `key` and its entries, removed from the cache."""
        if cf not in CACHED_CFS:
            return None
        hit = self._items.pop((cf, key), None)
        if hit is None:
            self.misses += 1
        else:
            self.hits += 1
        return hit

    def keep(self, cf: str, key: bytes, rec: Any, entries: Mapping[bytes, bytes]) -> None:
        """`rec` as just written (None: deleted), with the secondary entries written for it."""
        if cf not in CACHED_CFS:
            return
        if rec is None:
            self._items.pop((cf, key), None)
            return
        self._items[(cf, key)] = (rec, entries)
        self._items.move_to_end((cf, key))
        while len(self._items) > self.max_records:
            self._items.popitem(last=False)

    def clear(self) -> None:
        self._items.clear()
