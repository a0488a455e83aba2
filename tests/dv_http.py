"""Helpers of the tests that talk to a running site over HTTP."""

from __future__ import annotations

from pathlib import Path

import httpx
import pydicom


def store_via_api(http: httpx.Client, path: Path) -> dict[str, str]:
    """Stores a Part-10 file through POST /api/instances; its UIDs as the measurement API names
    them (study, series, instance, sop_class)."""
    r = http.post("/api/instances", content=path.read_bytes())
    assert r.status_code == 200, r.text
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return {"study": ds.StudyInstanceUID, "series": ds.SeriesInstanceUID, "instance": ds.SOPInstanceUID,
            "sop_class": ds.SOPClassUID}
