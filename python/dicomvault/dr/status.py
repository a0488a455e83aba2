"""`dr status`: this site's role and, per replica, the lag in events and seconds (the RPO now)
and the last error. The lag is recomputed against the feed as it is now, so a replica that
stopped pulling shows a growing lag, not the figure of its last pull."""

from __future__ import annotations

import os
import time
from typing import Any

from ..engine import Engine
from ..replication import state
from ..replication.tracker import read_status


def site_status(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    now = time.time()
    with Engine(data_dir, read_only=True) as eng:
        index = eng.index
        last_seq = index.last_seq()
        out: dict[str, Any] = {
            "data": str(data_dir),
            "role": state.role(index),
            "feed_id": state.feed_id(index, create=False),
            "last_seq": last_seq,
            "objects": index.stats()["objects"],
            "replicas": {},
        }
        up = state.upstream(index)
        if up is not None:
            out["upstream"] = {
                "url": up.url, "seq": up.seq, "upstream_seq": up.upstream_seq,
                "lag_events": up.lag_events,
                "as_of": up.upstream_at,
            }
        for name, rep in read_status(data_dir).get("replicas", {}).items():
            acked = int(rep.get("acked_seq", 0))
            lag = max(0, last_seq - acked)
            oldest = index.changes(acked, 1) if lag else []
            out["replicas"][name] = {
                "address": rep.get("address"),
                "token": rep.get("token"),
                "acked_seq": acked,
                "lag_events": lag,
                "lag_seconds": round(now - oldest[0].at, 3) if oldest else 0.0,
                "last_pull_seconds_ago": round(now - float(rep.get("last_pull_at", 0)), 3),
                "last_error": rep.get("last_error"),
            }
    return out
