"""UserStore and authorize: store semantics, files on disk, Bearer and Basic, roles, live reload.

Secrets are checked against independent computations (hashlib's SHA-256 and scrypt run here on
the stored parameters), never against the store's own helpers.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from dicomvault.auth import jsonfile, roles
from dicomvault.auth.roles import Principal, authorize
from dicomvault.auth.users import UserStore, split_token_spec
from dicomvault.errors import (
    AuthenticationError,
    ConflictError,
    DicomVaultError,
    NotFoundError,
    PermissionDeniedError,
    RequestError,
)


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def users_json(data: Path) -> dict:
    return json.loads((data / "auth" / "users.json").read_text())


@pytest.fixture
def store(tmp_path: Path) -> UserStore:
    return UserStore(tmp_path / "data")


# --- roles -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "allowed"),
    [
        ("reader", {"read"}),
        ("writer", {"read", "write"}),
        ("admin", {"read", "write", "admin", "replicate"}),
        ("replicator", {"read", "replicate"}),
    ],
)
def test_role_matrix(role: str, allowed: set[str]) -> None:
    p = Principal("bob", role, "token")
    for action in ("read", "write", "admin", "replicate"):
        if action in allowed:
            authorize(p, action)
        else:
            with pytest.raises(PermissionDeniedError) as exc:
                authorize(p, action)
            msg = str(exc.value)
            assert "bob" in msg and role in msg and action in msg


def test_authorize_without_principal_and_unknown_action() -> None:
    with pytest.raises(AuthenticationError):
        authorize(None, "read")
    with pytest.raises(ValueError, match="nonsense"):
        authorize(Principal("a", "admin", "runtime"), "nonsense")
    with pytest.raises(ValueError):
        authorize(None, "nonsense")  # a programming error wins over a missing login
    assert set(roles.ROLES) == {"reader", "writer", "admin", "replicator"}


def test_principal_is_frozen() -> None:
    p = Principal("a", "reader", "basic")
    with pytest.raises(AttributeError):
        p.role = "admin"  # type: ignore[misc]


# --- store semantics -------------------------------------------------------------------------


def test_add_list_remove(store: UserStore) -> None:
    assert store.list() == [] and not store.has_users()
    store.add("zoe", "reader")
    store.add("alice@example.org", "admin", "s3cret")
    infos = store.list()
    assert [u.name for u in infos] == ["alice@example.org", "zoe"]
    assert [(u.role, u.has_password, u.tokens) for u in infos] == [("admin", True, 0), ("reader", False, 0)]
    assert all(u.created.endswith("+00:00") for u in infos)
    assert store.has_users()
    with pytest.raises(ConflictError, match="zoe"):
        store.add("zoe", "writer")
    store.remove("zoe")
    assert [u.name for u in store.list()] == ["alice@example.org"]
    with pytest.raises(NotFoundError, match="zoe"):
        store.remove("zoe")
    with pytest.raises(NotFoundError, match="nobody"):
        store.issue_token("nobody")
    with pytest.raises(NotFoundError, match="nobody"):
        store.set_password("nobody", "x")


@pytest.mark.parametrize("name", ["", "a" * 65, "with space", "colon:name", "slash/x", "é", "a\nb", "../x"])
def test_bad_names_refused(store: UserStore, name: str) -> None:
    with pytest.raises(RequestError):
        store.add(name, "reader")
    assert not (store.path).exists()


def test_good_names_and_bad_roles(store: UserStore) -> None:
    store.add("a" * 64, "reader")
    store.add("A.b_c-d@e", "writer")
    with pytest.raises(RequestError, match="superuser"):
        store.add("x", "superuser")
    with pytest.raises(RequestError):
        store.add("y", "reader", "")


def test_file_modes_even_with_permissive_umask(store: UserStore) -> None:
    old = os.umask(0)
    try:
        store.add("alice", "reader", "pw")
    finally:
        os.umask(old)
    assert stat.S_IMODE(store.dir.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    store.issue_token("alice")  # a rewrite keeps the mode
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert [p.name for p in store.dir.iterdir() if p.name.endswith(".tmp")] == []


def test_secrets_stored_only_as_hashes(store: UserStore, tmp_path: Path) -> None:
    store.add("alice", "reader", "correct horse")
    tokens = [store.issue_token("alice") for _ in range(3)]
    raw = store.path.read_text()
    assert "correct horse" not in raw
    rec = users_json(tmp_path / "data")["users"]["alice"]
    # 32 random bytes, urlsafe base64 without padding
    assert all(len(base64.urlsafe_b64decode(t + "=")) == 32 for t in tokens)
    assert len(set(tokens)) == 3
    for t in tokens:
        assert t not in raw
    assert [x["sha256"] for x in rec["tokens"]] == [hashlib.sha256(t.encode()).hexdigest() for t in tokens]
    # The password hash is scrypt with its parameters: recompute it here with hashlib.
    scheme, n, r, p, salt, digest = rec["password"].split("$")
    assert scheme == "scrypt"

    def unb64(s: str) -> bytes:
        return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))

    again = hashlib.scrypt(b"correct horse", salt=unb64(salt), n=int(n), r=int(r), p=int(p),
                           dklen=len(unb64(digest)), maxmem=64 << 20)
    assert again == unb64(digest)
    assert len(unb64(salt)) >= 16


def test_salts_differ(store: UserStore) -> None:
    store.add("a", "reader", "same")
    store.add("b", "reader", "same")
    recs = json.loads(store.path.read_text())["users"]
    assert recs["a"]["password"] != recs["b"]["password"]


# --- authentication --------------------------------------------------------------------------


def test_no_header_is_anonymous(store: UserStore) -> None:
    assert store.authenticate(None) is None
    assert store.authenticate("") is None
    assert store.authenticate("   ") is None


def test_bearer(store: UserStore) -> None:
    store.add("viewer", "reader")
    tok = store.issue_token("viewer")
    tok2 = store.issue_token("viewer")
    for t in (tok, tok2):
        assert store.authenticate(f"Bearer {t}") == Principal("viewer", "reader", "token")
    assert store.authenticate(f"bearer   {tok}  ") == Principal("viewer", "reader", "token")
    with pytest.raises(AuthenticationError) as exc:
        store.authenticate(f"Bearer {tok}x")
    assert tok not in str(exc.value)
    with pytest.raises(AuthenticationError):
        store.authenticate("Bearer ")
    assert store.revoke_tokens("viewer") == 2
    with pytest.raises(AuthenticationError, match="revoked"):
        store.authenticate(f"Bearer {tok}")
    tok3 = store.issue_token("viewer")
    store.remove("viewer")
    with pytest.raises(AuthenticationError):
        store.authenticate(f"Bearer {tok3}")


def test_basic(store: UserStore) -> None:
    store.add("rad", "writer", "pa:ss wörd")
    assert store.authenticate(basic("rad", "pa:ss wörd")) == Principal("rad", "writer", "basic")
    for user, pw in [("rad", "pa:ss word"), ("rad", ""), ("nobody", "pa:ss wörd")]:
        with pytest.raises(AuthenticationError) as exc:
            store.authenticate(basic(user, pw))
        assert "pa:ss" not in str(exc.value)
    store.add("tokenonly", "reader")  # no password: Basic never succeeds
    with pytest.raises(AuthenticationError):
        store.authenticate(basic("tokenonly", ""))


@pytest.mark.parametrize(
    "header",
    [
        "Basic !!!notbase64!!!",
        "Basic " + base64.b64encode(b"no-colon-hunter2").decode(),
        "Basic " + base64.b64encode(b"\xff\xfe:hunter2").decode(),
        "Basic " + base64.b64encode(b"hunter2 x:y").decode(),
        "hunter2",
        "Digest hunter2",
        "Token hunter2",
    ],
)
def test_garbled_credentials_never_echo_the_secret(store: UserStore, header: str) -> None:
    store.add("u", "reader", "pw")
    with pytest.raises(AuthenticationError) as exc:
        store.authenticate(header)
    assert "hunter2" not in str(exc.value)
    assert str(exc.value)


def test_basic_success_is_cached_but_changes_apply(
    store: UserStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store.add("viewer", "reader", "pw1")
    header = basic("viewer", "pw1")
    runs: list[int] = []
    real_scrypt = hashlib.scrypt

    def counting_scrypt(*args, **kwargs):  # type: ignore[no-untyped-def]
        runs.append(1)
        return real_scrypt(*args, **kwargs)

    monkeypatch.setattr(hashlib, "scrypt", counting_scrypt)
    t0 = time.perf_counter()
    store.authenticate(header)
    first = time.perf_counter() - t0
    assert len(runs) == 1 and first > 0.005, "one scrypt, costing milliseconds"
    for _ in range(100):
        assert store.authenticate(header).name == "viewer"  # type: ignore[union-attr]
    assert len(runs) == 1, "cached logins must not run scrypt again"
    # A wrong password is never served from the cache.
    with pytest.raises(AuthenticationError):
        store.authenticate(basic("viewer", "pw2"))
    # A password change made through another object (as the CLI does) ends the cached login.
    UserStore(tmp_path / "data").set_password("viewer", "pw2")
    with pytest.raises(AuthenticationError):
        store.authenticate(header)
    assert store.authenticate(basic("viewer", "pw2")) == Principal("viewer", "reader", "basic")
    UserStore(tmp_path / "data").remove("viewer")
    with pytest.raises(AuthenticationError):
        store.authenticate(basic("viewer", "pw2"))


def test_cached_basic_costs_microseconds_once_settled(
    store: UserStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Past the racy window the hot path is a stat and a dict lookup, no re-read and no scrypt.
    monkeypatch.setattr(jsonfile, "RACY_NS", 0)
    store.add("viewer", "reader", "pw")
    header = basic("viewer", "pw")
    store.authenticate(header)
    calls: list[int] = []
    real = store._file._read

    def counting_read():  # type: ignore[no-untyped-def]
        calls.append(1)
        return real()

    monkeypatch.setattr(store._file, "_read", counting_read)
    t0 = time.perf_counter()
    for _ in range(1000):
        store.authenticate(header)
    per_call = (time.perf_counter() - t0) / 1000
    assert calls == []
    assert per_call < 200e-6, per_call


# --- live reload across objects and processes ------------------------------------------------


def test_change_seen_by_open_store_without_restart(tmp_path: Path) -> None:
    server = UserStore(tmp_path / "data")
    cli = UserStore(tmp_path / "data")
    assert server.authenticate(None) is None and not server.has_users()
    cli.add("new", "writer")
    tok = cli.issue_token("new")
    assert server.authenticate(f"Bearer {tok}") == Principal("new", "writer", "token")
    cli.revoke_tokens("new")
    with pytest.raises(AuthenticationError):
        server.authenticate(f"Bearer {tok}")
    tok = cli.issue_token("new")
    assert server.authenticate(f"Bearer {tok}").role == "writer"  # type: ignore[union-attr]
    cli.remove("new")
    with pytest.raises(AuthenticationError):
        server.authenticate(f"Bearer {tok}")


def test_change_seen_without_racy_window(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # With the young-file re-read off, the (mtime, size, inode) stamp alone must notice changes.
    monkeypatch.setattr(jsonfile, "RACY_NS", 0)
    server = UserStore(tmp_path / "data")
    cli = UserStore(tmp_path / "data")
    cli.add("a", "reader")
    assert server.has_users()
    tok = cli.issue_token("a")
    assert server.authenticate(f"Bearer {tok}").name == "a"  # type: ignore[union-attr]
    cli.remove("a")
    assert not server.has_users()


def test_young_file_is_reread_even_if_stamp_unchanged(tmp_path: Path) -> None:
    # Simulate two writes in one timestamp tick: same size, mtime restored, inode reused.
    server = UserStore(tmp_path / "data")
    cli = UserStore(tmp_path / "data")
    cli.add("aaaa", "reader")
    assert [u.name for u in server.list()] == ["aaaa"]
    st = server.path.stat()
    doc = json.loads(server.path.read_text())
    doc["users"]["bbbb"] = doc["users"].pop("aaaa")
    with open(server.path, "r+") as f:  # same inode, same size
        f.write(json.dumps(doc, indent=1, sort_keys=True))
    os.utime(server.path, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert server.path.stat().st_size == st.st_size
    assert [u.name for u in server.list()] == ["bbbb"]


def test_concurrent_adds_from_two_processes_all_survive(tmp_path: Path) -> None:
    data = tmp_path / "data"
    script = textwrap.dedent(
        """
        import sys
        from dicomvault.auth.users import UserStore
        store = UserStore(sys.argv[1])
        for i in range(40):
            store.add(f"{sys.argv[2]}{i}", "reader")
            store.issue_token(f"{sys.argv[2]}{i}")
        """
    )
    procs = [subprocess.Popen([sys.executable, "-c", script, str(data), prefix]) for prefix in ("p", "q")]
    assert [p.wait(timeout=60) for p in procs] == [0, 0]
    recs = users_json(data)["users"]
    assert sorted(recs) == sorted([f"p{i}" for i in range(40)] + [f"q{i}" for i in range(40)])
    assert all(len(r["tokens"]) == 1 for r in recs.values())


def test_corrupt_file_is_an_error_not_an_open_door(store: UserStore) -> None:
    store.add("a", "admin", "pw")
    store.path.write_text("{not json")
    with pytest.raises(DicomVaultError, match="users.json"):
        store.authenticate(basic("a", "pw"))
    store.path.write_text(json.dumps({"version": 1, "users": {"a": {"role": "god"}}}))
    with pytest.raises(DicomVaultError, match="'a'"):
        store.has_users()


# --- runtime credentials ---------------------------------------------------------------------


def test_runtime_tokens_are_not_persisted(tmp_path: Path) -> None:
    store = UserStore(tmp_path / "data")
    admin = store.add_runtime_token("per-start-secret", "local-admin", "admin")
    name, secret = split_token_spec("dr-site=abc123", "replica-1")
    store.add_runtime_token(secret, name, "replicator")
    assert admin == Principal("local-admin", "admin", "runtime")
    assert store.authenticate("Bearer per-start-secret") == admin
    assert store.authenticate("Bearer abc123") == Principal("dr-site", "replicator", "runtime")
    assert not store.path.exists() and not store.has_users()
    other = UserStore(tmp_path / "data")
    with pytest.raises(AuthenticationError):
        other.authenticate("Bearer abc123")
    with pytest.raises(RequestError):
        store.add_runtime_token("", "x", "replicator")
    with pytest.raises(RequestError):
        store.add_runtime_token("s", "x", "root")
    with pytest.raises(ConflictError):
        store.add_runtime_token("abc123", "someone-else", "replicator")
    store.add_runtime_token("abc123", "dr-site", "replicator")  # the same again is harmless


def test_split_token_spec() -> None:
    assert split_token_spec("secret-only", "replica-2") == ("replica-2", "secret-only")
    assert split_token_spec("site-b=s=e", "replica-1") == ("site-b", "s=e")
    with pytest.raises(RequestError):
        split_token_spec("site-b=", "replica-1")
    with pytest.raises(RequestError):
        split_token_spec("bad name=s", "replica-1")
