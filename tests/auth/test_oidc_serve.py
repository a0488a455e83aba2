"""`[http.oidc]` from the configuration file to a running `dicomvault serve`: the CLI process
reads the section, fetches the JWKS from a real HTTP server, and its HTTP side takes the
provider's tokens (and says why it refuses one, in the response and in its log)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from dicomvault.bench.ports import free_port
from oidc_idp import AUDIENCE, ISSUER, JwksServer, SigningKey, user


def _http_url(proc: subprocess.Popen[str], log: Path, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for line in log.read_text().splitlines():
            if line.startswith("dicomvault serving HTTP "):
                return line.split()[3]
        assert proc.poll() is None, log.read_text()
        time.sleep(0.05)
    raise AssertionError(f"serve printed no HTTP URL in {timeout} s:\n{log.read_text()}")


def test_serve_takes_provider_tokens_from_the_config(tmp_path: Path) -> None:
    key = SigningKey("kc-1", "RS256")
    with JwksServer([key]) as idp:
        cfg = tmp_path / "dicomvault.toml"
        cfg.write_text(f"""
data = "data"

[dimse]
port = {free_port()}

[http]
port = 0

[http.oidc]
issuer = "{ISSUER}"
audience = "{AUDIENCE}"
jwks = "{idp.url}"
roles_claim = "realm_access.roles"
role_map = {{ "pacs-admin" = "admin", radiologist = "reader" }}
""")
        log = tmp_path / "serve.log"
        with log.open("w") as out:
            proc = subprocess.Popen([sys.executable, "-m", "dicomvault.cli", "serve", "--config", str(cfg)],
                                    stdout=out, stderr=subprocess.STDOUT, text=True)
        try:
            url = _http_url(proc, log)
            assert idp.fetches == 1  # at the start, before any token
            with httpx.Client(base_url=url, timeout=30) as http:
                admin = {"Authorization": f"Bearer {key.token(user('ada', 'pacs-admin'))}"}
                assert http.get("/api/users", headers=admin).status_code == 200
                reader = {"Authorization": f"Bearer {key.token(user('rachel', 'radiologist'))}"}
                assert http.get("/api/users", headers=reader).status_code == 403
                expired = key.token(user("ada", "pacs-admin"), exp=int(time.time()) - 3600)
                r = http.get("/api/users", headers={"Authorization": f"Bearer {expired}"})
                assert r.status_code == 401
                assert 'error_description="token expired"' in r.headers["www-authenticate"]
                # no anonymous access on loopback once a provider is named
                assert http.get("/api/stats").status_code == 401
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.wait(40)
    text = log.read_text()
    assert "OIDC: signing key(s) kc-1 from " + idp.url in text
    assert "OIDC token from 127.0.0.1 refused: token expired" in text
    assert expired.rsplit(".", 1)[1] not in text
