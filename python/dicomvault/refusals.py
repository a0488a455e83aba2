"""Counts of what the archive refused because a limit said so, for `/metrics`
(`dicomvault_refused_total{kind, reason}`).

Why a module of its own at the bottom of the layers: refusals happen in the DIMSE listener, in
the receiver processes of `[dimse] workers` and in the HTTP app, and all of them must reach the
one `/metrics` the HTTP app serves. Receiver processes send theirs to the writer process over
its store socket (dimse/workers.py), which counts them here.

Labels are a fixed, small vocabulary (never a peer's AE title or address): a caller must not be
able to grow the label set.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable

# kind -> the reasons it can have
KINDS: dict[str, tuple[str, ...]] = {
    "association": ("max_associations", "max_associations_per_peer", "unknown_calling_ae",
                    "peer_address_or_certificate", "no_acceptable_context", "acse_timeout",
                    "network_timeout"),
    "store": ("max_object_size",),
    "query": ("max_query_results", "qido_max_results"),
    "http": ("max_body", "rate_limit_address", "rate_limit_user"),
}


class Refusals:
    """Thread-safe counters keyed by (kind, reason). `forward`, if set, is also called with
    each refusal (a receiver process passes them on to the writer's counters)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: Counter[tuple[str, str]] = Counter()
        self.forward: Callable[[str, str, int], None] | None = None

    def count(self, kind: str, reason: str, n: int = 1) -> None:
        if reason not in KINDS.get(kind, ()):
            raise ValueError(f"unknown refusal {kind}/{reason}")
        with self._lock:
            self._counts[(kind, reason)] += n
        if self.forward is not None:
            self.forward(kind, reason, n)

    def snapshot(self) -> dict[tuple[str, str], int]:
        with self._lock:
            return dict(self._counts)

    def get(self, kind: str, reason: str) -> int:
        with self._lock:
            return self._counts[(kind, reason)]


# The process's counters: the writer's are the ones /metrics shows.
REFUSALS = Refusals()


def render_metrics() -> list[str]:
    """Prometheus text lines of every counter, zeros included (a rate() needs the series before
    the first refusal)."""
    counts = REFUSALS.snapshot()
    out = ["# HELP dicomvault_refused_total associations, objects, queries and requests refused by a limit",
           "# TYPE dicomvault_refused_total counter"]
    for kind, reasons in KINDS.items():
        for reason in reasons:
            out.append(f'dicomvault_refused_total{{kind="{kind}",reason="{reason}"}} '
                       f"{counts.get((kind, reason), 0)}")
    return out
