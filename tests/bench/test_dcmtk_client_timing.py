"""The wall time of a dcmtk client run (dicomvault.bench.dimse._run_logged, behind getscu_study,
movescu and findscu): measured at the child's exit, not rounded up to a polling step, and the
timeout still kills and raises."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest

from dicomvault.bench import dimse


def test_wall_time_is_not_quantised(tmp_path: Path) -> None:
    # A polling wait (subprocess.run with a timeout) sleeps up to 50 ms between checks, so a
    # 130 ms child read as anything up to ~180 ms; the blocking wait sees it end.
    errors = []
    for _ in range(5):
        secs, rc, _text = dimse._run_logged(["sleep", "0.13"], tmp_path / "sleep.log", timeout=30)
        assert rc == 0
        errors.append(secs - 0.13)
    assert min(errors) >= 0
    assert sorted(errors)[2] < 0.02, errors


def test_output_goes_to_the_log(tmp_path: Path) -> None:
    secs, rc, text = dimse._run_logged(["sh", "-c", "echo hello; exit 3"], tmp_path / "x.log", timeout=30)
    assert (rc, text) == (3, "hello\n")
    assert secs < 5


def test_timeout_kills_and_raises(tmp_path: Path) -> None:
    t0 = time.monotonic()
    with pytest.raises(subprocess.TimeoutExpired):
        dimse._run_logged(["sleep", "30"], tmp_path / "slow.log", timeout=0.3)
    assert time.monotonic() - t0 < 5
