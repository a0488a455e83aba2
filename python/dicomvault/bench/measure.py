"""Measurement helpers shared by the phases: latency percentiles and histograms, throughput over
time, the progress line. A phase records events; the figures are computed from them afterwards."""

from __future__ import annotations

import math
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Any

TIMELINE_POINTS = 60  # bins of the throughput-over-time series (enough for a chart, small JSON)
HIST_BINS_PER_DECADE = 8


def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of already sorted values (None when there are none)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, math.ceil(q / 100.0 * len(sorted_values)) - 1))
    return sorted_values[k]


def latency_summary(latencies_s: list[float]) -> dict[str, float | None]:
    v = sorted(latencies_s)
    ms = [x * 1e3 for x in v]

    def r(x: float | None) -> float | None:
        return None if x is None else round(x, 3)

    return {
        "p50": r(percentile(ms, 50)),
        "p95": r(percentile(ms, 95)),
        "p99": r(percentile(ms, 99)),
        "mean": r(sum(ms) / len(ms)) if ms else None,
        "max": r(ms[-1]) if ms else None,
    }


def latency_histogram(latencies_s: list[float]) -> dict[str, list[float]]:
    """Log-spaced bins (8 per decade) spanning the samples: latency spreads over decades."""
    ms = [max(x * 1e3, 1e-3) for x in latencies_s]
    if not ms:
        return {"edges_ms": [], "counts": []}
    lo = math.floor(math.log10(min(ms)) * HIST_BINS_PER_DECADE)
    hi = math.ceil(math.log10(max(ms)) * HIST_BINS_PER_DECADE) + 1
    edges = [10 ** (k / HIST_BINS_PER_DECADE) for k in range(lo, hi + 1)]
    counts = [0] * (len(edges) - 1)
    for x in ms:
        i = int(math.log10(x) * HIST_BINS_PER_DECADE) - lo
        counts[max(0, min(len(counts) - 1, i))] += 1
    return {"edges_ms": [round(e, 4) for e in edges], "counts": counts}


@dataclass
class Recorder:
    """Thread-safe event log of one phase: (end time, bytes, objects) per completed unit and one
    latency per object (or per query)."""

    t0: float = field(default_factory=time.perf_counter)
    events: list[tuple[float, int, int]] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, nbytes: int, objects: int, latencies: list[float]) -> None:
        now = time.perf_counter()
        with self._lock:
            self.events.append((now - self.t0, nbytes, objects))
            self.latencies.extend(latencies)

    def add_errors(self, n: int) -> None:
        with self._lock:
            self.errors += n

    @property
    def bytes(self) -> int:
        return sum(e[1] for e in self.events)

    @property
    def objects(self) -> int:
        return sum(e[2] for e in self.events)

    def timeline(self, seconds: float) -> list[list[float]]:
        """[[t_end_s, MB/s, objects/s], ...] over TIMELINE_POINTS equal bins."""
        if seconds <= 0 or not self.events:
            return []
        width = max(seconds / TIMELINE_POINTS, 0.05)
        n = max(1, math.ceil(seconds / width))
        b, o = [0] * n, [0] * n
        for t, nbytes, objs in self.events:
            i = min(n - 1, int(t / width))
            b[i] += nbytes
            o[i] += objs
        return [
            [round((i + 1) * width, 3), round(b[i] / width / 1e6, 2), round(o[i] / width, 2)]
            for i in range(n)
        ]

    def summary(self, seconds: float) -> dict[str, Any]:
        """The figures every object phase reports (see docs/bench.md)."""
        nbytes, objs = self.bytes, self.objects
        return {
            "objects": objs,
            "bytes": nbytes,
            "seconds": round(seconds, 4),
            "mb_s": round(nbytes / seconds / 1e6, 2) if seconds > 0 else None,
            "objects_s": round(objs / seconds, 2) if seconds > 0 else None,
            "latency_ms": latency_summary(self.latencies),
            "latency_histogram": latency_histogram(self.latencies),
            "timeline": self.timeline(seconds),
            "errors": self.errors,
        }


class Progress:
    """One self-rewriting line on stderr, at most 5 updates a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled = enabled
        self._last = 0.0
        self._width = 0

    def update(self, text: str, force: bool = False) -> None:
        if not self.enabled:
            return
        now = time.monotonic()
        if not force and now - self._last < 0.2:
            return
        self._last = now
        pad = max(0, self._width - len(text))
        self._width = len(text)
        sys.stderr.write("\r" + text + " " * pad)
        sys.stderr.flush()

    def done(self) -> None:
        if self.enabled and self._width:
            sys.stderr.write("\r" + " " * self._width + "\r")
            sys.stderr.flush()
            self._width = 0
