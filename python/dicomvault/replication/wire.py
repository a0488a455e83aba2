"""Wire formats of the replication API (language-neutral: msgpack maps and a binary frame).

* `GET /replication/changes` -> msgpack map ``{feed_id, last_seq, last_at, changes}``; each change is
  the feed entry's fields plus ``instance``: the current instance record when it still has the
  change's hash (stored/replaced), else None (superseded: a later change says what happened).
* `POST /replication/blobs` with a body of concatenated 32-byte hashes -> one frame per hash, in
  order: ``hash(32) status(1) codec(1) logical_len(u64 BE) length(u64 BE) bytes``; status 0 = the
  stored bytes follow, 1 = not here, 2 = unreadable here (bytes = the reason, UTF-8).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator

HASH_LEN = 32
FRAME = struct.Struct(">32sBBQQ")
OK, MISSING, UNREADABLE = 0, 1, 2


def frame(h: bytes, status: int, codec: int, logical_len: int, payload: bytes) -> bytes:
    return FRAME.pack(h, status, codec, logical_len, len(payload)) + payload


def split_hashes(body: bytes) -> list[bytes]:
    if len(body) % HASH_LEN:
        raise ValueError(f"body of {len(body)} bytes is not a list of {HASH_LEN}-byte hashes")
    return [body[i : i + HASH_LEN] for i in range(0, len(body), HASH_LEN)]


def read_frames(data: bytes) -> Iterator[tuple[bytes, int, int, int, bytes]]:
    """(hash, status, codec, logical_len, payload) of each frame of a blobs response."""
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        if pos + FRAME.size > len(view):
            raise ValueError(f"truncated blob frame header at byte {pos}")
        h, status, codec, logical_len, n = FRAME.unpack_from(view, pos)
        pos += FRAME.size
        if pos + n > len(view):
            raise ValueError(f"truncated blob frame for {h.hex()} at byte {pos}")
        yield h, status, codec, logical_len, bytes(view[pos : pos + n])
        pos += n
