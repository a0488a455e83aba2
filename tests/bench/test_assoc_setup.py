"""bench/assoc_setup.py: the request it replays is the tool's own (captured from a real getscu), and
a short run against a real `dicomvault serve` reports every request it replayed, accepted."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from pynetdicom.pdu import A_ASSOCIATE_RQ

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import assoc_setup  # noqa: E402

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(shutil.which("getscu") is None, reason="dcmtk getscu not installed")]


def test_captures_the_tools_own_request() -> None:
    raw = assoc_setup.capture("getscu")
    rq = A_ASSOCIATE_RQ()
    rq.decode(raw)
    prim = rq.to_primitive()
    assert prim.calling_ae_title == "GETSCU" and prim.called_ae_title == "DICOMVAULT"
    # getscu -S proposes the query/retrieve models and its storage classes (with the SCP role)
    assert len(prim.presentation_context_definition_list) > 100
    assert len(assoc_setup.capture("echoscu")) < 1000


def test_short_run_against_serve(tmp_path: Path) -> None:
    out = tmp_path / "out.json"
    proc = subprocess.run([sys.executable, str(BENCH / "assoc_setup.py"), "--count", "4", "--json", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| dicomvault |")]
    assert len(rows) == 2 and re.search(r"getscu \(\d{4,} B\)", rows[0])
    figures = json.loads(out.read_text())
    for name in ("dicomvault getscu", "dicomvault echoscu"):
        assert figures[name]["n"] == 4 and 0 < figures[name]["median_ms"] < 1000
