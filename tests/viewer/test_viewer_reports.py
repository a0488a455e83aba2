"""A radiology report received over HL7 (ORU^R01) shown with its study in the browser viewer: the
Report tab appears only for a study that has one, and the text is shown as the text it is."""

from __future__ import annotations

from pathlib import Path

from dv_iocm import ct_series

from dicomvault.index import Index
from dicomvault.integration.reports import ReportStore

from .conftest import Viewer, ingest, start_server

TEXT = "Lungs clear.\nNo <b>effusion</b> & no pneumothorax."


def test_report_tab_shows_the_hl7_report_of_the_study(tmp_path: Path, new_page) -> None:
    reported = ct_series(tmp_path / "a", 2, patient_id="RPT-1")
    plain = ct_series(tmp_path / "b", 2, patient_id="RPT-2")
    data = tmp_path / "data"
    ingest(data, [im.path for im in reported + plain])
    with Index.open(str(data / "index")) as index:  # what integration/hl7/results.py stores
        ReportStore(index).put({"study_uid": reported[0].study_uid, "accession": "", "control_id": "RPT9",
                                "text": TEXT, "status": "F", "observed": "202612061015",
                                "procedure": "CT Chest", "author": "Strange^Stephen", "sender": "RIS@HOSP",
                                "received": 0.0})
    server = start_server(data, tmp_path / "serve.log")
    try:
        viewer = Viewer(new_page(), server.url)
        viewer.open_study(reported[0].study_uid)
        page = viewer.page
        page.wait_for_selector("button[data-tab=report]:not([hidden])")
        page.click("button[data-tab=report]")
        article = page.locator("article.report[data-control=RPT9]")
        assert article.locator("pre.report-text").text_content() == TEXT
        assert article.locator("b").first.text_content() == "CT Chest"  # the title, not the report's <b>
        assert "final" in article.locator(".report-status").text_content()
        viewer.open_study(plain[0].study_uid)
        page.wait_for_function("() => window.dicomvault.study && window.dicomvault.study.uid !== undefined")
        page.wait_for_timeout(500)  # the summary request has answered by now on loopback
        assert page.locator("button[data-tab=report]").is_hidden()
    finally:
        server.stop()
