"""Durable per-site replication state, kept in the index's meta column family.

* ``repl:feed_id``  random id of this site's change feed. Seqs only mean something together with it:
  a restore (the feed may go back in time) or a new site gets a new id, and a replica whose cursor
  names another id starts over from 0 (replay is idempotent, so that only costs time).
* ``repl:upstream`` the site this one replicates from, with the cursor: written in the SAME batch
  as the changes it covers (Index.apply_replicated), so it is exactly what is applied.
* ``repl:role``     ``primary`` or ``replica``; `dr promote` flips it.
* ``fwd:<name>``    the forwarding cursor and status of one DICOM destination.
"""

from __future__ import annotations

import secrets
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import msgpack

from ..index import Index
from ..index.role import PRIMARY, REPLICA, ROLE, role, set_role

FEED_ID = b"repl:feed_id"
UPSTREAM = b"repl:upstream"
# re-exported: replication's modules take the role from here
__all__ = ["PRIMARY", "REPLICA", "ROLE", "role", "set_role"]


def _load(raw: bytes | None) -> dict[str, Any]:
    if not raw:
        return {}
    data = msgpack.unpackb(raw, raw=False)
    return data if isinstance(data, dict) else {}


def _dump(data: dict[str, Any]) -> bytes:
    return msgpack.packb(data, use_bin_type=True)


def feed_id(index: Index, *, create: bool = True) -> str:
    raw = index.get_meta(FEED_ID)
    if raw:
        return raw.decode()
    if not create or index.read_only:
        return ""
    new = secrets.token_hex(8)
    index.put_meta(FEED_ID, new.encode())
    return new


def new_feed_id(index: Index) -> str:
    """After a restore: the feed's seqs may repeat ones replicas already saw under the old id."""
    new = secrets.token_hex(8)
    index.put_meta(FEED_ID, new.encode())
    return new


@dataclass
class Upstream:
    """Where this site pulls from and how far it got (all of it durable with the applied data)."""

    url: str = ""
    feed_id: str = ""
    seq: int = 0
    # what the upstream said at the last pull: its durable seq and when
    upstream_seq: int = 0
    upstream_at: float = 0.0
    # time (upstream clock) of the newest change applied
    applied_at: float = 0.0
    updated_at: float = field(default_factory=time.time)

    def encode(self) -> bytes:
        return _dump(asdict(self))

    @classmethod
    def decode(cls, raw: bytes | None) -> Upstream | None:
        data = _load(raw)
        if not data:
            return None
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})

    @property
    def lag_events(self) -> int:
        return max(0, self.upstream_seq - self.seq)


def upstream(index: Index) -> Upstream | None:
    return Upstream.decode(index.get_meta(UPSTREAM))


def set_upstream(index: Index, up: Upstream | None) -> None:
    index.put_meta(UPSTREAM, up.encode() if up is not None else None)


def load_map(index: Index, key: bytes) -> dict[str, Any]:
    return _load(index.get_meta(key))


def dump_map(data: dict[str, Any]) -> bytes:
    return _dump(data)
