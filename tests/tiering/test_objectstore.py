"""ObjectStore against a real SeaweedFS: bucket creation, the object calls, multipart uploads,
server-side encryption, credentials from the environment, and a store that is down failing
fast with ObjectStoreUnavailableError (HTTP 503)."""

from __future__ import annotations

import io
import logging
import os
import socket
import time
from collections.abc import Callable, Iterator

import pytest

from dicomvault.errors import (
    NotFoundError,
    ObjectNotFoundError,
    ObjectStoreError,
    ObjectStoreUnavailableError,
    UnavailableError,
)
from dicomvault.storage.objectstore import MiB, ObjectStore
from dicomvault.web.errors import http_status
from seaweed_server import SeaweedServer, free_ports


def test_missing_bucket_is_created(seaweed: SeaweedServer) -> None:
    with ObjectStore(
        seaweed.endpoint, "dv-created-here", access_key=seaweed.access_key, secret_key=seaweed.secret_key
    ) as s:
        with pytest.raises(ObjectNotFoundError, match="bucket dv-created-here"):
            s.get("anything")
        assert s.ensure_bucket() is True
        assert s.ensure_bucket() is False  # second call: already there
        s.put("k", b"v")
        assert s.get("k") == b"v"


def test_object_calls(store: ObjectStore) -> None:
    data = os.urandom(100_000)
    etag = store.put("study/a.bin", data)
    assert etag and store.get("study/a.bin") == data
    assert store.get_range("study/a.bin", 0, 1) == data[:1]
    assert store.get_range("study/a.bin", 1234, 5678) == data[1234:5678]
    assert store.get_range("study/a.bin", 99_000, 100_000) == data[99_000:]
    assert store.get_tail("study/a.bin", 56) == (data[-56:], len(data))
    assert store.get_tail("study/a.bin", 200_000) == (data, len(data))
    info = store.head("study/a.bin")
    assert info.size == len(data) and info.etag == etag and info.last_modified is not None

    store.put("study/b.bin", io.BytesIO(b"from a file"))
    store.put("other/c.bin", b"")
    assert store.get("other/c.bin") == b""
    assert [o.key for o in store.list("study/")] == ["study/a.bin", "study/b.bin"]
    assert [(o.key, o.size) for o in store.list()] == [
        ("other/c.bin", 0),
        ("study/a.bin", 100_000),
        ("study/b.bin", 11),
    ]
    assert b"".join(store.stream("study/a.bin", chunk_size=7000)) == data

    store.delete("study/a.bin")
    with pytest.raises(ObjectNotFoundError) as ei:
        store.head("study/a.bin")
    assert isinstance(ei.value, NotFoundError) and http_status(ei.value) == 404
    assert "study/a.bin" in str(ei.value) and store.endpoint in str(ei.value)
    with pytest.raises(ObjectNotFoundError, match="study/a.bin"):
        store.get("study/a.bin")
    with pytest.raises(ObjectNotFoundError, match="study/a.bin"):
        store.get_range("study/a.bin", 0, 10)
    store.delete("study/a.bin")  # deleting what is gone is not an error
    with pytest.raises(ObjectStoreError, match=r"study/b.bin \[5, 50\)"):
        store.get_range("study/b.bin", 5, 50)  # past the end: short read is refused


def test_list_follows_pages_and_delete_many(store: ObjectStore) -> None:
    keys = [f"p/{i:03d}" for i in range(23)]
    for k in keys:
        store.put(k, k.encode())
    assert [o.key for o in store.list("p/", page_size=5)] == keys
    assert store.delete_many(k for k in keys if k != "p/007") == 22
    assert [o.key for o in store.list("p/")] == ["p/007"]


class _Pipe(io.RawIOBase):
    """A source without tell/seek: its size is unknown until it ends."""

    def __init__(self, data: bytes) -> None:
        self._src = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def read(self, n: int = -1) -> bytes:
        return self._src.read(min(n, 65536) if n > 0 else 65536)

    def tell(self) -> int:
        raise OSError("not seekable")


def test_multipart_upload_of_a_large_object(store: ObjectStore) -> None:
    data = os.urandom(21 * MiB)  # over the 16 MiB threshold: three 8 MiB parts
    etag = store.put("big/from-bytes", data)
    assert etag.endswith("-3"), etag  # the S3 convention for multipart ETags
    assert store.get("big/from-bytes") == data
    store.put("big/from-file", io.BytesIO(data), len(data))
    store.put("big/from-pipe", _Pipe(data))
    for key in ("big/from-file", "big/from-pipe"):
        assert store.head(key).size == len(data)
        assert store.get_range(key, 16 * MiB - 3, 16 * MiB + 3) == data[16 * MiB - 3 : 16 * MiB + 3]
    assert store.get("big/from-pipe") == data
    with pytest.raises(ObjectStoreError, match="source ended"):
        store.put("big/short", io.BytesIO(data[: 17 * MiB]), len(data))
    with pytest.raises(ObjectNotFoundError):  # the failed upload was aborted, nothing visible
        store.head("big/short")


def test_server_side_encryption(make_store: Callable[..., ObjectStore]) -> None:
    s = make_store(sse="AES256")
    s.put("enc/small", b"patient data")
    s.put("enc/large", os.urandom(17 * MiB))
    assert s.head("enc/small").sse == "AES256" and s.head("enc/large").sse == "AES256"
    assert s.get("enc/small") == b"patient data"
    with pytest.raises(ObjectStoreError, match="sse must be"):
        ObjectStore("http://127.0.0.1:1", "b", sse="rot13")  # type: ignore[arg-type]


@pytest.fixture
def clean_aws_env(monkeypatch: pytest.MonkeyPatch, tmp_path: os.PathLike[str]) -> pytest.MonkeyPatch:
    """No AWS variables nor config files of the machine leak into the test."""
    for k in list(os.environ):
        if k.startswith("AWS_"):
            monkeypatch.delenv(k)
    monkeypatch.setenv("AWS_CONFIG_FILE", os.path.join(tmp_path, "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", os.path.join(tmp_path, "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    return monkeypatch


def test_credentials_and_endpoint_from_environment(
    seaweed: SeaweedServer, clean_aws_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    env = clean_aws_env
    env.setenv("AWS_ACCESS_KEY_ID", seaweed.access_key)
    env.setenv("AWS_SECRET_ACCESS_KEY", seaweed.secret_key)
    env.setenv("AWS_ENDPOINT_URL", seaweed.endpoint)
    env.setenv("AWS_REGION", "eu-central-1")
    with ObjectStore(None, "dv-env-creds") as s:
        assert s.endpoint == seaweed.endpoint and s.region == "eu-central-1" and not s.anonymous
        s.ensure_bucket()
        s.put("x", b"signed with the environment's keys")
        assert s.get("x") == b"signed with the environment's keys"

    env.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    caplog.set_level(logging.DEBUG, logger="dicomvault")
    with ObjectStore(None, "dv-env-creds") as s:
        with pytest.raises(ObjectStoreError, match="check the access key") as ei:
            s.get("x")
        assert not isinstance(ei.value, ObjectStoreUnavailableError)
        assert "dv-env-creds/x" in str(ei.value) and "not-the-secret" not in str(ei.value)
        assert "not-the-secret" not in repr(s)
    # explicit configuration wins over the environment
    with ObjectStore(None, "dv-env-creds", access_key=seaweed.access_key, secret_key=seaweed.secret_key) as s:
        assert s.get("x").startswith(b"signed")
    assert seaweed.secret_key not in caplog.text and "not-the-secret" not in caplog.text


def _closed_port() -> int:
    return free_ports(1)[0]  # nothing listens there once the probe socket is closed


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections (kernel backlog) and never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(64)
        yield s.getsockname()[1]


@pytest.mark.parametrize("kind", ["refused", "silent"])
def test_a_store_that_is_down_fails_fast(
    kind: str, silent_server: int, clean_aws_env: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    port = _closed_port() if kind == "refused" else silent_server
    endpoint = f"http://127.0.0.1:{port}"
    caplog.set_level(logging.DEBUG, logger="dicomvault")
    s = ObjectStore(
        endpoint,
        "cold",
        access_key="AKDOWN",
        secret_key="never-logged",
        timeout=0.25,
        read_timeout=0.25,
        write_timeout=0.25,
        retries=1,
    )
    # A PUT to a silent server also waits up to 1 s per attempt for botocore's
    # `Expect: 100-continue` before sending the body: writes get that much more.
    write_limit = 2.0 if kind == "refused" else 3.5
    for call, limit in (
        (lambda: s.get("packs/0001.pack"), 2.0),
        (lambda: s.get_range("packs/0001.pack", 10, 20), 2.0),
        (lambda: s.put("packs/0001.pack", b"x" * 100), write_limit),
    ):
        t = time.monotonic()
        with pytest.raises(ObjectStoreUnavailableError) as ei:
            call()
        elapsed = time.monotonic() - t
        assert elapsed < limit, f"{kind}: took {elapsed:.2f} s"
        e = ei.value
        assert isinstance(e, UnavailableError) and http_status(e) == 503
        assert endpoint in str(e) and "cold/packs/0001.pack" in str(e), str(e)
        assert (e.endpoint, e.bucket, e.key) == (endpoint, "cold", "packs/0001.pack")
    with pytest.raises(ObjectStoreUnavailableError, match="bucket cold"):
        s.ensure_bucket()
    assert "never-logged" not in caplog.text and "retry 1 of 1" in caplog.text
