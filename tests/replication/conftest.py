"""Fixtures of the replication tests: sites on loopback (in-process or as real processes)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from repl_helpers import TOKEN

from dicomvault.engine import Engine
from dicomvault.site import Site, SiteOptions


@pytest.fixture
def primary(tmp_path: Path) -> Iterator[tuple[Engine, Site]]:
    with Engine(tmp_path / "primary", min_free_bytes=0) as eng:
        site = Site(eng, SiteOptions(port=0, replication_tokens=[TOKEN]))
        site.start()
        try:
            yield eng, site
        finally:
            site.stop()
