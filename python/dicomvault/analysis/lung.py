"""The built-in CT chest analyzer ("ct-chest"): lung segmentation by classical image processing
(lung_segmentation.py), lung volume per side in mL and the emphysema index (emphysema.py), as a
SEG with a left and a right lung segment (seg_writer.py) and a TID 1500 SR whose measurement
groups reference those segments (tid1500.py). Flags a study whose emphysema index passes
`emphysema_flag_percent`, and (info) a scan that cuts the lungs off at its first or last slice.

Options ([analysis.analyzers.ct-chest]): see DEFAULTS. A series it cannot measure (not one
regular stack, no lungs found) gives a result with a summary saying why and nothing else: the
pipeline's retries would not change the answer, so it does not raise."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from . import api
from .concepts import ANATOMICAL_STRUCTURE, EMPHYSEMA_INDEX, LEFT, LUNG, RIGHT, VOLUME, as_tuple
from .emphysema import low_attenuation_percent
from .lung_segmentation import LungMasks, LungOptions, LungsNotFound, segment_lungs
from .seg_writer import Segment, binary_seg
from .tid1500 import Group, measurement_report
from .volume import CtVolume, VolumeError, build_volume

DEFAULTS: dict[str, Any] = {
    "min_slices": 20,
    "max_tilt_degrees": 20.0,  # gantry tilt and slightly oblique reformats are still "axial"
    # BodyPartExamined values accepted when the series has one (PS3.16 Annex L terms).
    "body_parts": ["CHEST", "THORAX", "LUNG", "CHESTABDOMEN", "CHESTABDPELVIS", "TORSO", "WHOLEBODY",
                   "HEADNECKCHEST", "NECKCHEST", "NECKCHESTABDOMEN", "NECKCHESTABDPELV", "HEART"],
    "emphysema_flag_percent": 10.0,
    "laa_threshold_hu": -950.0,
    "air_hu": -400.0,
    "closing_mm": 4.0,
    "min_lung_ml": 100.0,
    "max_airway_area_mm2": 900.0,
    "truncation_fraction": 0.02,  # of a lung's voxels on the first/last slice: the scan cut it off
    "write_objects": True,
    "seg_series_number": 9100,
    "sr_series_number": 9101,
}
RGB = {"left": (64, 160, 255), "right": (255, 160, 64)}


def _option(options: Mapping[str, Any], key: str) -> Any:
    return options.get(key, DEFAULTS[key])


def _orientation_normal(value: str) -> np.ndarray | None:
    try:
        v = np.asarray([float(x) for x in str(value).replace("\\", " ").replace(",", " ").split()])
    except ValueError:
        return None
    return np.cross(v[:3], v[3:6]) if v.shape == (6,) else None


class CtChestAnalyzer:
    name: ClassVar[str] = "ct-chest"
    event: ClassVar[str] = api.SERIES_COMPLETE

    def __init__(self, options: Mapping[str, Any]) -> None:
        unknown = sorted(set(options) - set(DEFAULTS))
        if unknown:
            raise ValueError(f"ct-chest: unknown option(s) {', '.join(unknown)}; "
                             f"known: {', '.join(DEFAULTS)}")
        self.options = {**DEFAULTS, **options}
        self.segmentation = LungOptions(
            air_hu=float(_option(options, "air_hu")), closing_mm=float(_option(options, "closing_mm")),
            min_lung_ml=float(_option(options, "min_lung_ml")),
            max_airway_area_mm2=float(_option(options, "max_airway_area_mm2")))

    def _axial(self, normal: np.ndarray) -> bool:
        norm = float(np.linalg.norm(normal))
        limit = math.cos(math.radians(float(self.options["max_tilt_degrees"])))
        return norm > 0 and abs(float(normal[2])) / norm >= limit

    def wants(self, series: api.SeriesInfo) -> bool:
        if series.modality != "CT" or series.num_instances < int(self.options["min_slices"]):
            return False
        if series.sop_class_uids and CTImageStorage not in series.sop_class_uids:
            return False  # enhanced (multi-frame) CT is not stacked by volume.py
        body_part = str(series.attrs.get("BodyPartExamined", "") or "").strip().upper()
        if body_part and body_part not in {str(b).upper() for b in self.options["body_parts"]}:
            return False
        orientation = series.attrs.get("ImageOrientationPatient")
        if orientation:
            normal = _orientation_normal(orientation)
            if normal is not None and not self._axial(normal):
                return False
        return True

    def run(self, series: Sequence[api.SeriesData]) -> api.Result:
        result = api.Result(analyzer=self.name)
        summaries = []
        for data in series:
            summaries.append(self._run_one(data, result))
        result.summary = "; ".join(summaries)
        return result

    def _run_one(self, data: api.SeriesData, result: api.Result) -> str:
        uid = data.info.series_uid
        images = [ds for ds in data.datasets if ds.get("SOPClassUID") == CTImageStorage]
        if len(images) < int(self.options["min_slices"]):
            return f"series {uid}: {len(images)} CT images, fewer than min_slices"
        try:
            volume = build_volume(images, uid)
        except VolumeError as exc:
            return f"not measured: {exc}"
        if not self._axial(volume.normal):
            return f"series {uid}: not axial"
        try:
            masks = segment_lungs(volume, self.segmentation)
        except LungsNotFound as exc:
            return f"series {uid}: no lungs measured ({exc})"
        measurements = self._measure(volume, masks, uid)
        result.measurements.extend(measurements)
        result.flags.extend(self._flags(volume, masks, measurements, uid))
        if self.options["write_objects"]:
            result.objects.extend(self._objects(volume, masks, measurements))
        by_key = {m.key: m.value for m in measurements}
        return (f"series {uid}: lungs left {by_key['lung_volume_left']:.0f} mL, right "
                f"{by_key['lung_volume_right']:.0f} mL, emphysema index {by_key['emphysema_index']:.1f} %")

    def _measure(self, volume: CtVolume, masks: LungMasks, uid: str) -> list[api.Measurement]:
        threshold = float(self.options["laa_threshold_hu"])
        lung = as_tuple(LUNG)
        out = []
        for side, mask in (("left", masks.left), ("right", masks.right), ("total", masks.lungs)):
            label = "Lungs" if side == "total" else f"{side.capitalize()} lung"
            ml = float(np.count_nonzero(mask)) * volume.voxel_ml
            out.append(api.Measurement(
                key=f"lung_volume_{side}", label=f"{label} volume", unit="mL", concept=as_tuple(VOLUME),
                finding_site=lung, series_uid=uid, value=round(ml, 1)))
            key = "emphysema_index" if side == "total" else f"emphysema_index_{side}"
            out.append(api.Measurement(
                key=key, label=f"{label}: emphysema index (LAA{threshold:g})", unit="%",
                concept=as_tuple(EMPHYSEMA_INDEX), finding_site=lung, series_uid=uid,
                value=round(low_attenuation_percent(volume.hu, mask, threshold), 2)))
        return out

    def _flags(self, volume: CtVolume, masks: LungMasks, measurements: list[api.Measurement],
               uid: str) -> list[api.Flag]:
        flags = []
        index = next(m.value for m in measurements if m.key == "emphysema_index")
        limit = float(self.options["emphysema_flag_percent"])
        if index > limit:
            flags.append(api.Flag(
                code="ct-chest.emphysema", severity=api.WARNING, score=index, series_uid=uid,
                reason=f"Series {uid}: emphysema index {index:.1f} % of lung volume below "
                       f"{self.options['laa_threshold_hu']:g} HU, above the {limit:g} % threshold."))
        cut = []
        for name, mask in (("left", masks.left), ("right", masks.right)):
            limit = float(self.options["truncation_fraction"]) * max(np.count_nonzero(mask), 1)
            if max(np.count_nonzero(mask[0]), np.count_nonzero(mask[-1])) > limit:
                cut.append(name)
        if cut:
            flags.append(api.Flag(
                code="ct-chest.lungs_truncated", severity=api.INFO, series_uid=uid,
                reason=f"Series {uid}: the {' and '.join(cut)} lung(s) reach the first or last slice; "
                       "the volumes are those of the imaged part only."))
        return flags

    def _objects(self, volume: CtVolume, masks: LungMasks,
                 measurements: list[api.Measurement]) -> list[Dataset]:
        sources = volume.datasets
        seg = binary_seg(
            sources,
            [Segment("Left lung", ANATOMICAL_STRUCTURE, LUNG, masks.left, LEFT, RGB["left"]),
             Segment("Right lung", ANATOMICAL_STRUCTURE, LUNG, masks.right, RIGHT, RGB["right"])],
            algorithm_name=f"dicomvault {self.name}", series_number=int(self.options["seg_series_number"]),
            series_description=f"dicomvault {self.name} lung segmentation")
        by_side: dict[str, list[api.Measurement]] = {"left": [], "right": [], "total": []}
        for m in measurements:
            by_side[m.key.rsplit("_", 1)[-1] if m.key.endswith(("_left", "_right")) else "total"].append(m)
        groups = [
            Group("Left lung", by_side["left"], LUNG, LEFT, segment_number=1),
            Group("Right lung", by_side["right"], LUNG, RIGHT, segment_number=2),
            Group("Lungs", by_side["total"], LUNG),
        ]
        sr = measurement_report(
            sources, groups, seg=seg, algorithm_name=f"dicomvault {self.name}",
            series_number=int(self.options["sr_series_number"]),
            series_description=f"dicomvault {self.name} measurements")
        return [seg, sr]
