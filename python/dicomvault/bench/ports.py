"""Loopback ports for the servers that tests and benchmarks start (archive, Orthanc, SeaweedFS, peers).

Those servers read their port from a config file written before they start, so the port has to be
chosen first and bound later. Binding port 0 to choose it is a trap: the kernel picks from its
ephemeral range, the same range every outgoing connection's local port comes from, and in the gap
before the server binds, any client connection of the run can be given that port (CI failed
exactly so: EADDRINUSE on a `serve` DIMSE port while other sockets came and went). The ports here
come from just below the ephemeral range, which connect() never hands out; each is given once per
process, and parallel pytest workers each draw from their own slice.
"""

from __future__ import annotations

import os
import random
import socket
import threading
from pathlib import Path

_SPAN = 12000  # ports below the ephemeral range to draw from
_lock = threading.Lock()
_cursor: list[int] = []  # next candidate; set on first use


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _slice() -> range:
    """This process's share of the ports below the ephemeral range (one share per xdist worker)."""
    high = _ephemeral_low()
    low = max(1024, high - _SPAN)
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    width = (high - low) // max(1, count)
    start = low + (index % max(1, count)) * width
    return range(start, start + width)


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port on host that nothing is bound to now and that this process has not handed out before."""
    ports = _slice()
    with _lock:
        if not _cursor:
            # A random start, so processes that run one after the other do not all reuse the same
            # ports (a port just closed may still be held in TIME_WAIT).
            _cursor.append(random.Random(os.getpid() ^ int.from_bytes(os.urandom(4), "little"))
                           .randrange(len(ports)))
        for _ in range(len(ports)):
            port = ports[_cursor[0] % len(ports)]
            _cursor[0] += 1
            if _bindable(host, port):
                return port
    raise OSError(f"no free port on {host} in {ports.start}-{ports.stop - 1}")


def free_ports(n: int, host: str = "127.0.0.1") -> list[int]:
    """n distinct free ports (see free_port)."""
    return [free_port(host) for _ in range(n)]
