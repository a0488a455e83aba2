"""The viewer's "Research" button (web/viewer/js/ui/research.js) in headless Chromium (Debian's
package, driven by Playwright): it lists the projects, posts export-research and downloads the
ZIP, which holds the study de-identified for the chosen project and options."""

from __future__ import annotations

import io
import json
import os
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from dv_deid import PATIENT_ID, SECRET, Study, make_study, write_config

from dicomvault.config import load_config
from dicomvault.engine import Engine
from dicomvault.integration.deid.pseudonyms import Pseudonymizer
from dicomvault.site import Site, SiteOptions

CHROMIUM = "/usr/bin/chromium"
sync_api = pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not os.access(CHROMIUM, os.X_OK), reason="Debian's chromium is not installed")


@pytest.fixture
def research_site(tmp_path: Path) -> Iterator[tuple[Site, Study]]:
    study = make_study(tmp_path / "in")
    settings = load_config(write_config(tmp_path)).deidentify
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        eng.store_buffers([o.path.read_bytes() for o in study.objects])
        # no users, loopback: the viewer opens as the anonymous writer, who may export
        s = Site(eng, SiteOptions(port=0, deidentify=settings))
        s.start()
        try:
            yield s, study
        finally:
            s.stop()


def test_research_button_downloads_the_deidentified_zip(research_site: tuple[Site, Study],
                                                       tmp_path: Path) -> None:
    site, study = research_site
    errors: list[str] = []
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--enable-unsafe-swiftshader"])
        try:
            page = browser.new_context(accept_downloads=True).new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(f"{site.url}/#/study/{study.uid}")
            page.click("nav.toolbar button:text-is('Research')", timeout=30_000)
            page.wait_for_selector("dialog.research select[name=project]")
            page.select_option("dialog.research select[name=project]", "TRIAL")
            page.check("dialog.research input[value=patient]")
            with page.expect_download(timeout=60_000) as dl:
                page.click("dialog.research button[value=export]")
            target = tmp_path / "download.zip"
            dl.value.save_as(target)
            page.wait_for_selector("dialog.research .research-result >> text=Downloaded")
        finally:
            browser.close()
    assert errors == []
    pseudo = Pseudonymizer("TRIAL", SECRET.encode())
    zf = zipfile.ZipFile(io.BytesIO(target.read_bytes()))
    report = json.loads(zf.read("deid-report.json"))
    assert report["project"] == "TRIAL" and report["retain"] == ["dates", "patient"]  # project default + box
    dicoms = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in zf.namelist() if n.endswith(".dcm")]
    assert len(dicoms) == 4 and {ds.PatientID for ds in dicoms} == {pseudo.patient_id(PATIENT_ID)}
    assert {ds.StudyInstanceUID for ds in dicoms} == {pseudo.uid(study.uid)}
