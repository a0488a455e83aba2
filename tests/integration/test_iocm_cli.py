"""`dicomvault rejected list|restore` as an admin runs them, on a data directory filled by
`dicomvault ingest` (the CLI path of detection)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from dv_iocm import ct_series, rejection_note


def dv(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([sys.executable, "-m", "dicomvault.cli", *args], capture_output=True, text=True,
                          timeout=60)
    if check:
        assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc


def test_list_and_restore_from_the_cli(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    images = ct_series(tmp_path / "ct", 3)
    note = rejection_note(tmp_path / "kos.dcm", images[:2], code="113001")
    dv("ingest", "--data", data, str(tmp_path / "ct"), str(tmp_path / "kos.dcm"))
    rows = json.loads(dv("rejected", "list", "--data", data, "--json").stdout)
    assert sorted(r["SOPInstanceUID"] for r in rows) == sorted(im.sop_uid for im in images[:2])
    assert {r["state"] for r in rows} == {"hidden"} and {r["note"] for r in rows} == {note}
    other_study = json.loads(dv("rejected", "list", "--data", data, "--json", "--study", "1.2.3").stdout)
    assert other_study == []
    missing = dv("rejected", "restore", "--data", data, "--instance", images[2].sop_uid, check=False)
    assert missing.returncode != 0 and images[2].sop_uid in missing.stderr + missing.stdout
    out = dv("rejected", "restore", "--data", data, "--instance", images[0].sop_uid).stdout
    assert "restored 1 instance" in out
    rows = json.loads(dv("rejected", "list", "--data", data, "--json").stdout)
    assert [r["SOPInstanceUID"] for r in rows] == [images[1].sop_uid]
    ls = dv("ls", "instances", "--data", data, "--study", images[0].study_uid).stdout
    assert images[0].sop_uid in ls and images[1].sop_uid not in ls
    audit = [json.loads(x) for x in (tmp_path / "data" / "audit" / "audit.jsonl").read_text().splitlines()]
    restored = [a for a in audit if a["event"] == "instances-restored"]
    assert restored and restored[0]["detail"]["instances"] == [images[0].sop_uid] and restored[0]["user"]
