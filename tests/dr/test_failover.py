"""Promote a replica, keep ingesting into it, fail back: real `dicomvault` processes."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from procs import CLI, Ingester, free_port, replicate, serve, snapshot, wait_until
from repl_helpers import TOKEN, synth_stream


def dv(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120)


def test_promote_ingest_failback(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    port_a = free_port()
    site_a = serve(a, port_a, tmp_path / "a.log", "--replication-token", TOKEN).start()
    rep_b = replicate(b, site_a.url, TOKEN, tmp_path / "b.log").start()
    stream = synth_stream(seed=3)
    ing = Ingester([site_a.url], stream).start()
    wait_until(lambda: len(ing.acked) >= 40, 20, 0.1)
    ing.stop()
    assert wait_until(lambda: snapshot(a) == snapshot(b), 20)

    def replica_status() -> dict:
        (replica,) = json.loads(dv("dr", "status", "--json", "--data", str(a)).stdout)["replicas"].values()
        return replica

    assert wait_until(lambda: replica_status()["lag_events"] == 0, 10)
    assert replica_status()["last_error"] is None and replica_status()["lag_seconds"] == 0

    # disaster: A is gone. B (stopped replicating) is promoted and takes the writes.
    site_a.kill9()
    rep_b.stop()
    promoted = dv("dr", "promote", "--data", str(b))
    assert promoted.returncode == 0, promoted.stderr
    assert json.loads(dv("dr", "status", "--json", "--data", str(b)).stdout)["role"] == "primary"
    site_b = serve(b, free_port(), tmp_path / "b2.log", "--replication-token", TOKEN).start()
    ing2 = Ingester([site_b.url], stream).start()
    wait_until(lambda: len(ing2.acked) >= 30, 20, 0.1)
    ing2.stop()

    # A comes back and fails back: re-synced from B, it holds B's set exactly
    fb = dv("dr", "failback", "--data", str(a), "--from", site_b.url, "--token", TOKEN)
    assert fb.returncode == 0, fb.stderr
    assert snapshot(a) == snapshot(b)
    assert set(ing.acked) | set(ing2.acked) <= set(snapshot(a))
    site_b.stop()
    assert dv("verify", "--data", str(a)).returncode == 0


def test_promote_refuses_when_behind(tmp_path: Path) -> None:
    a, b = tmp_path / "a", tmp_path / "b"
    site_a = serve(a, free_port(), tmp_path / "a.log", "--replication-token", TOKEN).start()
    try:
        ing = Ingester([site_a.url], synth_stream(seed=4)).start()
        wait_until(lambda: len(ing.acked) >= 10, 20, 0.1)
        ing.stop()
        once = dv("replicate", "--once", "--data", str(b), "--from", site_a.url, "--token", TOKEN)
        assert once.returncode == 0, once.stderr
        ing = Ingester([site_a.url], synth_stream(seed=5)).start()
        wait_until(lambda: len(ing.acked) >= 5, 20, 0.1)
        ing.stop()
        refused = dv("dr", "promote", "--data", str(b), "--token", TOKEN)
        assert refused.returncode == 2 and "behind" in refused.stderr
        forced = dv("dr", "promote", "--data", str(b), "--force")
        assert forced.returncode == 0, forced.stderr
    finally:
        site_a.stop()
