"""The one TLS policy of every connection the archive takes or makes (DICOM TLS, HTTPS, the
replication feed, forwarding, C-MOVE destinations), and certificate reload without a restart.

The policy is BCP 195 (RFC 9325, which DICOM PS3.15 B.9 points to): TLS 1.2 or newer (1.3 is
preferred: OpenSSL negotiates it first); for TLS 1.2 only forward-secret key exchange with AEAD
ciphers (ECDHE with AES-GCM or ChaCha20-Poly1305; TLS 1.3 suites are all of that kind); no TLS
compression (CRIME), no renegotiation; a server picks the cipher by its own preference.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("dicomvault.tls")

TLS12_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"


def harden(ctx: ssl.SSLContext) -> ssl.SSLContext:
    """Applies the policy to a context (server or client); returns it."""
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(TLS12_CIPHERS)
    ctx.options |= ssl.OP_NO_COMPRESSION | ssl.OP_NO_RENEGOTIATION
    if ctx.protocol == ssl.PROTOCOL_TLS_SERVER:
        ctx.options |= ssl.OP_CIPHER_SERVER_PREFERENCE
    return ctx


def server_context(cert: str | os.PathLike[str], key: str | os.PathLike[str] | None = None,
                   client_ca: str | os.PathLike[str] | None = None) -> ssl.SSLContext:
    """A listener's context: our chain and key; with `client_ca`, callers must present a
    certificate it signed (mutual authentication)."""
    ctx = harden(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER))
    ctx.load_cert_chain(str(cert), None if key is None else str(key))
    if client_ca is not None:
        ctx.load_verify_locations(str(client_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


PathLike = str | os.PathLike[str]


def client_context(ca: PathLike | None = None, cert: PathLike | None = None, key: PathLike | None = None,
                   *, check_hostname: bool = True) -> ssl.SSLContext:
    """Our side of a connection: the peer's chain verified against `ca` (else the system's
    roots), its host name too unless `check_hostname` is off (DICOM peers are authenticated by
    chain: see dimse/tls.py); our certificate offered when we have one."""
    ctx = harden(ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT))
    ctx.check_hostname = check_hostname
    ctx.verify_mode = ssl.CERT_REQUIRED
    if ca is not None:
        ctx.load_verify_locations(str(ca))
    else:
        ctx.load_default_certs()
    if cert is not None:
        ctx.load_cert_chain(str(cert), None if key is None else str(key))
    return ctx


class CertificateReloader:
    """Serves a renewed certificate and key without a restart. When either file changes (two
    stats, at most every `interval` seconds), a fresh context is built from them by `make` and
    the next handshake gets it: an acceptor asks `context()` per connection (the DICOM TLS
    relay), or `install` puts an SNI callback on a listener's fixed context that hands each
    handshake the current one (HTTPS: asyncio holds one context; the callback runs with or
    without SNI). A context in use is never modified, since OpenSSL does not promise that is
    safe while other threads start handshakes from it. A pair that does not load (half copied,
    a key that does not match) is logged and the previous context stays in service."""

    def __init__(self, make: Callable[[], ssl.SSLContext], cert: PathLike, key: PathLike | None = None,
                 *, interval: float = 2.0) -> None:
        self._make = make
        self.cert, self.key = Path(cert), Path(key) if key is not None else None
        self.interval = interval
        self.reloads = 0
        self._lock = threading.Lock()
        self._next = 0.0
        self._seen = self._stamp()
        self._ctx = make()

    def _stamp(self) -> tuple[tuple[int, int], ...]:
        out = []
        for p in (self.cert, self.key):
            if p is None:
                continue
            try:
                st = p.stat()
                out.append((st.st_mtime_ns, st.st_size))
            except OSError:
                out.append((0, 0))
        return tuple(out)

    def context(self) -> ssl.SSLContext:
        """The context the next handshake should use (reloaded first if the files changed)."""
        self.check()
        return self._ctx

    def install(self, listener: ssl.SSLContext) -> None:
        """Makes every handshake on `listener` use `context()`."""

        def pick(conn: ssl.SSLObject | ssl.SSLSocket, _name: str | None, _ctx: ssl.SSLContext) -> None:
            conn.context = self.context()

        listener.sni_callback = pick

    def check(self) -> bool:
        """Builds a new context if the files changed since the last look; whether it did."""
        now = time.monotonic()
        if now < self._next:
            return False
        with self._lock:
            self._next = now + self.interval
            stamp = self._stamp()
            if stamp == self._seen:
                return False
            self._seen = stamp
            try:
                fresh = self._make()
            except (OSError, ssl.SSLError) as exc:
                log.error("TLS certificate %s changed but does not load (%s); still serving the "
                          "previous one", self.cert, exc)
                return False
            self._ctx = fresh
            self.reloads += 1
            log.info("TLS certificate %s reloaded", self.cert)
            return True
