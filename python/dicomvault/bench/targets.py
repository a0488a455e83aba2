"""Where a benchmark runs: a local directory (any mounted device: disk, array, NFS/SAN), or an
S3-compatible object store (`s3://BUCKET[/PREFIX]` with `--endpoint URL`), whose own PUT/GET
limits are probed (bench/phase_s3.py) until the object tier can hold an engine's blobs."""

from __future__ import annotations

import os
import shutil
import time
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..errors import DicomVaultError


class Target(ABC):
    """A storage location under test: where the engine keeps its data and where the device's
    own limits are measured."""

    url: str

    @abstractmethod
    def open_engine(self) -> Engine: ...

    @abstractmethod
    def device_dir(self) -> Path | None:
        """A local directory on the same device for the raw-device probes (None: no such thing,
        e.g. an object store, whose own limits need an S3 probe instead)."""

    @abstractmethod
    def engine_dir(self) -> Path | None: ...

    def work_dir(self, name: str) -> Path | None:
        """A fresh local directory for a phase's own files (the DIMSE phase's input and server
        data); None when the target has no local directory."""
        return None

    @abstractmethod
    def describe(self) -> dict[str, Any]: ...

    @abstractmethod
    def free_bytes(self) -> int | None: ...

    @abstractmethod
    def cleanup(self, keep: bool) -> None: ...


class LocalTarget(Target):
    """A directory: the run works in a fresh `dicomvault-bench-<time>-<pid>/` under it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        base = Path(path)
        base.mkdir(parents=True, exist_ok=True)
        self.url = str(base.resolve())
        self.run_dir = base / f"dicomvault-bench-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
        self.run_dir.mkdir()

    def open_engine(self) -> Engine:
        return Engine(self.run_dir / "data")

    def engine_dir(self) -> Path:
        return self.run_dir / "data"

    def work_dir(self, name: str) -> Path:
        d = self.run_dir / name
        d.mkdir(exist_ok=True)
        return d

    def device_dir(self) -> Path:
        d = self.run_dir / "device"
        d.mkdir(exist_ok=True)
        return d

    def free_bytes(self) -> int:
        return shutil.disk_usage(self.run_dir).free

    def describe(self) -> dict[str, Any]:
        usage = shutil.disk_usage(self.run_dir)
        return {
            "kind": "local",
            "path": self.url,
            "filesystem": _fs_type(self.run_dir),
            "total_bytes": usage.total,
            "free_bytes": usage.free,
        }

    def cleanup(self, keep: bool) -> None:
        if not keep:
            shutil.rmtree(self.run_dir, ignore_errors=True)


def _fs_type(path: Path) -> str | None:
    """The mount's filesystem type from /proc/mounts (longest matching mount point)."""
    try:
        with open("/proc/mounts", encoding="utf-8") as f:
            mounts = [line.split()[1:3] for line in f]
    except OSError:
        return None
    p = str(path.resolve())
    best = max(
        (m for m in mounts if p == m[0] or p.startswith(m[0].rstrip("/") + "/")),
        key=lambda m: len(m[0]),
        default=None,
    )
    return best[1] if best else None


class S3Target(Target):
    """A bucket (and optional key prefix) of an S3-compatible store: the run works under a fresh
    `<prefix>dicomvault-bench-<time>-<pid>/` and deletes what it wrote at the end. The bucket is
    created if missing (and kept). Credentials and region: the AWS environment variables."""

    def __init__(self, bucket: str, prefix: str, endpoint: str | None, sse: str | None = None) -> None:
        from ..storage.objectstore import ObjectStore

        self.store = ObjectStore(endpoint, bucket, sse=sse, max_concurrency=4)  # type: ignore[arg-type]
        self.prefix = prefix
        self.url = f"s3://{bucket}/{prefix}"
        self.run_prefix = f"{prefix}dicomvault-bench-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}/"
        self.bucket_created = self.store.ensure_bucket()

    def open_engine(self) -> Engine:
        raise DicomVaultError(f"{self.url}: the engine cannot keep its blobs on an object store yet")

    def engine_dir(self) -> None:
        return None

    def device_dir(self) -> None:
        return None

    def free_bytes(self) -> None:
        return None

    def describe(self) -> dict[str, Any]:
        return {
            "kind": "s3",
            "url": self.url,
            "endpoint": self.store.endpoint,
            "bucket": self.store.bucket,
            "prefix": self.prefix,
            "region": self.store.region,
            "sse": self.store.sse,
            "bucket_created": self.bucket_created,
        }

    def cleanup(self, keep: bool) -> None:
        try:
            if not keep:
                self.store.delete_many(o.key for o in self.store.list(self.run_prefix))
        finally:
            self.store.close()


def parse_target(spec: str, endpoint: str | None = None, sse: str | None = None) -> Target:
    """`--target` value -> Target: `s3://BUCKET[/PREFIX]` is an object store (at `endpoint`,
    else AWS_ENDPOINT_URL, else AWS itself), anything else a directory."""
    if spec.startswith("s3://"):
        bucket, _, prefix = spec[len("s3://") :].partition("/")
        if not bucket:
            raise DicomVaultError(f"--target {spec}: no bucket; give s3://BUCKET[/PREFIX]")
        if prefix and not prefix.endswith("/"):
            prefix += "/"
        return S3Target(bucket, prefix, endpoint, sse)
    if spec.startswith(("http://", "https://")):
        raise DicomVaultError(f"--target {spec}: give an object store as s3://BUCKET and --endpoint {spec}")
    if endpoint is not None or sse is not None:
        raise DicomVaultError("--endpoint and --sse go with an s3://BUCKET target")
    return LocalTarget(spec)
