"""A full disk gives a clean StorageFullError, loses nothing stored before, and the archive keeps
serving (reads, deletes, and stores again once space is freed). Runs on a small tmpfs (root)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
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


def test_the_default_reserve_scales_so_a_small_volume_still_stores(small_fs: Callable[[int], Path]) -> None:
    """The reserve was a fixed 64 MiB: a 48 MB volume could store nothing. Now 2 % of the
    filesystem, at least 16 MiB: most of it is usable, and the refusal says what is kept."""
    mnt = small_fs(FS_MB)
    files = list(ct_series(SeriesSpec(slices=400, rows=256, columns=256, seed=9)))
    with Engine(mnt / "data", volume_size=4 << 20) as engine:
        stored = 0
        refusal: Exception | None = None
        for i in range(0, len(files), 8):
            results = engine.store_buffers(files[i : i + 8])
            stored += sum(isinstance(r, StoreOutcome) for r in results)
            failed = [r for r in results if not isinstance(r, StoreOutcome)]
            if failed:
                # Every object of a refused batch is told "storage full", none anything else.
                assert all(isinstance(r, StorageFullError) for r in failed), failed
                refusal = failed[0]
                break
        assert refusal is not None, "the volume never filled"
        assert "kept in reserve" in str(refusal)
        st = os.statvfs(mnt)
        # At least half of the volume took objects (the 64 MiB reserve allowed none of it).
        assert stored * len(files[0]) > 0.5 * FS_MB * 1e6, stored
        assert st.f_bavail * st.f_frsize >= 16 << 20
        assert engine.verify().clean


def test_ingest_stops_at_the_first_refusal_with_exit_2(
    small_fs: Callable[[int], Path], tmp_path: Path
) -> None:
    mnt = small_fs(FS_MB)
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    for i, buf in enumerate(ct_series(SeriesSpec(slices=400, rows=256, columns=256, seed=13))):
        (inbox / f"{i:04}.dcm").write_bytes(buf)
    cli = str(Path(sys.executable).with_name("dicomvault"))
    run = subprocess.run([cli, "ingest", str(inbox), "--data", str(mnt / "data"), "--json", "-j", "2"],
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 2, run.stderr
    assert "storage full, stopped" in run.stderr
    # One message, not one "rejected" line per remaining file.
    assert "rejected" not in run.stderr
    summary = json.loads(run.stdout)
    assert summary["rejected"] == []
    assert summary["storage_full"]["not_stored"] > 0
    assert summary["stored"] + summary["storage_full"]["not_stored"] == 400
    # Everything reported stored is there and intact; the same command resumes once space returns.
    with Engine(mnt / "data", read_only=True) as engine:
        assert engine.stats()["objects"] == summary["stored"]
        assert engine.verify().clean
