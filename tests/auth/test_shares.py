"""Share links: the ShareStore and its file, the /api/shares routes over real HTTP (who may create,
list and revoke; tokens never listed), and `dicomvault shares list|revoke` in process and as a
real process beside a running server."""

from __future__ import annotations

import hashlib
import json
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomvault.auth.roles import ROLE_ACTIONS, Principal
from dicomvault.auth.shares import DAY, KEEP_EXPIRED, ShareStore
from dicomvault.cli import build_parser
from dicomvault.engine import Engine
from dicomvault.errors import AuthenticationError, DicomVaultError, NotFoundError, RequestError
from dicomvault.site import Site, SiteOptions

CT_FILE = Path(get_testdata_file("CT_small.dcm"))
STUDY = pydicom.dcmread(CT_FILE, stop_before_pixels=True).StudyInstanceUID
TOKEN_RE = re.compile(r"[A-Za-z0-9_-]{43}")


def shares_json(data: Path) -> dict:
    return json.loads((data / "auth" / "shares.json").read_text())


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


# --- the store -------------------------------------------------------------------------------


def test_create_stores_only_the_hash_in_a_private_file(tmp_path: Path) -> None:
    store = ShareStore(tmp_path)
    info, token = store.create("1.2.3", "wendy", 3600, note="for Dr. Who")
    assert TOKEN_RE.fullmatch(token) and re.fullmatch(r"[0-9a-f]{12}", info.id)
    assert (info.study, info.created_by, info.revoked, info.note) == ("1.2.3", "wendy", False, "for Dr. Who")
    assert info.expires_at == pytest.approx(time.time() + 3600, abs=2)
    path = tmp_path / "auth" / "shares.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "auth").stat().st_mode) == 0o700
    raw = path.read_text()
    assert token not in raw
    rec = shares_json(tmp_path)["shares"][info.id]
    assert rec["sha256"] == hashlib.sha256(token.encode()).hexdigest()
    assert rec["expires"].endswith("+00:00") and rec["created"].endswith("+00:00")
    assert store.authenticate(token) == Principal(f"share:{info.id}", "reader", "share", study="1.2.3")
    assert store.authenticate("someone else's token") is None


def test_another_process_sees_changes(tmp_path: Path) -> None:
    """The server's store notices a change the CLI made, on its next look."""
    server, cli = ShareStore(tmp_path), ShareStore(tmp_path)
    info, token = cli.create("1.2.3", "wendy")
    assert server.authenticate(token) is not None
    cli.revoke(info.id, "cli:root")
    with pytest.raises(AuthenticationError, match=f"share link {info.id} was revoked"):
        server.authenticate(token)


def test_expiry_bounds_and_prune(tmp_path: Path) -> None:
    now = [2_000_000_000.0]
    store = ShareStore(tmp_path, clock=lambda: now[0])
    for bad in (0, 59, 90 * DAY + 1, 3.5, "3600", True, None):
        with pytest.raises(RequestError, match="expires_in"):
            store.create("1.2.3", "wendy", bad)  # type: ignore[arg-type]
    for bad_study in ("", "1.2.3/../4", "1.2 3", "..", 7):
        with pytest.raises(RequestError):
            store.create(bad_study, "wendy")  # type: ignore[arg-type]
    with pytest.raises(RequestError, match="note"):
        store.create("1.2.3", "wendy", note="x" * 501)
    assert not (tmp_path / "auth" / "shares.json").exists()
    old, token = store.create("1.2.3", "wendy", 60)
    now[0] += 61
    with pytest.raises(AuthenticationError, match=re.escape(f"share link {old.id} expired at {old.expires}")):
        store.authenticate(token)
    assert [s.status(now[0]) for s in store.list()] == ["expired"]
    # listed for a while after expiry, then dropped by the next change
    now[0] += KEEP_EXPIRED
    new, _ = store.create("1.2.3", "wendy", 90 * DAY)
    assert [s.id for s in store.list()] == [new.id]


def test_revoke_and_unknown_ids(tmp_path: Path) -> None:
    store = ShareStore(tmp_path)
    info, _ = store.create("1.2.3", "wendy")
    assert store.revoke(info.id, "admin")[1] is True
    assert store.revoke(info.id, "admin")[1] is False
    rec = shares_json(tmp_path)["shares"][info.id]
    assert rec["revoked"] is True and rec["revoked_by"] == "admin"
    with pytest.raises(NotFoundError, match="nope"):
        store.revoke("nope", "admin")
    with pytest.raises(NotFoundError, match="nope"):
        store.get("nope")


def test_damaged_file_is_refused_not_overwritten(tmp_path: Path) -> None:
    store = ShareStore(tmp_path)
    store.create("1.2.3", "wendy")
    path = tmp_path / "auth" / "shares.json"
    path.write_text('{"version": 1, "shares": {"x": {"study": "1.2.3"}}}')
    with pytest.raises(DicomVaultError, match="share 'x'"):
        store.list()
    with pytest.raises(DicomVaultError):
        store.create("1.2.3", "wendy")
    assert "sha256" not in path.read_text()


def test_share_action_belongs_to_writers_and_admins() -> None:
    assert {r for r, actions in ROLE_ACTIONS.items() if "share" in actions} == {"writer", "admin"}


# --- over HTTP -------------------------------------------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        eng.store_buffers([CT_FILE.read_bytes()])
        s = Site(eng, SiteOptions(port=0))
        for name, role in (("wendy", "writer"), ("walt", "writer"), ("rita", "reader"), ("ada", "admin")):
            s.users.add(name, role)
        s.start()
        try:
            yield s
        finally:
            s.stop()


def as_(site: Site, name: str) -> dict[str, str]:
    return bearer(site.users.issue_token(name))


def test_writer_creates_reader_may_not(site: Site, http: httpx.Client) -> None:
    r = http.post("/api/shares", json={"study": STUDY, "expires_in": 3600, "note": "second opinion"},
                  headers=as_(site, "wendy"))
    assert r.status_code == 201, r.text
    body = r.json()
    assert set(body) == {"id", "token", "url", "study", "expires"}
    assert body["study"] == STUDY and TOKEN_RE.fullmatch(body["token"])
    assert body["url"] == f"{site.url}/#/share/{body['token']}"
    r = http.post("/api/shares", json={"study": STUDY}, headers=as_(site, "rita"))
    assert r.status_code == 403 and "rita" in r.text and "share" in r.text
    assert http.post("/api/shares", json={"study": STUDY}).status_code == 401


def test_create_checks_the_study_and_the_body(site: Site, http: httpx.Client) -> None:
    h = as_(site, "wendy")
    r = http.post("/api/shares", json={"study": "1.2.3.4"}, headers=h)
    assert r.status_code == 404 and "1.2.3.4" in r.text
    for body in ({}, {"study": "a/b"}, {"study": STUDY, "expires_in": 91 * DAY},
                 {"study": STUDY, "expires_in": "soon"}, {"study": STUDY, "note": 5}):
        r = http.post("/api/shares", json=body, headers=h)
        assert r.status_code == 400, body
    # default lifetime: 7 days
    exp = http.post("/api/shares", json={"study": STUDY}, headers=h).json()["expires"]
    from datetime import datetime

    assert datetime.fromisoformat(exp).timestamp() == pytest.approx(time.time() + 7 * DAY, abs=5)


def test_public_url_makes_the_link(tmp_path: Path) -> None:
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        eng.store_buffers([CT_FILE.read_bytes()])
        s = Site(eng, SiteOptions(port=0, public_url="https://pacs.example.org/archive/"))
        s.start()
        try:
            r = httpx.post(s.url + "/api/shares", json={"study": STUDY})  # anonymous writer on loopback
            assert r.status_code == 201, r.text
            assert r.json()["url"] == f"https://pacs.example.org/archive/#/share/{r.json()['token']}"
        finally:
            s.stop()


def test_list_never_shows_tokens_and_is_per_user(site: Site, http: httpx.Client) -> None:
    made = {}
    for name in ("wendy", "walt", "ada"):
        made[name] = http.post("/api/shares", json={"study": STUDY}, headers=as_(site, name)).json()
    r = http.get("/api/shares", headers=as_(site, "wendy"))
    assert r.status_code == 200
    assert [s["id"] for s in r.json()] == [made["wendy"]["id"]]
    listed = http.get("/api/shares", headers=as_(site, "ada"))
    assert {s["id"] for s in listed.json()} == {m["id"] for m in made.values()}
    for s in listed.json():
        assert set(s) == {"id", "study", "created_by", "created", "expires", "revoked", "status", "note"}
        assert s["status"] == "active"
    for m in made.values():
        assert m["token"] not in listed.text and m["token"] not in r.text
    assert "sha256" not in listed.text
    assert http.get("/api/shares", headers=as_(site, "rita")).status_code == 403


def test_revoke_by_creator_or_admin_only(site: Site, http: httpx.Client) -> None:
    a = http.post("/api/shares", json={"study": STUDY}, headers=as_(site, "wendy")).json()
    b = http.post("/api/shares", json={"study": STUDY}, headers=as_(site, "wendy")).json()
    r = http.delete(f"/api/shares/{a['id']}", headers=as_(site, "walt"))
    assert r.status_code == 403 and a["id"] in r.text
    assert http.delete(f"/api/shares/{a['id']}", headers=as_(site, "wendy")).status_code == 204
    assert http.delete(f"/api/shares/{b['id']}", headers=as_(site, "ada")).status_code == 204
    assert http.delete(f"/api/shares/{b['id']}", headers=as_(site, "ada")).status_code == 204  # idempotent
    r = http.delete("/api/shares/0123456789ab", headers=as_(site, "ada"))
    assert r.status_code == 404 and "0123456789ab" in r.text
    statuses = {s["id"]: s["status"] for s in http.get("/api/shares", headers=as_(site, "ada")).json()}
    assert statuses == {a["id"]: "revoked", b["id"]: "revoked"}
    for s in (a, b):
        assert http.get("/api/session", headers=bearer(s["token"])).status_code == 401


# --- CLI -------------------------------------------------------------------------------------


def call(*argv: str) -> int:
    args = build_parser().parse_args(list(argv))
    return args.func(args)


def test_cli_list_and_revoke(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = str(tmp_path / "data")
    store = ShareStore(data)
    a, token = store.create("1.2.3", "wendy", note="tumour board")
    b, _ = store.create("4.5.6", "ada")
    assert call("shares", "list", "--data", data) == 0
    table = capsys.readouterr().out
    assert a.id in table and b.id in table and "tumour board" in table and "(2 shares)" in table
    assert token not in table
    assert call("shares", "revoke", a.id, "--data", data) == 0
    assert a.id in capsys.readouterr().out
    assert call("shares", "list", "--json", "--data", data) == 0
    listed = {s["id"]: s for s in json.loads(capsys.readouterr().out)}
    assert listed[a.id]["status"] == "revoked" and listed[b.id]["status"] == "active"
    assert listed[a.id]["revoked"] is True
    assert call("shares", "revoke", a.id, "--data", data) == 0
    assert "already" in capsys.readouterr().out
    with pytest.raises(NotFoundError, match="nope"):
        call("shares", "revoke", "nope", "--data", data)
    events = [json.loads(x) for x in (tmp_path / "data" / "audit" / "audit.jsonl").read_text().splitlines()]
    assert [(e["event"], e["study"], e["detail"]["share"], e["client"]) for e in events] == [
        ("share-revoked", "1.2.3", a.id, "local")]
    assert events[0]["user"].startswith("cli:")


def test_cli_process_revokes_for_a_running_server(site: Site, http: httpx.Client) -> None:
    share = http.post("/api/shares", json={"study": STUDY}, headers=as_(site, "wendy")).json()
    url = f"/dicom-web/studies/{STUDY}/series"
    assert http.get(url, headers=bearer(share["token"])).status_code == 200
    data = str(site.engine.data_dir)

    def cli(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "dicomvault.cli", "shares", *argv, "--data", data],
                              capture_output=True, text=True, timeout=60)

    r = cli("revoke", share["id"])
    assert r.returncode == 0, r.stderr
    resp = http.get(url, headers=bearer(share["token"]))
    assert resp.status_code == 401 and "revoked" in resp.text
    r = cli("revoke", "nope")
    assert r.returncode == 2 and "nope" in r.stderr
    r = cli("list", "--json")
    assert r.returncode == 0 and json.loads(r.stdout)[0]["status"] == "revoked"
    assert share["token"] not in r.stdout
