"""Who is asking, and may they: every route goes through `Security.require(request, action)`,
the one place HTTP requests are authenticated and authorized.

Credentials: `Authorization: Bearer <token>` or `Basic <user:password>`, checked by the user store
(auth/users.py; tokens and passwords kept hashed). With no credentials, the anonymous role applies
when the site allows one (only ever on a loopback bind: see site.py), else 401.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..auth.roles import Principal, authorize
from ..auth.users import UserStore
from ..errors import AuthenticationError, UnavailableError

Handler = Callable[[Request], Awaitable[Response]] | Callable[[Request], Response]


class Security:
    def __init__(self, users: UserStore, anonymous_role: str | None = None, *,
                 only_without_users: bool = False) -> None:
        """anonymous_role: what a request without credentials may do (None: nothing). With
        only_without_users, that holds only while the store has no users: the first user an
        admin adds turns anonymous access off, without a restart."""
        self.users = users
        self.anonymous = Principal("anonymous", anonymous_role, "anonymous") if anonymous_role else None
        self.only_without_users = only_without_users
        self._scrypt_slots = threading.BoundedSemaphore(2)

    def principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if header and header[:6].lower() == "basic ":
            found = self._basic(header)
        else:
            found = self.users.authenticate(header)
        if found is not None:
            return found
        if (self.anonymous is not None and _direct_local(request)
                and not (self.only_without_users and self.users.has_users())):
            return self.anonymous
        raise AuthenticationError("credentials required: Authorization: Bearer <token> or Basic")

    def _basic(self, header: str) -> Principal | None:
        # A password check that misses the cache is ~50 ms of scrypt and 16 MiB: without a bound,
        # anyone could keep both cores busy with wrong passwords and starve every retrieve.
        if not self._scrypt_slots.acquire(timeout=2.0):
            raise UnavailableError("too many password checks at once; retry, or use a bearer token")
        try:
            return self.users.authenticate(header)
        finally:
            self._scrypt_slots.release()

    def require(self, request: Request, action: str) -> Principal:
        p = self.principal(request)
        if p.method == "anonymous" and not p.can(action):
            # Credentials would help here: 401 (with its challenge), not 403.
            raise AuthenticationError(f"credentials required to {action}: Authorization: Bearer or Basic")
        authorize(p, action)
        request.state.principal = p
        return p


_LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1", "[::1]"})


def _direct_local(request: Request) -> bool:
    """A caller on this machine talking to us directly: loopback peer address, no proxy headers,
    and a Host naming a loopback address. Anonymous access needs all three: a reverse proxy on
    the same host connects from 127.0.0.1 for everyone behind it, and a web page could reach a
    loopback port through DNS rebinding (its Host is then the attacker's name)."""
    client = request.client.host if request.client else ""
    if not (client.startswith("127.") or client == "::1"):
        return False
    h = request.headers
    if "forwarded" in h or "x-forwarded-for" in h or "x-forwarded-host" in h:
        return False
    host = h.get("host", "")
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 or host.startswith("[") else host
    return name in _LOCAL_HOSTS or name.startswith("127.")


def secured(security: Security, action: str | None, handler: Handler) -> Callable[[Request], Awaitable[Any]]:
    """The Starlette endpoint of a route: authorize, then run the handler (a plain function runs
    in the thread pool, since it may block on the engine). action None = open (/healthz)."""
    is_async = _is_async(handler)

    async def endpoint(request: Request) -> Any:
        if action is not None:
            if request.headers.get("authorization", "")[:6].lower() == "basic ":
                # An uncached password check is ~50 ms of scrypt: not on the event loop.
                await run_in_threadpool(security.require, request, action)
            else:
                security.require(request, action)
        if is_async:
            return await handler(request)  # type: ignore[misc]
        return await run_in_threadpool(handler, request)

    endpoint.__name__ = getattr(handler, "__name__", "endpoint")
    return endpoint


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn)
