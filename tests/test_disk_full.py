"""A full disk gives a clean StorageFullError, loses nothing stored before, and the archive keeps
serving (reads, deletes, and stores again once space is freed). Runs on a small tmpfs (root)."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.engine import Engine, StoreOutcome
from dicomvault.errors import StorageFullError

FS_MB = 48


def _fill(mnt: Path, leave_bytes: int) -> Path:
    st = os.statvfs(mnt)
    free = st.f_bavail * st.f_frsize
    filler = mnt / "filler.bin"
    with open(filler, "wb") as f:
        f.write(b"\0" * max(0, free - leave_bytes))
    return filler


@pytest.mark.parametrize("reserve", [4 << 20, 0], ids=["with-reserve", "no-reserve"])
def test_full_disk(small_fs: Callable[[int], Path], reserve: int) -> None:
    mnt = small_fs(FS_MB)
    data = mnt / "data"
    files = list(ct_series(SeriesSpec(slices=120, rows=256, columns=256, seed=7)))
    with Engine(data, min_free_bytes=reserve, volume_size=8 << 20) as engine:
        first = engine.store_buffers(files[:10])
        assert all(isinstance(r, StoreOutcome) for r in first)
        filler = _fill(mnt, leave_bytes=reserve + (2 << 20))
        acked: list[StoreOutcome] = []
        full_error: Exception | None = None
        for buf in files[10:]:
            try:
                (res,) = engine.store_buffers([buf])
            except StorageFullError as exc:
                full_error = exc
                break
            if isinstance(res, StorageFullError):
                full_error = res
                break
            assert isinstance(res, StoreOutcome), res
            acked.append(res)
        assert full_error is not None, "the disk never filled: the test proved nothing"
        assert "full" in str(full_error).lower() or "free" in str(full_error).lower()

        # Everything acknowledged is intact and the archive still answers.
        for res in [*first, *acked]:
            assert isinstance(res, StoreOutcome)
            engine.read_dataset(res.sop_instance_uid)
        assert engine.verify().clean

        # Free space and the same engine stores again.
        filler.unlink()
        (again,) = engine.store_buffers([files[-1]])
        assert isinstance(again, StoreOutcome), again

    with Engine(data, min_free_bytes=0) as reopened:
        assert reopened.verify().clean
        assert reopened.stats()["objects"] == 10 + len(acked) + 1
