"""The processes a benchmark starts: stopping them the same way (ours and Orthanc), and the CPU
time they used."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

_TICK = os.sysconf("SC_CLK_TCK")


def terminate(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """SIGTERM (a server drains its work and closes cleanly), then its exit code; SIGKILL only
    if it has not exited within `timeout`, so a hung server never hangs the benchmark."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)


def proc_cpu(pid: int) -> float:
    """CPU seconds (user + system, all threads) one process has used so far."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    f = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
    return (int(f[11]) + int(f[12])) / _TICK


def tree_cpu(pid: int) -> float:
    """CPU seconds of `pid` and its descendants: utime + stime of each process still in the tree
    (zombies included) + cutime + cstime of the root (children it has reaped). On a 2-core machine
    shared with the clients, CPU per object compares runs where wall rates do not."""
    children: dict[int, list[int]] = {}
    own: dict[int, float] = {}
    reaped = 0.0
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue  # exited between listdir and read
        f = stat[stat.rindex(")") + 2:].split()  # after "pid (comm) "; comm may hold spaces
        children.setdefault(int(f[1]), []).append(int(d))
        own[int(d)] = (int(f[11]) + int(f[12])) / _TICK
        if int(d) == pid:
            reaped = (int(f[13]) + int(f[14])) / _TICK
    total, todo = reaped, [pid]
    while todo:
        p = todo.pop()
        total += own.get(p, 0.0)
        todo += children.get(p, [])
    return total
