"""What a site serves to its replicas: its change feed, its blobs by hash, its instance list
(for failback reconciliation) and its status. Any site serves these, replicas included, which
is what makes chains work: a replica's own feed records what it applied.

Plain service methods returning the wire payloads (replication/wire.py); the HTTP routes that
carry them live in web/replication_routes.py, so this layer knows nothing of HTTP.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from ..engine import Engine
from ..errors import DicomVaultError, NotFoundError, RequestError
from ..index.records import DELETED
from . import state
from .tracker import ReplicaTracker
from .wire import MISSING, OK, UNREADABLE, frame, split_hashes

MAX_LIMIT = 5000
MAX_WAIT = 10.0


@dataclass(frozen=True)
class PullRequest:
    """Who is pulling: the replica's id (or its address), the principal its token names, the
    address it came from, and the last error it reported."""

    replica_id: str
    principal: str
    client: str
    feed_id: str | None = None
    error: str | None = None


class FeedService:
    def __init__(self, engine: Engine, tracker: ReplicaTracker, closing: threading.Event) -> None:
        self.engine = engine
        self.closing = closing
        self.tracker = tracker
        self.feed_id = state.feed_id(engine.index)

    def changes(self, who: PullRequest, since: int, limit: int, wait: float) -> dict[str, Any]:
        if since < 0:
            raise RequestError(f"since={since} is negative")
        limit = max(1, min(limit, MAX_LIMIT))
        # Long poll: an idle replica waits here for the next change instead of polling, which
        # keeps the RPO near one commit without a busy loop.
        wait = min(max(wait, 0.0), MAX_WAIT)
        index = self.engine.index
        self._record_pull(who, since)
        deadline = time.monotonic() + wait
        while True:
            entries = index.changes(since, limit)
            if entries or time.monotonic() >= deadline or self.closing.wait(0.02):
                break
        last_seq = index.last_seq()
        out = []
        for ch in entries:
            wire = ch.to_wire()
            wire["instance"] = None
            if ch.kind != DELETED and ch.hash is not None:
                # A record a rejection note hides still ships: the replica holds it hidden too.
                rec = index.get_instance(ch.sop_uid) or index.rejected_record(ch.sop_uid)
                if rec is not None and rec.hash == ch.hash:
                    wire["instance"] = rec.to_wire()
            out.append(wire)
        last_at = entries[-1].at if entries else 0.0
        return {"feed_id": self.feed_id, "last_seq": last_seq, "last_at": last_at,
                "now": time.time(), "changes": out}

    def _record_pull(self, who: PullRequest, since: int) -> None:
        """The replica's `since` is its durable cursor: what it holds. Recorded on arrival, so a
        long poll does not hide a replica that has caught up."""
        index = self.engine.index
        if who.feed_id not in (None, "", self.feed_id):
            since = 0  # its cursor is for another feed: it holds nothing of ours yet
        last_seq = index.last_seq()
        oldest = index.changes(since, 1) if last_seq > since else []
        self.tracker.pulled(
            who.replica_id or who.client,
            principal=who.principal,
            client=who.client,
            since=since,
            last_seq=last_seq,
            oldest_unapplied_at=oldest[0].at if oldest else None,
            error=who.error,
        )

    def blobs(self, body: bytes) -> bytes:
        try:
            hashes = split_hashes(body)
        except ValueError as exc:
            raise RequestError(str(exc)) from exc
        parts = []
        for h in hashes:
            try:
                codec, logical_len, data = self.engine.read_stored(h)
                parts.append(frame(h, OK, codec, logical_len, data))
            except NotFoundError:
                parts.append(frame(h, MISSING, 0, 0, b""))
            except DicomVaultError as exc:
                parts.append(frame(h, UNREADABLE, 0, 0, f"blob {h.hex()}: {exc}".encode()))
        return b"".join(parts)

    def instances(self) -> dict[str, Any]:
        pairs = [(r.sop_uid, r.hash) for r in self.engine.index.instances()]
        return {"feed_id": self.feed_id, "last_seq": self.engine.index.last_seq(), "instances": pairs}

    def status(self) -> dict[str, Any]:
        index = self.engine.index
        up = state.upstream(index)
        return {
            "feed_id": self.feed_id,
            "role": state.role(index),
            "last_seq": index.last_seq(),
            "objects": index.stats()["objects"],
            "upstream": None if up is None else up.__dict__,
            "replicas": self.tracker.snapshot(),
        }
