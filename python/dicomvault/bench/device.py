"""The device's own limits, measured on the target directory in the same run as the engine:
synced sequential write (dd conv=fdatasync), synced small-file writes of the workload's object
sizes (open, write, fsync, close per file) and sequential read with the page cache dropped."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .measure import latency_histogram, latency_summary

CHUNK = 1 << 20


def _block(n: int) -> bytes:
    # Incompressible, so a compressing or deduplicating device cannot flatter the raw figures.
    return os.urandom(n)


def drop_cache(path: Path) -> bool:
    """Evicts a file's clean pages from the page cache (POSIX_FADV_DONTNEED; needs no root for
    pages already written back, which fdatasync guarantees). True if the kernel took the hint."""
    if not hasattr(os, "posix_fadvise"):
        return False
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        return True
    except OSError:
        return False
    finally:
        os.close(fd)


def drop_tree_cache(root: Path) -> bool:
    """drop_cache on every file under root (the engine's volumes and index before a read phase)."""
    ok = True
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            ok = drop_cache(Path(dirpath) / name) and ok
    return ok


def seq_write(path: Path, nbytes: int, max_seconds: float) -> dict[str, Any]:
    """Sequential 1 MiB writes ending in one fdatasync; stops early after max_seconds."""
    block = _block(CHUNK)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        t0 = time.perf_counter()
        written = 0
        while written < nbytes and time.perf_counter() - t0 < max_seconds:
            written += os.write(fd, block)
        os.fdatasync(fd)
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
    return {"bytes": written, "seconds": round(elapsed, 4), "mb_s": round(written / elapsed / 1e6, 2)}


def seq_read(path: Path, max_seconds: float) -> dict[str, Any]:
    """Reads a file written by seq_write, 1 MiB at a time, after dropping it from the cache."""
    dropped = drop_cache(path)
    fd = os.open(path, os.O_RDONLY)
    try:
        t0 = time.perf_counter()
        read = 0
        while time.perf_counter() - t0 < max_seconds:
            n = len(os.read(fd, CHUNK))
            if not n:
                break
            read += n
        elapsed = time.perf_counter() - t0
    finally:
        os.close(fd)
    return {
        "bytes": read,
        "seconds": round(elapsed, 4),
        "mb_s": round(read / elapsed / 1e6, 2),
        "cache_dropped": dropped,
    }


def small_files(
    directory: Path,
    sizes: list[int],
    nbytes: int,
    max_seconds: float,
    tick: Callable[[int, int], None] | None = None,
) -> dict[str, Any]:
    """One file per object, sizes cycling through the workload's sample: open, write, fsync,
    close (what a file-per-object archive does per acknowledged object)."""
    directory.mkdir(parents=True, exist_ok=True)
    block = _block(max(sizes))
    lat: list[float] = []
    written = files = 0
    t0 = time.perf_counter()
    while written < nbytes and time.perf_counter() - t0 < max_seconds:
        size = sizes[files % len(sizes)]
        s = time.perf_counter()
        fd = os.open(directory / f"{files:07d}.dcm", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, memoryview(block)[:size])
            os.fsync(fd)
        finally:
            os.close(fd)
        lat.append(time.perf_counter() - s)
        written += size
        files += 1
        if tick:
            tick(files, written)
    elapsed = time.perf_counter() - t0
    for p in directory.iterdir():
        p.unlink()
    return {
        "files": files,
        "bytes": written,
        "seconds": round(elapsed, 4),
        "mb_s": round(written / elapsed / 1e6, 2),
        "files_s": round(files / elapsed, 2),
        "mean_file_bytes": round(written / files) if files else 0,
        "latency_ms": latency_summary(lat),
        "latency_histogram": latency_histogram(lat),
    }
