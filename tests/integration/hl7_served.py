"""A real `dicomvault serve` with its HL7 listener, and an MLLP client: what the HL7, patient
correction and scheduled-workflow tests share."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dimse"))
from dimse_helpers import (  # noqa: E402
    ARCHIVE_AE,
    CLI,
    HOST,
    STORESCP_AE,
    Archive,
    free_port,
    run,
    stop_archive,
    storescu,
    wait_port,
    write_config,
)

# what the tests using this module take from dimse_helpers, through it (it puts it on the path)
__all__ = ["ARCHIVE_AE", "CLI", "HOST", "STORESCP_AE", "Archive", "free_port", "run", "storescu"]

from dicomvault.http_info import read_http_info  # noqa: E402

SB, EB = b"\x0b", b"\x1c\x0d"


@dataclass
class Served:
    arch: Archive
    http: httpx.Client
    hl7_port: int
    tmp: Path


@contextmanager
def serve_with_hl7(tmp: Path, config: str = "", *, extra_args: tuple[str, ...] = (),
                   storescp_port: int | None = None, commit_port: int | None = None) -> Iterator[Served]:
    """A real `dicomvault serve` with DIMSE, HTTP and an HL7 listener, `config` appended to its
    TOML file (its STORESCP peer, a C-MOVE destination, at `storescp_port`; its COMMITSCU peer,
    where storage commitment reports go, at `commit_port`); stopped (and required to stop cleanly)
    after."""
    data = tmp / "data"
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = write_config(tmp / "dicomvault.toml", data, storescp_port or free_port(),
                       commit_port or free_port())
    cfg.write_text(cfg.read_text() + config)
    port, http_port, hl7_port = free_port(), free_port(), free_port()
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CLI, "serve", "--config", str(cfg), "--dimse-port", str(port),
                                 "--host", HOST, "--http-port", str(http_port), "--hl7-port", str(hl7_port),
                                 *extra_args], stdout=out, stderr=subprocess.STDOUT)
    arch = Archive(proc, port, data, log, 0, 0)
    try:
        wait_port(port, proc, log)
        wait_port(hl7_port, proc, log)
        info = read_http_info(data)
        assert info is not None
        http = httpx.Client(base_url=info["url"], timeout=30,
                            headers={"Authorization": f"Bearer {info['admin_token']}"})
        yield Served(arch, http, hl7_port, tmp)
        http.close()
    finally:
        assert stop_archive(arch) == 0, arch.log_text()[-4000:]


def frames(stream: socket.socket, n: int) -> list[bytes]:
    buf, out = b"", []
    while len(out) < n:
        chunk = stream.recv(65536)
        assert chunk, f"connection closed after {len(out)} of {n} replies"
        buf += chunk
        while EB in buf:
            frame, buf = buf.split(EB, 1)
            assert frame.startswith(SB)
            out.append(frame[1:])
    return out


def send(s: Served, *messages: bytes, split: bool = False) -> list[dict[str, list[str]]]:
    """Sends the messages on one connection (each cut in two writes when `split`); the ACKs."""
    with socket.create_connection((HOST, s.hl7_port), timeout=20) as sock:
        for m in messages:
            framed = SB + m + EB
            if split:
                half = len(framed) // 2
                sock.sendall(framed[:half])
                time.sleep(0.05)
                sock.sendall(framed[half:])
            else:
                sock.sendall(framed)
        replies = frames(sock, len(messages))
    return [ack_fields(r) for r in replies]


def ack_fields(raw: bytes) -> dict[str, list[str]]:
    segs = {}
    for line in raw.decode("latin-1").split("\r"):
        if line:
            segs[line[:3]] = line.split("|")
    return segs


def kept(s: Served, kind: str, control_id: str) -> list[Path]:
    """The spooled copies of a message (kind: received or rejected)."""
    return sorted((s.arch.data / "hl7" / kind).glob(f"*/*-{control_id}.hl7"))


def msg(*segments: str, encoding: str = "ascii") -> bytes:
    return ("\r".join(segments) + "\r").encode(encoding)


