"""A replica takes changes only from its upstream: the engine refuses every local write, so no
path (DIMSE, DICOMweb, the API, `dicomvault ingest`, `dicomvault delete`) can make it diverge."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.engine import Engine
from dicomvault.errors import ConflictError, ReplicaWriteError
from dicomvault.index import role


def _files(tmp_path: Path, n: int) -> list[Path]:
    out = []
    for i, buf in enumerate(ct_series(SeriesSpec(slices=n, rows=32, columns=32, seed=5))):
        p = tmp_path / f"in/{i}.dcm"
        p.parent.mkdir(exist_ok=True)
        p.write_bytes(buf)
        out.append(p)
    return out


def test_every_engine_write_is_refused_on_a_replica(tmp_path: Path) -> None:
    files = _files(tmp_path, 3)
    with Engine(tmp_path / "d") as e:
        (kept,) = e.store_files(files[:1])
        role.set_role(e.index, role.REPLICA)
        for write in (
            lambda: e.store_files(files[1:2]),
            lambda: e.store_buffers([files[2].read_bytes()]),
            lambda: e.delete("instance", kept.sop_instance_uid),
        ):
            with pytest.raises(ReplicaWriteError, match="replica.*dr promote"):
                write()
        assert issubclass(ReplicaWriteError, ConflictError)  # HTTP answers it 409
        assert e.stats()["objects"] == 1
        # Failback drops what its upstream does not hold: that delete converges, it may run.
        assert e.delete("instance", kept.sop_instance_uid, converging=True) == 1
        role.set_role(e.index, role.PRIMARY)
        assert len(e.store_files(files[1:])) == 2
    with pytest.raises(ValueError, match="site role"):
        role.set_role(Engine(tmp_path / "e").index, "secondary")


def test_ingest_on_a_replica_fails_with_exit_2_and_stores_nothing(tmp_path: Path) -> None:
    files = _files(tmp_path, 2)
    data = tmp_path / "d"
    with Engine(data) as e:
        role.set_role(e.index, role.REPLICA)
    cli = str(Path(sys.executable).with_name("dicomvault"))
    run = subprocess.run(
        [cli, "ingest", str(tmp_path / "in"), "--data", str(data)],
        capture_output=True, text=True, timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert "is a replica" in run.stderr
    with Engine(data, read_only=True) as e:
        assert e.stats()["objects"] == 0
    assert files
