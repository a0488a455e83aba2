"""The HTTP limits every route shares, applied before any route runs: the request body size
(`[http] max_body`) and the request rates (`[http] rate_limit`, `rate_limit_per_address`).

- A body announced larger than `max_body` (Content-Length) is answered 413 before a byte of it is
  read; a chunked one is counted as it streams in and refused (413) the moment it passes the
  limit. STOW-RS checks the same limit itself while it parses; either way the 413 is counted.
- Rates are token buckets of `rate_burst` requests refilled at the configured rate: one per
  client address, and one per credential (the Authorization header, hashed: a token, a login
  session or a user's Basic credentials, known before the route authenticates it). An empty bucket is 429
  with Retry-After. Both are off by default: a viewer opening a study sends hundreds of frame
  requests within seconds, and no clinical workflow may trip a limit nobody configured.

Behind a reverse proxy every request comes from the proxy's address: use the per-credential
rate there, or the proxy's own limits.
"""

from __future__ import annotations

import hashlib
import logging
import math
import threading
import time
from dataclasses import dataclass

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import PayloadTooLargeError
from ..refusals import REFUSALS

log = logging.getLogger("dicomvault.web")

# Buckets kept at most; beyond it, the full ones (idle long enough to have refilled) are dropped.
MAX_BUCKETS = 100_000


@dataclass
class _Bucket:
    tokens: float
    stamp: float


class RateLimiter:
    """Token buckets by key: `rate` tokens a second, at most `burst` held."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate = rate
        self.burst = float(burst)
        self._buckets: dict[bytes, _Bucket] = {}
        self._lock = threading.Lock()

    def take(self, key: bytes, now: float | None = None) -> float:
        """0 if a request may go now (a token is taken), else the seconds until one may."""
        now = time.monotonic() if now is None else now
        with self._lock:
            b = self._buckets.get(key)
            if b is None:
                if len(self._buckets) >= MAX_BUCKETS:
                    self._prune(now)
                b = self._buckets[key] = _Bucket(self.burst, now)
            b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
            b.stamp = now
            if b.tokens >= 1.0:
                b.tokens -= 1.0
                return 0.0
            return (1.0 - b.tokens) / self.rate

    def _prune(self, now: float) -> None:
        full = self.burst / self.rate
        for key in [k for k, b in self._buckets.items() if now - b.stamp >= full]:
            del self._buckets[key]


def _header(scope: Scope, name: bytes) -> bytes | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return bytes(v)
    return None


def credential_key(scope: Scope) -> bytes | None:
    """Who is asking, as far as the headers say: the Authorization header (a token, a login
    session's bearer token, Basic credentials), hashed so that no secret is kept in memory.
    None for an anonymous request."""
    auth = _header(scope, b"authorization")
    return None if auth is None else hashlib.sha256(auth).digest()


async def _plain(send: Send, status: int, text: str,
                 headers: list[tuple[bytes, bytes]] | None = None) -> None:
    body = (text + "\n").encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                            (b"content-length", str(len(body)).encode()), *(headers or [])]})
    await send({"type": "http.response.body", "body": body})


class LimitsMiddleware:
    """Pure ASGI: streamed bodies and responses pass through without being buffered."""

    def __init__(self, app: ASGIApp, max_body: int, rate_limit: float = 0.0,
                 rate_limit_per_address: float = 0.0, rate_burst: int = 200) -> None:
        self.app = app
        self.max_body = max_body
        self.by_user = RateLimiter(rate_limit, rate_burst) if rate_limit > 0 else None
        self.by_address = (RateLimiter(rate_limit_per_address, rate_burst) if rate_limit_per_address > 0
                           else None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if await self._rate_refused(scope, send):
            return
        declared = _header(scope, b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body:
            client = scope.get("client") or ("?", 0)
            why = f"request body of {int(declared)} bytes exceeds [http] max_body = {self.max_body} bytes"
            log.warning("HTTP %s %s from %s refused (413): %s", scope["method"], scope["path"], client[0],
                        why)
            REFUSALS.count("http", "max_body")
            # The body is not read: the connection is closed after the answer, not drained.
            await _plain(send, 413, why, [(b"connection", b"close")])
            return
        received = 0
        max_body = self.max_body

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_body:
                    raise PayloadTooLargeError(
                        f"request body exceeds [http] max_body = {max_body} bytes (chunked, refused at "
                        f"{received} bytes)")
            return message

        async def counting_send(message: Message) -> None:
            if message["type"] == "http.response.start" and int(message["status"]) == 413:
                REFUSALS.count("http", "max_body")  # STOW-RS's own check, or the chunked one above
            await send(message)

        await self.app(scope, counting_receive, counting_send)

    async def _rate_refused(self, scope: Scope, send: Send) -> bool:
        client = scope.get("client") or ("?", 0)
        for limiter, key, reason, what in (
                (self.by_address, str(client[0]).encode(), "rate_limit_address",
                 "[http] rate_limit_per_address"),
                (self.by_user, credential_key(scope), "rate_limit_user", "[http] rate_limit")):
            if limiter is None or key is None:
                continue
            wait = limiter.take(key)
            if wait > 0:
                retry = max(1, math.ceil(wait))
                REFUSALS.count("http", reason)
                log.warning("HTTP %s %s from %s refused (429): over %s = %g requests/s", scope["method"],
                            scope["path"], client[0], what, limiter.rate)
                await _plain(send, 429, f"too many requests: over {what} = {limiter.rate:g}/s; "
                                        f"retry after {retry} s", [(b"retry-after", str(retry).encode())])
                return True
        return False
