"""The model runner: a site's own ONNX model run on each completed series of the modalities it
is configured for, on the CPU with ONNX Runtime, its preprocessing and the meaning of its output
declared in the config (model_options.py), e.g.

    [analysis.analyzers.nodules]
    uses = "onnx"
    model = "/srv/models/nodules.onnx"
    modalities = ["CT"]
    input = { layout = "slice2d", size = [64, 64], hu_range = [-1000, 400], normalise = "minmax" }
    output = { kind = "segmentation", labels = ["Nodule"], threshold = 0.5, flag_above_ml = 0.1 }

Classification: one score per slice (slice2d) or per volume (volume3d), the series' score their
maximum (or mean); above ``threshold`` the study is flagged. Segmentation: probability or label
maps resampled back to the source grid and thresholded, one SEG with a segment per label and a
volume in mL per label. Several instances, each its own model, can be configured side by side.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidArgument

from .api import SERIES_COMPLETE, Flag, Measurement, Result, SeriesData, SeriesInfo
from .model_input import to_model_input
from .model_options import ModelOptions, parse_options
from .model_output import label_masks, series_score
from .model_seg import Segment, segmentation
from .model_session import ModelSession, open_session
from .series_volume import SeriesVolume, load_volume

VOLUME: tuple[str, str, str] = ("118565006", "SCT", "Volume")


class OnnxModelAnalyzer:
    name: ClassVar[str] = "onnx"
    event: ClassVar[str] = SERIES_COMPLETE
    # no model of its own: the pipeline makes an instance only for a configured table (plugins.py)
    needs_configuration: ClassVar[bool] = True

    def __init__(self, options: Mapping[str, Any]) -> None:
        # Loading and checking the model here makes a wrong model or config fail when the
        # pipeline loads its analyzers, with the model path in the message, not at the first study.
        # The session is then let go: the serve process makes every analyzer only to ask wants(),
        # and should not hold each model's weights and buffers for that; `run` (in a worker)
        # opens it again, once.
        self._raw = dict(options)
        self.options: ModelOptions = parse_options(options)
        open_session(self.options)
        self._session: ModelSession | None = None

    @property
    def session(self) -> ModelSession:
        if self._session is None:
            self._session = open_session(self.options)
        return self._session

    # An InferenceSession cannot be pickled: a copy sent to another process reopens the model.
    def __getstate__(self) -> dict[str, Any]:
        return {"options": self._raw}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["options"])  # type: ignore[misc]

    def wants(self, series: SeriesInfo) -> bool:
        return series.modality.upper() in self.options.modalities and series.num_instances > 0

    def run(self, series: Sequence[SeriesData]) -> Result:
        result = Result(analyzer=self.name)
        notes = []
        for data in series:
            if not self.wants(data.info):
                continue
            notes.append(self._run_one(data, result))
        result.summary = "; ".join(notes) or "no series of " + ", ".join(sorted(self.options.modalities))
        return result

    def _infer(self, volume: SeriesVolume, uid: str) -> np.ndarray:
        x = to_model_input(volume.voxels, volume.spacing, self.options.input)
        try:
            return self.session.run(x)
        except (Fail, InvalidArgument) as exc:
            raise RuntimeError(f"model {self.options.model} on series {uid} (input {list(x.shape)}): "
                               f"{exc}") from exc

    def _run_one(self, data: SeriesData, result: Result) -> str:
        uid = data.info.series_uid
        volume = load_volume(data)
        raw = self._infer(volume, uid)
        if self.options.output.kind == "classification":
            return self._classify(raw, volume, uid, result)
        return self._segment(raw, volume, uid, result)

    def _where(self, volume: SeriesVolume, uid: str) -> str:
        desc = str(volume.datasets[0].get("SeriesDescription") or "").strip()
        return f"series {uid}" + (f" ({desc})" if desc else "")

    def _classify(self, raw: np.ndarray, volume: SeriesVolume, uid: str, result: Result) -> str:
        out = self.options.output
        score, best = series_score(raw, out)
        key = out.code.rsplit(".", 1)[-1]
        result.measurements.append(Measurement(key=f"{key}_score", label=f"{out.finding} score",
                                               value=round(score, 4), unit="1", series_uid=uid))
        where = "the volume" if self.options.input.layout == "volume3d" else \
            f"slice {best + 1} of {volume.voxels.shape[0]}"
        if score > out.threshold:
            result.flags.append(Flag(
                code=out.code, severity=out.severity, score=round(score, 4), series_uid=uid,
                reason=(f"{out.finding} suspected in {self._where(volume, uid)}: model "
                        f"{self.options.model.name} scored {score:.2f} (threshold {out.threshold:g}), "
                        f"highest on {where}")))
            return f"{uid}: {out.finding} score {score:.2f}, flagged"
        return f"{uid}: {out.finding} score {score:.2f}"

    def _segment(self, raw: np.ndarray, volume: SeriesVolume, uid: str, result: Result) -> str:
        out = self.options.output
        try:
            masks = label_masks(raw, out, self.options.input.layout, self.session.label_map,
                                volume.voxels.shape)
        except ValueError as exc:
            raise ValueError(f"model {self.options.model} on series {uid}: {exc}") from exc
        parts = []
        for i, label in enumerate(out.labels):
            ml = float(masks[..., i].sum()) * volume.voxel_ml
            result.measurements.append(Measurement(key=f"{label.key}_volume", label=f"{label.name} volume",
                                                   value=round(ml, 3), unit="mL", concept=VOLUME,
                                                   series_uid=uid))
            parts.append(f"{label.name} {ml:.2f} mL")
            if out.flag_above_ml is not None and ml > out.flag_above_ml:
                result.flags.append(Flag(
                    code=f"model.{label.key}", severity=out.severity, series_uid=uid,
                    reason=(f"{label.name} of {ml:.2f} mL found in {self._where(volume, uid)} by model "
                            f"{self.options.model.name} (flagged above {out.flag_above_ml:g} mL)")))
        if masks.any():
            result.objects.append(segmentation(
                volume.datasets, masks,
                [Segment(lb.name, lb.category, lb.type) for lb in out.labels],
                algorithm=self.options.model.stem, algorithm_version=self._model_version(),
                series_number=self.options.series_number, series_description=self.options.description,
                manufacturer_model="onnx model runner"))
        return f"{uid}: " + ", ".join(parts)

    def _model_version(self) -> str:
        meta = self.session.session.get_modelmeta()
        return str(meta.version) if meta.version else "unversioned"
