"""The listening HTTP(S) service: stdlib ThreadingHTTPServer, one thread per connection, so a
blob read (GIL released in the native store) never blocks the other requests."""

from __future__ import annotations

import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from .router import Response, Router

log = logging.getLogger("dicomvault.web")
MAX_BODY = 64 << 20


def _handler_class(router: Router) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: a replica pulls over one connection
        server_version = "dicomvault"

        def _serve(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY:
                self._send(Response(413, f"body over {MAX_BODY} bytes".encode()))
                self.close_connection = True
                return
            body = self.rfile.read(length) if length else b""
            try:
                resp = router.dispatch(self.command, self.path, self.headers, body, self.client_address[0])
            except Exception as exc:  # a handler bug must not kill the connection thread silently
                if router.closing.is_set():  # the engine closed under an in-flight request
                    resp = Response(503, b"shutting down", "text/plain; charset=utf-8")
                    self.close_connection = True
                else:
                    log.exception("%s %s failed", self.command, self.path)
                    resp = Response(500, f"{type(exc).__name__}: {exc}".encode(), "text/plain; charset=utf-8")
            self._send(resp)

        def _send(self, resp: Response) -> None:
            self.send_response(resp.status)
            self.send_header("Content-Type", resp.content_type)
            self.send_header("Content-Length", str(len(resp.body)))
            for k, v in resp.headers.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(resp.body)

        do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = _serve

        def setup(self) -> None:
            super().setup()
            self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
            log.debug("%s %s", self.client_address[0], format % args)

    return Handler


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    ssl_context: ssl.SSLContext | None = None

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        if self.ssl_context is not None:
            # Handshake in the connection's thread (do_handshake_on_connect), not the accept loop.
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request: Any, client_address: Any) -> None:
        if isinstance(request, ssl.SSLSocket):
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError) as exc:
                log.warning("TLS handshake with %s failed: %s", client_address[0], exc)
                return
        super().finish_request(request, client_address)


class HttpService:
    """`start()` binds and serves in a background thread; `stop()` closes the listener."""

    def __init__(self, router: Router, host: str = "127.0.0.1", port: int = 8080,
                 certfile: str | None = None, keyfile: str | None = None) -> None:
        self.router = router
        self.host, self.port = host, port
        self.tls = certfile is not None
        self._ctx: ssl.SSLContext | None = None
        if certfile is not None:
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.minimum_version = ssl.TLSVersion.TLSv1_2
            ctx.load_cert_chain(certfile, keyfile)
            self._ctx = ctx
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def scheme(self) -> str:
        return "https" if self.tls else "http"

    def start(self) -> tuple[str, int]:
        server = _Server((self.host, self.port), _handler_class(self.router))
        server.ssl_context = self._ctx
        self._server = server
        host, port = server.server_address[:2]
        self.host, self.port = str(host), int(port)
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="dicomvault-http", daemon=True)
        self._thread.start()
        log.info("HTTP%s listening on %s:%d", "S" if self.tls else "", self.host, self.port)
        return self.host, self.port

    def stop(self) -> None:
        self.router.closing.set()
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(5)
