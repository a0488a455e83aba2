"""The listening HTTP(S) service: uvicorn (uvloop event loop, httptools parser) serving the one
ASGI application in a thread of the `serve` process, beside the DIMSE SCP.

We bind the socket ourselves, so a busy default port can fall back to a free one and the bound
port is known before the first request; uvicorn gets the socket. Blocking work (engine reads,
index queries) runs in Starlette's thread pool, so the event loop only moves bytes.
"""

from __future__ import annotations

import errno
import logging
import socket
import ssl
import threading
import time
from typing import Any

import uvicorn

from .. import tls_policy
from ..errors import DicomVaultError

log = logging.getLogger("dicomvault.web")


def tls_context(certfile: str, keyfile: str | None) -> ssl.SSLContext:
    """The HTTPS listener's context: tls_policy's BCP 195 policy."""
    try:
        return tls_policy.server_context(certfile, keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise DicomVaultError(f"cannot load the HTTPS certificate {certfile} / key {keyfile}: {exc}") from exc


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    sock.listen(1024)
    return sock


class _Config(uvicorn.Config):
    """uvicorn's config with our TLS context (uvicorn builds its own from file names, without a
    minimum protocol version)."""

    def __init__(self, app: Any, tls: ssl.SSLContext | None, **kw: Any) -> None:
        super().__init__(app, **kw)
        self._tls = tls

    def load(self) -> None:
        super().load()
        self.ssl = self._tls


class HttpServer:
    """`start()` binds and serves in a background thread; `stop()` drains and closes."""

    def __init__(self, app: Any, host: str = "127.0.0.1", port: int = 8080, *,
                 certfile: str | None = None, keyfile: str | None = None,
                 port_explicit: bool = True) -> None:
        self.app = app
        self.host, self.port = host, port
        self.port_explicit = port_explicit
        self.tls = tls_context(certfile, keyfile) if certfile else None
        # A renewed certificate is served from the next handshake on (no restart): the
        # listener's context hands each handshake the reloader's current one.
        self.reloader: tls_policy.CertificateReloader | None = None
        if self.tls is not None and certfile:
            self.reloader = tls_policy.CertificateReloader(
                lambda: tls_policy.server_context(certfile, keyfile), certfile, keyfile)
            self.reloader.install(self.tls)
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls is not None else "http"

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def _listen(self) -> socket.socket:
        try:
            return _bind(self.host, self.port)
        except OSError as exc:
            if self.port_explicit or exc.errno != errno.EADDRINUSE:
                raise DicomVaultError(f"cannot serve HTTP on {self.host}:{self.port}: "
                                      f"{exc.strerror or exc}") from exc
            # Several servers on one host (test suites side by side) must not fail on 8080.
            log.warning("HTTP port %d is busy; serving on a free port instead", self.port)
            return _bind(self.host, 0)

    def start(self) -> str:
        sock = self._listen()
        self._sock = sock
        self.port = int(sock.getsockname()[1])
        config = _Config(self.app, self.tls, loop="uvloop", http="httptools", lifespan="off",
                         log_config=None, access_log=False, server_header=False,
                         timeout_keep_alive=75, timeout_graceful_shutdown=5)
        server = uvicorn.Server(config)
        self._server = server
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]},
                                        name="dicomvault-http", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()  # no serving thread or bound port left behind
                raise DicomVaultError(f"HTTP service on {self.host}:{self.port} did not start (see the log)")
            time.sleep(0.005)
        log.info("HTTP%s listening on %s", "S" if self.tls else "", self.url)
        return self.url

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.should_exit = True
        if self._thread is not None:
            self._thread.join(15)
            if self._thread.is_alive() and server is not None:
                server.force_exit = True
                self._thread.join(5)
        if self._sock is not None:
            self._sock.close()
            self._sock = None
