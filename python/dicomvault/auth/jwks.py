"""The identity provider's signing keys: a JWKS (RFC 7517) read from a file or fetched from a URL,
kept in memory and fetched again when a token names a key we do not hold (the provider rotated
its keys) or when the copy grows old.

Fetching is blocking I/O: callers on an event loop ask `needs_refresh` (cheap, no I/O) and run
`refresh` in a thread. Attempts are spaced by `min_interval` whatever asks for them, so tokens
with invented `kid`s cannot make us hammer the provider, and a failed fetch keeps the keys we had.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from jwt import PyJWK
from jwt.exceptions import PyJWTError

from .. import tls_policy
from ..errors import DicomVaultError
from .oidc_settings import is_url

log = logging.getLogger("dicomvault.auth")

# A provider's JWKS is a few keys (a few KiB); anything much larger is not one.
MAX_JWKS_BYTES = 1 << 20
FETCH_TIMEOUT = 5.0

# The algorithms a key type can verify (of those auth/oidc_settings.py allows).
_ALGS_OF_KTY = {"RSA": ("RS256", "PS256"), "EC": ("ES256",)}
_CURVE_OF_ALG = {"ES256": "P-256"}


class JwksError(DicomVaultError):
    """The JWKS could not be read, fetched or understood (the message names the source)."""


@dataclass(frozen=True, slots=True)
class SigningKey:
    kid: str | None
    alg: str
    key: PyJWK


def parse_jwks(raw: bytes, source: str, algorithms: tuple[str, ...]) -> list[SigningKey]:
    """The signature keys of a JWKS document usable with `algorithms`; a key the document holds
    for something else (encryption, another curve or type) is skipped, one that is broken is
    skipped with a warning. JwksError when nothing usable is left."""
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise JwksError(f"JWKS {source} is not JSON: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("keys"), list):
        raise JwksError(f'JWKS {source} has no "keys" array')
    out: list[SigningKey] = []
    for jwk in doc["keys"]:
        if not isinstance(jwk, dict) or jwk.get("use", "sig") != "sig":
            continue
        kid = jwk.get("kid") if isinstance(jwk.get("kid"), str) else None
        for alg in _ALGS_OF_KTY.get(jwk.get("kty"), ()):  # type: ignore[arg-type]
            if alg not in algorithms or jwk.get("alg", alg) != alg:
                continue
            if alg in _CURVE_OF_ALG and jwk.get("crv") != _CURVE_OF_ALG[alg]:
                continue
            try:
                out.append(SigningKey(kid, alg, PyJWK(jwk, algorithm=alg)))
            except PyJWTError as exc:
                log.warning("JWKS %s: key kid=%s (%s) skipped: %s", source, kid, alg, exc)
    if not out:
        raise JwksError(f"JWKS {source} holds no signature key for {', '.join(algorithms)}")
    return out


class JwksCache:
    """The keys of one JWKS source. Thread-safe; `refresh` may block (call it off the event loop)."""

    def __init__(self, source: str, algorithms: tuple[str, ...], *, min_interval: float = 60.0,
                 max_age: float = 3600.0, ca: Path | None = None, timeout: float = FETCH_TIMEOUT,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.source = source
        self.algorithms = algorithms
        self.min_interval = min_interval
        self.max_age = max_age
        self.timeout = timeout
        self.clock = clock
        self._tls = tls_policy.client_context(ca) if source.startswith("https://") else None
        if source.startswith("http://"):
            log.warning("OIDC: the JWKS %s is fetched over plain HTTP: anyone on the path could put "
                        "their own keys in it and sign tokens we accept; use https://", source)
        self._lock = threading.Lock()
        self._keys: list[SigningKey] = []
        self._loaded_at: float | None = None
        self._tried_at: float | None = None
        self.last_error: str | None = None
        self.fetches = 0

    @property
    def loaded(self) -> bool:
        return self._loaded_at is not None

    def find(self, kid: str | None, alg: str) -> list[SigningKey]:
        """Keys that may have signed a token naming `kid` (None: any key of `alg`) and `alg`."""
        return [k for k in self._keys if k.alg == alg and (kid is None or k.kid == kid)]

    def needs_refresh(self, kid: str | None, alg: str) -> bool:
        """True when a fetch is due and allowed: no key for the token (or keys past max_age),
        and no attempt within min_interval."""
        now = self.clock()
        if self._tried_at is not None and now - self._tried_at < self.min_interval:
            return False
        stale = self._loaded_at is None or now - self._loaded_at >= self.max_age
        return stale or not self.find(kid, alg)

    def refresh(self, *, force: bool = False) -> bool:
        """Reads the source again unless another thread just did (or, without `force`, an
        attempt was made within min_interval). True when new keys were loaded. A failure is
        logged and kept in `last_error`; the keys held before stay in use."""
        with self._lock:
            now = self.clock()
            if not force and self._tried_at is not None and now - self._tried_at < self.min_interval:
                return False
            self._tried_at = now
            self.fetches += 1
            try:
                keys = parse_jwks(self._read(), self.source, self.algorithms)
            except JwksError as exc:
                self.last_error = str(exc)
                log.error("OIDC: %s; %d key(s) held before stay in use", exc, len(self._keys))
                return False
            before = {(k.kid, k.alg) for k in self._keys}
            self._keys, self._loaded_at, self.last_error = keys, self.clock(), None
            kids = sorted({str(k.kid) for k in keys})
            added = sorted({str(k.kid) for k in keys if (k.kid, k.alg) not in before})
            log.info("OIDC: signing key(s) %s from %s%s", ", ".join(kids), self.source,
                     f" (new: {', '.join(added)})" if before and added else "")
            return True

    def _read(self) -> bytes:
        if not is_url(self.source):
            try:
                with open(self.source, "rb") as f:
                    return _capped(f.read(MAX_JWKS_BYTES + 1), self.source)
            except OSError as exc:
                raise JwksError(f"cannot read JWKS file {self.source}: {exc.strerror or exc}") from exc
        req = urllib.request.Request(self.source, headers={"Accept": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=self.timeout, context=self._tls) as resp:
                return _capped(resp.read(MAX_JWKS_BYTES + 1), self.source)
        except urllib.error.HTTPError as exc:
            raise JwksError(f"cannot fetch JWKS {self.source}: HTTP {exc.code} {exc.reason}") from exc
        except (urllib.error.URLError, OSError, ssl.SSLError) as exc:
            reason: Any = getattr(exc, "reason", exc)
            raise JwksError(f"cannot fetch JWKS {self.source}: {reason}") from exc


def _capped(data: bytes, source: str) -> bytes:
    if len(data) > MAX_JWKS_BYTES:
        raise JwksError(f"JWKS {source} is over {MAX_JWKS_BYTES} bytes; not a key set")
    return data
