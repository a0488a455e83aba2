"""Fixtures for the index tests."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from index_helpers import MakeInst, make_inst

from dicomvault.index import Index


@pytest.fixture
def mk() -> MakeInst:
    """Factory for synthetic instances."""
    return make_inst


@pytest.fixture
def index_path(tmp_path: Path) -> str:
    """Path for a fresh index."""
    return str(tmp_path / "index")


@pytest.fixture
def idx(index_path: str) -> Iterator[Index]:
    """A fresh writable index, closed after the test (and checked for consistency)."""
    ix = Index.open(index_path)
    yield ix
    if not ix._closed:  # noqa: SLF001
        assert ix.check() == []
        ix.close()
