"""Login sessions: a name and password exchanged once for a bearer token a browser keeps.

A browser viewer cannot hold a long-lived user token safely, and Basic would send the password
(and cost a scrypt per cache miss) with every frame request. So a login checks the password once,
through UserStore's own check, and returns a random token valid for a bounded time.

Sessions live in this process's memory only, as the SHA-256 of their token (as users.py keeps
tokens): a restart logs everybody out, which is the safe direction, and nothing on disk can leak
them. Each use re-reads the user's role and password stamp from users.json, so removing a user,
or setting its password, ends its sessions at once.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from ..errors import AuthenticationError, RequestError
from .roles import Principal
from .users import UserStore, hash_token

DEFAULT_LIFETIME = 8 * 3600.0
_TOKEN_BYTES = 32
# Sessions are cheap, but each needs a successful login: the bound only stops a holder of valid
# credentials from growing the dict without end.
MAX_SESSIONS = 10_000


def iso_utc(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


def _duration(seconds: float) -> str:
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


@dataclass(slots=True)
class _Session:
    name: str
    stamp: str
    created: float
    deadline: float  # the absolute end
    last_used: float


@dataclass(frozen=True, slots=True)
class Session:
    """What a login returns: the token (shown once) and when the session ends at the latest."""

    token: str
    name: str
    role: str
    expires: float

    def as_dict(self) -> dict[str, str]:
        return {"token": self.token, "expires": iso_utc(self.expires), "name": self.name, "role": self.role}


class SessionStore:
    """The open sessions of one server. Thread-safe.

    lifetime: seconds from login to the end, however busy the session (default 8 h); idle:
    seconds without a request after which it ends too (None: no idle limit)."""

    def __init__(self, users: UserStore, *, lifetime: float = DEFAULT_LIFETIME, idle: float | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        if lifetime <= 0 or (idle is not None and idle <= 0):
            raise RequestError(f"session lifetime {lifetime} and idle {idle} must be positive seconds")
        self.users = users
        self.lifetime = lifetime
        self.idle = idle
        # Public so tests (and nothing else) can move time forward.
        self.clock = clock
        self._lock = threading.Lock()
        self._sessions: dict[str, _Session] = {}

    def _end(self, s: _Session) -> float:
        return s.deadline if self.idle is None else min(s.deadline, s.last_used + self.idle)

    def login(self, name: str, password: str) -> Session:
        """A new session of `name`. Runs scrypt: the caller bounds how many run at once (see
        web/security.py) and keeps it off the event loop. AuthenticationError when the name or
        password is wrong (one message for both)."""
        role, stamp = self.users.verify_login(name, password)
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        now = self.clock()
        s = _Session(name, stamp, now, now + self.lifetime, now)
        with self._lock:
            if len(self._sessions) >= MAX_SESSIONS:
                self._prune(now)
            self._sessions[hash_token(token)] = s
        return Session(token, name, role, self._end(s))

    def _prune(self, now: float) -> None:
        for k in [k for k, s in self._sessions.items() if self._end(s) <= now]:
            del self._sessions[k]
        while len(self._sessions) >= MAX_SESSIONS:
            # Oldest login first: it has the least time left.
            del self._sessions[min(self._sessions, key=lambda k: self._sessions[k].created)]

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a session token; None when `token` is no session (maybe a user or
        share token); AuthenticationError when it was one and has ended."""
        digest = hash_token(token)
        s = self._sessions.get(digest)
        if s is None:
            return None
        now = self.clock()
        if self._end(s) <= now:
            self._drop(digest)
            why = "idle too long" if s.deadline > now else f"past its {_duration(self.lifetime)} lifetime"
            raise AuthenticationError(f"session of {s.name!r} expired ({why}); log in again")
        state = self.users.session_state(s.name)
        if state is None or state[1] != s.stamp:
            self._drop(digest)
            raise AuthenticationError(
                f"session of {s.name!r} ended: the user was removed or its password changed; log in again")
        s.last_used = now
        return Principal(s.name, state[0], "session")

    def expires(self, token: str) -> float | None:
        """When the session of `token` ends if it stays in use; None when it is no session."""
        s = self._sessions.get(hash_token(token))
        return None if s is None else self._end(s)

    def logout(self, token: str) -> bool:
        """Ends the session of `token`; False when it was none (or had already ended)."""
        return self._drop(hash_token(token))

    def _drop(self, digest: str) -> bool:
        with self._lock:
            return self._sessions.pop(digest, None) is not None

    def __len__(self) -> int:
        return len(self._sessions)
