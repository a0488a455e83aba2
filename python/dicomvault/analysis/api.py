"""The contract between the analysis pipeline and its analyzers (issue 16).

An analyzer is a class registered under the Python entry point group ``dicomvault.analyzers``
(the built-in ones too, in pyproject.toml) and configured by ``[analysis.analyzers.NAME]`` in the
TOML file. The pipeline (jobs.py, runner.py) decides when a series or a study is complete, loads
its instances and calls the analyzer in a worker process at a CPU priority below ingest; the
analyzer only computes. What it returns is stored by the pipeline: the new DICOM objects through
the engine like any received object (a new series in the same study, never touching the
originals), the measurements and flags in the index (results.py), where the study list, QIDO,
the viewer's trend chart and `/api/jobs` read them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from pydicom.dataset import Dataset

ENTRY_POINT_GROUP = "dicomvault.analyzers"

SERIES_COMPLETE = "series-complete"
STUDY_COMPLETE = "study-complete"
EVENTS = (SERIES_COMPLETE, STUDY_COMPLETE)

# How much a flag asks for attention; the study list sorts by the highest one first on request.
INFO, WARNING, URGENT = "info", "warning", "urgent"
SEVERITIES = (INFO, WARNING, URGENT)

Code = tuple[str, str, str]  # (code value, coding scheme designator, code meaning)


@dataclass(frozen=True, slots=True)
class Measurement:
    """One number an analyzer measured on a study; a trend is the same ``key`` over a patient's
    studies. ``unit`` is UCUM ("mL", "%", "mm", "1"); ``concept`` names it in the SR."""

    key: str  # stable and unique per analyzer, e.g. "lung_volume_left"
    label: str  # shown in the viewer, e.g. "Left lung volume"
    value: float
    unit: str
    concept: Code | None = None
    finding_site: Code | None = None
    series_uid: str = ""  # the series it was measured on


@dataclass(frozen=True, slots=True)
class Flag:
    """A reason to look at a study first (or to check its acquisition)."""

    code: str  # stable, dotted: "quality.missing_slices", "model.nodule"
    reason: str  # one human sentence naming the series and what was found
    severity: str = WARNING
    score: float | None = None
    series_uid: str = ""


@dataclass(slots=True)
class Result:
    """What one analyzer run produced. ``objects`` are complete new SOP instances (SR, SEG,
    secondary capture) the pipeline stores in the analysed study."""

    analyzer: str
    measurements: list[Measurement] = field(default_factory=list)
    flags: list[Flag] = field(default_factory=list)
    objects: list[Dataset] = field(default_factory=list)
    summary: str = ""  # one line for `dicomvault jobs` / `/api/jobs`


@dataclass(frozen=True, slots=True)
class SeriesInfo:
    """What the pipeline knows of a series from the index alone (no pixel read): enough for an
    analyzer to decline cheaply."""

    study_uid: str
    series_uid: str
    modality: str
    num_instances: int
    attrs: Mapping[str, str]  # the series record's attributes (BodyPartExamined, ProtocolName...)
    sop_class_uids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class SeriesData:
    """One series handed to an analyzer: every instance decoded, pixel data included, in the
    order the pipeline read them (an analyzer sorts by position itself where that matters)."""

    info: SeriesInfo
    datasets: Sequence[Dataset]


class Analyzer(Protocol):
    """What the pipeline calls. ``options`` is the analyzer's config table (without ``enabled``).
    ``run`` raises on failure; the pipeline records the error with the job and retries."""

    name: ClassVar[str]
    event: ClassVar[str]  # SERIES_COMPLETE or STUDY_COMPLETE

    def __init__(self, options: Mapping[str, Any]) -> None: ...

    def wants(self, series: SeriesInfo) -> bool: ...

    def run(self, series: Sequence[SeriesData]) -> Result: ...
