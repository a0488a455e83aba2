"""`dicomvault bench compare A.json B.json`: every headline figure of two runs side by side."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Leaves that describe the run rather than measure it, or are distributions (compared through
# their percentiles instead).
_SKIP = (
    "config",
    "machine",
    "target",
    "command",
    "timeline",
    "latency_histogram",
    "first_byte_histogram",
    "schema",
    "version",
    "started_at",
    "seconds",
)
_HIGHER_IS_BETTER = (
    "mb_s",
    "objects_s",
    "files_s",
    "queries_s",
    "compression_ratio",
    "mb_s_before",
    "mb_s_after",
)
_LOWER_IS_BETTER = ("errors", "damaged", "consumer_wait_seconds")


def _direction(key: str) -> int:
    """+1 higher is better, -1 lower is better, 0 a count or size (no verdict)."""
    parts = key.split(".")
    if {"latency_ms", "first_object_ms", "first_byte_ms"} & set(parts) or parts[-1] in _LOWER_IS_BETTER:
        return -1
    if parts[0] == "ratios" or parts[-1] in _HIGHER_IS_BETTER or parts[-2:-1] == ["study_mb_s"]:
        return 1
    return 0


def flatten(d: Any, prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    if isinstance(d, dict):
        for k, v in d.items():
            if k in _SKIP:
                continue
            out.update(flatten(v, f"{prefix}.{k}" if prefix else k))
    elif isinstance(d, int | float) and not isinstance(d, bool):
        out[prefix] = float(d)
    return out


def compare(
    a: dict[str, Any], b: dict[str, Any]
) -> list[tuple[str, float | None, float | None, float | None]]:
    fa, fb = flatten(a), flatten(b)
    keys = list(fa) + [k for k in fb if k not in fa]
    rows = []
    for k in keys:
        va, vb = fa.get(k), fb.get(k)
        ratio = vb / va if va and vb is not None else None
        rows.append((k, va, vb, ratio))
    return rows


def compare_files(pa: Path, pb: Path) -> str:
    a = json.loads(pa.read_text(encoding="utf-8"))
    b = json.loads(pb.read_text(encoding="utf-8"))
    rows = compare(a, b)
    width = max(len(k) for k, *_ in rows) if rows else 10
    lines = [
        f"A = {pa} ({a['config']['workload']} on {a['target'].get('path', '?')})",
        f"B = {pb} ({b['config']['workload']} on {b['target'].get('path', '?')})",
        "",
        f"{'figure':<{width}} {'A':>14} {'B':>14} {'B/A':>8}  better",
    ]
    for k, va, vb, ratio in rows:
        direction = _direction(k)
        better = ""
        # Within 5 % is noise on a shared machine: no verdict.
        if direction and ratio is not None and abs(ratio - 1) >= 0.05:
            better = "B" if (ratio > 1) == (direction > 0) else "A"
        fa = "-" if va is None else f"{va:,.4g}"
        fb = "-" if vb is None else f"{vb:,.4g}"
        fr = "-" if ratio is None else f"{ratio:.3f}"
        lines.append(f"{k:<{width}} {fa:>14} {fb:>14} {fr:>8}  {better}")
    return "\n".join(lines)
