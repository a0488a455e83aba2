"""The options of one ONNX model runner instance (`[analysis.analyzers.INSTANCE]` with
``uses = "onnx"``), checked once when the analyzer is built so that a typo fails at start-up with
the key it concerns, not on the first study at night.

    model = "/srv/models/nodule.onnx"
    modalities = ["CT"]
    threads = 1                      # onnxruntime intra-op threads
    batch = 8                        # slices per inference run (slice2d), bounds the memory
    series_number = 9000
    description = "Nodule model"     # the SEG's SeriesDescription (default names the model file)
    [...INSTANCE.input]
    layout = "slice2d"               # or "volume3d"
    size = [64, 64]                  # [rows, cols] (slice2d) or [slices, rows, cols] (volume3d)
    # or spacing = [1.0, 1.0]        # mm, same order: the grid follows each series' field of view
    window = [-300, 1400]            # [center, width], or hu_range = [low, high]
    normalise = "minmax"             # "none", "minmax" or { mean = m, std = s }
    dtype = "float32"
    [...INSTANCE.output]
    kind = "classification"          # or "segmentation"
    threshold = 0.5
    ...
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config_values import ConfigError, check_str_list, unknown_keys
from .api import SEVERITIES, WARNING, Code

LAYOUTS = ("slice2d", "volume3d")
KINDS = ("classification", "segmentation")
DTYPES = ("float32", "float16", "float64")
AGGREGATES = ("max", "mean")
ACTIVATIONS = ("none", "sigmoid", "softmax")

# A segment needs a property category and type (PS3.3 C.8.20.2). A site's own model knows what it
# segments and should say so; without that, "a mass, a morphologically abnormal structure" is the
# least wrong generic claim for what a research model flags.
DEFAULT_CATEGORY: Code = ("49755003", "SCT", "Morphologically Abnormal Structure")
DEFAULT_TYPE: Code = ("4147007", "SCT", "Mass")


class ModelConfigError(ConfigError):
    """An ONNX runner option, or the model it names, is unusable (the message names the model path)."""


@dataclass(frozen=True, slots=True)
class InputSpec:
    layout: str
    size: tuple[int, ...] | None  # None: the source grid as it is (or resampled to ``spacing``)
    spacing: tuple[float, ...] | None  # mm per model pixel, as size: [rows, cols] or [slices, rows, cols]
    clip: tuple[float, float] | None  # window or HU range, in modality (rescaled) values
    normalise: str | tuple[float, float]  # "none" | "minmax" | (mean, std)
    dtype: str
    name: str | None  # the model input to feed; None: its only input


@dataclass(frozen=True, slots=True)
class LabelSpec:
    value: int  # 1-based: the channel (probabilities) or the value (label map) it comes from
    name: str
    key: str  # measurement key stem, e.g. "nodule" -> "nodule_volume"
    category: Code
    type: Code


@dataclass(frozen=True, slots=True)
class OutputSpec:
    kind: str
    threshold: float
    name: str | None  # the model output to read; None: its first output
    activation: str  # applied to the raw output before thresholding
    # classification
    severity: str
    code: str
    finding: str
    aggregate: str
    score_index: int  # which column of a [N, K] score output
    # segmentation
    labels: tuple[LabelSpec, ...]
    flag_above_ml: float | None


@dataclass(frozen=True, slots=True)
class ModelOptions:
    model: Path
    modalities: frozenset[str]
    threads: int
    batch: int
    series_number: int
    description: str
    input: InputSpec
    output: OutputSpec


_TOP = {"model", "modalities", "threads", "batch", "series_number", "description", "input", "output"}
_INPUT = {"layout", "size", "spacing", "window", "hu_range", "normalise", "dtype", "name"}
_OUTPUT = {"kind", "threshold", "name", "activation", "severity", "code", "finding", "aggregate",
           "score_index", "labels", "flag_above_ml"}


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ModelConfigError(f"{where}: must be a number, got {value!r}")
    return float(value)


def _int(value: object, where: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ModelConfigError(f"{where}: must be an integer {lo}-{hi}, got {value!r}")
    return value


def _choice(value: object, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise ModelConfigError(f"{where}: must be one of {', '.join(choices)}, got {value!r}")
    return str(value)


def _pair(value: object, where: str) -> tuple[float, float]:
    if not isinstance(value, list | tuple) or len(value) != 2:
        raise ModelConfigError(f"{where}: must be a list of two numbers, got {value!r}")
    return _number(value[0], where), _number(value[1], where)


def _code(value: object, where: str) -> Code:
    if (not isinstance(value, list | tuple) or len(value) != 3
            or not all(isinstance(v, str) and v for v in value)):
        raise ModelConfigError(f"{where}: must be [code value, coding scheme, meaning], got {value!r}")
    return (value[0], value[1], value[2])


def _table(value: object, where: str) -> Mapping[str, Any]:
    if not isinstance(value, Mapping):
        raise ModelConfigError(f"{where}: must be a table, got {value!r}")
    return value


def _key(name: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in name.lower()).strip("_") or "label"


def _parse_input(table: Mapping[str, Any], where: str) -> InputSpec:
    unknown_keys(dict(table), _INPUT, where)
    layout = _choice(table.get("layout", "slice2d"), LAYOUTS, f"{where}.layout")
    size: tuple[int, ...] | None = None
    if "size" in table:
        want = 2 if layout == "slice2d" else 3
        raw = table["size"]
        if not isinstance(raw, list | tuple) or len(raw) != want:
            raise ModelConfigError(f"{where}.size: layout {layout} needs {want} integers, got {raw!r}")
        size = tuple(_int(v, f"{where}.size", 1, 4096) for v in raw)
    spacing: tuple[float, ...] | None = None
    if "spacing" in table:
        if size is not None:
            raise ModelConfigError(f"{where}: size and spacing both set the model's grid; give one")
        want = 2 if layout == "slice2d" else 3
        raw = table["spacing"]
        if not isinstance(raw, list | tuple) or len(raw) != want:
            raise ModelConfigError(f"{where}.spacing: layout {layout} needs {want} numbers (mm), got {raw!r}")
        spacing = tuple(_number(v, f"{where}.spacing") for v in raw)
        if min(spacing) <= 0:
            raise ModelConfigError(f"{where}.spacing: must be positive, got {list(raw)}")
    if "window" in table and "hu_range" in table:
        raise ModelConfigError(f"{where}: window and hu_range say the same thing; give one")
    clip: tuple[float, float] | None = None
    if "window" in table:
        center, width = _pair(table["window"], f"{where}.window")
        if width <= 0:
            raise ModelConfigError(f"{where}.window: width must be positive, got {width:g}")
        clip = (center - width / 2, center + width / 2)
    elif "hu_range" in table:
        clip = _pair(table["hu_range"], f"{where}.hu_range")
        if clip[0] >= clip[1]:
            raise ModelConfigError(f"{where}.hu_range: low must be below high, got {list(clip)}")
    raw_norm = table.get("normalise", "none")
    normalise: str | tuple[float, float]
    if isinstance(raw_norm, Mapping):
        unknown_keys(dict(raw_norm), {"mean", "std"}, f"{where}.normalise")
        if "mean" not in raw_norm or "std" not in raw_norm:
            raise ModelConfigError(f"{where}.normalise: a table needs mean and std, got {dict(raw_norm)!r}")
        mean, std = _number(raw_norm["mean"], f"{where}.normalise.mean"), \
            _number(raw_norm["std"], f"{where}.normalise.std")
        if std <= 0:
            raise ModelConfigError(f"{where}.normalise.std: must be positive, got {std:g}")
        normalise = (mean, std)
    else:
        normalise = _choice(raw_norm, ("none", "minmax"), f"{where}.normalise")
    dtype = _choice(table.get("dtype", "float32"), DTYPES, f"{where}.dtype")
    name = table.get("name")
    if name is not None and not (isinstance(name, str) and name):
        raise ModelConfigError(f"{where}.name: must be a non-empty string, got {name!r}")
    return InputSpec(layout, size, spacing, clip, normalise, dtype, name)


def _parse_labels(raw: object, where: str) -> tuple[LabelSpec, ...]:
    if not isinstance(raw, list) or not raw:
        raise ModelConfigError(f"{where}: must be a non-empty list of names or tables, got {raw!r}")
    labels = []
    for i, item in enumerate(raw, start=1):
        at = f"{where}[{i - 1}]"
        if isinstance(item, str) and item:
            labels.append(LabelSpec(i, item, _key(item), DEFAULT_CATEGORY, DEFAULT_TYPE))
            continue
        t = _table(item, at)
        unknown_keys(dict(t), {"name", "key", "category", "type"}, at)
        name = t.get("name")
        if not isinstance(name, str) or not name:
            raise ModelConfigError(f"{at}.name: must be a non-empty string, got {name!r}")
        key = t.get("key", _key(name))
        if not isinstance(key, str) or not key:
            raise ModelConfigError(f"{at}.key: must be a non-empty string, got {key!r}")
        category = _code(t["category"], f"{at}.category") if "category" in t else DEFAULT_CATEGORY
        kind = _code(t["type"], f"{at}.type") if "type" in t else DEFAULT_TYPE
        labels.append(LabelSpec(i, name, key, category, kind))
    keys = [label.key for label in labels]
    if len(set(keys)) != len(keys):
        raise ModelConfigError(f"{where}: two labels share a measurement key ({', '.join(keys)})")
    return tuple(labels)


def _parse_output(table: Mapping[str, Any], where: str) -> OutputSpec:
    unknown_keys(dict(table), _OUTPUT, where)
    if "kind" not in table:
        raise ModelConfigError(f"{where}.kind: required (one of {', '.join(KINDS)})")
    kind = _choice(table["kind"], KINDS, f"{where}.kind")
    threshold = _number(table.get("threshold", 0.5), f"{where}.threshold")
    name = table.get("name")
    if name is not None and not (isinstance(name, str) and name):
        raise ModelConfigError(f"{where}.name: must be a non-empty string, got {name!r}")
    finding = table.get("finding", "finding")
    if not isinstance(finding, str) or not finding:
        raise ModelConfigError(f"{where}.finding: must be a non-empty string, got {finding!r}")
    code = table.get("code", f"model.{_key(finding)}")
    if not isinstance(code, str) or not code:
        raise ModelConfigError(f"{where}.code: must be a non-empty string, got {code!r}")
    labels: tuple[LabelSpec, ...] = ()
    if kind == "segmentation":
        if "labels" not in table:
            raise ModelConfigError(f"{where}.labels: a segmentation output needs its labels named")
        labels = _parse_labels(table["labels"], f"{where}.labels")
    elif "labels" in table or "flag_above_ml" in table:
        raise ModelConfigError(f"{where}: labels and flag_above_ml belong to a segmentation output")
    flag_above = table.get("flag_above_ml")
    return OutputSpec(
        kind=kind, threshold=threshold, name=name,
        activation=_choice(table.get("activation", "none"), ACTIVATIONS, f"{where}.activation"),
        severity=_choice(table.get("severity", WARNING), SEVERITIES, f"{where}.severity"),
        code=code, finding=finding,
        aggregate=_choice(table.get("aggregate", "max"), AGGREGATES, f"{where}.aggregate"),
        score_index=_int(table.get("score_index", 0), f"{where}.score_index", 0, 4095),
        labels=labels,
        flag_above_ml=None if flag_above is None else _number(flag_above, f"{where}.flag_above_ml"),
    )


def parse_options(options: Mapping[str, Any], where: str = "[analysis.analyzers.<instance>]") -> ModelOptions:
    unknown_keys(dict(options), _TOP, where)
    raw_model = options.get("model")
    if not isinstance(raw_model, str) or not raw_model:
        raise ModelConfigError(f"{where}.model: the path of the .onnx file is required, got {raw_model!r}")
    model = Path(raw_model).expanduser()
    if not model.is_file():
        raise ModelConfigError(f"{where}.model: no such file {model}")
    modalities = frozenset(m.upper() for m in check_str_list(options.get("modalities", ["CT"]),
                                                              f"{where}.modalities"))
    description = options.get("description", f"dicomvault onnx {model.stem}")
    if not isinstance(description, str) or not description:
        raise ModelConfigError(f"{where}.description: must be a non-empty string, got {description!r}")
    return ModelOptions(
        model=model,
        modalities=modalities,
        threads=_int(options.get("threads", 1), f"{where}.threads", 1, 256),
        batch=_int(options.get("batch", 8), f"{where}.batch", 1, 4096),
        series_number=_int(options.get("series_number", 9000), f"{where}.series_number", 1, 2**31 - 1),
        description=description[:64],
        input=_parse_input(_table(options.get("input", {}), f"{where}.input"), f"{where}.input"),
        output=_parse_output(_table(options.get("output", {}), f"{where}.output"), f"{where}.output"),
    )
