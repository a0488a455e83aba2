"""The installed `dicomvault` command, end to end, as an operator would run it."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pydicom
import pytest

from dv_corpus import corpus_dirs

CLI = str(Path(sys.executable).with_name("dicomvault"))


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([CLI, *args], capture_output=True, text=True, timeout=120)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"dicomvault {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
        )
    return proc


@pytest.fixture
def inbox(tmp_path: Path) -> Path:
    """A folder tree like a scanner dump: real images, a duplicate, junk and a truncated file."""
    data_store = corpus_dirs()[0]
    box = tmp_path / "inbox"
    (box / "a" / "b").mkdir(parents=True)
    for name in ("CT_small.dcm", "MR_small.dcm"):
        shutil.copy(corpus_dirs()[1] / name, box / "a" / name)
    for name in ("693_UNCI.dcm", "JPEG-LL.dcm", "MR2_UNCR.dcm"):
        shutil.copy(data_store / name, box / "a" / "b" / name)
    shutil.copy(corpus_dirs()[1] / "CT_small.dcm", box / "dup_of_ct.dcm")
    (box / "notes.txt").write_text("not an image\n")
    full = (corpus_dirs()[1] / "CT_small.dcm").read_bytes()
    (box / "truncated.dcm").write_bytes(full[: len(full) // 2])
    return box


def test_ingest_ls_export_stats_verify_delete(inbox: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    proc = run("ingest", str(inbox), "--data", str(data), "--json")
    summary = json.loads(proc.stdout)
    assert summary["files"] == 8
    assert summary["stored"] == 5
    assert summary["duplicates"] == 1
    reasons = {Path(r["path"]).name: r["reason"] for r in summary["rejected"]}
    assert set(reasons) == {"notes.txt", "truncated.dcm"}
    assert "not DICOM" in reasons["notes.txt"]
    assert "offset" in reasons["truncated.dcm"]

    studies = json.loads(run("ls", "studies", "--data", str(data), "--json").stdout)
    ct = pydicom.dcmread(inbox / "a" / "CT_small.dcm")
    assert str(ct.StudyInstanceUID) in {s["StudyInstanceUID"] for s in studies}
    instances = json.loads(
        run("ls", "instances", "--study", str(ct.StudyInstanceUID), "--data", str(data), "--json").stdout
    )
    assert [i["SOPInstanceUID"] for i in instances] == [str(ct.SOPInstanceUID)]
    by_pid = json.loads(
        run("ls", "studies", "--patient-id", str(ct.PatientID), "--data", str(data), "--json").stdout
    )
    assert {s["PatientID"] for s in by_pid} == {str(ct.PatientID)}
    assert "StudyInstanceUID" in run("ls", "--data", str(data)).stdout

    stats = json.loads(run("stats", "--data", str(data), "--json").stdout)
    assert stats["objects"] == 5
    # Ingest lands raw (disk speed); the compactor (`tier compact`, or serve in the background)
    # moves everything to the warm tier's hot codec.
    landing = stats["tiers"]["landing"]
    assert landing["objects"] == 5 and landing["stored_bytes"] == landing["logical_bytes"]
    compacted = json.loads(run("tier", "compact", "--data", str(data)).stdout)
    assert compacted["blobs"] == 5 and not compacted["failed"]
    stats = json.loads(run("stats", "--data", str(data), "--json").stdout)
    assert stats["tiers"]["landing"]["objects"] == 0 and stats["tiers"]["warm"]["objects"] == 5
    assert stats["logical_bytes"] > stats["stored_bytes"] > 0

    out = tmp_path / "out"
    run("export", "--study", str(ct.StudyInstanceUID), "-o", str(out), "--data", str(data))
    (exported,) = list(out.rglob("*.dcm"))
    assert exported.read_bytes() == (inbox / "a" / "CT_small.dcm").read_bytes()

    assert run("verify", "--data", str(data)).returncode == 0

    run("delete", "--study", str(ct.StudyInstanceUID), "--data", str(data))
    after = json.loads(run("stats", "--data", str(data), "--json").stdout)
    assert after["objects"] == 4
    assert after["stored_bytes"] < stats["stored_bytes"]
    assert (
        run(
            "ls", "instances", "--study", str(ct.StudyInstanceUID), "--data", str(data), "--json"
        ).stdout.strip()
        == "[]"
    )
    assert run("verify", "--data", str(data)).returncode == 0


def test_verify_reports_damage(inbox: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    run("ingest", str(inbox / "a"), "--data", str(data))
    vols = sorted(p for p in (data / "blobs").rglob("*.dat") if p.stat().st_size > 0)
    assert vols, "expected volume files under blobs/"
    raw = bytearray(vols[0].read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    vols[0].write_bytes(bytes(raw))
    proc = run("verify", "--data", str(data), "--json", check=False)
    assert proc.returncode != 0
    report = json.loads(proc.stdout)
    assert report["damaged"] or report["missing"]


def test_read_only_commands_beside_a_writer(inbox: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    run("ingest", str(inbox / "a"), "--data", str(data))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(f"""
            import sys, time
            from dicomvault.engine import Engine
            with Engine({str(data)!r}) as e:
                print("ready", flush=True)
                sys.stdin.read()
        """),
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ready"
        assert json.loads(run("stats", "--data", str(data), "--json").stdout)["objects"] == 5
        assert len(json.loads(run("ls", "instances", "--data", str(data), "--json").stdout)) == 5
        assert run("verify", "--data", str(data)).returncode == 0
        second = run("ingest", str(inbox / "dup_of_ct.dcm"), "--data", str(data), check=False)
        assert second.returncode != 0
        assert "locked" in second.stderr.lower()
    finally:
        holder.communicate("", timeout=30)
    assert holder.returncode == 0
