"""Fixtures of the HTTP tests: a site (the real Starlette app on uvicorn) on a loopback port,
in this process, over a fresh data directory, and an httpx client for it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from dicomvault.engine import Engine
from dicomvault.site import Site, SiteOptions


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        s = Site(eng, SiteOptions(port=0))
        s.start()
        try:
            yield s
        finally:
            s.stop()


@pytest.fixture
def http(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=30) as c:
        yield c
