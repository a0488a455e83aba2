"""Shared fixtures: the real-image corpus, fresh data directories, synthetic series."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from dicomvault.engine import Engine
from dv_corpus import corpus_files


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def engine(data_dir: Path) -> Iterator[Engine]:
    with Engine(data_dir) as eng:
        yield eng


def pytest_report_header(config: pytest.Config) -> str:
    return f"dicomvault corpus: {len(corpus_files())} files; cpus={os.cpu_count()}"
