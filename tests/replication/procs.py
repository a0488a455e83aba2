"""Real processes on loopback for the fault tests: `dicomvault serve` / `dicomvault replicate`
children, a TCP relay the test can cut, and an ingest client that records what was acknowledged."""

from __future__ import annotations

import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import blake3

from dicomvault.bench.ports import free_port
from dicomvault.engine import Engine

CLI = str(Path(sys.executable).with_name("dicomvault"))
HOST = "127.0.0.1"


class Relay:
    """Threaded TCP relay HOST:port -> HOST:target. stop() closes the listener and every open
    connection (the link is cut mid-transfer); start() again reopens the same port."""

    def __init__(self, target: int, port: int | None = None) -> None:
        self.target = target
        self.port = port or free_port()
        self._listener: socket.socket | None = None
        self._socks: set[socket.socket] = set()
        self._lock = threading.Lock()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        lst = socket.socket()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((HOST, self.port))
        lst.listen(16)
        self._listener = lst
        threading.Thread(target=self._accept, args=(lst,), daemon=True).start()

    def _accept(self, lst: socket.socket) -> None:
        while True:
            try:
                client, _ = lst.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection((HOST, self.target), timeout=5)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._socks.update((client, upstream))
            self._relay(client, upstream)

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        """Copies both ways; a proxy that edits the stream overrides this."""
        for a, b in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(1 << 16):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def stop(self) -> None:
        if self._listener is not None:
            # shutdown wakes the thread blocked in accept(); close alone would leave the port bound
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)
            self._listener.close()
            self._listener = None
        with self._lock:
            socks, self._socks = self._socks, set()
        for s in socks:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()


class Proc:
    """A child dicomvault process; waits for its `dicomvault serving HTTP <url>` (or `site`) line."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args = args
        self.log = log
        self.p: subprocess.Popen[str] | None = None
        self.url = ""

    def start(self, timeout: float = 30) -> Proc:
        self._log = self.log.open("a")
        self.p = subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=self._log, text=True)
        deadline = time.monotonic() + timeout
        assert self.p.stdout is not None
        while time.monotonic() < deadline:
            line = self.p.stdout.readline()
            if not line:
                raise RuntimeError(f"{self.args} exited: {self.log.read_text()[-2000:]}")
            if " HTTP " in line or line.startswith("dicomvault site "):
                self.url = line.split()[3 if " HTTP " in line else 2]
                threading.Thread(target=self.p.stdout.read, daemon=True).start()  # drain
                return self
        raise RuntimeError(f"{self.args} did not come up: {self.log.read_text()[-2000:]}")

    def kill9(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.send_signal(signal.SIGKILL)
            self.p.wait(10)

    def stop(self) -> int:
        if self.p is None or self.p.poll() is not None:
            return self.p.returncode if self.p else 0
        self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(30)
        except subprocess.TimeoutExpired:
            self.kill9()
            raise


def serve(data: Path, http_port: int, log: Path, *extra: str) -> Proc:
    return Proc([CLI, "serve", "--data", str(data), "--dimse-port", "0", "--http-port", str(http_port),
                 *extra], log)


def replicate(data: Path, source: str, token: str, log: Path, *extra: str) -> Proc:
    return Proc([CLI, "replicate", "--data", str(data), "--from", source, "--token", token,
                 "--http-port", "0", *extra], log)


class Ingester:
    """POSTs files from `files` (an iterator, generated as it goes) until stopped; records each
    (SOP UID, file BLAKE3) acknowledged. A post whose outcome is unknown is re-sent."""

    def __init__(self, url_of: list[str], files: Iterator[bytes]) -> None:
        self.url_of = url_of  # one-element list: the test may repoint it
        self.files = files
        self.acked: dict[str, str] = {}
        self.errors = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.next = 0

    def start(self) -> Ingester:
        self._thread.start()
        return self

    def _run(self) -> None:
        data = next(self.files, None)
        while not self._stop.is_set() and data is not None:
            req = urllib.request.Request(self.url_of[0] + "/api/instances", data=data, method="POST",
                                         headers={"Content-Type": "application/dicom"})
            try:
                with urllib.request.urlopen(req, timeout=10) as resp:
                    body = resp.read()
            except (urllib.error.URLError, OSError):
                self.errors += 1
                self._stop.wait(0.1)
                continue  # the same file again: a re-send after an unknown outcome is a duplicate
            sop = json.loads(body)["SOPInstanceUID"]
            self.acked[sop] = blake3.blake3(data).hexdigest()
            self.next += 1
            data = next(self.files, None)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def snapshot(data: Path) -> dict[str, bytes]:
    """{SOP UID: blob hash} of a data directory (read-only: works beside its server)."""
    with Engine(data, read_only=True) as eng:
        return {r.sop_uid: r.hash for r in eng.index.instances()}


def files_of(data: Path, sops: list[str]) -> dict[str, str]:
    with Engine(data, read_only=True) as eng:
        return {s: blake3.blake3(eng.read_file(s)).hexdigest() for s in sops}


def wait_until(pred, timeout: float, interval: float = 0.3) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if pred():
            return True
        time.sleep(interval)
    return pred()


