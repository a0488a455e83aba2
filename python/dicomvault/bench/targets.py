"""Where a benchmark runs. Today a local directory (any mounted device: disk, array, NFS/SAN);
the seam for an S3-compatible endpoint (once the object tier exists) is `parse_target`."""

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


def parse_target(spec: str) -> Target:
    """`--target` value -> Target. `s3://bucket/prefix` (or http(s)://) is reserved for the
    object tier: an S3Target will open an engine whose hot tier is a small local cache and whose
    tier under test is the endpoint, and will probe the endpoint's own PUT/GET limits."""
    if spec.startswith(("s3://", "http://", "https://")):
        raise DicomVaultError(
            f"--target {spec}: S3-compatible targets need the object tier, which does not exist yet; "
            "give a directory on the device to test"
        )
    return LocalTarget(spec)
