"""Shared inputs for the benchmarks: one real CT slice-sized file and a synthetic CT series."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from dicomvault.bench.synth import SeriesSpec, ct_series  # noqa: E402


@pytest.fixture(scope="session")
def ct_files() -> list[bytes]:
    slices = int(os.environ.get("DV_BENCH_SLICES", "300"))
    return list(ct_series(SeriesSpec(slices=slices, rows=512, columns=512, seed=42)))


@pytest.fixture(scope="session")
def one_ct(ct_files: list[bytes]) -> bytes:
    return ct_files[len(ct_files) // 2]


@pytest.fixture
def scratch() -> Iterator[Path]:
    """A fresh directory on the device under test (DV_BENCH_DIR, default bench/.scratch)."""
    base = Path(os.environ.get("DV_BENCH_DIR", Path(__file__).resolve().parent / ".scratch"))
    base.mkdir(parents=True, exist_ok=True)
    d = Path(tempfile.mkdtemp(dir=base))
    try:
        yield d
    finally:
        shutil.rmtree(d, ignore_errors=True)


_REPORT_KEY = pytest.StashKey[list[str]]()


@pytest.fixture
def report(request: pytest.FixtureRequest) -> list[str]:
    """Lines to print in the terminal summary (headline figures of the run)."""
    return request.config.stash.setdefault(_REPORT_KEY, [])


def pytest_terminal_summary(terminalreporter, exitstatus, config) -> None:  # type: ignore[no-untyped-def]
    lines = config.stash.get(_REPORT_KEY, [])
    if lines:
        terminalreporter.section("dicomvault figures")
        for line in lines:
            terminalreporter.write_line(line)
