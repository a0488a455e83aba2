"""Stopping the servers a benchmark starts (ours and Orthanc) the same way."""

from __future__ import annotations

import signal
import subprocess


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM (a server drains its work and closes cleanly), then its exit code; SIGKILL only
    if it has not exited within `timeout`, so a hung server never hangs the benchmark."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)
