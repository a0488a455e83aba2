"""A replica pulling from its upstream: changes in order from the durable cursor, the blobs it
lacks (by hash, verified by the native store before anything is written), then the index changes
and the new cursor in ONE batch. Any interruption (kill -9, a dropped link, an upstream restart)
resumes from the cursor: blobs already here are skipped, applied changes are no-ops.

Each page applied is audited on the replica: one Instances Transferred record per study of the
page (direction received, the upstream named), written after the page is durable, with one
fsync for all of them."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from ..audit.log import DATA_DELETION, AuditLog
from ..audit.transfers import per_study
from ..engine import Engine
from ..errors import DicomVaultError
from ..index.records import DELETED, REPLACED, STORED, Change
from . import state
from .client import ReplicationError, SiteClient

log = logging.getLogger("dicomvault.replication")
MAX_FETCH_BYTES = 24 << 20


@dataclass
class PullResult:
    applied: int = 0
    blobs_fetched: int = 0
    bytes_fetched: int = 0
    upstream_seq: int = 0
    seq: int = 0

    @property
    def caught_up(self) -> bool:
        return self.seq >= self.upstream_seq


def _change(wire: dict[str, Any]) -> Change:
    return Change(**{k: v for k, v in wire.items() if k in Change._FIELDS})


class Puller:
    def __init__(self, engine: Engine, client: SiteClient, *, limit: int = 1000,
                 poll_wait: float = 2.0) -> None:
        self.engine = engine
        self.client = client
        self.limit = limit
        self.poll_wait = poll_wait
        self.client.replica_id = self.client.replica_id or state.feed_id(engine.index)
        self.last_error: str | None = None
        self.total = PullResult()
        # Two fetchers: while one blob batch is verified and written (GIL released), the next
        # one is on the wire.
        self._pool = ThreadPoolExecutor(2, thread_name_prefix="dicomvault-fetch")
        # One client per fetcher thread: http.client connections are not thread-safe.
        self._local = threading.local()
        self._fetch_clients: list[SiteClient] = []
        self.audit = AuditLog(engine.data_dir)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.client.close()
        for cl in self._fetch_clients:
            cl.close()

    # -- one step ---------------------------------------------------------------------------------
    def step(self, wait: float = 0.0) -> PullResult:
        """Pull one page of changes and apply it; returns what was done."""
        index = self.engine.index
        up = state.upstream(index) or state.Upstream(url=self.client.url)
        resp = self.client.changes(up.seq, self.limit, up.feed_id, wait)
        feed = str(resp.get("feed_id") or "")
        if up.feed_id and feed != up.feed_id:
            # Another feed (the upstream was restored or replaced): our seqs mean nothing there.
            # Replay it from the start; everything we already hold is skipped by hash.
            log.warning("upstream %s has feed %s, our cursor is for %s: replaying from seq 0",
                        self.client.url, feed, up.feed_id)
            state.set_upstream(index, state.Upstream(url=self.client.url, feed_id=feed, seq=0))
            return PullResult(seq=0, upstream_seq=int(resp["last_seq"]))
        changes = resp["changes"]
        result = PullResult(upstream_seq=int(resp["last_seq"]), seq=up.seq)
        if not changes:
            if up.feed_id != feed or up.upstream_seq != result.upstream_seq:
                up.feed_id, up.url = feed, self.client.url
                up.upstream_seq, up.upstream_at = result.upstream_seq, float(resp["now"])
                state.set_upstream(index, up)
            return result
        self._fetch_missing(changes, result)
        last = changes[-1]
        new_up = state.Upstream(url=self.client.url, feed_id=feed, seq=int(last["seq"]),
                                upstream_seq=result.upstream_seq, upstream_at=float(resp["now"]),
                                applied_at=float(last["at"]))
        items = [(_change(c), c["instance"]) for c in changes]
        self.engine.apply_replicated(items, {state.UPSTREAM: new_up.encode()})
        result.applied, result.seq = len(changes), new_up.seq
        self._audit(changes, feed, new_up.seq, result)
        return result

    def _audit(self, changes: list[dict[str, Any]], feed: str, seq: int, result: PullResult) -> None:
        objects = [(str(c["instance"].get("study_uid") or ""), c["instance"].get("patient_id"), True)
                   for c in changes if c.get("instance") is not None and c.get("kind") in (STORED, REPLACED)]
        deleted = [(str(c.get("study_uid") or ""), c.get("patient_id"), True)
                   for c in changes if c.get("kind") == DELETED]
        who = {"user": "dicomvault:replication", "client": self.client.url}
        detail = {"protocol": "replication", "source": self.client.url, "feed": feed, "seq": seq}
        records = per_study(self.audit, objects, **who,
                            detail={**detail, "direction": "received", "blobs_fetched": result.blobs_fetched})
        records += per_study(self.audit, deleted, **who, event=DATA_DELETION,
                             detail={**detail, "reason": "deleted on the upstream"})
        self.audit.write(records)  # one fsync (none when the page had nothing to record)

    def _fetch_missing(self, changes: list[dict[str, Any]], result: PullResult) -> None:
        vault = self.engine.vault
        wanted: dict[bytes, int] = {}
        for c in changes:
            inst = c.get("instance")
            if inst is None:
                continue
            h = bytes(inst["hash"])
            if h not in wanted and not vault.contains(h):
                wanted[h] = int(inst.get("stored_len") or 0)
        batches: list[list[bytes]] = []
        cur: list[bytes] = []
        size = 0
        for h, n in wanted.items():
            if cur and size + n > MAX_FETCH_BYTES:
                batches.append(cur)
                cur, size = [], 0
            cur.append(h)
            size += n
        if cur:
            batches.append(cur)
        futures: list[Future[dict[bytes, tuple[int, int, bytes]]]] = [
            self._pool.submit(self._fetch, batch) for batch in batches
        ]
        for fut in futures:
            got = fut.result()
            items = [(h, codec, logical_len, data) for h, (codec, logical_len, data) in got.items()]
            for (h, _, _, data), res in zip(items, vault.put_stored(items), strict=True):
                if isinstance(res, Exception):
                    raise ReplicationError(f"blob {h.hex()} from {self.client.url} rejected: {res}")
                if res:
                    result.blobs_fetched += 1
                    result.bytes_fetched += len(data)

    def _fetch(self, batch: list[bytes]) -> dict[bytes, tuple[int, int, bytes]]:
        cl: SiteClient | None = getattr(self._local, "client", None)
        if cl is None:
            cl = self.client.clone()
            self._local.client = cl
            self._fetch_clients.append(cl)
        return cl.blobs(batch)

    # -- loops ------------------------------------------------------------------------------------
    def catch_up(self, *, max_errors: int = 0) -> PullResult:
        """Apply until the cursor reaches the upstream's last seq (as seen when we get there)."""
        errors = 0
        while True:
            try:
                res = self.step()
            except (ReplicationError, DicomVaultError) as exc:
                errors += 1
                self._note_error(exc)
                if errors > max_errors:
                    raise
                time.sleep(min(5.0, 0.2 * 2**errors))
                continue
            self._note_ok(res)
            if res.applied == 0 and res.caught_up:
                return self.total

    def run(self, stop: threading.Event, on_step: Callable[[PullResult], None] | None = None) -> None:
        """Pull until `stop` is set, retrying forever with backoff, capped at 2 s: a failed pull
        costs the upstream one refused connection, and every second of backoff adds to the RPO."""
        delay = 0.2
        while not stop.is_set():
            try:
                res = self.step(wait=self.poll_wait)
            except (ReplicationError, DicomVaultError, OSError) as exc:
                self._note_error(exc)
                stop.wait(delay)
                delay = min(2.0, delay * 2)
                continue
            delay = 0.2
            self._note_ok(res)
            if on_step is not None:
                on_step(res)

    def _note_error(self, exc: Exception) -> None:
        msg = f"{type(exc).__name__}: {exc}"
        if msg != self.last_error:
            log.warning("replication from %s: %s", self.client.url, msg)
        self.last_error = self.client.last_error = msg

    def _note_ok(self, res: PullResult) -> None:
        if self.last_error:
            log.info("replication from %s recovered", self.client.url)
        self.last_error = self.client.last_error = None
        t = self.total
        t.applied += res.applied
        t.blobs_fetched += res.blobs_fetched
        t.bytes_fetched += res.bytes_fetched
        t.seq, t.upstream_seq = res.seq, res.upstream_seq
