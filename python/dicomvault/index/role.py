"""This site's replication role, kept in the index's meta column family: ``primary`` (takes
writes) or ``replica`` (takes its data only from its upstream's change feed). In the index layer
because the engine checks it on every local write (engine.py) and replication sets it."""

from __future__ import annotations

from .store import Index

ROLE = b"repl:role"
PRIMARY, REPLICA = "primary", "replica"


def role(index: Index) -> str:
    raw = index.get_meta_cached(ROLE)  # every local write asks (engine.ensure_writable)
    return raw.decode() if raw else PRIMARY


def set_role(index: Index, value: str) -> None:
    if value not in (PRIMARY, REPLICA):
        raise ValueError(f"site role must be {PRIMARY!r} or {REPLICA!r}, got {value!r}")
    index.put_meta(ROLE, value.encode())
