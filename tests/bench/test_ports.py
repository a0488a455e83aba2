"""The loopback port picker every test and benchmark server takes its port from."""

from __future__ import annotations

import itertools
import socket
import subprocess
import sys

from dicomvault.bench import ports


def test_ports_are_distinct_bindable_and_below_the_ephemeral_range() -> None:
    low = ports._ephemeral_low()
    got = ports.free_ports(200)
    assert len(set(got)) == 200
    assert all(1024 <= p < low for p in got)
    with socket.socket() as s:
        s.bind(("127.0.0.1", got[-1]))


def test_a_port_in_use_is_skipped() -> None:
    taken = ports.free_port()
    span = ports._slice()
    cursor = ports._cursor[:]
    with socket.socket() as held:
        held.bind(("127.0.0.1", taken))
        try:
            ports._cursor[:] = [taken - span.start]  # the held port is the next candidate
            got = ports.free_port()
        finally:
            ports._cursor[:] = cursor
    assert got != taken and got in span


def test_xdist_workers_draw_from_disjoint_slices() -> None:
    code = "from dicomvault.bench import ports; r = ports._slice(); print(r.start, r.stop)"
    slices = []
    for worker in ("gw0", "gw1", "gw2"):
        out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True,
                             env={"PYTEST_XDIST_WORKER": worker, "PYTEST_XDIST_WORKER_COUNT": "3",
                                  "PATH": "/usr/bin:/bin"}).stdout.split()
        slices.append(range(int(out[0]), int(out[1])))
    for a, b in itertools.pairwise(slices):
        assert a.stop <= b.start and len(a) > 1000
