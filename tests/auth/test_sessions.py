"""Login sessions: /api/session over real HTTP (log in, who am I, log out), their lifetime, the
bounded password checks, and the SessionStore rules underneath."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from dicomvault.auth.sessions import SessionStore
from dicomvault.auth.users import UserStore
from dicomvault.engine import Engine
from dicomvault.errors import AuthenticationError, RequestError
from dicomvault.site import Site, SiteOptions, start_site

PASSWORD = "correct horse battery"


def login(http: httpx.Client, name: str, password: str) -> httpx.Response:
    return http.post("/api/session", json={"name": name, "password": password})


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit_events(site: Site) -> list[dict]:
    path = site.engine.data_dir / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- over HTTP -------------------------------------------------------------------------------


def test_login_gives_a_bearer_session(site: Site, http: httpx.Client) -> None:
    site.users.add("wendy", "writer", password=PASSWORD)
    before = time.time()
    r = login(http, "wendy", PASSWORD)
    assert r.status_code == 200, r.text
    body = r.json()
    assert set(body) == {"token", "expires", "name", "role"}
    assert (body["name"], body["role"]) == ("wendy", "writer")
    expires = datetime.fromisoformat(body["expires"])
    assert expires.utcoffset() is not None and expires.utcoffset().total_seconds() == 0
    assert before + 8 * 3600 - 2 <= expires.timestamp() <= time.time() + 8 * 3600 + 1
    h = bearer(body["token"])
    assert http.get("/api/stats", headers=h).status_code == 200
    assert http.get("/api/users", headers=h).status_code == 403  # the role of the user, nothing more
    me = http.get("/api/session", headers=h).json()
    assert me == {"name": "wendy", "role": "writer", "method": "session", "study": None,
                  "actions": ["read", "share", "write"], "expires": body["expires"]}
    # Only its hash is kept, and in memory only: nothing under the data directory names it.
    for f in site.engine.data_dir.rglob("*"):
        if f.is_file() and f.stat().st_size < 1 << 20:
            assert body["token"].encode() not in f.read_bytes(), f


def test_wrong_password_and_unknown_user_are_one_401(
    site: Site, http: httpx.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    site.users.add("wendy", "writer", password=PASSWORD)
    calls: list[int] = []
    real = hashlib.scrypt

    def counting(*args: object, **kwargs: object) -> bytes:
        calls.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(hashlib, "scrypt", counting)
    wrong = login(http, "wendy", "not it")
    wrong_calls = len(calls)
    unknown = login(http, "nobody", "not it")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.text.replace("wendy", "NAME") == unknown.text.replace("nobody", "NAME")
    assert "password" in wrong.text and "WWW-Authenticate" in unknown.headers
    # an unknown name costs a scrypt too (the dummy hash), so timing does not tell names apart
    assert wrong_calls >= 1 and len(calls) - wrong_calls >= 1
    # a user without a password cannot log in either
    site.users.add("tokenonly", "reader")
    assert login(http, "tokenonly", "").status_code == 401
    assert login(http, "tokenonly", "x").status_code == 401


@pytest.mark.parametrize("body", [{}, {"name": "wendy"}, {"name": 3, "password": "x"}, [1, 2]])
def test_login_needs_a_name_and_a_password(http: httpx.Client, body: object) -> None:
    r = http.post("/api/session", json=body)
    assert r.status_code == 400 and r.text


def test_session_expires(site: Site, http: httpx.Client) -> None:
    site.users.add("wendy", "reader", password=PASSWORD)
    token = login(http, "wendy", PASSWORD).json()["token"]
    assert http.get("/api/stats", headers=bearer(token)).status_code == 200
    site.sessions.clock = lambda: time.time() + 8 * 3600 + 1
    r = http.get("/api/stats", headers=bearer(token))
    assert r.status_code == 401 and "expired" in r.text and "wendy" in r.text
    site.sessions.clock = time.time
    # an ended session stays ended
    assert http.get("/api/stats", headers=bearer(token)).status_code == 401


def test_password_change_and_removal_end_sessions(site: Site, http: httpx.Client) -> None:
    site.users.add("wendy", "reader", password=PASSWORD)
    site.users.add("rita", "reader", password=PASSWORD)
    w = login(http, "wendy", PASSWORD).json()["token"]
    r = login(http, "rita", PASSWORD).json()["token"]
    site.users.set_password("wendy", "another one")
    site.users.remove("rita")
    for token in (w, r):
        resp = http.get("/api/stats", headers=bearer(token))
        assert resp.status_code == 401 and "log in again" in resp.text


def test_get_session_anonymous_then_401(site: Site, http: httpx.Client) -> None:
    me = http.get("/api/session")
    assert me.status_code == 200
    assert me.json() == {"name": "anonymous", "role": "writer", "method": "anonymous", "study": None,
                         "actions": ["read", "share", "write"], "expires": None}
    site.users.add("wendy", "reader", password=PASSWORD)  # anonymous access ends with the first user
    assert http.get("/api/session").status_code == 401
    token = site.users.issue_token("wendy")
    assert http.get("/api/session", headers=bearer(token)).json()["method"] == "token"


def test_logout(site: Site, http: httpx.Client) -> None:
    site.users.add("wendy", "reader", password=PASSWORD)
    token = login(http, "wendy", PASSWORD).json()["token"]
    other = login(http, "wendy", PASSWORD).json()["token"]
    assert http.delete("/api/session", headers=bearer(token)).status_code == 204
    assert http.get("/api/session", headers=bearer(token)).status_code == 401
    assert http.delete("/api/session", headers=bearer(token)).status_code == 401
    # one session ends, not the user's others
    assert http.get("/api/session", headers=bearer(other)).status_code == 200
    # a user token is no session: nothing to log out
    r = http.delete("/api/session", headers=bearer(site.users.issue_token("wendy")))
    assert r.status_code == 400 and "session" in r.text
    assert http.delete("/api/session").status_code == 401
    events = [(e["event"], e["outcome"], e["user"]) for e in audit_events(site)]
    assert events == [("login", "success", "wendy"), ("login", "success", "wendy"),
                      ("logout", "success", "wendy")]


def test_logins_take_the_bounded_password_slots(site: Site, http: httpx.Client) -> None:
    """With every slot held (as by slow Basic checks), a login waits and then gets 503 rather
    than running one more scrypt."""
    site.users.add("wendy", "reader", password=PASSWORD)
    site.security._scrypt_slots = slots = threading.BoundedSemaphore(1)
    slots.acquire()
    try:
        r = login(http, "wendy", PASSWORD)
        assert r.status_code == 503 and "password checks" in r.text
    finally:
        slots.release()
    assert login(http, "wendy", PASSWORD).status_code == 200


# --- the store -------------------------------------------------------------------------------


def test_store_idle_and_absolute_lifetimes(tmp_path: Path) -> None:
    users = UserStore(tmp_path)
    users.add("wendy", "writer", PASSWORD)
    now = [1_000_000.0]
    store = SessionStore(users, lifetime=100, idle=30, clock=lambda: now[0])
    s = store.login("wendy", PASSWORD)
    assert s.expires == 1_000_030 and len(store) == 1
    for _ in range(3):  # used every 25 s: the idle limit keeps moving, the absolute one does not
        now[0] += 25
        assert store.authenticate(s.token).name == "wendy"  # type: ignore[union-attr]
    assert store.expires(s.token) == 1_000_100  # idle would allow 1_000_105
    now[0] += 25  # 100 s after login
    with pytest.raises(AuthenticationError, match="100 s lifetime"):
        store.authenticate(s.token)
    s2 = store.login("wendy", PASSWORD)
    now[0] += 31
    with pytest.raises(AuthenticationError, match="idle"):
        store.authenticate(s2.token)
    assert len(store) == 0
    assert store.authenticate("not-a-session") is None
    with pytest.raises(AuthenticationError):
        store.login("wendy", "wrong")
    with pytest.raises(RequestError):
        SessionStore(users, lifetime=0)


def test_lifetimes_come_from_the_command_line(tmp_path: Path) -> None:
    from dicomvault.cli import build_parser
    from dicomvault.config import Config
    from dicomvault.site_args import serve_site_options

    cfg = Config()
    args = build_parser().parse_args(["serve", "--session-lifetime", "600", "--session-idle", "60"])
    opts = serve_site_options(args, cfg.http, cfg.replication)
    assert (opts.session_lifetime, opts.session_idle) == (600, 60)
    default = serve_site_options(build_parser().parse_args(["serve"]), cfg.http, cfg.replication)
    assert (default.session_lifetime, default.session_idle) == (8 * 3600, None)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--session-idle", "0"])
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        s = start_site(eng, SiteOptions(port=0, session_lifetime=600, session_idle=60))
        try:
            assert (s.sessions.lifetime, s.sessions.idle) == (600, 60)
            assert s.security.sessions is s.sessions and s.security.shares is s.shares
            assert s.security.audit is s.audit
        finally:
            s.stop()
