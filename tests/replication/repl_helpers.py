"""Shared by the replication and DR tests: the token, synthetic files."""

from __future__ import annotations

from collections.abc import Iterator

from dicomvault.bench.synth import SeriesSpec, ct_series

TOKEN = "secret-replica-token"


def synth_stream(seed: int, slices: int = 8, size: int = 64) -> Iterator[bytes]:
    """Endless distinct synthetic CT files, one series at a time (generated lazily)."""
    s = 0
    while True:
        yield from ct_series(SeriesSpec(slices=slices, rows=size, columns=size, seed=seed * 100000 + s))
        s += 1


def synth_files(n_series: int, slices: int = 8, seed: int = 1, size: int = 64) -> list[bytes]:
    out: list[bytes] = []
    for s in range(n_series):
        out.extend(ct_series(SeriesSpec(slices=slices, rows=size, columns=size, seed=seed * 1000 + s)))
    return out
