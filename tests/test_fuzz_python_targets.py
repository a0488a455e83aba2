"""Smoke of the coverage-guided fuzz targets of the Python parsers (fuzz/python/, issue 14 item 6):
each target runs under atheris (libFuzzer) for a fixed number of inputs from a fixed seed, starting
from its real seeds, and must finish without a finding; every input a long run (`make fuzz`) found
and that was fixed is in fuzz/python/regressions/<target>/ and is replayed here, in this process.
The long runs: `make fuzz-python FUZZ_SECONDS=600`."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz" / "python"
sys.path.insert(0, str(FUZZ))

from targets import TARGETS  # noqa: E402

# Inputs per target: a few seconds each on one core (the archive-backed ones are slower per input).
RUNS = {"stow_multipart": 1000, "stow_store": 500, "http_read": 600}
REGRESSIONS = sorted(p for p in (FUZZ / "regressions").glob("*/*") if p.is_file())


@pytest.mark.parametrize("target", TARGETS)
def test_fuzz_smoke(target: str, tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    proc = subprocess.run(
        [sys.executable, str(FUZZ / "run.py"), target, str(corpus), f"-runs={RUNS.get(target, 2000)}",
         "-seed=1", "-timeout=10", "-rss_limit_mb=2048", "-max_len=262144",
         f"-artifact_prefix={tmp_path}/"],
        # libFuzzer exits without Python's exit handlers: the targets' scratch directories go here
        capture_output=True, text=True, timeout=180, env={**os.environ, "TMPDIR": str(tmp_path)})
    findings = [p.name for p in tmp_path.iterdir() if p.name.startswith(("crash-", "timeout-", "oom-"))]
    assert proc.returncode == 0 and not findings, f"{target}: {findings}\n{proc.stderr[-4000:]}"
    assert "Done " in proc.stderr and " runs in " in proc.stderr
    assert any(corpus.iterdir()), "libFuzzer kept no input: the target saw no coverage"


@pytest.mark.parametrize("path", REGRESSIONS, ids=lambda p: f"{p.parent.name}/{p.name[:20]}")
def test_fuzz_regression(path: Path) -> None:
    importlib.import_module(f"targets.{path.parent.name}").one_input(path.read_bytes())
