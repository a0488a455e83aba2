"""bench/viewer_bench.py's arithmetic and tables, from made-up figures (no browser, no server):
percentiles against numpy's, frame rates from rAF timestamps (frames that drew nothing new do not
count, several draws in one frame count once), ratios in the right direction, the report's rows
as wide as their headers, the RESULTS.md section replaced rather than duplicated."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import dicomweb_compare as wc  # noqa: E402
import viewer_bench as vb  # noqa: E402


def test_p50_p95_against_numpy() -> None:
    rng = np.random.default_rng(5)
    ms = list(rng.exponential(40.0, size=37))
    p50, p95 = vb.p50_p95(ms)
    assert p50 == pytest.approx(float(np.median(ms)))
    assert p95 == pytest.approx(float(np.percentile(ms, 95, method="inverted_cdf")))
    assert vb.p50_p95([]) == (None, None)
    assert vb.p50_p95([12.0]) == (12.0, 12.0)


def frames(n: int, period: float = 1000 / 60, start: float = 1000.0) -> list[float]:
    return [start + k * period for k in range(n)]


def test_fps_one_new_slice_per_frame() -> None:
    ts = frames(61)
    draws = [(t + 2.0, i) for i, t in enumerate(ts)]  # each frame draws slice i, 2 ms into it
    f = vb.fps_from_frames(ts, draws)
    assert f is not None
    assert f.fps == pytest.approx(60.0)
    assert (f.frames, f.missed) == (61, 0)
    assert f.span_ms == pytest.approx(1000.0)


def test_fps_every_other_frame_and_repeats_do_not_count() -> None:
    ts = frames(61)
    # a new slice every second frame; the frames between redraw the same slice (a cursor move)
    draws = [(t + 1.0, i // 2) for i, t in enumerate(ts)]
    f = vb.fps_from_frames(ts, draws)
    assert f is not None
    assert f.fps == pytest.approx(30.0)
    assert f.frames == 31
    assert f.missed == 30


def test_fps_two_draws_in_one_frame_count_once() -> None:
    ts = frames(11)
    draws = [(t + 1.0, 2 * i) for i, t in enumerate(ts)] + [(t + 3.0, 2 * i + 1) for i, t in enumerate(ts)]
    f = vb.fps_from_frames(ts, draws)
    assert f is not None
    assert f.frames == 11
    assert f.fps == pytest.approx(60.0)


def test_fps_slow_frames_and_edge_cases() -> None:
    ts = frames(21, period=100.0)  # the browser itself only managed 10 frames/s
    f = vb.fps_from_frames(ts, [(t + 5, i) for i, t in enumerate(ts)])
    assert f is not None and f.fps == pytest.approx(10.0)
    assert vb.fps_from_frames(ts, []) is None
    assert vb.fps_from_frames(ts, [(ts[3] + 1, "a")]) is None  # one frame: no rate
    assert vb.fps_from_frames(ts, [(ts[0] - 5, "before"), (ts[0] + 1, "a")]) is None  # before the first frame
    # unsorted inputs give the same answer
    draws = [(t + 5, i) for i, t in enumerate(ts)]
    assert vb.fps_from_frames(ts[::-1], draws[::-1]) == f


def test_events_per_s_and_ratio() -> None:
    assert vb.events_per_s([0.0, 10.0, 20.0, 30.0]) == pytest.approx(100.0)
    assert vb.events_per_s([5.0]) is None
    assert vb.events_per_s([5.0, 5.0]) is None
    assert vb.ratio(1500.0, 500.0) == 3.0  # Orthanc's time / ours: > 1 means dicomvault is faster
    assert vb.ratio(None, 5.0) is None
    assert vb.ratio(5.0, 0.0) is None


def test_check_target() -> None:
    assert vb.check_target(250.0, "<=", 300) == "<= 300: ok"
    assert vb.check_target(301.0, "<=", 300) == "<= 300: MISSED"
    assert vb.check_target(29.9, ">=", 30) == ">= 30: MISSED"
    assert vb.check_target(None, ">=", 30) == "-"


def _nav(first: float, all_: float | None, **extra: float) -> dict[str, float | None]:
    return {"first": first, "all": all_, **extra}


def test_figures_and_report_tables() -> None:
    ts = frames(31)
    scroll = {"frames": ts, "draws": [[t + 1, i] for i, t in enumerate(ts)]}
    clicks = [{"draw": 100.0 + k, "painted": 116.0 + k, "resident": 2500.0 + k,
               "metadata": [1.0, 20.0, 30.0], "frame": [35.0, 60.0, 80.0]} for k in range(10)]
    res = vb.Results()
    res.click["warm"] = clicks
    res.click["cold"] = clicks[:3]
    res.click["shipped"] = clicks[:2]
    res.nav[(vb.DV, "warm")] = [_nav(600.0, 2800.0), _nav(640.0, 2900.0)]
    res.nav[(vb.ORTHANC, "warm")] = [_nav(1200.0, 9000.0, wheel_start=1300.0), _nav(1300.0, None)]
    res.fps = {"scroll_raf": [scroll, scroll], "wl_raf": [scroll], "wheel": {**scroll, "events": ts},
               "drag": {**scroll, "events": ts}}
    res.ceiling = {"fetch": [{"ms": 2000.0, "bytes": 160e6}], "curl": [700.0],
                   "decode": {"split": 0.5, "decode": 1.0}}
    targets, side, ceil = vb.figures(res, 300)
    assert targets[0][0] == "click -> first image drawn, full path, metadata cache warm, ms"
    assert targets[0][1:] == ["104", "109", "10", "<= 300: ok"]
    scroll_row = next(r for r in targets if r[0].startswith("scroll 300"))
    assert scroll_row[1:] == ["60.0", "60.0", "2", ">= 30: ok"]
    nav = next(r for r in side if r[0].startswith("navigation -> first image, warm"))
    assert nav[3] == f"{1250 / 620:.2f}x"
    assert any(r[0].startswith("wheel through 300") for r in side)
    assert any("160 MB" in r[0] and "80 MB/s" in r[1] for r in ceil)
    args = argparse.Namespace(quick=False, slices=300)
    env = {"machine": "Machine: test.", "browser": "Chromium 1", "gl": "SwiftShader"}
    text = vb.report(args, res, 4.2, env)
    tables = [blk for blk in text.split("\n\n") if blk.startswith("|")]
    assert len(tables) == 3
    for t in tables:
        rows = t.splitlines()
        assert {r.count("|") for r in rows} == {rows[0].count("|")}, t
    assert "software GPU" in text


def test_replace_section_keeps_the_rest() -> None:
    old = ("# Results\n\n## DICOMweb\n\nold dicomweb\n\n## Viewer (make bench-viewer)\n\nold viewer\n\n"
           "## Later\n\nx\n")
    new = wc.replace_section(old, vb.SECTION, "new viewer")
    assert new.count(vb.SECTION) == 1
    assert "old viewer" not in new and "new viewer" in new
    assert "old dicomweb" in new and "## Later\n\nx" in new
    appended = wc.replace_section("# Results\n", vb.SECTION, "first")
    assert appended.endswith(f"{vb.SECTION}\n\nfirst\n")


def test_parse_args_defaults() -> None:
    a = vb.parse_args([])
    assert (a.slices, a.warm, a.cold, a.shipped) == (300, 10, 4, 5)
    q = vb.parse_args(["--quick", "--no-results"])
    assert q.slices == 20 and q.results is None


def test_input_bound_rates() -> None:
    # the viewer drew every wheel notch the browser delivered: the rate is the harness's, not a miss
    assert vb.input_bound(29.8, 30.0, (">=", 30.0)) == "input-bound: 99% of the events drawn"
    assert vb.input_bound(31.0, 30.0, (">=", 30.0)) == "input-bound: 100% of the events drawn"
    # events dropped: the target decides
    assert vb.input_bound(20.0, 60.0, (">=", 30.0)) == ">= 30: MISSED"
    assert vb.input_bound(40.0, 60.0, (">=", 30.0)) == ">= 30: ok"
    assert vb.input_bound(None, None, (">=", 30.0)) == "-"
