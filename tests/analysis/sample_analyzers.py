"""Tiny analyzers for the pipeline's tests and benchmark, loaded with `class = "tests.analysis.
sample_analyzers:NAME"` (the repository root on PYTHONPATH). Each does what its name says, so a
test can make the pipeline meet success, an exception, a hang, a crash and a slow run.

Options every one takes: `log` (a file that gets a line "run PID TIME" per run() call, in
whichever process ran it: the ground truth of how many times an analyzer really ran, and when;
MeanValue adds "end PID TIME" as its run() returns) and `pid_file` (where run() writes its
process id).
"""

from __future__ import annotations

import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

from dicomvault.analysis.api import (
    SERIES_COMPLETE,
    STUDY_COMPLETE,
    Flag,
    Measurement,
    Result,
    SeriesData,
    SeriesInfo,
)

IMAGE_MODALITIES = {"CT", "MR", "CR", "DX", "PT", "NM", "US", "MG", "OT"}


def _note(options: Mapping[str, Any], what: str) -> None:
    if options.get("log"):
        with open(options["log"], "a") as f:
            f.write(f"{what} {os.getpid()} {time.time():.3f}\n")
    if options.get("pid_file"):
        with open(options["pid_file"], "w") as f:
            f.write(str(os.getpid()))


def mean_value(series: SeriesData) -> float:
    """Mean of the modality values (rescaled) over every pixel of the series."""
    total, count = 0.0, 0
    for ds in series.datasets:
        px = ds.pixel_array.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(
            ds.get("RescaleIntercept", 0) or 0)
        total += float(px.sum())
        count += px.size
    return total / count


def key_image(source: Sequence[Dataset], analyzer: str, value: float) -> Dataset:
    """A Secondary Capture in a new series of the study: 8 x 8 pixels of `value`'s low byte,
    referencing the source images."""
    first = source[0]
    ds = Dataset()
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID"):
        setattr(ds, kw, first.get(kw, ""))
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 9001
    ds.InstanceNumber = 1
    ds.Modality = "OT"
    ds.ConversionType = "WSD"
    ds.Manufacturer = "dicomvault"
    ds.SeriesDescription = f"dicomvault {analyzer}"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    refs = []
    for src in source:
        r = Dataset()
        r.ReferencedSOPClassUID = src.SOPClassUID
        r.ReferencedSOPInstanceUID = src.SOPInstanceUID
        refs.append(r)
    ds.SourceImageSequence = refs
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = bytes([int(abs(value)) & 0xFF]) * 64
    ds.file_meta = Dataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


class MeanValue:
    """Per series of the `modalities` option (default: any image modality): the mean modality
    value (a measurement), a flag when it is above the `flag_above` option, and with
    `key_image = true` a Secondary Capture result object."""

    name: ClassVar[str] = "mean-value"
    event: ClassVar[str] = SERIES_COMPLETE

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)

    def wants(self, series: SeriesInfo) -> bool:
        return series.modality in self.options.get("modalities", IMAGE_MODALITIES)

    def run(self, series: Sequence[SeriesData]) -> Result:
        _note(self.options, "run")
        time.sleep(float(self.options.get("sleep", 0)))
        out = Result(analyzer=self.name)
        for s in series:
            value = mean_value(s)
            out.measurements.append(Measurement(key="mean_value", label="Mean value", value=value, unit="1",
                                                series_uid=s.info.series_uid))
            limit = self.options.get("flag_above")
            if limit is not None and value > float(limit):
                out.flags.append(Flag(code="sample.bright", score=value, series_uid=s.info.series_uid,
                                      reason=f"series {s.info.series_uid}: mean {value:.1f}"))
            if self.options.get("key_image"):
                out.objects.append(key_image(s.datasets, self.name, value))
            out.summary = f"mean {value:.2f} over {len(s.datasets)} images"
        _note(self.options, "end")
        return out


class StudySeriesCount:
    """Per study: how many series and instances it was given."""

    name: ClassVar[str] = "study-count"
    event: ClassVar[str] = STUDY_COMPLETE

    def __init__(self, options: Mapping[str, Any]) -> None:
        self.options = dict(options)

    def wants(self, series: SeriesInfo) -> bool:
        return True

    def run(self, series: Sequence[SeriesData]) -> Result:
        _note(self.options, "run " + ",".join(sorted(s.info.series_uid for s in series)))
        n = sum(len(s.datasets) for s in series)
        return Result(analyzer=self.name, summary=f"{len(series)} series, {n} instances",
                      measurements=[Measurement(key="series", label="Series", value=len(series), unit="1"),
                                    Measurement(key="instances", label="Instances", value=n, unit="1")])


class Raising(MeanValue):
    name: ClassVar[str] = "raising"

    def run(self, series: Sequence[SeriesData]) -> Result:
        _note(self.options, "run")
        raise RuntimeError(f"boom on purpose in series {series[0].info.series_uid}")


class Hanging(MeanValue):
    name: ClassVar[str] = "hanging"

    def run(self, series: Sequence[SeriesData]) -> Result:
        _note(self.options, "run")
        time.sleep(3600)
        return Result(analyzer=self.name)


class Crashing(MeanValue):
    """Dies as a segfaulting native library would: no exception, no result."""

    name: ClassVar[str] = "crashing"

    def run(self, series: Sequence[SeriesData]) -> Result:
        _note(self.options, "run")
        os.abort()


class IntoSourceSeries(MeanValue):
    """Returns an object that would go into the analysed series: the pipeline must refuse it."""

    name: ClassVar[str] = "into-source"

    def run(self, series: Sequence[SeriesData]) -> Result:
        ds = key_image(series[0].datasets, self.name, 0)
        ds.SeriesInstanceUID = series[0].info.series_uid
        return Result(analyzer=self.name, objects=[ds])


class BrokenConstructor(MeanValue):
    name: ClassVar[str] = "broken"

    def __init__(self, options: Mapping[str, Any]) -> None:
        raise ValueError("option 'model' is required")


class WantsRaises(MeanValue):
    """A bug in wants(): the series is queued anyway and the job shows the error."""

    name: ClassVar[str] = "wants-raises"

    def wants(self, series: SeriesInfo) -> bool:
        raise KeyError(f"no attribute in {series.series_uid}")
