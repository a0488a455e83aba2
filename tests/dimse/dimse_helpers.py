"""Helpers for the DIMSE tests: a real `dicomvault serve` process, real dcmtk tools, real files.

The archive runs as a subprocess on a free loopback port with a temporary data directory; at the
end it gets SIGTERM and must exit 0. A dcmtk `storescp` (the C-MOVE destination) and a pynetdicom
storage commitment SCU/SCP are configured as its peers.
"""

from __future__ import annotations

import io
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE, _config
from pynetdicom.dsutils import split_dataset
from pynetdicom.sop_class import Verification

from dicomvault.bench.ports import free_port  # noqa: F401  (re-exported to the tests)
from dicomvault.engine import Engine

CLI = str(Path(sys.executable).with_name("dicomvault"))
HOST = "127.0.0.1"
ARCHIVE_AE = "DICOMVAULT"
STORESCP_AE = "STORESCP"
COMMIT_AE = "COMMITSCU"
DCMTK_TOOLS = ("echoscu", "storescu", "findscu", "movescu", "getscu", "storescp", "dcmconv", "dcmcjpls",
               "dcmcrle", "dcmdjpeg", "dcmodify")


# What an in-process DimseServer sets process-wide (dimse/server.configure_pynetdicom).
_SERVER_OPTIONS = ("UNRESTRICTED_STORAGE_SERVICE", "LOG_HANDLER_LEVEL", "LOG_REQUEST_IDENTIFIERS",
                   "LOG_RESPONSE_IDENTIFIERS")


@contextmanager
def pynetdicom_options_kept() -> Iterator[None]:
    """Puts back pynetdicom's process-wide options an in-process server set: left on, every plain
    pynetdicom peer of a later test accepts any storage context in the first syntax proposed."""
    saved = {k: getattr(_config, k) for k in _SERVER_OPTIONS}
    try:
        yield
    finally:
        for k, v in saved.items():
            setattr(_config, k, v)


def wait_port(port: int, proc: subprocess.Popen[bytes] | None, log: Path | None,
              timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            text = log.read_text(errors="replace") if log else ""
            raise AssertionError(f"process exited with {proc.returncode} before listening on {port}\n{text}")
        try:
            with socket.create_connection((HOST, port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"nothing listening on {HOST}:{port} after {timeout} s")


def run(cmd: list[str], *, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def dataset_bytes(path: Path) -> tuple[str, bytes]:
    """(transfer syntax, the dataset bytes after the file meta) of a Part-10 file."""
    meta, offset = split_dataset(path)
    return str(meta.TransferSyntaxUID), path.read_bytes()[offset:]


def read_part10(data: bytes) -> pydicom.Dataset:
    return pydicom.dcmread(io.BytesIO(data))


@dataclass
class Sent:
    """What a test sent to the archive (ground truth for queries and retrieves)."""

    path: Path
    ts: str
    sop_uid: str
    sop_class: str
    study_uid: str
    series_uid: str
    patient_id: str
    patient_name: str
    study_date: str
    modality: str

    @classmethod
    def of(cls, path: Path) -> Sent:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return cls(path, str(ds.file_meta.TransferSyntaxUID), str(ds.SOPInstanceUID), str(ds.SOPClassUID),
                   str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.get("PatientID", "")),
                   str(ds.get("PatientName", "")), str(ds.get("StudyDate", "")), str(ds.get("Modality", "")))


@dataclass
class Archive:
    """A running `dicomvault serve`."""

    proc: subprocess.Popen[bytes]
    port: int
    data: Path
    log: Path
    storescp_port: int
    commit_port: int
    sent: dict[str, Sent] = field(default_factory=dict)  # SOP Instance UID -> what was sent

    @property
    def addr(self) -> list[str]:
        return [HOST, str(self.port)]

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stored(self, sop_uid: str) -> tuple[str, bytes]:
        """(ts, dataset bytes) as the archive holds them, read beside the running server."""
        with Engine(self.data, read_only=True) as eng:
            return eng.read_dataset(sop_uid, as_received=True)

    def stored_file(self, sop_uid: str) -> bytes:
        with Engine(self.data, read_only=True) as eng:
            return eng.read_file(sop_uid, as_received=True)


def associate(archive: Archive, contexts: list[Any], ae_title: str = "PYSCU", *, ae: Any = None,
              timeout: float = 20, **kw: Any) -> Any:
    """A pynetdicom association to the archive (asserted established), from `ae` if given."""
    ae = ae if ae is not None else AE(ae_title=ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout
    assoc = ae.associate(HOST, archive.port, contexts=contexts, ae_title=ARCHIVE_AE, **kw)
    assert assoc.is_established, "association refused"
    return assoc


def write_config(path: Path, data: Path, storescp_port: int, commit_port: int, **dimse: object) -> Path:
    max_associations = dimse.pop("max_associations", 16)
    # the tools' own AE titles (STORESCU, FINDSCU, ...) call in: an open door unless a test closes it
    dimse.setdefault("accept_unknown_callers", True)
    extra = "".join(f"{k} = {str(v).lower() if isinstance(v, bool) else v}\n" for k, v in dimse.items())
    path.write_text(textwrap.dedent(f"""\
        data = "{data}"

        [dimse]
        ae_title = "{ARCHIVE_AE}"
        port = 1
        max_pdu = 131072
        max_associations = {max_associations}
        """) + extra + textwrap.dedent(f"""
        [[peers]]
        ae_title = "{STORESCP_AE}"
        host = "{HOST}"
        port = {storescp_port}

        [[peers]]
        ae_title = "{COMMIT_AE}"
        host = "{HOST}"
        port = {commit_port}
        """))
    return path


def start_archive(tmp: Path, storescp_port: int, commit_port: int, **dimse: object) -> Archive:
    tmp.mkdir(parents=True, exist_ok=True)
    data = tmp / "data"
    cfg = write_config(tmp / "dicomvault.toml", data, storescp_port, commit_port, **dimse)
    port = free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:
        # --dimse-port overrides the file's (deliberately wrong) port: the override path is tested.
        proc = subprocess.Popen(
            [CLI, "serve", "--config", str(cfg), "--dimse-port", str(port), "--host", HOST],
            stdout=out, stderr=subprocess.STDOUT,
        )
    wait_port(port, proc, log)
    return Archive(proc, port, data, log, storescp_port, commit_port)


def stop_archive(archive: Archive, timeout: float = 40) -> int:
    """SIGTERM, wait; the exit code (fails the test on a hang)."""
    if archive.proc.poll() is None:
        archive.proc.send_signal(signal.SIGTERM)
    try:
        return archive.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        archive.proc.kill()
        archive.proc.wait()
        raise AssertionError(
            f"dicomvault serve ignored SIGTERM for {timeout} s\n{archive.log_text()}"
        ) from None


# -- the test corpus: real files, and variants of them in other transfer syntaxes -----------------

# storescu proposal option per transfer syntax, so each file goes out in its own syntax.
STORESCU_FLAGS = {
    "1.2.840.10008.1.2.1": [],  # explicit VR little endian: storescu's default first proposal
    "1.2.840.10008.1.2": ["-xi"],
    "1.2.840.10008.1.2.2": ["-xb"],
    "1.2.840.10008.1.2.1.99": ["-xd"],
    "1.2.840.10008.1.2.4.50": ["-xy"],
    "1.2.840.10008.1.2.4.80": ["-xt"],
    "1.2.840.10008.1.2.4.91": ["-xw"],
    "1.2.840.10008.1.2.5": ["-xr"],
}


def storescu(archive: Archive, files: list[Path], *extra: str) -> None:
    """Sends files with dcmtk storescu, one run per transfer syntax (each proposed as itself)."""
    by_ts: dict[str, list[Path]] = {}
    for f in files:
        by_ts.setdefault(Sent.of(f).ts, []).append(f)
    for ts, group in by_ts.items():
        run(["storescu", "-aet", "STORESCU", "-aec", ARCHIVE_AE, "-R", *STORESCU_FLAGS[ts], *extra,
             *archive.addr, *map(str, group)])
        for f in group:
            s = Sent.of(f)
            archive.sent[s.sop_uid] = s


def _item(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBH", kind, 0, len(body)) + body


def associate_rq(calling: str = "HOSTILE", called: str = ARCHIVE_AE) -> bytes:
    """A minimal A-ASSOCIATE-RQ (PS3.8 9.3.2) proposing Verification, by hand: the PDUs below are
    then sent on a real association that pynetdicom never sees."""
    pc = _item(0x20, bytes([1, 0, 0, 0]) + _item(0x30, Verification.encode())
               + _item(0x40, b"1.2.840.10008.1.2"))
    user = _item(0x50, _item(0x51, struct.pack(">I", 16384)) + _item(0x52, b"1.2.3.4"))
    body = (struct.pack(">HH", 1, 0) + called.ljust(16).encode() + calling.ljust(16).encode() + b"\0" * 32
            + _item(0x10, b"1.2.840.10008.3.1.1.1") + pc + user)
    return struct.pack(">BBI", 0x01, 0, len(body)) + body


def announced_segment(host: str, port: int) -> int:
    """The TCP segment size a client connecting to (host, port) sends with: on loopback (64 KB
    segments), the smaller of the OS's and what the listening socket announced."""
    with socket.create_connection((host, port), timeout=5) as sock:
        return sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG)
