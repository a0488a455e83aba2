"""The built-in quality and consistency analyzer ("quality"): runs on every complete series of
the modalities in `modalities` and flags, each with the series UID and a sentence,

  quality.missing_slices, quality.duplicate_slices, quality.inconsistent_spacing,
  quality.inconsistent_orientation, quality.inconsistent_matrix   (quality_geometry.py)
  quality.pixel_padding, quality.clipped_range                    (quality_pixels.py)
  quality.body_part_mismatch                                      (body_parts.py)

It writes no DICOM object; the flags mark the study in the study list and QIDO. Options
([analysis.analyzers.quality]): see DEFAULTS; `checks` lists the checks to run."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from . import api
from .body_parts import mismatch
from .quality_geometry import GeometryOptions, geometry_flags
from .quality_pixels import PixelOptions, pixel_flags

CHECKS = ("geometry", "pixels", "body_part")
DEFAULTS: dict[str, Any] = {
    "modalities": ["CT", "MR", "PT", "NM", "CR", "DX", "MG", "XA", "RF"],
    "checks": list(CHECKS),
    "gap_factor": 1.5,
    "spacing_tolerance": 0.1,
    "clip_fraction": 0.01,
}


class QualityAnalyzer:
    name: ClassVar[str] = "quality"
    event: ClassVar[str] = api.SERIES_COMPLETE

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"quality: unknown option(s) {', '.join(unknown)}; known: {', '.join(DEFAULTS)}")
        self.options = {**DEFAULTS, **options}
        bad = sorted(set(self.options["checks"]) - set(CHECKS))
        if bad:
            raise ValueError(f"quality: unknown check(s) {', '.join(bad)}; known: {', '.join(CHECKS)}")
        self.modalities = {str(m).upper() for m in self.options["modalities"]}
        self.geometry = GeometryOptions(gap_factor=float(self.options["gap_factor"]),
                                        spacing_tolerance=float(self.options["spacing_tolerance"]))
        self.pixels = PixelOptions(clip_fraction=float(self.options["clip_fraction"]))

    def wants(self, series: api.SeriesInfo) -> bool:
        return series.modality.upper() in self.modalities and series.num_instances > 0

    def run(self, series: Sequence[api.SeriesData]) -> api.Result:
        result = api.Result(analyzer=self.name)
        notes = []
        for data in series:
            flags, note = self._check(data)
            result.flags.extend(flags)
            if note:
                notes.append(note)
        codes = sorted({f.code.removeprefix("quality.").replace("_", " ") for f in result.flags})
        result.summary = (f"{len(result.flags)} finding(s): {', '.join(codes)}" if codes else "no finding")
        if notes:
            result.summary += "; " + "; ".join(notes)
        return result

    def _check(self, data: api.SeriesData) -> tuple[list[api.Flag], str]:
        uid = data.info.series_uid
        datasets = [ds for ds in data.datasets if "PixelData" in ds or "ImagePositionPatient" in ds
                    or "PerFrameFunctionalGroupsSequence" in ds]
        checks = set(self.options["checks"])
        flags: list[api.Flag] = []
        note = ""
        if "geometry" in checks:
            flags += geometry_flags(datasets, uid, self.geometry)
        if "pixels" in checks:
            pixel, stats = pixel_flags(datasets, uid, self.pixels)
            flags += pixel
            if stats.undecodable:
                note = f"series {uid}: pixel checks skipped for {stats.undecodable} undecodable image(s)"
        if "body_part" in checks:
            flags += self._body_part(data, uid)
        return flags, note

    def _body_part(self, data: api.SeriesData, uid: str) -> list[api.Flag]:
        first = data.datasets[0] if data.datasets else None
        body_part = str(data.info.attrs.get("BodyPartExamined") or (first.get("BodyPartExamined", "")
                                                                     if first is not None else "") or "")
        texts = [str(data.info.attrs.get(k) or (first.get(k, "") if first is not None else "") or "")
                 for k in ("ProtocolName", "SeriesDescription")]
        named = mismatch(body_part, *texts) if body_part else None
        if not named:
            return []
        shown = " / ".join(t for t in texts if t)
        return [api.Flag(
            code="quality.body_part_mismatch", series_uid=uid,
            reason=f"Series {uid}: Body Part Examined is {body_part.strip()} but the protocol/description "
                   f"\"{shown}\" names {', '.join(sorted(r.lower() for r in named))}.")]
