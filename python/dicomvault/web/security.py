"""Who is asking, and may they: every route goes through `Security.require(request, action)`,
the one place HTTP requests are authenticated and authorized.

Credentials: `Authorization: Bearer <token>` (a login session, a share link, a user token or a
runtime token) or `Basic <user:password>`, checked by the stores in auth/ (secrets kept hashed);
with `[http.oidc]`, a bearer token that is a JWT is checked as the identity provider's instead
(auth/oidc.py): 401 with RFC 6750's `invalid_token` when it does not hold, 403 when its roles
do not allow the action.
With no credentials, the anonymous role applies when the site allows one (only ever on a
loopback bind: see site.py), else 401.

A principal bound to one study (a share link) is confined here too, and only here: a route may
serve it only when the route's path parameter `study` is that study, or when the route was
declared `any_study` (it reveals nothing of any study: GET /api/session). Every other route
refuses it with 403, so a route added later is closed to share links until it names a study.

Every endpoint says which it is: `secured` marks its endpoint with the action it requires,
`public` marks what is open on purpose (the viewer's files), and tests/web/test_route_security.py
walks the route table for anything marked neither.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import inspect
import logging
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response

from ..audit.changes import config_changed
from ..audit.log import FAILURE, LOGIN, SHARE_SCOPE_REFUSED, SHARE_USED, SUCCESS, AuditLog, Record
from ..audit.web import WebAudit
from ..auth.oidc import OidcVerifier, looks_like_jwt
from ..auth.roles import Principal, authorize
from ..auth.sessions import Session, SessionStore
from ..auth.shares import ShareStore
from ..auth.users import UserStore, validate_name
from ..errors import (
    AuthenticationError,
    InvalidTokenError,
    PermissionDeniedError,
    RequestError,
    UnavailableError,
)

Handler = Callable[[Request], Awaitable[Response]] | Callable[[Request], Response]

# A share link's viewer fetches every frame with it: one "used" line per share per hour says who
# looked, without a line per frame.
SHARE_USED_EVERY = 3600.0
# Off-scope attempts are what the audit is for, but a script can make them at will.
SHARE_REFUSED_EVERY = 60.0
# An identity-provider token is presented with every request: its user's authentication is
# recorded once per hour. Refused tokens: the first of each reason per client per minute, the
# rest counted in the next line (a client can send them at will; each line is an fsync).
OIDC_LOGIN_EVERY = 3600.0
OIDC_REFUSED_EVERY = 60.0
_PENDING = "dicomvault.audit"
# The attribute `secured` and `public` set on an endpoint: the action it requires, or PUBLIC.
ACCESS_ATTR = "dicomvault_access"
PUBLIC = "public"

log = logging.getLogger("dicomvault.web")


class Security:
    def __init__(self, users: UserStore, anonymous_role: str | None = None, *,
                 only_without_users: bool = False, sessions: SessionStore | None = None,
                 shares: ShareStore | None = None, audit: AuditLog | None = None,
                 oidc: OidcVerifier | None = None,
                 patient_of: Callable[[str], str | None] | None = None) -> None:
        """anonymous_role: what a request without credentials may do (None: nothing). With
        only_without_users, that holds only while the store has no users: the first user an
        admin adds turns anonymous access off, without a restart. sessions and shares default to
        fresh stores of the users' data directory; audit None writes no audit trail; oidc None:
        JWT bearer tokens are not accepted (they reach the token stores, which know none).
        patient_of(study UID) names the patient in access records."""
        self.users = users
        self.anonymous = Principal("anonymous", anonymous_role, "anonymous") if anonymous_role else None
        self.only_without_users = only_without_users
        self.sessions = sessions if sessions is not None else SessionStore(users)
        self.shares = shares if shares is not None else ShareStore(users.dir.parent)
        self.audit = audit
        self.oidc = oidc
        # reads, searches and refused credentials: counted here, written by a thread (audit/web.py)
        self.events = WebAudit(audit, patient_of) if audit is not None else None
        self._scrypt_slots = threading.BoundedSemaphore(2)

    # -- who --

    def principal(self, request: Request) -> Principal:
        header = request.headers.get("authorization")
        if header and header[:6].lower() == "basic ":
            found = self._basic(header)
        else:
            token = bearer_token(header)
            if token and self.oidc is not None and looks_like_jwt(token):
                return self._oidc(request, self.oidc, token)
            found = self._bearer(header)
        if found is not None:
            return found
        if (self.anonymous is not None and _direct_local(request)
                and not (self.only_without_users and self.users.has_users())):
            return self.anonymous
        raise AuthenticationError("credentials required: Authorization: Bearer <token> or Basic")

    def _bearer(self, header: str | None) -> Principal | None:
        token = bearer_token(header)
        if token:
            # Sessions first (memory only), then shares, then user and runtime tokens: whichever
            # store knows the token's hash answers; the last one reports an unknown token.
            found = self.sessions.authenticate(token)
            if found is None:
                found = self.shares.authenticate(token)
            if found is not None:
                return found
        return self.users.authenticate(header)

    def _oidc(self, request: Request, oidc: OidcVerifier, token: str) -> Principal:
        client = client_of(request)
        try:
            p = oidc.authenticate(token)
        except InvalidTokenError as exc:
            # The reason, never the token: a refused token may still be someone's valid one
            # for another audience.
            log.warning("OIDC token from %s refused: %s", client, exc)
            self._pend(request, LOGIN, FAILURE, None, None, {"method": "oidc", "reason": str(exc)},
                       (f"oidc-refused:{client}:{exc.kind}", OIDC_REFUSED_EVERY))
            raise
        except PermissionDeniedError as exc:
            log.warning("OIDC token from %s: %s", client, exc)
            raise
        self._pend(request, LOGIN, SUCCESS, p.name, None, {"method": "oidc", "role": p.role},
                   (f"oidc:{p.name}:{p.role}", OIDC_LOGIN_EVERY))
        return p

    def key_refresh_due(self, header: str | None) -> bool:
        """A JWT bearer token whose signing key we may have to fetch first (no I/O here)."""
        token = bearer_token(header) if self.oidc is not None else None
        return token is not None and self.oidc is not None and self.oidc.wants_refresh(token)

    def refresh_keys(self) -> None:
        """Fetches the identity provider's keys again (blocking: call it in the thread pool)."""
        if self.oidc is not None:
            self.oidc.refresh()

    @contextlib.contextmanager
    def password_slot(self) -> Iterator[None]:
        """Held around every password check. One that misses the cache is ~50 ms of scrypt and
        16 MiB: without a bound, anyone could keep both cores busy with wrong passwords (over
        Basic or the login route alike) and starve every retrieve."""
        if not self._scrypt_slots.acquire(timeout=2.0):
            raise UnavailableError("too many password checks at once; retry, or use a bearer token")
        try:
            yield
        finally:
            self._scrypt_slots.release()

    def _basic(self, header: str) -> Principal | None:
        with self.password_slot():
            return self.users.authenticate(header)

    def login(self, name: str, password: str) -> Session:
        """A new session for `name` (blocking: call it in the thread pool)."""
        with self.password_slot():
            return self.sessions.login(name, password)

    def expires(self, request: Request) -> float | None:
        """When the session or share link the request bears ends; None for other credentials."""
        token = bearer_token(request.headers.get("authorization"))
        if not token:
            return None
        found = self.sessions.expires(token)
        return found if found is not None else self.shares.expires(token)

    # -- may they --

    def require(self, request: Request, action: str, *, any_study: bool = False) -> Principal:
        p = self.principal(request)
        if p.method == "anonymous" and not p.can(action):
            # Credentials would help here: 401 (with its challenge), not 403.
            raise AuthenticationError(f"credentials required to {action}: Authorization: Bearer or Basic")
        if p.method in ("basic", "token") and self.events is not None:
            self.events.authenticated(p.name, client_of(request), p.method)
        authorize(p, action)
        if p.study is not None:
            self._confine(request, p, any_study)
        request.state.principal = p
        return p

    def _confine(self, request: Request, p: Principal, any_study: bool) -> None:
        """The study scope check. The route's `study` path parameter comes from Starlette's
        merged path_params, which include those of enclosing Mounts (tests/web/test_share_scope.py)."""
        asked = request.path_params.get("study")
        where = f"{request.method} {request.url.path}"
        if any_study or asked == p.study:
            if p.method == "share":
                self._pend(request, SHARE_USED, SUCCESS, p.name, p.study, {"path": where},
                           (f"used:{p.name}", SHARE_USED_EVERY))
            return
        self._pend(request, SHARE_SCOPE_REFUSED, FAILURE, p.name, p.study, {"path": where},
                   (f"refused:{p.name}", SHARE_REFUSED_EVERY))
        raise PermissionDeniedError(f"{p.name} may read study {p.study} only, not {where}")

    def _pend(self, request: Request, event: str, outcome: str, user: str | None, study: str | None,
              detail: dict[str, Any], once_per: tuple[str, float]) -> None:
        # Decided now (cheap); written by `secured` in the thread pool (an fsync, not on the loop).
        if self.audit is None:
            return
        rec = self.audit.event(event, outcome, user=user, client=client_of(request), study=study,
                               detail=detail, once_per=once_per)
        if rec is not None:
            request.scope.setdefault(_PENDING, []).append(rec)

    def take_pending(self, request: Request) -> list[Record]:
        return request.scope.pop(_PENDING, None) or []

    def accessed(self, request: Request, kind: str) -> None:
        """A read served: counted in its (user, client, study) burst; no fsync here."""
        study = request.path_params.get("study") or request.query_params.get("studyUID")
        p = getattr(request.state, "principal", None)
        if self.events is not None and study and p is not None:
            self.events.accessed(p.name, client_of(request), study, kind)

    def queried(self, request: Request, level: str, keys: dict[str, str], matches: int,
                protocol: str = "QIDO-RS") -> None:
        p = getattr(request.state, "principal", None)
        if self.events is not None:
            self.events.queried(p.name if p else None, client_of(request), level, keys, matches,
                                study=request.path_params.get("study"), protocol=protocol)

    def refused_credentials(self, request: Request, exc: AuthenticationError) -> None:
        """Credentials given and refused (not merely missing): a throttled audit record. An
        identity provider's token is recorded where it is checked (`_oidc`), with its reason."""
        header = request.headers.get("authorization")
        if self.events is not None and header and not isinstance(exc, InvalidTokenError):
            method = header.strip().partition(" ")[0].lower()
            self.events.auth_failed(client_of(request), method, str(exc),
                                    _basic_user(header) if method == "basic" else None)

    def config_changed(self, request: Request, what: str, action: str, target: str | None,
                       detail: dict[str, Any] | None = None) -> None:
        """The Security Alert of a configuration change made through a route (an fsync: call it
        off the event loop)."""
        p = getattr(request.state, "principal", None)
        if self.audit is not None:
            config_changed(self.audit, what, action, target, user=p.name if p else None,
                           client=client_of(request) or "unknown", detail=detail)

    def close(self) -> None:
        """Writes the audit records still counted or queued."""
        if self.events is not None:
            self.events.close()

    def record(self, request: Request, event: str, outcome: str, *, user: str | None,
               study: str | None = None, detail: dict[str, Any] | None = None) -> None:
        """Writes an audit event of `request` now (an fsync: call it off the event loop)."""
        if self.audit is not None:
            self.audit.record(event, outcome, user=user, client=client_of(request), study=study,
                              detail=detail)


def bearer_token(header: str | None) -> str | None:
    scheme, _, rest = (header or "").strip().partition(" ")
    if scheme.lower() != "bearer":
        return None
    return rest.strip() or None


def _basic_user(header: str) -> str | None:
    """The user name of a Basic header, when it is a valid one (a password typed in the name
    field is not written to the audit log)."""
    try:
        raw = base64.b64decode(header.strip()[6:].strip(), validate=True).decode("utf-8")
        return validate_name(raw.partition(":")[0])
    except (binascii.Error, ValueError, RequestError):
        return None


def client_of(request: Request) -> str | None:
    """The peer address (a reverse proxy's own, behind one): what the audit log records."""
    return request.client.host if request.client else None


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


def secured(security: Security, action: str | None, handler: Handler, *,
            any_study: bool = False, access: str | None = None) -> Callable[[Request], Awaitable[Any]]:
    """The Starlette endpoint of a route: authorize, then run the handler (a plain function runs
    in the thread pool, since it may block on the engine). action None = open (/healthz).
    any_study: a principal bound to one study may use the route whatever its path (the route
    serves nothing of any study). access: the route reads a study's objects (the kind of read, as
    the audit trail counts it), named by its path's `study` or WADO-URI's studyUID."""
    is_async = _is_async(handler)

    async def endpoint(request: Request) -> Any:
        if action is not None:
            try:
                header = request.headers.get("authorization", "")
                if header[:6].lower() == "basic ":
                    # An uncached password check is ~50 ms of scrypt: not on the event loop.
                    await run_in_threadpool(security.require, request, action, any_study=any_study)
                else:
                    if security.key_refresh_due(header):
                        # A key the identity provider rotated in: fetched off the event loop.
                        await run_in_threadpool(security.refresh_keys)
                    security.require(request, action, any_study=any_study)
            except AuthenticationError as exc:
                security.refused_credentials(request, exc)
                raise
            finally:
                pending = security.take_pending(request)
                if pending and security.audit is not None:
                    await run_in_threadpool(security.audit.write, pending)
        if is_async:
            response = await handler(request)  # type: ignore[misc]
        else:
            response = await run_in_threadpool(handler, request)
        if access is not None and getattr(response, "status_code", 500) < 400:
            security.accessed(request, access)
        return response

    endpoint.__name__ = getattr(handler, "__name__", "endpoint")
    setattr(endpoint, ACCESS_ATTR, action or PUBLIC)
    return endpoint


T = TypeVar("T")


def public(app: T) -> T:
    """Marks an endpoint or ASGI app that serves everyone on purpose (it holds no data: the
    viewer's files), so the route walk of the tests tells it from a route that forgot `secured`."""
    setattr(app, ACCESS_ATTR, PUBLIC)
    return app


def access_of(endpoint: object) -> str | None:
    """The action an endpoint requires, PUBLIC, or None when it went through neither `secured`
    nor `public`."""
    return getattr(endpoint, ACCESS_ATTR, None)


def _is_async(fn: Any) -> bool:
    return inspect.iscoroutinefunction(fn)
