"""What a site serves to its replicas: its change feed, its blobs by hash, its instance list
(for failback reconciliation) and its status. Any site serves these, replicas included, which
is what makes chains work: a replica's own feed records what it applied."""

from __future__ import annotations

import threading
import time
from typing import Any

import msgpack

from ..engine import Engine
from ..errors import DicomVaultError, NotFoundError
from ..index.records import DELETED
from ..web.router import REPLICATION, HttpError, Request, Response, Router
from . import state
from .tracker import ReplicaTracker
from .wire import MISSING, OK, UNREADABLE, frame, split_hashes

MSGPACK = "application/msgpack"
MAX_LIMIT = 5000
MAX_WAIT = 10.0


def _pack(data: Any) -> Response:
    return Response(200, msgpack.packb(data, use_bin_type=True), MSGPACK)


class FeedService:
    def __init__(self, engine: Engine, tracker: ReplicaTracker, closing: threading.Event) -> None:
        self.engine = engine
        self.closing = closing
        self.tracker = tracker
        self.feed_id = state.feed_id(engine.index)

    def register(self, router: Router) -> None:
        router.add("GET", "/replication/changes", self.changes, REPLICATION)
        router.add("POST", "/replication/blobs", self.blobs, REPLICATION)
        router.add("GET", "/replication/instances", self.instances, REPLICATION)
        router.add("GET", "/replication/status", self.status, REPLICATION)

    def changes(self, req: Request) -> Response:
        since = req.int_arg("since", 0)
        limit = max(1, min(req.int_arg("limit", 1000), MAX_LIMIT))
        # Long poll: an idle replica waits here for the next change instead of polling, which
        # keeps the RPO near one commit without a busy loop.
        try:
            wait = min(float(req.arg("wait", "0") or 0), MAX_WAIT)
        except ValueError:
            raise HttpError(400, f"query parameter wait={req.arg('wait')!r} is not a number") from None
        index = self.engine.index
        self._record_pull(req, since)
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
                rec = index.get_instance(ch.sop_uid)
                if rec is not None and rec.hash == ch.hash:
                    wire["instance"] = rec.to_wire()
            out.append(wire)
        last_at = entries[-1].at if entries else 0.0
        return _pack({"feed_id": self.feed_id, "last_seq": last_seq, "last_at": last_at,
                      "now": time.time(), "changes": out})

    def _record_pull(self, req: Request, since: int) -> None:
        """The replica's `since` is its durable cursor: what it holds. Recorded on arrival, so a
        long poll does not hide a replica that has caught up."""
        index = self.engine.index
        if req.arg("feed_id") not in (None, "", self.feed_id):
            since = 0  # its cursor is for another feed: it holds nothing of ours yet
        last_seq = index.last_seq()
        oldest = index.changes(since, 1) if last_seq > since else []
        self.tracker.pulled(
            req.headers.get("X-Replica-Id") or req.client,
            principal=req.principal,
            client=req.client,
            since=since,
            last_seq=last_seq,
            oldest_unapplied_at=oldest[0].at if oldest else None,
            error=req.headers.get("X-Replica-Error"),
        )

    def blobs(self, req: Request) -> Response:
        try:
            hashes = split_hashes(req.body)
        except ValueError as exc:
            raise HttpError(400, str(exc)) from exc
        vault = self.engine.vault
        parts = []
        for h in hashes:
            try:
                codec, logical_len, data = vault.read_stored(h)
                parts.append(frame(h, OK, codec, logical_len, data))
            except NotFoundError:
                parts.append(frame(h, MISSING, 0, 0, b""))
            except DicomVaultError as exc:
                parts.append(frame(h, UNREADABLE, 0, 0, f"blob {h.hex()}: {exc}".encode()))
        return Response(200, b"".join(parts), "application/octet-stream")

    def instances(self, req: Request) -> Response:
        pairs = [(r.sop_uid, r.hash) for r in self.engine.index.instances()]
        return _pack({"feed_id": self.feed_id, "last_seq": self.engine.index.last_seq(),
                      "instances": pairs})

    def status(self, req: Request) -> Response:
        index = self.engine.index
        up = state.upstream(index)
        return _pack({
            "feed_id": self.feed_id,
            "role": state.role(index),
            "last_seq": index.last_seq(),
            "objects": index.stats()["objects"],
            "upstream": None if up is None else up.__dict__,
            "replicas": self.tracker.snapshot(),
        })
