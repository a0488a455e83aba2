"""Shared by the fault scenarios: how many trials and which seed, the per-scenario tally, a
child killed -9 at a random moment, and the checks after a restart (every acknowledged object
bit-exact, crash leftovers reclaimed, `dicomvault verify` clean).

FAULT_TRIALS sets the trials per scenario (the short form's own count when unset), FAULT_SEED
the seed (printed with every tally, so a failing run can be replayed)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import blake3
import pytest

from dicomvault.engine import Engine
from dicomvault.errors import DicomVaultError
from dicomvault.tiering import jobs
from dv_corpus import split_part10

CLI = str(Path(sys.executable).with_name("dicomvault"))
DEFAULT_SEED = 20261206
REPORTS: list[str] = []  # printed by conftest's terminal summary

# SOP Instance UID -> BLAKE3 of (transfer syntax, data set bytes): what the archive must give back
Acked = dict[str, str]


def trials(short: int) -> int:
    return int(os.environ.get("FAULT_TRIALS", short))


def seed() -> int:
    return int(os.environ.get("FAULT_SEED", DEFAULT_SEED))


def long_form() -> bool:
    return "FAULT_TRIALS" in os.environ


# A variant that only the long form runs (`make faults`): the short one keeps one of each kind.
long_only = pytest.mark.skipif("FAULT_TRIALS" not in os.environ, reason="long form only (make faults)")


def digest(ts: str, dataset: bytes) -> str:
    return blake3.blake3(ts.encode() + b"\0" + dataset).hexdigest()


def part10_digest(buf: bytes) -> str:
    return digest(*split_part10(buf))


@dataclass
class Tally:
    """What one scenario did and found; `report()` adds it to the run's summary."""

    scenario: str
    seed: int
    trials: int = 0
    killed: int = 0  # SIGKILLed while running
    finished: int = 0  # the work ended before the kill came (the trial still checks everything)
    acked: int = 0
    lost: int = 0
    reclaimed: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def add_reclaimed(self, counts: dict[str, int]) -> None:
        for k, v in counts.items():
            self.reclaimed[k] = self.reclaimed.get(k, 0) + v

    def report(self) -> str:
        rec = ", ".join(f"{k} {v}" for k, v in sorted(self.reclaimed.items())) or "none"
        runs = (
            f" ({self.killed} killed mid-run, {self.finished} finished first)"
            if self.killed + self.finished
            else ""
        )
        line = (
            f"{self.scenario}: seed {self.seed}, {self.trials} trials{runs}, {self.acked} acknowledged, "
            f"{self.lost} lost; reclaimed after restarts: {rec}"
        )
        if self.notes:
            line += "; " + "; ".join(self.notes)
        REPORTS.append(line)
        print(line)
        return line


@dataclass
class Run:
    killed: bool
    out: str  # stdout (whole only when not killed)
    work: float  # seconds from opening the data directory to the end or the kill


def _opened(pid: int, marker: str) -> bool:
    """Whether the process holds a file under `marker` open: it is past its imports and at work."""
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return False
    for fd in fds:
        try:
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith(marker):
                return True
        except OSError:
            continue
    return False


def run_and_kill(args: list[str], data: Path, after: float | None, *, timeout: float = 300) -> Run:
    """Runs `args` and SIGKILLs it `after` seconds after it opened a file under `data` (the
    interpreter's start-up would otherwise take most kills), unless it ended first; `after`
    None runs it to its end. Fails on a non-zero exit that was not the kill."""
    marker = str(data.resolve())
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(args, stdout=out, stderr=err, text=True)
        t0 = time.monotonic()
        opened: float | None = None
        killed = False
        while proc.poll() is None:
            now = time.monotonic()
            assert now - t0 < timeout, f"{' '.join(args)} still running after {timeout} s"
            if opened is None and _opened(proc.pid, marker):
                opened = now
            if opened is not None and after is not None and now - opened >= after:
                proc.send_signal(signal.SIGKILL)
                killed = True
                break
            time.sleep(0.001)
        proc.wait()
        end = time.monotonic()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    if killed and proc.returncode == -signal.SIGKILL:
        return Run(True, "", end - (opened or end))
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(args)} -> {proc.returncode}\n{stdout[-2000:]}\n{stderr[-3000:]}")
    return Run(False, stdout, end - (opened or t0))


def timed(args: list[str], data: Path, timeout: float = 300) -> Run:
    """Runs `args` to its end (seconds of work counted from its opening `data`)."""
    return run_and_kill(args, data, None, timeout=timeout)


def lost_objects(engine: Engine, acked: Acked) -> list[str]:
    """The acknowledged objects that are gone or read back other bytes (named with why)."""
    lost = []
    for uid, want in acked.items():
        try:
            got = digest(*engine.read_dataset(uid))
        except DicomVaultError as exc:
            lost.append(f"{uid}: {exc}")
            continue
        if got != want:
            lost.append(f"{uid}: other bytes")
    return lost


def check_restart(data: Path, acked: Acked, tally: Tally, *, remote: bool = False, cli: bool = True) -> None:
    """Reopens `data` as the next start does (crash recovery, then the reclaim the tiering service
    runs at start), checks every acknowledged object, that every indexed one reads and that the
    store verifies clean with nothing unreferenced; with `cli`, `dicomvault verify` too, as an
    operator would run it (the same check in its own process: the scenarios run it after their
    last trial, the engine's verify after every one)."""
    with Engine(data, min_free_bytes=0) as engine:
        tally.add_reclaimed(jobs.reclaim(engine))
        lost = lost_objects(engine, acked)
        tally.lost += len(lost)
        assert not lost, f"seed {tally.seed}: acknowledged objects lost: {lost[:5]}"
        assert engine.index.check() == []
        for rec in engine.index.instances():  # nothing half-written is visible
            engine.read_dataset(rec.sop_uid)
        if remote:
            for name in engine.remote_tiers:
                live = set(engine.index.live_packs())
                assert engine.remote(name).orphan_packs(live) == [], f"seed {tally.seed}: orphan packs"
        if not cli:
            report = engine.verify(remote=remote)
            assert report.clean and report.unreferenced == 0, (
                f"seed {tally.seed}: {report.damaged[:3]} {report.missing[:3]} {report.unreferenced}"
            )
    if cli:
        run = subprocess.run(
            [CLI, "verify", "--data", str(data), "--json"], capture_output=True, text=True, timeout=300
        )
        assert run.returncode == 0, (
            f"seed {tally.seed}: verify -> {run.returncode}\n{run.stdout}\n{run.stderr}"
        )
        report = json.loads(run.stdout)
        assert report["unreferenced"] == 0, f"seed {tally.seed}: {report}"
