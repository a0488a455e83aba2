"""The audit log: the record shape, the file (JSON lines, append-only, private, fsync'd), the
throttle, failures that must not stop the archive, and one line for every event a real server
and the CLI produce."""

from __future__ import annotations

import json
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomvault.audit.log import (
    EVENTS,
    LOGIN,
    SHARE_USED,
    SUCCESS,
    AuditLog,
    build_event,
)
from dicomvault.cli import build_parser
from dicomvault.engine import Engine
from dicomvault.site import Site, SiteOptions

# The record's fields, and the chain's two (seq, prev) the writer adds.
KEYS = {"time", "event", "code", "outcome", "user", "client", "patient", "study", "detail", "seq", "prev"}
CT_FILE = Path(get_testdata_file("CT_small.dcm"))
MR_STUDY = pydicom.dcmread(get_testdata_file("MR_small.dcm"), stop_before_pixels=True).StudyInstanceUID


def lines(path: Path) -> list[dict]:
    raw = path.read_bytes()
    assert raw.endswith(b"\n")
    return [json.loads(x) for x in raw.decode("utf-8").split("\n")[:-1]]


def test_build_event_is_the_one_shape() -> None:
    rec = build_event(LOGIN, SUCCESS, when=0.25, user="wendy", client="10.0.0.9", study=None,
                      detail={"role": "writer"})
    assert rec == {"time": "1970-01-01T00:00:00.250+00:00", "event": "login", "code": "DCM 110114",
                   "outcome": "success", "user": "wendy", "client": "10.0.0.9", "patient": None,
                   "study": None, "detail": {"role": "writer"}}
    with pytest.raises(ValueError, match="audit event"):
        build_event("logn", SUCCESS, when=0, user=None, client=None)
    with pytest.raises(ValueError, match="outcome"):
        build_event(LOGIN, "ok", when=0, user=None, client=None)


def test_file_is_private_append_only_json_lines(tmp_path: Path) -> None:
    a, b = AuditLog(tmp_path), AuditLog(tmp_path)  # a server and a CLI process, say
    a.record(LOGIN, SUCCESS, user="wendy", client="127.0.0.1", detail={"note": "é ünïcode\nand a newline"})
    b.record(SHARE_USED, SUCCESS, user="share:ab12", client="127.0.0.1", study="1.2.3")
    path = tmp_path / "audit" / "audit.jsonl"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    got = lines(path)
    assert [(e["event"], e["user"]) for e in got] == [("login", "wendy"), ("share-used", "share:ab12")]
    assert got[0]["detail"]["note"] == "é ünïcode\nand a newline"
    assert all(set(e) == KEYS for e in got)


def test_concurrent_writers_never_tear_lines(tmp_path: Path) -> None:
    log = AuditLog(tmp_path)
    big = "x" * 5000

    def many(n: int) -> None:
        for i in range(20):
            log.record(LOGIN, SUCCESS, user=f"u{n}", client=None, detail={"i": i, "pad": big})

    threads = [threading.Thread(target=many, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = lines(log.path)
    assert len(got) == 80 and {e["user"] for e in got} == {"u0", "u1", "u2", "u3"}


def test_throttle_writes_first_then_once_per_window_with_a_count(tmp_path: Path) -> None:
    now = [1000.0]
    log = AuditLog(tmp_path, clock=lambda: now[0])
    written = []
    for _ in range(10):
        written.append(log.record(SHARE_USED, SUCCESS, user="share:a", client=None, once_per=("a", 3600)))
        now[0] += 60
    assert sum(r is not None for r in written) == 1 and written[0] is not None
    assert log.record(SHARE_USED, SUCCESS, user="share:b", client=None, once_per=("b", 3600)) is not None
    now[0] = 1000 + 3600
    rec = log.record(SHARE_USED, SUCCESS, user="share:a", client=None, once_per=("a", 3600))
    assert rec is not None and rec["detail"] == {"suppressed": 9}
    assert [e["user"] for e in lines(log.path)] == ["share:a", "share:b", "share:a"]


def test_a_failing_write_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "audit").write_text("a file where the directory should be")
    log = AuditLog(tmp_path)
    log.record(LOGIN, SUCCESS, user="wendy", client=None)
    assert log.write_failures == 1
    assert "audit" in caplog.text and "cannot append" in caplog.text


# --- every event, from a real server and the CLI -----------------------------------------------


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        eng.store_buffers([CT_FILE.read_bytes(), Path(get_testdata_file("MR_small.dcm")).read_bytes()])
        s = Site(eng, SiteOptions(port=0))
        s.users.add("wendy", "writer", password="pw-wendy")
        s.start()
        try:
            yield s
        finally:
            s.stop()


def test_every_event_is_one_valid_json_line(site: Site) -> None:
    study = pydicom.dcmread(CT_FILE, stop_before_pixels=True).StudyInstanceUID
    with httpx.Client(base_url=site.url, timeout=30) as http:
        assert http.post("/api/session", json={"name": "wendy", "password": "wrong"}).status_code == 401
        assert http.post("/api/session", json={"name": "not a name!", "password": "x"}).status_code == 401
        token = http.post("/api/session", json={"name": "wendy", "password": "pw-wendy"}).json()["token"]
        h = {"Authorization": f"Bearer {token}"}
        a = http.post("/api/shares", json={"study": study}, headers=h).json()
        b = http.post("/api/shares", json={"study": study}, headers=h).json()
        s = {"Authorization": f"Bearer {a['token']}"}
        for _ in range(3):
            assert http.get(f"/dicom-web/studies/{study}/metadata", headers=s).status_code == 200
        assert http.get(f"/dicom-web/studies/{MR_STUDY}/metadata", headers=s).status_code == 403
        assert http.delete(f"/api/shares/{a['id']}", headers=h).status_code == 204
        assert http.delete("/api/session", headers=h).status_code == 204
    args = build_parser().parse_args(["shares", "revoke", b["id"], "--data", str(site.engine.data_dir)])
    assert args.func(args) == 0

    path = site.engine.data_dir / "audit" / "audit.jsonl"
    got = lines(path)
    assert all(set(e) == KEYS and e["event"] in EVENTS for e in got)
    assert [(e["event"], e["outcome"], e["user"]) for e in got] == [
        ("login", "failure", "wendy"),
        ("login", "failure", None),  # a "name" that may be a misplaced password is not written
        ("login", "success", "wendy"),
        ("share-created", "success", "wendy"),
        ("share-created", "success", "wendy"),
        ("share-used", "success", f"share:{a['id']}"),
        ("share-scope-refused", "failure", f"share:{a['id']}"),
        ("share-revoked", "success", "wendy"),
        ("logout", "success", "wendy"),
        ("share-revoked", "success", got[-1]["user"]),
    ]
    assert got[-1]["user"].startswith("cli:") and got[-1]["detail"] == {"share": b["id"]}
    assert [e["detail"].get("share") for e in got[3:5]] == [a["id"], b["id"]]
    assert got[6]["study"] == study and MR_STUDY in got[6]["detail"]["path"]
    assert all(e["client"] == "127.0.0.1" for e in got[:-1])
    # no secret ever reaches the file
    text = path.read_text()
    for secret in (token, a["token"], b["token"], "pw-wendy", "not a name!"):
        assert secret not in text
