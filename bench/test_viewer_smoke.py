"""A 20-slice run of bench/viewer_bench.py end to end (browser, `dicomvault serve`, every figure of
the report, Orthanc's viewer left out), so a viewer change that breaks the benchmark's hooks
(`window.dicomvault`, `timings`, `prefetchNeighbours`, the viewport's events) shows up before the
next `make bench-viewer`. Slow-marked: about half a minute."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import viewer_bench as vb  # noqa: E402

pytestmark = pytest.mark.slow


@pytest.mark.skipif(not Path(vb.CHROMIUM).exists() or shutil.which("curl") is None,
                    reason="needs Debian's chromium and curl (make sysdeps)")
def test_viewer_bench_smoke(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vb, "ROOT", tmp_path)  # its .results/ go to the test's directory
    argv = ["--quick", "--no-orthanc", "--no-results", "--warm", "1", "--cold", "1", "--shipped", "1",
            "--nav-warm", "1", "--nav-cold", "0", "--scratch", str(tmp_path / "scratch")]
    assert vb.main(argv) == 0
    report = next((tmp_path / ".results").glob("viewer-*.md")).read_text()
    assert vb.SECTION in report
    for figure in ("click -> first image drawn, full path, metadata cache warm", "all 20 slices resident",
                   "scroll 20 resident slices", "W/L, one setWindow per animation frame",
                   "navigation -> first image, warm", "raw fetch of the 20 frames"):
        row = next(line for line in report.splitlines() if figure in line)
        assert "| - |" not in row.split(figure, 1)[1][:12], row  # a figure, not a dash
    assert "Note:" not in report, report  # the prefetch hook worked, nothing failed
