"""Records the archive's services keep in the index's `meta` column family (the worklist and MPPS,
the analysis jobs, the analysis results): one version byte then msgpack, readable by any language
with a msgpack library, and a lock per index and namespace that orders a service's
read-modify-writes inside the one process that writes the index."""

from __future__ import annotations

import threading
from typing import Any

import msgpack

FORMAT = 1  # the version byte in front of every record
_locks: dict[tuple[str, str], threading.RLock] = {}
_locks_guard = threading.Lock()


def encode(value: Any) -> bytes:
    return bytes((FORMAT,)) + msgpack.packb(value, use_bin_type=True)


def decode(raw: bytes, what: str) -> Any:
    """The value of a record; ValueError naming `what` for a format this code does not know."""
    if not raw or raw[0] != FORMAT:
        raise ValueError(f"{what}: unknown record format {raw[:1]!r}")
    return msgpack.unpackb(raw[1:], raw=False)


def decode_map(raw: bytes, what: str) -> dict[str, Any]:
    """`decode` of a record that must be a map."""
    out = decode(raw, what)
    if not isinstance(out, dict):
        raise ValueError(f"{what}: record is not a map")
    return out


def lock_for(index_path: str, namespace: str) -> threading.RLock:
    """The lock of one service's records in one index (the same object for every caller)."""
    with _locks_guard:
        return _locks.setdefault((index_path, namespace), threading.RLock())
