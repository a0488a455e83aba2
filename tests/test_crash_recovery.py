"""kill -9 at random instants: every acknowledged object survives bit-exact, nothing half-written
shows, and the store accepts new objects after restart."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import blake3
import pytest

from dicomvault.engine import Engine

CHILD = Path(__file__).parent / "helpers" / "ingest_child.py"


def _trial(data: Path, seed: int, rng: random.Random) -> dict[str, str]:
    """Runs the child until a random moment, SIGKILLs it, returns what it acknowledged."""
    proc = subprocess.Popen(
        [sys.executable, str(CHILD), str(data), str(seed), str(rng.choice([1, 4, 8]))],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    acked: dict[str, str] = {}
    assert proc.stdout is not None
    fd = proc.stdout.fileno()
    # Read raw bytes as they come (no buffered reader between us and the kill).
    buf = b""
    while b"\n" not in buf:
        chunk = os.read(fd, 65536)
        assert chunk, "child died before READY"
        buf += chunk
    assert buf.startswith(b"READY\n"), buf[:200]
    deadline = time.monotonic() + rng.uniform(0.05, 1.5)
    os.set_blocking(fd, False)
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            buf += os.read(fd, 1 << 20)
        except BlockingIOError:
            time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    os.set_blocking(fd, True)
    while chunk := os.read(fd, 1 << 20):
        buf += chunk
    proc.stdout.close()
    for line in buf.decode().splitlines():
        if line.startswith("ACK ") and line.count(" ") == 2:  # a line cut by the kill is ignored
            _, uid, digest = line.split()
            acked[uid] = digest
        elif line.startswith("ERR"):
            pytest.fail(f"child failed: {line}")
    return acked


def _check(data: Path, acked: dict[str, str]) -> None:
    with Engine(data, min_free_bytes=0) as engine:
        for uid, digest in acked.items():
            assert blake3.blake3(engine.read_file(uid)).hexdigest() == digest, f"{uid} changed"
        # Nothing half-written is visible: every indexed instance reads back and verifies.
        for row in engine.ls("instances"):
            engine.read_file(row["SOPInstanceUID"])
        report = engine.verify()
        assert report.clean, (report.damaged, report.missing)
        assert engine.stats()["objects"] >= len(acked)


def _run(tmp_path: Path, trials: int) -> None:
    rng = random.Random(int(os.environ.get("DV_CRASH_SEED", "20261127")))
    data = tmp_path / "data"
    acked: dict[str, str] = {}
    for t in range(trials):
        acked.update(_trial(data, t, rng))
        _check(data, acked)
    assert acked, "the child never acknowledged anything: the test proved nothing"


def test_kill9_a_few_times(tmp_path: Path) -> None:
    _run(tmp_path, trials=4)


@pytest.mark.slow
def test_kill9_twenty_times(tmp_path: Path) -> None:
    _run(tmp_path, trials=20)
