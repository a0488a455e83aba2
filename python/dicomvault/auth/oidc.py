"""OpenID Connect bearer tokens: a JWT the site's identity provider signed, checked against its
JWKS (auth/jwks.py) and mapped to one of our roles (auth/roles.py) through `[http.oidc]`
(auth/oidc_settings.py).

A token is accepted only when: its header names one of the configured asymmetric algorithms
(never "none", never HMAC: the JWKS is public) and a key of the JWKS for that algorithm; the
signature verifies; `iss` is the configured issuer, `aud` names the configured audience, `exp`
is present and not past, `nbf` and `iat` are not in the future (all within `leeway`).

Who: the `username_claim` (default preferred_username), else `sub`. Role: every value of the
`roles_claim` that `role_map` maps; with several, the widest (admin > writer > replicator >
reader, by the actions each allows). A valid token with no mapped role may do nothing (403).

Tokens that are not JWTs (our own session, share and user tokens are opaque random strings)
never come here: `looks_like_jwt` tells them apart without any key.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

import jwt
from jwt import exceptions as jwt_errors

from ..errors import InvalidTokenError, PermissionDeniedError, UnavailableError
from .jwks import JwksCache
from .oidc_settings import OidcSettings
from .roles import ROLE_ACTIONS, ROLES, Principal

log = logging.getLogger("dicomvault.auth")

_MAX_TOKEN_CHARS = 16384
# A verified token is remembered (by its SHA-256) for this long at most, and never past its exp:
# a viewer sends the same token with every frame, and a signature check costs ~300-400 us of
# event loop (RS256/ES256 here) against ~2 us for the lookup. It also bounds how long a key the
# provider withdrew keeps working for tokens already seen.
VERIFIED_CACHE_SECONDS = 60.0
_VERIFIED_CACHE_MAX = 10_000
_MAX_NAME_CHARS = 256
_B64URL = re.compile(r"[A-Za-z0-9_-]+")


def _b64json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def unverified_header(token: str) -> dict[str, Any] | None:
    """The JOSE header of a compact JWS (three base64url segments), None when `token` is not one.
    Nothing in it is trusted: it only says which key and algorithm to check the token with."""
    if len(token) > _MAX_TOKEN_CHARS or token.count(".") != 2:
        return None
    head = token.split(".", 1)[0]
    if not _B64URL.fullmatch(head):
        return None
    try:
        header = _b64json(head)
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) and "alg" in header else None


def looks_like_jwt(token: str) -> bool:
    return unverified_header(token) is not None


def claim(claims: dict[str, Any], path: str) -> Any:
    """A claim by name; a dotted name walks into objects ("realm_access.roles") unless the token
    has a claim of that very name (namespaced claims such as "https://example.org/roles")."""
    if path in claims:
        return claims[path]
    value: Any = claims
    for part in path.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def _strings(value: Any) -> list[str]:
    # One string is one role or group: splitting on spaces would turn "Radiology Staff" into two.
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [v for v in value if isinstance(v, str)]
    return []


def widest(roles: list[str]) -> str:
    return max(roles, key=lambda r: (len(ROLE_ACTIONS[r]), -ROLES.index(r)))


def _safe(text: str) -> str:
    """Printable ASCII without quotes or backslashes: what RFC 6750 allows in error_description
    (and what may go into a log line from a token's own claims)."""
    return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "?" for c in text)[:200]


def _printable(name: str) -> str:
    # Names go into log lines and the audit trail: no control characters (a forged newline), but
    # names in any script stay as they are.
    return "".join(c if c.isprintable() else "?" for c in name)


# PyJWT's failures, as the client is told them.
_REASONS: tuple[tuple[type[Exception], str], ...] = (
    (jwt_errors.ExpiredSignatureError, "token expired"),
    (jwt_errors.InvalidIssuedAtError, "token iat is not a number"),
    (jwt_errors.InvalidIssuerError, "wrong issuer"),
    (jwt_errors.InvalidAudienceError, "wrong audience"),
    (jwt_errors.InvalidSignatureError, "signature does not verify"),
    (jwt_errors.InvalidAlgorithmError, "algorithm not accepted"),
    (jwt_errors.DecodeError, "malformed token"),
)


def _reason(exc: jwt_errors.PyJWTError) -> str:
    if isinstance(exc, jwt_errors.MissingRequiredClaimError):
        return f"token lacks the {exc.claim} claim"
    if isinstance(exc, jwt_errors.ImmatureSignatureError):
        # PyJWT raises it for both claims; its message names which.
        return "token issued in the future (iat)" if "(iat)" in str(exc) else "token not valid yet (nbf)"
    for cls, text in _REASONS:
        if isinstance(exc, cls):
            return text
    return "invalid token"


class OidcVerifier:
    """Checks tokens of one identity provider. `authenticate` never does I/O; when
    `wants_refresh(token)` says so, run `refresh()` in a thread first."""

    def __init__(self, settings: OidcSettings, jwks: JwksCache | None = None, *,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.jwks = jwks if jwks is not None else JwksCache(
            settings.jwks, settings.algorithms, min_interval=settings.jwks_refresh_min,
            max_age=settings.jwks_max_age, ca=settings.jwks_ca)
        # Public so tests can move time forward.
        self.clock = clock
        self._verified: dict[str, tuple[Principal, float]] = {}
        self._lock = threading.Lock()

    def wants_refresh(self, token: str) -> bool:
        header = unverified_header(token)
        if header is None or header.get("alg") not in self.settings.algorithms:
            return False  # refused without any key
        kid = header.get("kid")
        return self.jwks.needs_refresh(kid if isinstance(kid, str) else None, header["alg"])

    def refresh(self) -> None:
        if self.jwks.refresh():
            # A key the provider withdrew must not live on in tokens verified with it.
            self.forget_verified()

    def authenticate(self, token: str) -> Principal:
        """The principal of a valid token. InvalidTokenError (401) when it does not hold,
        PermissionDeniedError (403) when it holds but maps to none of our roles, UnavailableError
        (503) when no key was ever loaded (the provider unreachable since the start)."""
        digest = hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()
        known = self._verified.get(digest)
        now = self.clock()
        if known is not None and now < known[1]:
            return known[0]
        p, exp = self._check(token)
        with self._lock:
            if len(self._verified) >= _VERIFIED_CACHE_MAX:
                for k in [k for k, (_, until) in self._verified.items() if until <= now]:
                    del self._verified[k]
                if len(self._verified) >= _VERIFIED_CACHE_MAX:
                    self._verified.clear()
            self._verified[digest] = (p, min(exp, now + VERIFIED_CACHE_SECONDS))
        return p

    def forget_verified(self) -> None:
        """Every token is checked in full again (after the keys changed)."""
        with self._lock:
            self._verified.clear()

    def _check(self, token: str) -> tuple[Principal, float]:
        header = unverified_header(token)
        if header is None:
            raise InvalidTokenError("bearer token is not a JWT", "malformed token")
        alg = header.get("alg")
        if alg not in self.settings.algorithms:
            shown = _safe(str(alg))
            raise InvalidTokenError(
                f"token signed with {shown!r}; accepted: {', '.join(self.settings.algorithms)}",
                f"algorithm {shown} not accepted", "algorithm not accepted")
        kid = header.get("kid") if isinstance(header.get("kid"), str) else None
        keys = self.jwks.find(kid, alg)
        if not keys:
            if not self.jwks.loaded:
                raise UnavailableError(f"cannot check identity-provider tokens: no signing keys from "
                                       f"{self.settings.jwks} ({self.jwks.last_error or 'not fetched yet'})")
            shown = _safe(str(kid))
            raise InvalidTokenError(f"token names signing key kid={shown} ({alg}), which the JWKS "
                                    f"{self.settings.jwks} does not hold", f"unknown signing key {shown}",
                                    "unknown signing key")
        claims = self._decode(token, keys, alg)
        name = self._name(claims)
        idp_roles = _strings(claim(claims, self.settings.roles_claim))
        ours = self.settings.roles_for(idp_roles)
        if not ours:
            raise PermissionDeniedError(
                f"identity-provider user {name!r} has no role here: its {self.settings.roles_claim} "
                f"claim holds {[_safe(r) for r in idp_roles[:20]]}, and [http.oidc] role_map maps only "
                f"{sorted(dict(self.settings.role_map))}")
        return Principal(name, widest(ours), "oidc"), float(claims["exp"])

    def _decode(self, token: str, keys: list[Any], alg: str) -> dict[str, Any]:
        s = self.settings
        failure: jwt_errors.PyJWTError | None = None
        # Without a kid, each key of the algorithm is tried: a JWKS holds a handful.
        for k in keys:
            try:
                claims = jwt.decode(
                    token, k.key, algorithms=[alg], audience=list(s.audience), issuer=s.issuer,
                    leeway=s.leeway, options={"require": ["exp", "iss", "aud"]})
            except jwt_errors.InvalidSignatureError as exc:
                failure = exc
                continue
            except jwt_errors.PyJWTError as exc:
                failure = exc
                break
            if not isinstance(claims, dict):
                raise InvalidTokenError("token payload is not a JSON object", "malformed token")
            return claims
        assert failure is not None
        reason = _reason(failure)
        raise InvalidTokenError(f"{reason}: {_safe(str(failure))}", reason) from failure

    def _name(self, claims: dict[str, Any]) -> str:
        for key in (self.settings.username_claim, "sub"):
            value = claim(claims, key)
            if isinstance(value, str) and value.strip():
                return _printable(value.strip())[:_MAX_NAME_CHARS]
        raise InvalidTokenError(f"token has neither a {self.settings.username_claim} nor a sub claim",
                                "token names no user")

