"""The analysis results in the viewer, in a real browser (headless Chromium, Playwright) against
`dicomvault serve`: flag badges with their reasons in the study list and the study header, the
"Flagged first" order, the analyzers' measurements listed with their series, a SEG (written by
highdicom, fetched over DICOMweb, bit-unpacked and mapped to its source images in the browser)
drawn over the CT it segments, checked on the overlay canvas and on a screenshot inside and
outside the segment, and the patient's trend table and chart. The results are written through
analysis/results.record, as the pipeline does, before the server starts."""

from __future__ import annotations

import io
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest
from dv_analysis import BLOCK, Study, analysed_study, block_volume_ml, result
from PIL import Image

from dicomvault.analysis import results
from dicomvault.analysis.api import URGENT, WARNING
from dicomvault.index import Index

from .conftest import Server, Viewer, ingest, start_server

INSIDE = (20, 30)   # (col, row) inside BLOCK on its slices
OUTSIDE = (50, 10)  # outside it
BLOCK_SLICE = 3     # a slice the block spans (slices 2..4; z = 2 mm * index, sorted by position)
EMPTY_SLICE = 0


@dataclass
class AnalysisSite:
    server: Server
    now: Study    # the latest CT of patient TRENDS-1: SEG, SR, urgent flag
    prior: Study  # an older CT of the same patient: a warning
    plain: Study  # another patient, nothing flagged


@pytest.fixture(scope="module")
def analysis_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AnalysisSite]:
    root = tmp_path_factory.mktemp("analysis-viewer")
    now = analysed_study(patient_id="TRENDS-1", patient_name="Trend^Tess", study_date="20240610")
    prior = analysed_study(patient_id="TRENDS-1", patient_name="Trend^Tess", study_date="20230115",
                           with_objects=False)
    plain = analysed_study(patient_id="PLAIN-1", patient_name="Plain^Pat", study_date="20240801",
                           with_objects=False)
    files = []
    for s in (now, prior, plain):
        for ds in s.objects():
            path = root / "in" / f"{ds.SOPInstanceUID}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    data = root / "data"
    ingest(data, files)
    with Index.open(str(data / "index")) as index:
        for s, volume, emphysema, flags in (
            (now, block_volume_ml(), 7.5, [("test.block", URGENT, "A 2.4 mL block in series 1, slices 3-5")]),
            (prior, 2.0, 5.0, [("quality.spacing", WARNING, "Uneven slice spacing in series 1")]),
            (plain, 1.0, 1.0, []),
        ):
            results.record(index, study_uid=s.study_uid, patient_id=s.patient_id, study_date=s.study_date,
                           result=result("ct-chest", s.ct_series, volume=volume, emphysema=emphysema,
                                         flags=flags), stored=s.stored())
    server = start_server(data, root / "serve.log")
    try:
        yield AnalysisSite(server, now, prior, plain)
    finally:
        server.stop()


@pytest.fixture
def av(new_page, analysis_site: AnalysisSite) -> Viewer:
    return Viewer(new_page(), analysis_site.server.url)


STUDY_ROWS = """() => [...document.querySelectorAll('tr.study')].map(tr => ({
  study: tr.dataset.study, severity: tr.dataset.severity,
  badge: tr.querySelector('.flag')?.textContent || null,
  title: tr.querySelector('.flag')?.title || null }))"""


def test_study_list_badges_and_flagged_first(av: Viewer, analysis_site: AnalysisSite) -> None:
    page = av.page
    av.goto("#/studies")
    page.wait_for_function("() => document.querySelectorAll('tr.study').length === 3")
    rows = {r["study"]: r for r in page.evaluate(STUDY_ROWS)}
    now, prior, plain = analysis_site.now, analysis_site.prior, analysis_site.plain
    assert rows[now.study_uid]["badge"] == "URGENT"
    assert rows[now.study_uid]["title"] == "A 2.4 mL block in series 1, slices 3-5"  # the reason, on hover
    assert rows[prior.study_uid]["badge"] == "WARNING"
    assert rows[plain.study_uid]["badge"] is None
    # newest first by default; flagged first on request, most urgent first
    order = [r["study"] for r in page.evaluate(STUDY_ROWS)]
    assert order == [plain.study_uid, now.study_uid, prior.study_uid]
    page.check("form.search input[name=flagfirst]")
    page.wait_for_function(f"() => document.querySelector('tr.study').dataset.study === '{now.study_uid}'")
    order = [r["study"] for r in page.evaluate(STUDY_ROWS)]
    assert order == [now.study_uid, prior.study_uid, plain.study_uid]
    av.shot("analysis_study_list")


def _overlay_rgba(av: Viewer, point: tuple[int, int]) -> list[int]:
    return av.page.evaluate("""([c, r]) => {
      const vp = window.dicomvault.grid.viewports[0];
      const [x, y] = vp.imageToCanvasPoint([c + 0.5, r + 0.5]);
      return [...vp.overlay.getContext('2d').getImageData(Math.floor(x), Math.floor(y), 1, 1).data];
    }""", list(point))


def _screen_rgb(av: Viewer, point: tuple[int, int]) -> np.ndarray:
    """The colour a screenshot of the page shows at the centre of image pixel `point`."""
    x, y = av.to_client((point[0] + 0.5, point[1] + 0.5))
    shot = np.asarray(Image.open(io.BytesIO(av.page.screenshot())).convert("RGB")).astype(int)
    return shot[int(y), int(x)]


def test_study_view_flags_measurements_and_seg_overlay(av: Viewer, analysis_site: AnalysisSite) -> None:
    page = av.page
    now = analysis_site.now
    av.open_study(now.study_uid)
    page.wait_for_function("() => window.dicomvault.analysisLoaded === true")
    # the header: the highest severity, the reasons on hover, a way to the patient's trends
    badge = page.locator("header.top .study-flags .flag")
    assert badge.text_content() == "URGENT"
    assert badge.get_attribute("title") == "A 2.4 mL block in series 1, slices 3-5"
    page.wait_for_selector("header.top a.trends-link")
    # the Analysis tab opened by itself: flags, then the measurements under their series
    assert page.locator(".pane.analysis-pane").is_visible()
    assert page.locator(".analysis-flag").count() == 1
    section = page.locator(f".analysis-series[data-series='{now.ct_series}']")
    assert section.locator("button.link").text_content() == "Series 1 chest 2 mm"
    cells = section.locator("tr[data-key=block_volume] td").all_text_contents()
    assert cells[:2] == ["Block volume", f"{block_volume_ml():.2f} mL"]
    assert section.locator("tr[data-key=emphysema_index] td").all_text_contents()[1] == "7.50 %"
    assert page.locator(".seg-toggle input[type=checkbox]").is_checked()

    # the SEG over its source slice: coloured inside the block, untouched outside it
    av.call(f"vp.setIndex({BLOCK_SLICE})")
    av.settle()
    assert av.state()["sop"] == str(sorted(now.ct, key=lambda d: d.ImagePositionPatient[2])[BLOCK_SLICE]
                                   .SOPInstanceUID)
    inside, outside = _overlay_rgba(av, INSIDE), _overlay_rgba(av, OUTSIDE)
    assert inside[3] > 100 and inside[0] > 200 and inside[1] < 100, inside  # red segment at opacity 0.5
    assert outside[3] == 0, outside
    rgb_in, rgb_out = _screen_rgb(av, INSIDE), _screen_rgb(av, OUTSIDE)
    assert rgb_in[0] - rgb_in[1] > 60, rgb_in  # red tint over the block
    assert abs(rgb_out[0] - rgb_out[1]) <= 2 and abs(rgb_out[1] - rgb_out[2]) <= 2, rgb_out  # grey
    # the block's own grey is still visible under it, and the rest of the slice is not covered
    av.shot("analysis_seg_overlay")
    # every block pixel of the frame and nothing else: the edges of BLOCK in both directions
    rows, cols = BLOCK[1], BLOCK[2]
    edge = [(cols.start, rows.start), (cols.stop - 1, rows.stop - 1)]
    beyond = [(cols.start - 1, rows.start), (cols.stop, rows.stop - 1), (cols.start, rows.start - 1)]
    assert all(_overlay_rgba(av, p)[3] > 0 for p in edge), [_overlay_rgba(av, p) for p in edge]
    assert all(_overlay_rgba(av, p)[3] == 0 for p in beyond), [_overlay_rgba(av, p) for p in beyond]

    # the opacity slider: 0 hides it, 100 makes it opaque
    page.locator(".seg-opacity input").fill("0")
    av.settle()
    assert _overlay_rgba(av, INSIDE)[3] == 0
    page.locator(".seg-opacity input").fill("100")
    av.settle()
    assert _overlay_rgba(av, INSIDE)[3] == 255
    # a slice the segment does not reach has no overlay
    av.call(f"vp.setIndex({EMPTY_SLICE})")
    av.settle()
    assert _overlay_rgba(av, INSIDE)[3] == 0
    # unticked: gone on its slice too
    av.call(f"vp.setIndex({BLOCK_SLICE})")
    av.settle()
    assert _overlay_rgba(av, INSIDE)[3] == 255
    page.locator(".seg-toggle input[type=checkbox]").uncheck()
    av.settle()
    assert _overlay_rgba(av, INSIDE)[3] == 0


def test_patient_trends_page(av: Viewer, analysis_site: AnalysisSite) -> None:
    page = av.page
    av.goto("#/studies")
    page.wait_for_function("() => document.querySelectorAll('tr.study').length === 3")
    page.click(f"tr.study[data-study='{analysis_site.now.study_uid}'] button.trends")
    page.wait_for_selector("table.trends tr.trend")
    assert page.evaluate("location.hash") == "#/patient/TRENDS-1"
    row = page.locator("tr.trend[data-key=emphysema_index] td").all_text_contents()
    assert row[:4] == ["Emphysema index", "ct-chest", "2", "7.50 %"]
    assert row[4] == "+2.50 % (+50.0 %) since 2023-01-15"
    card = page.locator(".trend-card[data-key=emphysema_index]")
    points = card.locator("circle.trend-point")
    assert points.count() == 2
    first, last = (points.nth(i) for i in (0, 1))
    assert first.get_attribute("data-study") == analysis_site.prior.study_uid
    assert float(first.get_attribute("data-value")) == 5.0 and float(last.get_attribute("data-value")) == 7.5
    # over time left to right, the higher value higher up
    assert float(first.get_attribute("cx")) < float(last.get_attribute("cx"))
    assert float(first.get_attribute("cy")) > float(last.get_attribute("cy"))
    assert card.locator("polyline.trend-line").count() == 1
    assert card.locator(".change").text_content() == "+2.50 % (+50.0 %) since 2023-01-15"
    av.shot("analysis_trends")
    # a point's study is one click away
    card.locator("table.points a").first.click()
    page.wait_for_function(f"() => location.hash === '#/study/{analysis_site.prior.study_uid}'")
    av.wait_image()
    av.shot("analysis_trends_then_prior")
