"""What a model's raw output means, as the runner's options declare it: classification scores →
one series score and perhaps a flag; segmentation maps → one boolean mask per label on the
source grid, and its volume in mL."""

from __future__ import annotations

import numpy as np

from .model_input import resize
from .model_options import OutputSpec


def _activate(x: np.ndarray, activation: str, axis: int) -> np.ndarray:
    x = x.astype(np.float32, copy=False)
    if activation == "sigmoid":
        return 1.0 / (1.0 + np.exp(-x))
    if activation == "softmax":
        e = np.exp(x - x.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)
    return x


def series_score(raw: np.ndarray, spec: OutputSpec) -> tuple[float, int]:
    """The series' score and the (0-based) item that gave it: one item per slice (slice2d) or
    one for the volume. ``raw`` is [N] or [N, classes]."""
    if raw.ndim == 1 and spec.activation == "softmax":
        raise ValueError("a softmax needs a score per class; the model gave one score per item")
    scores = _activate(raw, spec.activation, axis=-1)
    if scores.ndim == 2:
        if spec.score_index >= scores.shape[1]:
            raise ValueError(f"the model gave {scores.shape[1]} score columns, output.score_index is "
                             f"{spec.score_index}")
        scores = scores[:, spec.score_index]
    scores = scores.reshape(-1)
    best = int(np.argmax(scores))
    value = float(scores[best]) if spec.aggregate == "max" else float(scores.mean())
    return value, best


def label_masks(raw: np.ndarray, spec: OutputSpec, layout: str, label_map: bool,
                source: tuple[int, int, int]) -> np.ndarray:
    """Boolean [slices, rows, cols, labels] on the source grid.

    Probabilities are resampled (linearly) before thresholding, so a mask's edge falls where the
    model's 0.5 contour falls on the finer grid, not on the model's coarse pixels; label values
    are resampled nearest-neighbour."""
    n = len(spec.labels)
    if label_map:
        labels = raw[:, :, :] if layout == "slice2d" else raw[0]
        labels = resize(labels.astype(np.int32), source, order=0)
        return np.stack([labels == lb.value for lb in spec.labels], axis=-1)
    # channels first, then [slices, rows, cols]
    maps = np.moveaxis(raw, 1, 0) if layout == "slice2d" else raw[0]
    maps = _activate(maps, spec.activation, axis=0)
    if maps.shape[0] == n + 1:
        # background first: each voxel goes to its most probable class, kept when that class is
        # also above the threshold (so a flat, unsure map does not become a label)
        probs = np.stack([resize(m, source, order=1) for m in maps])
        winner = np.argmax(probs, axis=0)
        top = np.take_along_axis(probs, winner[None], axis=0)[0]
        return np.stack([(winner == lb.value) & (top > spec.threshold) for lb in spec.labels], axis=-1)
    if maps.shape[0] != n:
        raise ValueError(f"the model gave {maps.shape[0]} channels for {n} label(s)")
    return np.stack([resize(m, source, order=1) > spec.threshold for m in maps], axis=-1)
