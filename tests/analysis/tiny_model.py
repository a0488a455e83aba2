"""A nodule model small enough to train inside a test: synthetic lung-like slices (air-dark
noise with bright discs, the cross-sections of spherical "nodules"), a 5x5 convolution trained
as logistic regression on image patches by plain gradient descent in numpy, and its export to
ONNX built node by node with onnx.helper.

Segmentation model: Conv(5x5) -> Sigmoid, a nodule probability per pixel. Classification model:
the same convolution -> GlobalMaxPool -> a * x + b -> Sigmoid, one score per slice; a and b are
fitted on whole-slice labels after the convolution.

The preprocessing the runner must repeat: HU clipped to HU_RANGE, then min-max to 0..1."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

HU_RANGE = (-1000.0, 400.0)
LUNG_HU, NOISE_HU, NODULE_HU = -820.0, 60.0, 30.0
K = 5  # kernel size
SIZE = 64


@dataclass(frozen=True)
class TinyModel:
    kernel: np.ndarray  # [K, K]
    bias: float
    scale: float  # classification head: score = sigmoid(scale * max(conv) + offset)
    offset: float


def to_unit(hu: np.ndarray) -> np.ndarray:
    lo, hi = HU_RANGE
    return (np.clip(hu, lo, hi) - lo) / (hi - lo)


def training_slices(rng: np.random.Generator, n: int, size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
    """``n`` slices of HU and their masks: 0-3 discs of radius 1.5-8 px each, some cut by the edge."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    images = rng.normal(LUNG_HU, NOISE_HU, (n, size, size)).astype(np.float32)
    masks = np.zeros((n, size, size), dtype=bool)
    for i in range(n):
        for _ in range(rng.integers(0, 4)):
            r = rng.uniform(1.5, 8.0)
            cy, cx = rng.uniform(0, size, 2)
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
            masks[i] |= disc
        images[i][masks[i]] = rng.normal(NODULE_HU, NOISE_HU, int(masks[i].sum()))
    return images, masks


def _patches(x: np.ndarray) -> np.ndarray:
    """[n, H, W] -> [n, H, W, K*K]: every pixel's KxK neighbourhood (zero padded, as Conv pads)."""
    p = K // 2
    padded = np.pad(x, ((0, 0), (p, p), (p, p)))
    win = np.lib.stride_tricks.sliding_window_view(padded, (K, K), axis=(1, 2))
    return win.reshape(*x.shape, K * K)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-z))


def _logistic(x: np.ndarray, y: np.ndarray, steps: int = 12, ridge: float = 1e-5) -> tuple[np.ndarray, float]:
    """Weights and bias minimising the mean logistic loss (plus a small ridge, which keeps nearly
    separable classes from driving the weights to infinity), by Newton's method: a dozen steps
    where gradient descent needs hundreds, which matters on a loaded 2-core CI machine."""
    xb = np.hstack([x, np.ones((len(x), 1))])
    wb = np.zeros(xb.shape[1])
    penalty = ridge * np.eye(xb.shape[1])
    penalty[-1, -1] = 0.0  # the bias is not shrunk
    for _ in range(steps):
        p = _sigmoid(xb @ wb)
        grad = xb.T @ (p - y) / len(y) + penalty @ wb
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / len(y) + penalty
        wb -= np.linalg.solve(hess, grad)
    return wb[:-1], float(wb[-1])


def train(rng: np.random.Generator, n_slices: int = 60) -> TinyModel:
    images, masks = training_slices(rng, n_slices)
    x = to_unit(images)
    patches = _patches(x).reshape(-1, K * K).astype(np.float64)
    y = masks.reshape(-1).astype(np.float64)
    # every nodule pixel and as many background ones: the loss is not swamped by easy air
    pos = np.flatnonzero(y)
    neg = rng.choice(np.flatnonzero(y == 0), size=min(len(pos) * 2, int((y == 0).sum())), replace=False)
    pick = np.concatenate([pos, neg])
    w, b = _logistic(patches[pick], y[pick])
    kernel = w.reshape(K, K)
    # classification head on the slice's strongest response; a slice is positive with a disc of
    # radius >= 2 px (a sphere's last sliver is not something to be flagged for)
    peak = (_patches(x).reshape(n_slices, -1, K * K) @ w + b).max(axis=1)
    big = np.array([m.sum() >= np.pi * 4 for m in masks], dtype=np.float64)
    mu, sd = float(peak.mean()), float(peak.std()) or 1.0
    (a,), c = _logistic(((peak - mu) / sd)[:, None], big)
    return TinyModel(kernel.astype(np.float32), float(b), float(a / sd), float(c - a * mu / sd))


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="tiny_model")
    model.ir_version = 9  # what every onnxruntime of the last years reads
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)
    return path


def _conv(m: TinyModel, layout: str) -> tuple[list[onnx.TensorProto], onnx.NodeProto]:
    if layout == "slice2d":
        w = m.kernel.reshape(1, 1, K, K)
        pads = [K // 2] * 4
    else:
        w = m.kernel.reshape(1, 1, 1, K, K)
        pads = [0, K // 2, K // 2, 0, K // 2, K // 2]
    inits = [numpy_helper.from_array(w.astype(np.float32), "W"),
             numpy_helper.from_array(np.array([m.bias], dtype=np.float32), "B")]
    return inits, helper.make_node("Conv", ["image", "W", "B"], ["logit"], pads=pads)


def segmentation_model(m: TinyModel, path: Path, layout: str = "slice2d",
                       grid: tuple[int | str, ...] = (SIZE, SIZE)) -> Path:
    """[N, 1, H, W] -> [N, 1, H, W] probabilities (slice2d) or [1, 1, D, H, W] -> the same (volume3d)."""
    inits, conv = _conv(m, layout)
    lead: list[int | str] = ["N", 1] if layout == "slice2d" else [1, 1]
    shape = lead + list(grid)
    graph = helper.make_graph(
        [conv, helper.make_node("Sigmoid", ["logit"], ["prob"])], "tiny_nodule_seg",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info("prob", TensorProto.FLOAT, shape)], inits)
    return _save(graph, path)


def segmentation_forms_model(m: TinyModel, path: Path, form: str) -> Path:
    """The slice2d segmentation model with its output in another of the forms the runner reads:
    "background" = [N, 2, H, W] (background, nodule), "labels" = [N, H, W] int64 (0 or 1),
    "logits" = [N, 1, H, W] before the sigmoid, "logit-pair" = [N, 2, H, W] logits (0, nodule),
    whose softmax is "background"."""
    inits, conv = _conv(m, "slice2d")
    nodes = [conv, helper.make_node("Sigmoid", ["logit"], ["prob"])]
    if form == "logits":
        nodes = [conv, helper.make_node("Identity", ["logit"], ["out"])]
        out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])
    elif form == "logit-pair":
        inits.append(numpy_helper.from_array(np.zeros((1, 1, 1, 1), dtype=np.float32), "ZERO"))
        nodes = [conv, helper.make_node("Mul", ["logit", "ZERO"], ["zeros"]),
                 helper.make_node("Concat", ["zeros", "logit"], ["out"], axis=1)]
        out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2, SIZE, SIZE])
    elif form == "background":
        inits.append(numpy_helper.from_array(np.array([1.0], dtype=np.float32), "ONE"))
        nodes += [helper.make_node("Sub", ["ONE", "prob"], ["back"]),
                  helper.make_node("Concat", ["back", "prob"], ["out"], axis=1)]
        out = helper.make_tensor_value_info("out", TensorProto.FLOAT, ["N", 2, SIZE, SIZE])
    else:
        nodes.append(helper.make_node("ArgMax", ["logit_pair"], ["out"], axis=1, keepdims=0))
        # label 1 where the logit is above 0 (probability above 0.5): argmax over (0, logit)
        inits.append(numpy_helper.from_array(np.zeros((1, 1, 1, 1), dtype=np.float32), "ZERO"))
        nodes.insert(2, helper.make_node("Mul", ["logit", "ZERO"], ["zeros"]))
        nodes.insert(3, helper.make_node("Concat", ["zeros", "logit"], ["logit_pair"], axis=1))
        out = helper.make_tensor_value_info("out", TensorProto.INT64, ["N", SIZE, SIZE])
    graph = helper.make_graph(
        nodes, f"tiny_nodule_seg_{form}",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 1, SIZE, SIZE])], [out], inits)
    return _save(graph, path)


def classification_model(m: TinyModel, path: Path, grid: tuple[int, int] = (SIZE, SIZE),
                         batch: int | str = "N") -> Path:
    """[N, 1, H, W] -> [N, 1]: a nodule score per slice (N fixed when ``batch`` is a number)."""
    inits, conv = _conv(m, "slice2d")
    inits += [numpy_helper.from_array(np.array([m.scale], dtype=np.float32), "A"),
              numpy_helper.from_array(np.array([m.offset], dtype=np.float32), "C")]
    nodes = [conv,
             helper.make_node("GlobalMaxPool", ["logit"], ["peak"]),
             helper.make_node("Flatten", ["peak"], ["flat"], axis=1),
             helper.make_node("Mul", ["flat", "A"], ["scaled"]),
             helper.make_node("Add", ["scaled", "C"], ["z"]),
             helper.make_node("Sigmoid", ["z"], ["score"])]
    graph = helper.make_graph(
        nodes, "tiny_nodule_cls",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, [batch, 1, *grid])],
        [helper.make_tensor_value_info("score", TensorProto.FLOAT, [batch, 1])], inits)
    return _save(graph, path)
