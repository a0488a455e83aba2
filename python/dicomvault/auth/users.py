"""The users of the HTTP side: `<data>/auth/users.json`, shared by the server and the CLI.

The CLI edits the file while a server may be running; the server notices on the next request
because every `authenticate` compares the file's (mtime_ns, size, inode) with the last load
(one stat, about a microsecond). Writers take an fcntl lock on a separate lock file, re-read
the file under it, and replace it atomically (temp file, fsync, rename, fsync of the directory),
so two CLI processes never lose each other's change and a reader never sees half a file.

Secrets are never stored: tokens as SHA-256 (they are 256 random bits, so a fast hash loses
nothing and keeps every request cheap), passwords as salted scrypt with its parameters.
"""

from __future__ import annotations

import base64
import binascii
import functools
import hashlib
import hmac
import os
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from ..errors import AuthenticationError, ConflictError, DicomVaultError, NotFoundError, RequestError
from .jsonfile import StampedJson
from .roles import Principal, check_role

AUTH_DIR = "auth"
USERS_FILE = "users.json"
LOCK_FILE = "users.lock"
FILE_VERSION = 1

# How long a successful Basic check is trusted without running scrypt again. Short, because a
# cached entry outlives nothing else: a password change or a removal takes effect at once anyway
# (the stored hash is part of the key and the user is looked up on every request).
BASIC_CACHE_SECONDS = 60.0
_BASIC_CACHE_MAX = 4096


_NAME_RE = re.compile(r"[A-Za-z0-9._@-]{1,64}")
_MAX_PASSWORD_CHARS = 4096
_TOKEN_BYTES = 32

_SCHEME = "scrypt"
# 2**14 x 8 costs ~16 MiB and ~50 ms on this machine kind: the usual interactive-login setting.
SCRYPT_N = 1 << 14
SCRYPT_R = 8
SCRYPT_P = 1
_DKLEN = 32
_SALT_BYTES = 16

T = TypeVar("T")


# --- hashing ---------------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # hashlib's default maxmem (32 MiB) is barely above 2**14 x 8; size it from the parameters so
    # a hash stored with stronger ones stays verifiable.
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=256 * r * n + (1 << 20))


def hash_password(password: str) -> str:
    """`scrypt$N$r$p$salt$hash`: the parameters travel with the hash, so raising them later
    leaves existing passwords verifiable."""
    salt = os.urandom(_SALT_BYTES)
    digest = _scrypt(password, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, _DKLEN)
    return f"{_SCHEME}${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def parse_password_hash(stored: str) -> tuple[int, int, int, bytes, bytes]:
    """(n, r, p, salt, digest) of a stored hash; ValueError saying what is wrong."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != _SCHEME:
        raise ValueError(f"password hash is not {_SCHEME}$N$r$p$salt$hash")
    n, r, p = (int(x) for x in parts[1:4])
    if n < 2 or n & (n - 1) or n > 1 << 20 or not 1 <= r <= 64 or not 1 <= p <= 16:
        raise ValueError(f"scrypt parameters out of range: N={n} r={r} p={p}")
    try:
        salt, digest = _unb64(parts[4]), _unb64(parts[5])
    except binascii.Error as exc:
        raise ValueError(f"password hash salt or digest is not base64: {exc}") from exc
    if not salt or len(digest) < 16:
        raise ValueError("password hash has an empty salt or a short digest")
    return n, r, p, salt, digest


def verify_password(password: str, stored: str) -> bool:
    n, r, p, salt, digest = parse_password_hash(stored)
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(digest)), digest)


@functools.cache
def _dummy_hash() -> str:
    # Checked against when a name has no password, so a failed login costs the same whether or
    # not the name exists (no user enumeration by timing).
    return hash_password(secrets.token_urlsafe(24))


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


# --- validation ------------------------------------------------------------------------------


def validate_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
        raise RequestError(f"invalid user name {name!r}: 1-64 characters of A-Z a-z 0-9 . _ @ -")
    return name


def _validate_password(name: str, password: str) -> str:
    if not password:
        raise RequestError(f"empty password for user {name!r}")
    if len(password) > _MAX_PASSWORD_CHARS:
        raise RequestError(f"password for user {name!r} is over {_MAX_PASSWORD_CHARS} characters")
    return password


def split_token_spec(spec: str, default_name: str) -> tuple[str, str]:
    """(name, secret) of a `--replication-token` value: `NAME=SECRET`, or a bare SECRET that
    gets `default_name`."""
    name, sep, secret = spec.partition("=")
    if not sep:
        name, secret = default_name, spec
    if not secret:
        raise RequestError(f"replication token {name!r} has an empty secret")
    return validate_name(name), secret


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# --- the store -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UserInfo:
    """What `users list` shows: never a secret or a hash."""

    name: str
    role: str
    has_password: bool
    tokens: int
    created: str

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "has_password": self.has_password,
                "tokens": self.tokens, "created": self.created}


@dataclass(frozen=True, slots=True)
class _Snapshot:
    users: dict[str, dict[str, Any]]
    by_token: dict[str, str]  # SHA-256 hex of a token -> user name


_EMPTY = _Snapshot({}, {})


class UserStore:
    """Users, roles, tokens and passwords of one data directory, plus runtime credentials (the
    per-start admin token, replication tokens) that live only in this object.

    Thread-safe: `authenticate` may be called from any thread of the server."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.dir = Path(data_dir) / AUTH_DIR
        self.path = self.dir / USERS_FILE
        self._lock = threading.Lock()
        # The file's snapshot, re-read when another process changed it (jsonfile.py says how).
        self._file: StampedJson[_Snapshot] = StampedJson(self.path, LOCK_FILE, self._parse)
        self._runtime: dict[str, Principal] = {}
        self._basic_cache: dict[bytes, float] = {}

    # -- reading --

    def _parse(self, doc: dict[str, Any] | None) -> _Snapshot:
        if doc is None:
            return _EMPTY
        if doc.get("version") != FILE_VERSION or not isinstance(doc.get("users"), dict):
            raise DicomVaultError(f"{self.path}: not a version {FILE_VERSION} users file")
        users: dict[str, dict[str, Any]] = doc["users"]
        by_token: dict[str, str] = {}
        for name, rec in users.items():
            try:
                validate_name(name)
                check_role(rec["role"])
                if rec.get("password") is not None:
                    parse_password_hash(rec["password"])
                for tok in rec.get("tokens", []):
                    by_token[str(tok["sha256"])] = name
            except (DicomVaultError, ValueError, KeyError, TypeError) as exc:
                raise DicomVaultError(f"{self.path}: user {name!r}: bad record ({exc})") from exc
        return _Snapshot(users, by_token)

    def _current(self) -> _Snapshot:
        """The users as the file holds them now: re-read when its stamp moved (or it is young)."""
        return self._file.current()

    # -- writing --

    def _mutate(self, change: Callable[[dict[str, dict[str, Any]]], T]) -> T:
        """Applies `change` to (a private copy of) the users as the file holds them under the
        lock, then writes them. `change` raises to abandon (nothing is written)."""

        def edit(doc: dict[str, Any] | None) -> tuple[dict[str, Any], T]:
            users: dict[str, dict[str, Any]] = doc["users"] if doc is not None else {}
            result = change(users)
            return {"version": FILE_VERSION, "users": users}, result

        return self._file.mutate(edit)

    # -- administration --

    def add(self, name: str, role: str, password: str | None = None) -> UserInfo:
        validate_name(name)
        check_role(role)
        hashed = hash_password(_validate_password(name, password)) if password is not None else None

        def change(users: dict[str, dict[str, Any]]) -> UserInfo:
            if name in users:
                raise ConflictError(f"user {name!r} already exists (role {users[name]['role']})")
            users[name] = {"role": role, "created": _now(), "password": hashed, "tokens": []}
            return _info(name, users[name])

        return self._mutate(change)

    def remove(self, name: str) -> None:
        def change(users: dict[str, dict[str, Any]]) -> None:
            if users.pop(name, None) is None:
                raise NotFoundError(f"no user {name!r} in {self.path}")

        self._mutate(change)

    def set_password(self, name: str, password: str) -> None:
        hashed = hash_password(_validate_password(name, password))

        def change(users: dict[str, dict[str, Any]]) -> None:
            _user(users, name, self.path)["password"] = hashed

        self._mutate(change)

    def issue_token(self, name: str) -> str:
        """A new bearer token for `name` (returned once; only its SHA-256 is kept). Earlier tokens
        stay valid: one per client or device, revoked together by revoke_tokens."""
        token = secrets.token_urlsafe(_TOKEN_BYTES)

        def change(users: dict[str, dict[str, Any]]) -> None:
            _user(users, name, self.path).setdefault("tokens", []).append(
                {"sha256": hash_token(token), "created": _now()}
            )

        self._mutate(change)
        return token

    def revoke_tokens(self, name: str) -> int:
        """Drops every token of `name`; returns how many there were."""

        def change(users: dict[str, dict[str, Any]]) -> int:
            rec = _user(users, name, self.path)
            n = len(rec.get("tokens", []))
            rec["tokens"] = []
            return n

        return self._mutate(change)

    def add_runtime_token(self, secret: str, name: str, role: str) -> Principal:
        """Accepts `secret` as a bearer token of `name` with `role` for this object's life only
        (the per-start admin token, `--replication-token NAME=SECRET` as role replicator)."""
        if not secret:
            raise RequestError(f"empty token for {name!r}: an empty token would let anyone in")
        principal = Principal(validate_name(name), check_role(role), "runtime")
        digest = hash_token(secret)
        with self._lock:
            held = self._runtime.get(digest)
            if held is not None and held != principal:
                raise ConflictError(f"the token given for {name!r} is already the token of {held.name!r}")
            self._runtime[digest] = principal
        return principal

    # -- queries --

    def has_users(self) -> bool:
        """Whether the file holds any user (runtime tokens do not count: they exist on every start)."""
        return bool(self._current().users)

    def get(self, name: str) -> UserInfo:
        return _info(name, _user(self._current().users, name, self.path))

    def authenticate(self, authorization_header: str | None) -> Principal | None:
        """The principal of an `Authorization` header value; None when there is none (the caller
        decides whether anonymous access is allowed). Raises AuthenticationError for anything
        present but not valid; its message never contains the secret."""
        if authorization_header is None or not authorization_header.strip():
            return None
        scheme, _, credentials = authorization_header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer":
            return self._bearer(credentials.strip())
        if scheme == "basic":
            return self._basic(credentials.strip())
        # The "scheme" may well be a bare secret pasted without a prefix: not echoed.
        raise AuthenticationError("unsupported Authorization scheme: send 'Bearer <token>' or 'Basic ...'")

    def _bearer(self, token: str) -> Principal:
        if not token:
            raise AuthenticationError("empty Bearer token")
        # Looked up by its SHA-256: timing differences of the dict lookup can only reveal bits of
        # a hash, which say nothing usable about the token.
        digest = hash_token(token)
        runtime = self._runtime.get(digest)
        if runtime is not None:
            return runtime
        snap = self._current()
        name = snap.by_token.get(digest)
        if name is None:
            raise AuthenticationError("unknown or revoked Bearer token")
        return Principal(name, snap.users[name]["role"], "token")

    def _basic(self, credentials: str) -> Principal:
        try:
            decoded = base64.b64decode(credentials, validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError, ValueError):
            raise AuthenticationError(
                "malformed Basic credentials: not base64 of UTF-8 'user:password'"
            ) from None
        name, sep, password = decoded.partition(":")
        if not sep:
            raise AuthenticationError("malformed Basic credentials: no ':' between user and password")
        if not _NAME_RE.fullmatch(name):
            # Not echoed: a client that swapped the fields would put the password here.
            raise AuthenticationError("malformed Basic credentials: invalid user name")
        return Principal(name, self._verify(name, password)["role"], "basic")

    def verify_login(self, name: str, password: str) -> tuple[str, str]:
        """(role, stamp) of `name` when `password` is its password: the same check as Basic (one
        scrypt, or none within BASIC_CACHE_SECONDS of the same success), for a login page.
        AuthenticationError otherwise, one message whether the name is unknown or the password
        wrong. The stamp is `session_state`'s: a session compares it to learn that the password
        it was opened with has changed."""
        if not isinstance(name, str) or not _NAME_RE.fullmatch(name):
            # Not echoed, as in Basic: a user who swapped the fields would put the password here.
            raise AuthenticationError("wrong user name or password")
        rec = self._verify(name, password)
        return rec["role"], _stamp_of(rec)

    def session_state(self, name: str) -> tuple[str, str] | None:
        """(role, stamp) of `name` as the file holds it now; None when there is no such user.
        The stamp changes when its password is set or the user is removed and added again."""
        rec = self._current().users.get(name)
        return None if rec is None else (rec["role"], _stamp_of(rec))

    def _verify(self, name: str, password: str) -> dict[str, Any]:
        """The record of `name` when `password` is its password, else AuthenticationError."""
        snap = self._current()
        rec = snap.users.get(name)
        stored = rec.get("password") if rec is not None else None
        failure = AuthenticationError(f"wrong user name or password (user {name!r})")
        if rec is None or stored is None:
            verify_password(password, _dummy_hash())
            raise failure
        key = hashlib.sha256(b"\0".join((name.encode(), password.encode("utf-8"), stored.encode()))).digest()
        now = time.monotonic()
        expiry = self._basic_cache.get(key)
        if expiry is None or expiry < now:
            if not verify_password(password, stored):
                raise failure
            self._remember(key, now + BASIC_CACHE_SECONDS)
        return rec

    def _remember(self, key: bytes, expiry: float) -> None:
        with self._lock:
            cache = self._basic_cache
            if len(cache) >= _BASIC_CACHE_MAX:
                now = time.monotonic()
                for k in [k for k, e in cache.items() if e < now]:
                    del cache[k]
                if len(cache) >= _BASIC_CACHE_MAX:
                    cache.clear()
            cache[key] = expiry

    # Last: the method named `list` would shadow the builtin in annotations that follow it.
    def list(self) -> list[UserInfo]:
        users = self._current().users
        return [_info(name, users[name]) for name in sorted(users)]


def _user(users: dict[str, dict[str, Any]], name: str, path: Path) -> dict[str, Any]:
    rec = users.get(name)
    if rec is None:
        raise NotFoundError(f"no user {name!r} in {path}")
    return rec


def _stamp_of(rec: dict[str, Any]) -> str:
    # A digest, not the scrypt hash itself: sessions keep it in memory for hours.
    basis = "\0".join((str(rec.get("created", "")), str(rec.get("password") or "")))
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()


def _info(name: str, rec: dict[str, Any]) -> UserInfo:
    return UserInfo(name=name, role=rec["role"], has_password=rec.get("password") is not None,
                    tokens=len(rec.get("tokens", [])), created=rec.get("created", ""))
