"""Pixel checks of one series for the quality analyzer, on stored values (before any rescale,
as Pixel Padding Value and Bits Stored are defined):

* padding: Pixel Padding Value (PS3.3 C.7.5.1.1.2) lies strictly inside the range of the other
  pixel values (tissue with that value would be hidden as padding), or no pixel has it while
  the image corners share another value covering a good part of the image (the padding is
  done with a value other than the one declared);
* clipping: a large fraction of the pixels sit at the largest value Bits Stored can hold (the
  detector or the reconstruction saturated), or at the smallest one of a signed range. The
  smallest value of an unsigned range (0) and of CT (outside the reconstruction circle) are
  common backgrounds, not clipping, and are not checked."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from . import api

# What pydicom raises for pixel data it cannot decode (no plug-in, truncated or odd data).
DECODE_ERRORS = (ValueError, RuntimeError, NotImplementedError, AttributeError, TypeError, KeyError)


@dataclass(frozen=True, slots=True)
class PixelOptions:
    clip_fraction: float = 0.01
    padding_corner_fraction: float = 0.05


@dataclass
class PixelStats:
    """Counts over the series: what the checks need, gathered in one pass."""

    total: int = 0
    at_high: int = 0
    at_low: int = 0
    padding_declared: int | None = None
    padding_count: int = 0
    padding_inside: list[tuple[int, int]] | None = None  # (min, max) of the other values
    corner_value: int | None = None
    corner_count: int = 0
    undecodable: int = 0


def stored_range(ds: Dataset) -> tuple[int, int]:
    bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
    if int(ds.get("PixelRepresentation") or 0) == 1:
        return -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    return 0, (1 << bits) - 1


def _frames(ds: Dataset) -> np.ndarray | None:
    if int(ds.get("SamplesPerPixel") or 1) != 1 or "PixelData" not in ds:
        return None
    arr = ds.pixel_array
    return arr.reshape(-1, arr.shape[-2], arr.shape[-1])


def gather(datasets: Sequence[Dataset]) -> PixelStats:
    stats = PixelStats()
    corner_values: dict[int, int] = {}
    inside: list[tuple[int, int]] = []
    for ds in datasets:
        try:
            frames = _frames(ds)
        except DECODE_ERRORS:
            stats.undecodable += 1
            continue
        if frames is None:
            continue
        low, high = stored_range(ds)
        pad = ds.get("PixelPaddingValue")
        values = frames
        if isinstance(pad, int):
            stats.padding_declared = pad
            is_pad = frames == pad
            n_pad = int(is_pad.sum())
            stats.padding_count += n_pad
            values = frames[~is_pad]
            if values.size and int(values.min()) < pad < int(values.max()):
                inside.append((int(values.min()), int(values.max())))
            for f in frames:
                corners = {int(f[0, 0]), int(f[0, -1]), int(f[-1, 0]), int(f[-1, -1])}
                if len(corners) == 1:
                    v = corners.pop()
                    corner_values[v] = corner_values.get(v, 0) + int((f == v).sum())
        stats.total += int(values.size)
        stats.at_high += int((values == high).sum())
        if low < 0 and ds.get("Modality") != "CT":
            stats.at_low += int((values == low).sum())
    if inside:
        stats.padding_inside = inside
    if corner_values:
        stats.corner_value, stats.corner_count = max(corner_values.items(), key=lambda kv: kv[1])
    return stats


def pixel_flags(datasets: Sequence[Dataset], uid: str,
                opts: PixelOptions) -> tuple[list[api.Flag], PixelStats]:
    stats = gather(datasets)
    flags: list[api.Flag] = []
    pad = stats.padding_declared
    if pad is not None and stats.padding_inside:
        lo = min(a for a, _ in stats.padding_inside)
        hi = max(b for _, b in stats.padding_inside)
        flags.append(api.Flag(
            code="quality.pixel_padding", severity=api.INFO, series_uid=uid,
            reason=f"Series {uid}: Pixel Padding Value {pad} lies inside the range of the image values "
                   f"({lo} to {hi}) in {len(stats.padding_inside)} image(s): pixels of tissue with that "
                   "value are shown as padding."))
    elif (pad is not None and stats.padding_count == 0 and stats.corner_value is not None
          and stats.corner_value != pad
          and stats.corner_count > opts.padding_corner_fraction * max(stats.total, 1)):
        flags.append(api.Flag(
            code="quality.pixel_padding", severity=api.INFO, series_uid=uid,
            reason=f"Series {uid}: Pixel Padding Value {pad} is declared but no pixel has it; the images are "
                   f"padded with {stats.corner_value} instead ({stats.corner_count} pixels)."))
    if stats.total:
        for count, end in ((stats.at_high, "largest"), (stats.at_low, "smallest")):
            fraction = count / stats.total
            if fraction > opts.clip_fraction:
                flags.append(api.Flag(
                    code="quality.clipped_range", series_uid=uid, score=round(100 * fraction, 2),
                    reason=f"Series {uid}: {100 * fraction:.1f} % of the pixels are at the {end} value the "
                           "stored bits can hold: the dynamic range is clipped."))
    return flags, stats
