"""The viewer's JavaScript unit tests (tests/viewer/js/*.test.mjs), run by node's own test runner."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
NODE = shutil.which("node")


@pytest.mark.skipif(NODE is None, reason="node is not installed: the viewer's JS unit tests need node >= 20")
def test_js_units() -> None:
    assert NODE is not None
    proc = subprocess.run(
        [NODE, "--test", "tests/viewer/js/"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    # node's TAP report names each failing test and its assertion; keep the tail of a long one.
    report = (proc.stdout[-20000:] + "\n" + proc.stderr[-5000:]).strip()
    assert proc.returncode == 0, f"node --test exited {proc.returncode}\n{report}"
    assert "# fail 0" in proc.stdout, report
