"""What a primary knows of its replicas: each pull of /changes names the replica's durable
cursor (`since`), so the primary knows exactly what each replica holds. Kept in memory and
mirrored to `<data>/replication/replicas.json` (atomic rename) so `dr status` can read it from
another process without touching the server."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path
from typing import Any

STATUS_FILE = Path("replication") / "replicas.json"


def status_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / STATUS_FILE


def read_status(data_dir: str | os.PathLike[str]) -> dict[str, Any]:
    path = status_path(data_dir)
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        raise OSError(f"cannot read replica status {path}: {exc}") from exc


class ReplicaTracker:
    def __init__(self, data_dir: str | os.PathLike[str], min_interval: float = 0.5) -> None:
        self.path = status_path(data_dir)
        self._lock = threading.Lock()
        self._replicas: dict[str, dict[str, Any]] = read_status(data_dir).get("replicas", {})
        self._written = 0.0
        self._min_interval = min_interval
        self._timer: threading.Timer | None = None

    def pulled(self, replica: str, *, principal: str, client: str, since: int, last_seq: int,
               oldest_unapplied_at: float | None, error: str | None) -> None:
        now = time.time()
        with self._lock:
            self._replicas[replica] = {
                "token": principal,
                "address": client,
                "acked_seq": since,
                "primary_seq": last_seq,
                "lag_events": max(0, last_seq - since),
                # RPO: how long ago the oldest change the replica lacks was acknowledged here
                "lag_seconds": round(now - oldest_unapplied_at, 3) if oldest_unapplied_at else 0.0,
                "last_pull_at": now,
                "last_error": error or None,
            }
            if now - self._written >= self._min_interval:
                self._flush(now)
            elif self._timer is None:
                # throttled: the latest state is written shortly, even if no pull follows
                self._timer = threading.Timer(self._min_interval, self.flush)
                self._timer.daemon = True
                self._timer.start()

    def snapshot(self) -> dict[str, dict[str, Any]]:
        with self._lock:
            return {k: dict(v) for k, v in self._replicas.items()}

    def flush(self) -> None:
        with self._lock:
            self._flush(time.time())

    def _flush(self, now: float) -> None:
        self._written = now
        self._timer = None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps({"updated_at": now, "replicas": self._replicas}, indent=1))
        os.replace(tmp, self.path)
