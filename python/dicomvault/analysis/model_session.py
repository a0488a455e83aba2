"""An ONNX Runtime session for a site's model, on the CPU and on few threads, with the model's
declared inputs and outputs checked against the runner's options before any study reaches it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
from onnxruntime.capi.onnxruntime_pybind11_state import Fail, InvalidGraph, InvalidProtobuf

from .model_options import ModelConfigError, ModelOptions

_ORT_TYPES = {"float32": "tensor(float)", "float16": "tensor(float16)", "float64": "tensor(double)"}
_INTEGER_OUTPUTS = {"tensor(int64)", "tensor(int32)", "tensor(uint8)", "tensor(int8)", "tensor(uint16)",
                    "tensor(int16)", "tensor(uint32)"}


@dataclass(frozen=True, slots=True)
class ModelSession:
    session: ort.InferenceSession
    input_name: str
    output_name: str
    batch: int  # slices per run: the model's fixed batch, else the configured one
    fixed_batch: bool  # the model declares its batch size: every run must have exactly that many
    label_map: bool  # the segmentation output holds label values, not probabilities

    def run(self, x: np.ndarray) -> np.ndarray:
        """The model's output for ``x``, run ``batch`` items at a time: a 300-slice series in one
        run makes ONNX Runtime's convolution buffers grow with the whole series (measured: 5 GB
        and 20 s for a 5x5 convolution over 300 slices of 512 x 512, against 0.2 GB and 2 s by 8)."""
        if x.shape[0] <= self.batch and not (self.fixed_batch and x.shape[0] < self.batch):
            return np.asarray(self.session.run([self.output_name], {self.input_name: x})[0])
        pad = 0
        if self.fixed_batch and x.shape[0] % self.batch:
            pad = self.batch - x.shape[0] % self.batch
            x = np.concatenate([x, np.repeat(x[-1:], pad, axis=0)])
        parts = [self.session.run([self.output_name], {self.input_name: x[i:i + self.batch]})[0]
                 for i in range(0, x.shape[0], self.batch)]
        out = np.concatenate(parts)
        return out[:out.shape[0] - pad] if pad else out


def _fixed(dim: Any) -> int | None:
    """A declared dimension: its size, or None when symbolic ("N", "batch") or unknown."""
    return dim if isinstance(dim, int) and dim > 0 else None


def _show(shape: list[Any]) -> str:
    return "[" + ", ".join(str(d) if d is not None else "?" for d in shape) + "]"


def _pick(items: list[Any], name: str | None, what: str, path: Path) -> Any:
    if name is None:
        if what == "input" and len(items) != 1:
            names = ", ".join(i.name for i in items)
            raise ModelConfigError(f"model {path}: it has {len(items)} inputs ({names}); "
                                   f"name the one to feed with input.name")
        return items[0]
    for item in items:
        if item.name == name:
            return item
    raise ModelConfigError(f"model {path}: no {what} named {name!r} "
                           f"(it has {', '.join(i.name for i in items)})")


def _check_input(meta: Any, opts: ModelOptions) -> int | None:
    path, spec = opts.model, opts.input
    shape = list(meta.shape)
    rank = 4 if spec.layout == "slice2d" else 5
    layout_shape = "[N, 1, rows, cols]" if spec.layout == "slice2d" else "[1, 1, slices, rows, cols]"
    if len(shape) != rank:
        raise ModelConfigError(f"model {path}: input {meta.name!r} is declared {_show(shape)}, but layout "
                               f"{spec.layout} feeds {layout_shape}")
    if meta.type != _ORT_TYPES[spec.dtype]:
        raise ModelConfigError(f"model {path}: input {meta.name!r} takes {meta.type}, but input.dtype is "
                               f"{spec.dtype} ({_ORT_TYPES[spec.dtype]})")
    if _fixed(shape[1]) not in (None, 1):
        raise ModelConfigError(f"model {path}: input {meta.name!r} declares {shape[1]} channels; "
                               f"the runner feeds one ({layout_shape})")
    if spec.layout == "volume3d" and _fixed(shape[0]) not in (None, 1):
        raise ModelConfigError(f"model {path}: input {meta.name!r} declares a batch of {shape[0]}; "
                               f"layout volume3d feeds one volume")
    spatial = shape[2:]
    if spec.size is None:
        fixed = [d for d in spatial if _fixed(d) is not None]
        if fixed:
            why = ("input.spacing makes a grid that follows each series' field of view" if spec.spacing
                   else "without input.size the runner feeds the source grid")
            raise ModelConfigError(f"model {path}: input {meta.name!r} is declared {_show(shape)}, a fixed "
                                   f"grid, but {why}; set input.size to {[_fixed(d) for d in spatial]}")
    else:
        for declared, want in zip(spatial, spec.size, strict=True):
            if _fixed(declared) not in (None, want):
                raise ModelConfigError(
                    f"model {path}: input {meta.name!r} is declared {_show(shape)}, but input.size is "
                    f"{list(spec.size)} (layout {spec.layout} feeds {layout_shape})")
    return _fixed(shape[0]) if spec.layout == "slice2d" else None


def _check_output(meta: Any, opts: ModelOptions) -> bool:
    """Whether the output is a label map; raises when its declared shape cannot be what the
    output options describe."""
    path, out, layout = opts.model, opts.output, opts.input.layout
    shape = list(meta.shape)
    if out.kind == "classification":
        if len(shape) not in (1, 2):
            raise ModelConfigError(f"model {path}: output {meta.name!r} is declared {_show(shape)}; a "
                                   f"classification output is [N] or [N, classes]")
        if out.activation == "softmax" and (len(shape) == 1 or _fixed(shape[1]) == 1):
            # a softmax over one column is 1 everywhere: every series would be flagged
            raise ModelConfigError(f"model {path}: output {meta.name!r} is declared {_show(shape)}, one "
                                   f"score per item: output.activation softmax needs [N, classes]")
        if len(shape) == 2 and _fixed(shape[1]) is not None and out.score_index >= shape[1]:
            raise ModelConfigError(f"model {path}: output {meta.name!r} has {shape[1]} columns, but "
                                   f"output.score_index is {out.score_index}")
        return False
    label_map = meta.type in _INTEGER_OUTPUTS
    rank = (3 if layout == "slice2d" else 4) if label_map else (4 if layout == "slice2d" else 5)
    if len(shape) != rank:
        want = {(True, "slice2d"): "[N, rows, cols] of labels",
                (False, "slice2d"): "[N, channels, rows, cols]",
                (True, "volume3d"): "[1, slices, rows, cols] of labels",
                (False, "volume3d"): "[1, channels, slices, rows, cols]"}[(label_map, layout)]
        raise ModelConfigError(f"model {path}: output {meta.name!r} is declared {_show(shape)} "
                               f"({meta.type}); layout {layout} segmentation reads {want}")
    n = len(out.labels)
    if not label_map and _fixed(shape[1]) not in (None, n, n + 1):
        raise ModelConfigError(
            f"model {path}: output {meta.name!r} has {shape[1]} channels for {n} label(s) "
            f"({', '.join(lb.name for lb in out.labels)}); it needs {n} (one probability per label) or "
            f"{n + 1} (background first)")
    return label_map


def open_session(opts: ModelOptions) -> ModelSession:
    so = ort.SessionOptions()
    # The archive's own work (ingest, retrieval) must keep the other cores: the model gets the
    # threads the site gave it and no inter-op pool of its own.
    so.intra_op_num_threads = opts.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.log_severity_level = 3
    try:
        session = ort.InferenceSession(str(opts.model), sess_options=so, providers=["CPUExecutionProvider"])
    except (Fail, InvalidGraph, InvalidProtobuf, RuntimeError) as exc:
        raise ModelConfigError(f"model {opts.model}: ONNX Runtime cannot load it: {exc}") from exc
    inp = _pick(session.get_inputs(), opts.input.name, "input", opts.model)
    outp = _pick(session.get_outputs(), opts.output.name, "output", opts.model)
    fixed = _check_input(inp, opts)
    label_map = _check_output(outp, opts)
    return ModelSession(session, inp.name, outp.name, fixed or opts.batch, fixed is not None, label_map)
