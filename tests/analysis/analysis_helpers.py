"""Shared by the analyzer tests: a SeriesData of pydicom Datasets as the pipeline hands it over,
and dciodvfy (Debian dicom3tools) on a written object."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest
from pydicom.dataset import Dataset

from dicomvault.analysis import api


def series_data(datasets: Sequence[Dataset], attrs: Mapping[str, str] | None = None) -> api.SeriesData:
    first = datasets[0]
    keys = ("BodyPartExamined", "ProtocolName", "SeriesDescription")
    info = api.SeriesInfo(
        study_uid=str(first.StudyInstanceUID), series_uid=str(first.SeriesInstanceUID),
        modality=str(first.Modality), num_instances=len(datasets),
        attrs=dict(attrs) if attrs is not None else {k: str(first.get(k, "")) for k in keys if k in first},
        sop_class_uids=frozenset(str(ds.SOPClassUID) for ds in datasets))
    return api.SeriesData(info=info, datasets=list(datasets))


def dciodvfy(ds: Dataset, path: Path) -> tuple[list[str], str]:
    """(error lines, whole output) of dciodvfy on `ds` written as a Part-10 file at `path`."""
    if shutil.which("dciodvfy") is None:
        pytest.skip("dciodvfy (Debian package dicom3tools) is not installed")
    ds.save_as(path, enforce_file_format=True)
    proc = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, timeout=120)
    out = proc.stdout + proc.stderr
    return [line for line in out.splitlines() if line.startswith("Error")], out
