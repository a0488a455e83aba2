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


def test_log_stamps_keep_microseconds(tmp_path: Path) -> None:
    # The clients log %D{%s.%Q} (seconds.ms.us); a first image of ~2 ms read at 1 ms resolution
    # was one tick from its neighbours. Stamps without the microseconds still parse.
    assert "%D{%s.%Q}" in dimse.dcmtk_log_config(tmp_path).read_text()
    text = ("1796617405.957.555 Sending C-GET Request (MsgID 1)\n"
            "1796617405.959.130 Received C-STORE Request (MsgID 1)\n")
    sent = dimse._first_stamp(text, r"Sending C-GET Request")
    first = dimse._first_stamp(text, r"Received C-STORE Request")
    assert sent is not None and first is not None
    assert abs((first - sent) * 1e3 - 1.575) < 1e-3  # epoch seconds in a double: ~0.2 us steps
    assert dimse._first_stamp("1796617405.957 Received Store Request\n", r"Received Store Request") == \
        pytest.approx(1796617405.957)
    run = dimse.StoreRun(seconds=1.0, started_at=1796617405.0)
    log = (f"1796617405.100.250 Sending file: {tmp_path / 'missing.dcm'}\n"
           "1796617405.103.750 Received Store Response (Success)\n")
    assert dimse._parse_storescu_log(log, run)[0] == 1
    assert run.latencies == [pytest.approx(0.0035, abs=1e-6)]
