"""The HTTP application as a client sees it: health, who may do what (tokens, Basic, anonymous
on loopback only), the /api routes, Prometheus metrics, and errors that carry a reason and a
status but never a Python class name."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest
from pydicom.data import get_testdata_file

from dicomvault.engine import Engine
from dicomvault.errors import DicomVaultError
from dicomvault.http_info import read_http_info
from dicomvault.site import Site, SiteOptions

CT = Path(get_testdata_file("CT_small.dcm"))


def test_healthz_and_viewer_shell(http: httpx.Client) -> None:
    assert http.get("/healthz").text == "ok"
    r = http.get("/")
    assert r.status_code == 200 and 'src="viewer/js/main.js"' in r.text
    assert "script-src 'self'" in r.headers["content-security-policy"]
    js = http.get("/viewer/js/main.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert js.headers["x-content-type-options"] == "nosniff" and js.headers["cache-control"] == "no-cache"
    # A revalidation after no change is a 304, not the file again.
    assert http.get("/viewer/js/main.js", headers={"If-None-Match": js.headers["etag"]}).status_code == 304
    # Nothing outside the viewer folder is reachable through it.
    assert http.get("/viewer/../app.py").status_code == 404
    assert http.get("/viewer/%2e%2e/app.py").status_code == 404


def test_anonymous_writer_on_loopback_until_a_user_exists(site: Site, http: httpx.Client) -> None:
    # No users: an anonymous caller reads and stores, but administers nothing.
    assert http.get("/api/stats").status_code == 200
    r = http.post("/api/instances", content=CT.read_bytes())
    assert r.status_code == 200, r.text
    assert r.json()["SOPInstanceUID"]
    assert http.get("/api/users").status_code == 401
    # The first user turns anonymous access off at once (same running server).
    site.users.add("alice", "reader", password="correct horse")
    assert http.get("/api/stats").status_code == 401
    assert "WWW-Authenticate" in http.get("/api/stats").headers
    basic = "Basic " + base64.b64encode(b"alice:correct horse").decode()
    assert http.get("/api/stats", headers={"Authorization": basic}).status_code == 200
    wrong = "Basic " + base64.b64encode(b"alice:wrong").decode()
    assert http.get("/api/stats", headers={"Authorization": wrong}).status_code == 401
    # reader may not store: 403 names the user and the action
    r = http.post("/api/instances", content=CT.read_bytes(), headers={"Authorization": basic})
    assert r.status_code == 403 and "alice" in r.text


def test_tokens_and_roles(site: Site, http: httpx.Client) -> None:
    site.users.add("pacs-admin", "admin")
    token = site.users.issue_token("pacs-admin")
    auth = {"Authorization": f"Bearer {token}"}
    assert http.get("/api/users", headers=auth).json()[0]["name"] == "pacs-admin"
    r = http.post("/api/users", json={"name": "viewer", "role": "reader"}, headers=auth)
    assert r.status_code == 201
    r = http.post("/api/users/viewer/tokens", headers=auth)
    vt = r.json()["token"]
    assert http.get("/api/stats", headers={"Authorization": f"Bearer {vt}"}).status_code == 200
    assert http.get("/api/users", headers={"Authorization": f"Bearer {vt}"}).status_code == 403
    assert http.get("/api/stats", headers={"Authorization": "Bearer nope"}).status_code == 401
    assert http.delete("/api/users/viewer", headers=auth).status_code == 204
    assert http.get("/api/stats", headers={"Authorization": f"Bearer {vt}"}).status_code == 401
    # the per-start admin token of http.json administers; replication needs the replicator role
    info = read_http_info(site.engine.data_dir)
    assert info is not None and info["url"] == site.url
    admin = {"Authorization": f"Bearer {info['admin_token']}"}
    assert http.get("/api/admin/status", headers=admin).json()["objects"] == 0
    assert http.get("/replication/status", headers={"Authorization": f"Bearer {vt}"}).status_code == 401


def test_non_loopback_without_users_is_refused(tmp_path: Path) -> None:
    with Engine(tmp_path / "d") as eng:
        with pytest.raises(DicomVaultError, match="no users"):
            Site(eng, SiteOptions(host="0.0.0.0", port=0))
        with pytest.raises(DicomVaultError, match="loopback"):
            Site(eng, SiteOptions(host="0.0.0.0", port=0, anonymous="reader"))


def test_errors_carry_reasons_not_class_names(http: httpx.Client) -> None:
    r = http.post("/api/instances", content=b"this is not DICOM at all" * 10)
    assert r.status_code == 400
    assert "Error" not in r.text and "Traceback" not in r.text and r.text
    r = http.get("/api/studies/1.2.3.4")
    assert r.status_code == 404 and "1.2.3.4" in r.text
    r = http.get("/api/studies", params={"limit": "many"})
    assert r.status_code == 400 and "limit" in r.text
    assert http.get("/no/such/route").status_code == 404
    assert http.get("/api/studies", params={"Bogus": "1"}).status_code == 400


def test_metrics_count_requests(http: httpx.Client) -> None:
    http.post("/api/instances", content=CT.read_bytes())
    http.get("/api/stats")
    text = http.get("/metrics").text
    assert "dicomvault_objects 1" in text
    assert 'dicomvault_http_requests_total{method="GET",route="/api/stats",status="200"} 1' in text
    assert "dicomvault_http_request_seconds_bucket" in text


def test_https_with_tls_1_2_minimum(tmp_path: Path) -> None:
    import ssl
    import subprocess

    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    with Engine(tmp_path / "d") as eng:
        s = Site(eng, SiteOptions(port=0, certfile=str(cert), keyfile=str(key)))
        s.start()
        try:
            assert s.url.startswith("https://")
            ctx = ssl.create_default_context(cafile=str(cert))
            assert httpx.get(s.url + "/healthz", verify=ctx).text == "ok"
            old = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            old.load_verify_locations(str(cert))
            old.maximum_version = ssl.TLSVersion.TLSv1_1
            old.minimum_version = ssl.TLSVersion.TLSv1
            with pytest.raises(httpx.ConnectError):
                httpx.get(s.url + "/healthz", verify=old)
        finally:
            s.stop()


def test_anonymous_only_for_direct_local_callers(site: Site, http: httpx.Client) -> None:
    """A reverse proxy on this host connects from 127.0.0.1 for everyone behind it, and a web page
    can reach a loopback port by DNS rebinding: neither is anonymous."""
    assert http.get("/api/stats").status_code == 200
    assert http.get("/api/stats", headers={"X-Forwarded-For": "203.0.113.9"}).status_code == 401
    assert http.get("/api/stats", headers={"Forwarded": "for=203.0.113.9"}).status_code == 401
    assert http.get("/api/stats", headers={"Host": "attacker.example"}).status_code == 401
    assert http.get("/api/stats", headers={"Host": "localhost"}).status_code == 200


def _status_of_head(site: Site, head: str) -> int:
    """Sends only a request head (its body never comes) and reads the status line: the answer
    must come from the head alone."""
    import socket
    from urllib.parse import urlsplit

    u = urlsplit(site.url)
    with socket.create_connection((u.hostname, u.port), timeout=10) as s:
        s.sendall(head.encode() + b"\r\n\r\n")
        return int(s.recv(100).split(b" ")[1])


def test_bodies_over_their_cap_are_413(site: Site) -> None:
    from dicomvault.web import api

    host = "Host: 127.0.0.1"
    big = f"POST /api/instances HTTP/1.1\r\n{host}\r\nContent-Length: {api.MAX_RAW_UPLOAD + 1}"
    assert _status_of_head(site, big) == 413
    stow = (f"POST /dicom-web/studies HTTP/1.1\r\n{host}\r\nContent-Length: {(8 << 30) + 1}\r\n"
            "Content-Type: multipart/related; type=\"application/dicom\"; boundary=x")
    assert _status_of_head(site, stow) == 413


def test_unmatched_routes_share_one_metrics_label(http: httpx.Client) -> None:
    for i in range(3):
        assert http.get(f"/no/such/{i}").status_code == 404
    text = http.get("/metrics").text
    assert 'route="<unmatched>",status="404"} 3' in text
    assert "/no/such" not in text
