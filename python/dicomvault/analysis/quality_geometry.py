"""Geometry checks of one series for the quality analyzer: slices missing from a stack, the same
slice twice, uneven slice spacing, mixed orientations, mixed matrix or pixel spacing.

Localizers (Image Type LOCALIZER) are left out: a scout series holds several planes on purpose.
A series may hold several stacks on the same positions (echoes, temporal phases): images are
grouped by Echo Numbers and Temporal Position Identifier first, and within a group a position
that every slice repeats the same number of times is such a stack, not a duplicate."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from pydicom.dataset import Dataset

from . import api
from .geometry import SlicePlane, pixel_spacing, planes, same_orientation

POSITION_TOLERANCE_MM = 0.01
STACK_KEYS = ("EchoNumbers", "TemporalPositionIdentifier")


@dataclass(frozen=True, slots=True)
class GeometryOptions:
    gap_factor: float = 1.5  # a step above this times the median step is a gap
    spacing_tolerance: float = 0.1  # relative deviation from the median step still "even"
    min_slices: int = 3


def is_localizer(ds: Dataset) -> bool:
    return "LOCALIZER" in [str(v).upper() for v in (ds.get("ImageType") or [])]


def _mm(values: Sequence[float]) -> str:
    shown = ", ".join(f"{v:.1f}" for v in values[:5])
    return shown + (f" and {len(values) - 5} more" if len(values) > 5 else "")


def _stack_key(ds: Dataset) -> tuple[str, ...]:
    return tuple(str(ds.get(k, "")) for k in STACK_KEYS)


def orientation_flags(items: list[tuple[SlicePlane, Dataset]], uid: str) -> tuple[list[api.Flag], list]:
    """Flags for mixed orientations, and the items of the most common orientation."""
    groups: list[list[tuple[SlicePlane, Dataset]]] = []
    for item in items:
        for group in groups:
            if same_orientation(group[0][0].orientation, item[0].orientation):
                group.append(item)
                break
        else:
            groups.append([item])
    groups.sort(key=len, reverse=True)
    if len(groups) == 1:
        return [], groups[0]
    others = sum(len(g) for g in groups[1:])
    return [api.Flag(
        code="quality.inconsistent_orientation", series_uid=uid,
        reason=f"Series {uid}: {len(groups)} different image orientations; {others} of {len(items)} "
               "images are not in the main one.")], groups[0]


def stack_flags(stack: list[SlicePlane], uid: str, opts: GeometryOptions, what: str) -> list[api.Flag]:
    normal = stack[0].normal
    distances = np.sort(np.asarray([p.distance(normal) for p in stack]))
    flags: list[api.Flag] = []
    # Collapse equal positions; count how often each occurs.
    unique: list[float] = []
    counts: list[int] = []
    for d in distances:
        if unique and d - unique[-1] <= POSITION_TOLERANCE_MM:
            counts[-1] += 1
        else:
            unique.append(float(d))
            counts.append(1)
    repeats = Counter(counts)
    uniform = len(repeats) == 1  # every position k times: k interleaved stacks, not duplicates
    if not uniform:
        usual = repeats.most_common(1)[0][0]
        doubled = [u for u, c in zip(unique, counts, strict=True) if c > usual]
        if doubled:
            flags.append(api.Flag(
                code="quality.duplicate_slices", series_uid=uid,
                reason=f"Series {uid}{what}: {len(doubled)} slice position(s) occur more often than the "
                       f"others (at {_mm(doubled)} mm along the slice normal)."))
    if len(unique) < opts.min_slices:
        return flags
    steps = np.diff(np.asarray(unique))
    median = float(np.median(steps))
    gaps = steps > opts.gap_factor * median
    if gaps.any():
        missing = int(sum(round(s / median) - 1 for s in steps[gaps]))
        where = [unique[i] for i in np.nonzero(gaps)[0]]
        flags.append(api.Flag(
            code="quality.missing_slices", series_uid=uid, score=float(max(missing, 1)),
            reason=f"Series {uid}{what}: about {max(missing, 1)} slice(s) missing: gap(s) after "
                   f"{_mm(where)} mm, {', '.join(f'{s:.2f}' for s in steps[gaps][:5])} mm where the "
                   f"spacing is {median:.2f} mm."))
    even = steps[~gaps]
    off = np.abs(even - median) > opts.spacing_tolerance * median
    if off.any():
        flags.append(api.Flag(
            code="quality.inconsistent_spacing", series_uid=uid,
            reason=f"Series {uid}{what}: slice spacing varies from {even.min():.2f} to {even.max():.2f} mm "
                   f"(median {median:.2f} mm, {int(off.sum())} step(s) off by more than "
                   f"{opts.spacing_tolerance:.0%})."))
    return flags


def instance_number_flags(datasets: Sequence[Dataset], uid: str) -> list[api.Flag]:
    numbers = Counter((_stack_key(ds), str(ds.get("InstanceNumber", ""))) for ds in datasets
                      if ds.get("InstanceNumber") not in (None, ""))
    twice = sorted(n for (_, n), c in numbers.items() if c > 1)
    if not twice:
        return []
    return [api.Flag(code="quality.duplicate_slices", series_uid=uid,
                     reason=f"Series {uid}: instance number(s) {', '.join(twice[:5])} used by more than one "
                            "image.")]


def matrix_flags(datasets: Sequence[Dataset], uid: str) -> list[api.Flag]:
    shapes = Counter((ds.get("Rows"), ds.get("Columns")) for ds in datasets)
    spacings = Counter(pixel_spacing(ds) for ds in datasets)
    problems = []
    if len(shapes) > 1:
        problems.append("rows x columns " + ", ".join(f"{r}x{c} ({n})" for (r, c), n in shapes.most_common()))
    if len(spacings) > 1:
        shown = [("none" if s is None else f"{s[0]:g}/{s[1]:g} mm") + f" ({n})"
                 for s, n in spacings.most_common()]
        problems.append("pixel spacing " + ", ".join(shown))
    if not problems:
        return []
    return [api.Flag(code="quality.inconsistent_matrix", series_uid=uid,
                     reason=f"Series {uid}: the images differ in {'; and in '.join(problems)}.")]


def geometry_flags(datasets: Sequence[Dataset], uid: str, opts: GeometryOptions) -> list[api.Flag]:
    """Every geometry flag of a cross-sectional series (images with position and orientation);
    nothing for projection images or series too small to judge."""
    images = [ds for ds in datasets if not is_localizer(ds)]
    positioned = [(ds, planes(ds)) for ds in images]
    positioned = [(ds, ps) for ds, ps in positioned if ps]
    if not positioned:
        return []
    flags = matrix_flags([ds for ds, _ in positioned], uid)
    flags += instance_number_flags([ds for ds, ps in positioned if len(ps) == 1], uid)
    items = [(p, ds) for ds, ps in positioned for p in ps]
    if len(items) < 2:
        return flags
    orientation, main = orientation_flags(items, uid)
    flags += orientation
    stacks: dict[tuple[str, ...], list[SlicePlane]] = {}
    for plane, ds in main:
        stacks.setdefault(_stack_key(ds), []).append(plane)
    for key, stack in stacks.items():
        what = "" if len(stacks) == 1 else " (" + ", ".join(
            f"{k} {v}" for k, v in zip(STACK_KEYS, key, strict=True) if v) + ")"
        flags += stack_flags(stack, uid, opts, what)
    return flags
