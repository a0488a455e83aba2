"""Read-only access while a writer holds the DB, and lock errors for a second writer."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
from index_helpers import MakeInst

from dicomvault.index import Index, IndexLockedError, IndexNotFoundError

READER = textwrap.dedent("""
    import json, sys
    from dicomvault.index import Index, IndexLockedError
    path = sys.argv[1]
    out = {}
    with Index.open(path, read_only=True) as ro:
        out["objects"] = ro.stats()["objects"]
        out["studies"] = sorted(r["StudyInstanceUID"] for r in ro.find("STUDY", {"PatientID": "PID1"}))
        out["changes"] = [c.seq for c in ro.changes(0, 100)]
        out["instances"] = len(ro.instances_of("study", "1.2.840.1"))
    try:
        Index.open(path).close()
        out["writable"] = "opened"
    except IndexLockedError as exc:
        out["writable"] = str(exc)
    print(json.dumps(out))
""")


def run_reader(path: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", READER, path], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    out: dict[str, Any] = json.loads(proc.stdout)
    return out


def test_read_only_while_writer_open(idx: Index, index_path: str, mk: MakeInst) -> None:
    idx.add_instances([mk("1.1"), mk("1.2"), mk("2.1", study="ST2", series="X")])
    out = run_reader(index_path)
    assert out["objects"] == 3
    assert out["studies"] == ["1.2.840.1", "ST2"]
    assert out["changes"] == [1, 2, 3]
    assert out["instances"] == 2
    assert "locked by another writer" in out["writable"] and index_path in out["writable"]
    # the writer is unaffected and later writes are seen by a new reader
    idx.add_instance(mk("1.3"))
    assert run_reader(index_path)["objects"] == 4


def test_refresh_and_secondary(idx: Index, index_path: str, mk: MakeInst, tmp_path: Path) -> None:
    idx.add_instance(mk("1.1"))
    ro = Index.open(index_path, read_only=True)
    sec = Index.open(index_path, secondary_path=str(tmp_path / "sec"))
    try:
        idx.add_instance(mk("1.2"))
        assert ro.stats()["objects"] == 1
        ro.refresh()
        assert ro.stats()["objects"] == 2
        sec.refresh()
        assert sec.get_instance("1.2") is not None and sec.stats()["objects"] == 2
    finally:
        ro.close()
        sec.close()


def test_second_writer_in_same_process(idx: Index, index_path: str) -> None:
    with pytest.raises(IndexLockedError) as ei:
        Index.open(index_path)
    assert ei.value.path == index_path and index_path in str(ei.value)


def test_read_only_of_missing_index(tmp_path: Path) -> None:
    with pytest.raises(IndexNotFoundError, match="nothing-here"):
        Index.open(tmp_path / "nothing-here", read_only=True)
