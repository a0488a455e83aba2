"""Shared fixtures: the real-image corpus, fresh data directories, synthetic series."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest

from dicomvault.engine import Engine


def corpus_dirs() -> list[Path]:
    """The real files: pydicom-data's clinical images and pydicom's own test files."""
    import data_store  # the pydicom-data package
    import pydicom.data

    return [
        Path(data_store.__file__).parent / "data",
        Path(pydicom.data.__file__).parent / "test_files",
    ]


def corpus_files() -> list[Path]:
    files: list[Path] = []
    for d in corpus_dirs():
        files.extend(sorted(p for p in d.iterdir() if p.is_file() and p.suffix == ".dcm"))
    return files


def pydicom_reads(path: Path) -> str | None:
    """None if pydicom reads the whole file (every element, nested ones too), else why not."""
    try:
        ds = pydicom.dcmread(path)
        for elem in ds.iterall():
            _ = elem.value
        return None
    except Exception as exc:  # noqa: BLE001 — any failure means "pydicom cannot read it"
        return f"{type(exc).__name__}: {exc}"


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "data"


@pytest.fixture
def engine(data_dir: Path) -> Iterator[Engine]:
    with Engine(data_dir) as eng:
        yield eng


def pytest_report_header(config: pytest.Config) -> str:
    return f"dicomvault corpus: {len(corpus_files())} files; cpus={os.cpu_count()}"
