"""A patient correction seen in the real browser viewer: the study list (QIDO) and the open study's
corner text (WADO-RS metadata) show the corrected name, never the one the modality sent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pydicom
from dv_iocm import ct_series

from .conftest import CLI, Viewer, ingest, start_server
from .test_viewer_browser import wait_rows


def test_corrected_name_in_the_study_list_and_the_open_study(tmp_path: Path, new_page) -> None:
    images = ct_series(tmp_path / "ct", 3, patient_id="PVW")
    for im in images:
        ds = pydicom.dcmread(im.path)
        ds.PatientName = "Wrongly^Typed"
        ds.save_as(im.path, enforce_file_format=True)
    data = tmp_path / "data"
    ingest(data, [im.path for im in images])
    subprocess.run([CLI, "patients", "update", "--data", str(data), "PVW", "--set",
                    "PatientName=Rightly^Named"], check=True, capture_output=True, timeout=60)
    server = start_server(data, tmp_path / "serve.log")
    try:
        viewer = Viewer(new_page(), server.url)
        viewer.goto("#/studies")
        rows = wait_rows(viewer.page, "(rows) => rows.length === 1")
        text = " ".join(rows[0]["cells"])
        assert "Rightly" in text and "Wrongly" not in text, text
        viewer.open_study(images[0].study_uid)
        # the corner text is drawn from the instance metadata (viewport/overlay.js)
        shown = viewer.call('app.grid.viewports[0].image.metadata["00100010"].Value[0].Alphabetic')
        assert shown == "Rightly^Named"
    finally:
        server.stop()
