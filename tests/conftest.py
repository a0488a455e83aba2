"""Shared fixtures: the real-image corpus, fresh data directories, synthetic series."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from dicomvault.engine import Engine
from dicomvault.site import Site, SiteOptions
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


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Callable[[int], Path]]:
    """mount(size_mb) -> a fresh tmpfs of that size (root only: CI runs as root), unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mounted: list[Path] = []

    def mount(size_mb: int) -> Path:
        mnt = tmp_path / f"mnt{len(mounted)}"
        mnt.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(mnt)], check=True)
        mounted.append(mnt)
        return mnt

    try:
        yield mount
    finally:
        for mnt in mounted:
            subprocess.run(["umount", "-l", str(mnt)], check=False)


# The HTTP side: a site (the real Starlette app on uvicorn) on a loopback port, in this process,
# over a fresh data directory, and an httpx client for it. Modules needing data or users in the
# site override `site`; `http` follows.
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
