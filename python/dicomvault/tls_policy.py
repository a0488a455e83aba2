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
    """Loads a listener's certificate and key again when either file changes, so a renewed
    certificate takes effect on the next handshake without a restart. `check()` is cheap (two
    stats, at most every `interval` seconds) and is called by the code that accepts connections.
    A new pair is tried in a scratch context first: a half-copied or mismatched pair is logged and
    the old one kept (OpenSSL would otherwise leave the live context with a new certificate and
    the old key)."""

    def __init__(self, ctx: ssl.SSLContext, cert: str | os.PathLike[str],
                 key: str | os.PathLike[str] | None = None, *, interval: float = 2.0) -> None:
        self.ctx = ctx
        self.cert, self.key = Path(cert), Path(key) if key is not None else None
        self.interval = interval
        self.reloads = 0
        self._lock = threading.Lock()
        self._next = 0.0
        self._seen = self._stamp()

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

    def check(self) -> bool:
        """Reloads if the files changed since the last look; whether it did."""
        now = time.monotonic()
        if now < self._next:
            return False
        with self._lock:
            self._next = now + self.interval
            stamp = self._stamp()
            if stamp == self._seen:
                return False
            self._seen = stamp
            key = None if self.key is None else str(self.key)
            try:
                ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(str(self.cert), key)
                self.ctx.load_cert_chain(str(self.cert), key)
            except (OSError, ssl.SSLError) as exc:
                log.error("TLS certificate %s changed but does not load (%s); still serving the "
                          "previous one", self.cert, exc)
                return False
            self.reloads += 1
            log.info("TLS certificate %s reloaded", self.cert)
            return True
