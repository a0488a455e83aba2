"""Helpers of the pipeline tests: synthetic CT series as Part-10 files, settings naming only the
sample analyzers, and waiting for a condition."""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from dicomvault.analysis.api import ENTRY_POINT_GROUP
from dicomvault.analysis.settings import AnalysisSettings, parse_analysis

SAMPLES = "tests.analysis.sample_analyzers"
T = TypeVar("T")


def ct_series(out: Path, n: int, *, study_uid: str | None = None, series_uid: str | None = None,
              patient_id: str = "PAT-1", size: int = 32, seed: int = 0, first: int = 1,
              study_date: str = "20260301") -> list[Path]:
    """`n` CT slices (int16 stored values, rescale -1024) of one series, written to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = series_uid or generate_uid()
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(first, first + n):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.PatientID, ds.PatientName = patient_id, "TEST^ANALYSIS"
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber = study_date, "101500", "ACC-" + patient_id
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 2, i
        ds.BodyPartExamined = "CHEST"
        ds.ImagePositionPatient = [0, 0, float(i)]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = [0.7, 0.7]
        ds.SliceThickness = 1.0
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows = ds.Columns = size
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = rng.integers(0, 2000, (size, size), dtype=np.int16).tobytes()
        path = out / f"{series_uid}-{i:04d}.dcm"
        dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def sample(name: str, **options: Any) -> dict[str, Any]:
    return {"class": f"{SAMPLES}:{name}", **options}


def analyzer_tables(tables: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """`tables`, and every installed entry point turned off: a test sees only its own analyzers,
    whichever built-ins the venv holds."""
    out = {ep.name: {"enabled": False} for ep in entry_points(group=ENTRY_POINT_GROUP)}
    out.update(tables)
    return out


def settings(tables: dict[str, dict[str, Any]], **kw: Any) -> AnalysisSettings:
    return parse_analysis({"quiet_seconds": 0.5, "retry_delay": 0.2, "nice": 0, **kw,
                           "analyzers": analyzer_tables(tables)}, "test")


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return repr(v)


def analysis_toml(tables: dict[str, dict[str, Any]], **kw: Any) -> str:
    lines = ["[analysis]", *(f"{k} = {toml_value(v)}" for k, v in kw.items())]
    for name, table in analyzer_tables(tables).items():
        lines += ["", f"[analysis.analyzers.{name}]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


def wait_until(fn: Callable[[], T | None], timeout: float, what: str, step: float = 0.1) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = fn()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not after {timeout} s")
        time.sleep(step)
