"""DIMSE ingest driven by dcmtk: `dicomvault serve` as a child process and N parallel
`storescu -pdu 131072` processes, with per-object latency read from storescu's own log.

Shared by `dicomvault bench --dimse` (phases.dimse_ingest) and the side-by-side scripts in bench/
(dimse_compare.py, compare_all.py), so every figure comes from the same client and the same timing.

Per-object latency costs nothing extra: storescu runs with a log4cplus configuration that stamps
each INFO line with epoch milliseconds, and an object's latency is "Sending file" to "Received
Store Response" of the same association (file read + transfer + the server's durable commit).

C-FIND latency the same way (`findscu_queries`): dcmtk findscu sends one C-FIND per query file on
one association, and its log, stamped to the microsecond, gives each query's latency and matches.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..errors import DicomVaultError
from .orthanc import free_port
from .procs import terminate

HOST = "127.0.0.1"
DV_AE = "DICOMVAULT"
PDU = 131072
READY = "dicomvault serving DIMSE"
# dcmtk leaves Nagle on unless told: without this every C-STORE waits ~40 ms for a delayed ACK.
DCMTK_ENV = {**os.environ, "TCP_NODELAY": "1"}

# INFO lines to stdout, each stamped with epoch seconds.milliseconds; the XMIT progress dots off.
DCMTK_LOG_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.logger.dcmtk.apps.storescu.progress = WARN
log4cplus.logger.dcmtk.apps.getscu.progress = WARN
log4cplus.logger.dcmtk.apps.movescu.progress = WARN
log4cplus.logger.dcmtk.apps.storescp.progress = WARN
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.logToStderr = false
log4cplus.appender.console.ImmediateFlush = true
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%s.%Q} %m%n
"""
# seconds.milliseconds.microseconds (%D{%s.%Q}); older logs without the microseconds parse too
_STAMP = r"(\d{9,11}\.\d{3}(?:\.\d{3})?) "
_SENDING = re.compile(_STAMP + r"Sending file: (.+)$")
_RESPONSE = re.compile(_STAMP + r"Received Store Response \(([^)]*)\)")


def _log_config(folder: Path, name: str, text: str) -> Path:
    """Writes a log4cplus configuration (once) and returns its path."""
    path = folder / name
    if not path.exists():
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return path


def dcmtk_log_config(folder: Path) -> Path:
    """The microsecond-stamped log4cplus configuration of the storescu/getscu/movescu runs."""
    return _log_config(folder, "dcmtk-log.cfg", DCMTK_LOG_CONFIG)


def dicomvault_command() -> list[str]:
    """The `dicomvault` entry point of this interpreter's environment (the venv's script when it
    exists, so the server runs the same code as the caller)."""
    script = Path(sys.executable).with_name("dicomvault")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from dicomvault.cli import main; sys.exit(main())"]


@dataclass
class ServeProcess:
    """A running `dicomvault serve`."""

    proc: subprocess.Popen[bytes]
    data: Path
    ae: str
    port: int
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 120) -> int:
        """SIGTERM (the server drains its associations and closes the engine cleanly), then its
        exit code; SIGKILL only if it does not exit within `timeout`."""
        return terminate(self.proc, timeout)


def start_serve(
    data: Path,
    *,
    ae: str = DV_AE,
    config: Path | None = None,
    log_path: Path | None = None,
    env: dict[str, str] | None = None,
    fresh: bool = True,
    timeout: float = 60,
) -> ServeProcess:
    """Starts `dicomvault serve` on `data` (emptied first when `fresh`) on a free loopback port
    and returns once its ready line ("dicomvault serving DIMSE AE@host:port ...") is on stdout.
    HTTP goes to a free port too (`--http-port 0`): several servers may run side by side."""
    if fresh and data.exists():
        shutil.rmtree(data)
    data.parent.mkdir(parents=True, exist_ok=True)
    log_path = log_path or data.parent / f"{data.name}-serve.log"
    port = free_port(HOST)
    cmd = [
        *dicomvault_command(),
        "serve",
        "--data",
        str(data),
        "--accept-unknown-callers",  # the benchmark's clients call with their own titles
        "--ae",
        ae,
        "--host",
        HOST,
        "--dimse-port",
        str(port),
        "--http-port",
        "0",
    ]
    if config is not None:
        cmd += ["--config", str(config)]
    with log_path.open("wb") as out:
        # stdout to a file, not a pipe: nobody has to drain it while the server runs.
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
    server = ServeProcess(proc, data, ae, port, log_path)
    deadline = time.monotonic() + timeout
    while True:
        m = re.search(READY + r" \S+@\S+:(\d+)", server.log_text())
        if m:
            server.port = int(m.group(1))
            return server
        if proc.poll() is not None or time.monotonic() > deadline:
            server.stop(5)
            raise DicomVaultError(f"dicomvault serve on {data} did not start:\n{server.log_text()[-3000:]}")
        time.sleep(0.05)


@dataclass
class StoreRun:
    """What N storescu processes did: wall time, and per object (from their logs) the response
    time, latency, size and status."""

    seconds: float
    started_at: float  # epoch seconds, for the per-object times
    objects: int = 0
    failed: int = 0
    nbytes: int = 0
    latencies: list[float] = field(default_factory=list)
    events: list[tuple[float, int, int]] = field(default_factory=list)  # (t since start, bytes, 1)
    per_association: list[tuple[int, float]] = field(default_factory=list)  # (objects, seconds)
    exit_codes: list[int] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def _parse_storescu_log(text: str, run: StoreRun) -> tuple[int, float]:
    """Adds one association's objects to `run`; returns (objects, seconds active)."""
    sending: tuple[float, str] | None = None
    first = last = None
    n = 0
    for line in text.splitlines():
        m = _SENDING.search(line)
        if m:
            sending = (_secs(m.group(1)), m.group(2))
            first = sending[0] if first is None else first
            continue
        m = _RESPONSE.search(line)
        if m and sending is not None:
            t = _secs(m.group(1))
            last = t
            try:
                size = os.path.getsize(sending[1])
            except OSError:
                size = 0
            if m.group(2).startswith("Success"):
                n += 1
                run.objects += 1
                run.nbytes += size
                run.latencies.append(max(t - sending[0], 0.0))
                run.events.append((max(t - run.started_at, 0.0), size, 1))
            else:
                run.failed += 1
            sending = None
    return n, (last - first) if first is not None and last is not None else 0.0


def storescu_parallel(
    ae: str, port: int, dirs: Sequence[Path], log_dir: Path, host: str = HOST, timeout: float = 3600,
    extra: Sequence[str] = (),
) -> StoreRun:
    """One `storescu -pdu 131072 +sd +r` per folder, all at once; wall time from the first start
    to the last exit. Logs go to files in `log_dir` and are parsed afterwards (not in the timed
    region)."""
    cfg = dcmtk_log_config(log_dir)
    logs = [log_dir / f"storescu-{i}.log" for i in range(len(dirs))]
    started = time.time()
    t0 = time.monotonic()
    procs = []
    for d, lp in zip(dirs, logs, strict=True):
        with lp.open("wb") as out:
            procs.append(
                subprocess.Popen(
                    [
                        "storescu",
                        "-lc",
                        str(cfg),
                        "-aet",
                        "STORESCU",
                        "-aec",
                        ae,
                        "-pdu",
                        str(PDU),
                        "+sd",
                        "+r",
                        *extra,
                        host,
                        str(port),
                        str(d),
                    ],
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env=DCMTK_ENV,
                )
            )
    try:
        for p in procs:
            p.wait(max(1.0, timeout - (time.monotonic() - t0)))
    finally:
        for p in procs:  # a hung storescu must not outlive the measurement
            if p.poll() is None:
                p.kill()
                p.wait()
    run = StoreRun(seconds=time.monotonic() - t0, started_at=started)
    for p, lp in zip(procs, logs, strict=True):
        text = lp.read_text(errors="replace")
        run.exit_codes.append(int(p.returncode))
        run.per_association.append(_parse_storescu_log(text, run))
        if p.returncode != 0:
            run.errors.append(text[-500:])
    run.events.sort()
    return run


def landing_empty(data: Path) -> bool:
    """Whether the first (landing) tier of the data directory `data` holds no blob: everything
    ingested has been compacted to the next tier (read through a read-only view while `serve`
    runs). True for a layout of one tier."""
    with Engine(data, read_only=True) as eng:
        tiers = list(eng.stats().get("tiers", {}).values())
    return len(tiers) < 2 or tiers[0].get("objects", 0) == 0


def wait_compacted(data: Path, timeout: float = 300.0) -> float:
    """Seconds until `serve`'s background compactor emptied the landing tier of `data` (it starts
    a second after the last commit), at most `timeout`."""
    t0 = time.monotonic()
    while not landing_empty(data) and time.monotonic() - t0 < timeout:
        time.sleep(0.25)
    return time.monotonic() - t0


def split_files(files: Sequence[Path], folder: Path, n: int) -> list[Path]:
    """n folders of hard links (copies across filesystems), contiguous shares of about equal bytes,
    so each storescu (+sd) scans one folder and sends whole studies."""
    if folder.exists():
        shutil.rmtree(folder)
    total = sum(f.stat().st_size for f in files)
    out = [folder / f"a{q}" for q in range(n)]
    for d in out:
        d.mkdir(parents=True)
    acc = 0
    for i, f in enumerate(files):
        q = min(n - 1, acc * n // total) if total else i % n
        acc += f.stat().st_size
        dst = out[q] / f"{i:07d}-{f.name}"
        try:
            os.link(f, dst)
        except OSError:
            shutil.copyfile(f, dst)
    return out


@dataclass
class RetrieveRun:
    """One whole-study retrieve by a dcmtk SCU: wall time, objects received, first-object latency
    (request sent to the first C-STORE sub-operation arriving, from the timestamped logs)."""

    seconds: float
    objects: int
    first_object_ms: float | None
    exit_code: int
    log_tail: str = ""


def _secs(stamp: str) -> float:
    """A _STAMP's seconds."""
    whole, ms, *us = stamp.split(".")
    return int(whole) + int(ms) / 1e3 + (int(us[0]) / 1e6 if us else 0.0)


def _first_stamp(text: str, pattern: str) -> float | None:
    m = re.search(_STAMP + pattern, text)
    return _secs(m.group(1)) if m else None


def _run_logged(cmd: list[str], log_path: Path, timeout: float) -> tuple[float, int, str]:
    """Runs a dcmtk client with its output in log_path: (wall seconds, exit code, log text).

    The wait blocks in waitpid, the timeout is a timer that kills the client: a wait with a
    timeout (`subprocess.run(timeout=...)`) polls with sleeps of up to 50 ms, which rounded a
    0.2 s retrieve up by as much as a quarter."""
    t0 = time.monotonic()
    with log_path.open("wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=DCMTK_ENV)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            rc = proc.wait()
        finally:
            timer.cancel()
    secs = time.monotonic() - t0
    if secs >= timeout and rc < 0:
        raise subprocess.TimeoutExpired(cmd, timeout)
    return secs, rc, log_path.read_text(errors="replace")


def getscu_study(
    ae: str, port: int, study_uid: str, log_dir: Path, host: str = HOST, timeout: float = 600
) -> RetrieveRun:
    """`getscu -S` of one study at STUDY level, received with --ignore (read off the wire, not
    written: the client's disk is not what is measured)."""
    cfg = dcmtk_log_config(log_dir)
    lp = log_dir / "getscu.log"
    cmd = [
        "getscu",
        "-lc",
        str(cfg),
        "-aet",
        "GETSCU",
        "-aec",
        ae,
        "-S",
        "-pdu",
        str(PDU),
        "--ignore",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_uid}",
        host,
        str(port),
    ]
    secs, rc, text = _run_logged(cmd, lp, timeout)
    sent = _first_stamp(text, r"Sending C-GET Request")
    first = _first_stamp(text, r"Received C-STORE Request")
    n = len(re.findall(r"Received C-STORE Request", text))
    return RetrieveRun(secs, n, (first - sent) * 1e3 if sent and first else None, rc, text[-800:])


@dataclass
class StoreScp:
    """A dcmtk storescp (the C-MOVE destination), receiving with --ignore."""

    proc: subprocess.Popen[bytes]
    ae: str
    port: int
    log_path: Path

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_storescp(log_dir: Path, ae: str = "STORESCP", timeout: float = 10, extra: Sequence[str] = (),
                   log_name: str = "storescp.log") -> StoreScp:
    """`extra`: more storescp options (e.g. +tls ...)."""
    cfg = dcmtk_log_config(log_dir)
    port = free_port(HOST)
    lp = log_dir / log_name
    with lp.open("wb") as out:
        proc = subprocess.Popen(
            ["storescp", "-lc", str(cfg), "-aet", ae, "-pdu", str(PDU), "--ignore", *extra, str(port)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=DCMTK_ENV,
        )
    scp = StoreScp(proc, ae, port, lp)
    deadline = time.monotonic() + timeout
    while True:  # listening once a connection is accepted
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return scp
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                scp.stop()
                raise DicomVaultError(
                    f"storescp did not start:\n{lp.read_text(errors='replace')[-1000:]}"
                ) from None
            time.sleep(0.05)


def movescu_study(
    ae: str, port: int, study_uid: str, dest: StoreScp, log_dir: Path, host: str = HOST, timeout: float = 600
) -> RetrieveRun:
    """`movescu -S` of one study to `dest`; objects and first-object time from dest's log (its
    size before the move is remembered, so one storescp serves several moves)."""
    cfg = dcmtk_log_config(log_dir)
    lp = log_dir / "movescu.log"
    before = len(dest.log_text())
    cmd = [
        "movescu",
        "-lc",
        str(cfg),
        "-aet",
        "MOVESCU",
        "-aec",
        ae,
        "-aem",
        dest.ae,
        "-S",
        "-k",
        "QueryRetrieveLevel=STUDY",
        "-k",
        f"StudyInstanceUID={study_uid}",
        host,
        str(port),
    ]
    secs, rc, text = _run_logged(cmd, lp, timeout)
    received = dest.log_text()[before:]
    sent = _first_stamp(text, r"Sending Move Request")
    first = _first_stamp(received, r"Received Store Request")
    n = len(re.findall(r"Received Store Request", received))
    return RetrieveRun(secs, n, (first - sent) * 1e3 if sent and first else None, rc, text[-800:])


def tree_bytes(root: Path) -> int:
    """Bytes on disk (allocated blocks, like `du`) of every file under root."""
    total = 0
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            try:
                total += os.lstat(os.path.join(dirpath, name)).st_blocks * 512
            except OSError:
                continue
    return total


# -- C-FIND latency with dcmtk findscu -------------------------------------------------------------
#
# dcmtk's C++ findscu as the client (a real peer, not pynetdicom): one findscu process, so one
# association, sends one C-FIND per query file named on its command line, in order. Per query,
# the latency is read from findscu's own log, which this configuration stamps with log4cplus's
# %Q (fractional milliseconds: epoch seconds "." milliseconds "." microseconds, 1 us resolution,
# wall clock): "Sending Find Request (MsgID n)" (logged just before the request is encoded and
# sent; the query file was read before it) to "Received Final Find Response (status)" (logged
# once the final, non-pending response has been read). With the dcmtk.dcmnet.responses logger
# below INFO, each pending response is one line "Received Find Response k (Pending)" (k counts
# responses over the whole association) instead of a dataset dump: its count is the match count.
# The request identifier dump findscu logs at INFO is dropped by a filter (it still formats it:
# a few tens of microseconds inside the timed window).

FINDSCU_LOG_CONFIG = """\
log4cplus.rootLogger = INFO, console
log4cplus.logger.dcmtk.dcmnet.responses = WARN
log4cplus.appender.console = log4cplus::ConsoleAppender
log4cplus.appender.console.logToStderr = false
log4cplus.appender.console.ImmediateFlush = true
log4cplus.appender.console.layout = log4cplus::PatternLayout
log4cplus.appender.console.layout.ConversionPattern = %D{%s.%Q} %m%n
log4cplus.appender.console.filters.1 = log4cplus::spi::StringMatchFilter
log4cplus.appender.console.filters.1.StringToMatch = Request Identifiers:
log4cplus.appender.console.filters.1.AcceptOnMatch = false
"""
STUDY_ROOT_FIND = "1.2.840.10008.5.1.4.1.2.2.1"  # Study Root Query/Retrieve Information Model - FIND
_USTAMP = r"^(\d{9,11})\.(\d{3})\.(\d{3}) "  # %D{%s.%Q}: seconds.milliseconds.microseconds
_FIND_SENT = re.compile(_USTAMP + r"Sending Find Request \(MsgID (\d+)\)")
_FIND_PENDING = re.compile(_USTAMP + r"Received Find Response \d+ \((Pending[^)]*)\)")
_FIND_FINAL = re.compile(_USTAMP + r"Received Final Find Response \(([^)]*)\)")


def findscu_log_config(folder: Path) -> Path:
    """findscu's microsecond-stamped log4cplus configuration."""
    return _log_config(folder, "findscu-log.cfg", FINDSCU_LOG_CONFIG)


def _usec(m: re.Match[str]) -> int:
    return int(m.group(1)) * 1_000_000 + int(m.group(2)) * 1000 + int(m.group(3))


@dataclass
class FindTiming:
    """One C-FIND as findscu logged it: request sent to final response read."""

    msg_id: int
    latency_ms: float
    matches: int  # pending responses
    status: str  # of the final response, as dcmtk words it ("Success", "Failed: ...")

    @property
    def ok(self) -> bool:
        return self.status == "Success"


def parse_findscu_log(text: str) -> list[FindTiming]:
    """The C-FINDs of one findscu log (FINDSCU_LOG_CONFIG's format), in order; a request without
    a final response (findscu gave up: timeout, abort) is not in the list."""
    out: list[FindTiming] = []
    sent: tuple[int, int] | None = None  # (msg id, time in us)
    pending = 0
    for line in text.splitlines():
        m = _FIND_SENT.match(line)
        if m:
            sent, pending = (int(m.group(4)), _usec(m)), 0
            continue
        if sent is None:
            continue
        m = _FIND_PENDING.match(line)
        if m:
            pending += 1
            continue
        m = _FIND_FINAL.match(line)
        if m:
            out.append(FindTiming(sent[0], max(_usec(m) - sent[1], 0) / 1000, pending, m.group(4)))
            sent = None
    return out


@dataclass
class FindRun:
    """One findscu process (one association) over a list of query files."""

    timings: list[FindTiming]
    exit_code: int
    seconds: float  # process start to exit, association set-up and release included
    log_path: Path
    log_tail: str = ""


def write_find_queries(folder: Path, identifiers: Sequence[Any]) -> list[Path]:
    """Each identifier (a pydicom Dataset) as a query file q0000.dcm, q0001.dcm, ... in `folder`
    (emptied first): DICOM Part-10 with a file meta header, Explicit VR Little Endian, the
    meta SOP class Study Root FIND. findscu reads them with or without the meta header."""
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    out = []
    for i, ds in enumerate(identifiers):
        ds = ds.copy()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.MediaStorageSOPClassUID = STUDY_ROOT_FIND
        ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        path = folder / f"q{i:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out.append(path)
    return out


def findscu_queries(
    ae: str,
    port: int,
    files: Sequence[Path],
    log_path: Path,
    *,
    host: str = HOST,
    aet: str = "FINDSCU",
    dimse_timeout: int = 30,
    timeout: float = 3600,
) -> FindRun:
    """`findscu -S` (Study Root) with every query file on its command line: one association, one
    C-FIND per file in order, `TCP_NODELAY=1`; per-query latencies and match counts from its
    log (`log_path`, parsed after it exits). A C-FIND with no answer within `dimse_timeout`
    seconds makes findscu abort: the run then holds fewer timings than files."""
    cfg = findscu_log_config(log_path.parent)
    cmd = ["findscu", "-lc", str(cfg), "-S", "-aet", aet, "-aec", ae, "-td", str(dimse_timeout),
           host, str(port), *(str(f) for f in files)]
    secs, rc, text = _run_logged(cmd, log_path, timeout)
    return FindRun(parse_findscu_log(text), rc, secs, log_path, text[-800:])
