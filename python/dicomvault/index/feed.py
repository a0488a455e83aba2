"""Change feed: a monotonically numbered log of every change.

Entries live in the ``feed`` CF keyed by the big-endian u64 sequence number
and are written in the same WriteBatch as the change they describe, so the
feed can never disagree with the index.  Sequence numbers start at 1 and are
assigned under the index write lock, hence strictly increasing in commit
order with no gaps (until a future retention job trims old entries).

Consumers (replication, forwarding) keep a cursor, the last seq they
processed, and call ``Index.changes(cursor, limit)``.
"""

from __future__ import annotations

from typing import Any

from rocksdict import ReadOptions

from . import keys
from .records import Change


def feed_key(seq: int) -> bytes:
    """Key of feed entry ``seq``."""
    return keys.u64(seq)


def read_changes(feed_cf: Any, since: int, limit: int, upto: int | None = None) -> list[Change]:
    """Entries with ``since < seq (<= upto)``, oldest first, at most ``limit``."""
    if limit <= 0:
        return []
    ro = ReadOptions()
    if upto is not None:
        if upto <= since:
            return []
        ro.set_iterate_upper_bound(feed_key(upto + 1))
    it = feed_cf.iter(ro)
    it.seek(feed_key(since + 1))
    out: list[Change] = []
    while it.valid() and len(out) < limit:
        out.append(Change.decode(it.value()))
        it.next()
    return out


def last_seq_on_disk(feed_cf: Any) -> int:
    """Highest seq present in the feed CF (0 if empty)."""
    it = feed_cf.iter()
    it.seek_to_last()
    if not it.valid():
        return 0
    return keys.read_u64(it.key())
