"""Routes, requests and responses: just enough structure that each service (replication,
admin, DICOMweb later) registers its own handlers without touching the HTTP plumbing."""

from __future__ import annotations

import hmac
import re
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import parse_qs

ADMIN = "admin"
REPLICATION = "replication"
INGEST = "ingest"


class HttpError(Exception):
    """Raised by a handler: becomes a response with this status and reason as the body."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    client: str
    params: dict[str, str] = field(default_factory=dict)
    # identity of the bearer token that authorised the request (its name, not the secret)
    principal: str = ""

    def arg(self, name: str, default: str | None = None) -> str | None:
        vals = self.query.get(name)
        return vals[0] if vals else default

    def int_arg(self, name: str, default: int) -> int:
        raw = self.arg(name)
        if raw is None:
            return default
        try:
            return int(raw)
        except ValueError:
            raise HttpError(400, f"query parameter {name}={raw!r} is not an integer") from None


@dataclass
class Response:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/octet-stream"
    headers: dict[str, str] = field(default_factory=dict)


Handler = Callable[[Request], Response]


@dataclass
class _Route:
    method: str
    pattern: re.Pattern[str]
    role: str | None
    handler: Handler


class Tokens:
    """Bearer tokens with roles. Comparisons are constant-time; the principal of a token is a
    short name (`replica-<n>` unless given as `name=secret`), never the secret itself."""

    def __init__(self) -> None:
        self._tokens: list[tuple[bytes, str, frozenset[str]]] = []

    def add(self, token: str, roles: Iterable[str], name: str | None = None) -> None:
        if "=" in token and name is None:
            name, token = token.split("=", 1)
        if not token:
            raise ValueError("an empty token would authorise anyone")
        self._tokens.append((token.encode(), name or f"token-{len(self._tokens) + 1}", frozenset(roles)))

    def check(self, header: str | None, role: str) -> str:
        """The principal for an `Authorization: Bearer ...` header holding `role`, else raises."""
        if not header or not header.startswith("Bearer "):
            raise HttpError(401, "missing Authorization: Bearer token")
        given = header[len("Bearer "):].strip().encode()
        for secret, name, roles in self._tokens:
            if hmac.compare_digest(secret, given):
                if role not in roles:
                    raise HttpError(403, f"token {name} lacks the {role} role")
                return name
        raise HttpError(401, "unknown token")


class Router:
    """Maps (method, path regex) to handlers; `{name}` segments become `request.params`."""

    def __init__(self, tokens: Tokens) -> None:
        self.tokens = tokens
        self._routes: list[_Route] = []
        # set when the service stops: long polls return, failures of in-flight requests are 503s
        self.closing = threading.Event()

    def add(self, method: str, path: str, handler: Handler, role: str | None) -> None:
        """role None = open (health checks); otherwise the bearer token must hold it."""
        regex = "^" + re.sub(r"\{(\w+)\}", r"(?P<\1>[^/]+)", path) + "$"
        self._routes.append(_Route(method.upper(), re.compile(regex), role, handler))

    def dispatch(self, method: str, raw_path: str, headers: Mapping[str, str], body: bytes,
                 client: str) -> Response:
        path, _, qs = raw_path.partition("?")
        allowed = False
        for route in self._routes:
            m = route.pattern.match(path)
            if m is None:
                continue
            allowed = True
            if route.method != method:
                continue
            req = Request(method, path, parse_qs(qs), headers, body, client, params=m.groupdict())
            try:
                if route.role is not None:
                    req.principal = self.tokens.check(headers.get("Authorization"), route.role)
                return route.handler(req)
            except HttpError as exc:
                return Response(exc.status, exc.reason.encode(), "text/plain; charset=utf-8")
        if allowed:
            return Response(405, f"{method} not allowed on {path}".encode(), "text/plain; charset=utf-8")
        return Response(404, f"no such resource: {path}".encode(), "text/plain; charset=utf-8")
