"""OpenID Connect bearer tokens against the real site: keys made here, tokens signed with PyJWT,
the JWKS served by a real HTTP server (or a file), requests over real HTTP. No token, garbage,
forged, expired, foreign and under-privileged tokens are refused with the right status and
RFC 6750 challenge; valid ones get their mapped role; a key rotated in at the provider works
without a restart; every refusal is in the log and the audit trail, the token never is."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import re
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from pydicom.data import get_testdata_file

from dicomvault import tls_policy
from dicomvault.auth.jwks import JwksCache
from dicomvault.auth.oidc_settings import OidcSettings, OidcSettingsError, parse_oidc
from dicomvault.config import load_config
from dicomvault.engine import Engine
from dicomvault.site import Site, SiteOptions
from oidc_idp import AUDIENCE, ISSUER, JwksServer, SigningKey, certificate, user, write_jwks

CT = Path(get_testdata_file("CT_small.dcm"))
ROLE_MAP = (("radiologist", "reader"), ("technologist", "writer"), ("pacs-admin", "admin"))


@pytest.fixture(scope="module")
def rsa_key() -> SigningKey:
    return SigningKey("rsa-1", "RS256")


@pytest.fixture(scope="module")
def ec_key() -> SigningKey:
    return SigningKey("ec-1", "ES256")


@pytest.fixture(scope="module")
def rogue() -> SigningKey:
    # Same kid as the real key, another private key: a forgery.
    return SigningKey("rsa-1", "RS256")


def settings(jwks: str, **kw: object) -> OidcSettings:
    base = OidcSettings(issuer=ISSUER, audience=(AUDIENCE,), jwks=jwks, role_map=ROLE_MAP,
                        roles_claim="realm_access.roles")
    return replace(base, **kw)  # type: ignore[arg-type]


class Clock:
    """The JWKS cache's clock, moved by the test: refresh spacing without sleeping."""

    def __init__(self) -> None:
        self.now = time.monotonic()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def clock_of(site: Site) -> Clock:
    assert site.security.oidc is not None
    clock = Clock()
    site.security.oidc.jwks.clock = clock
    return clock


def start_site(tmp_path: Path, oidc: OidcSettings) -> Site:
    eng = Engine(tmp_path / "data", min_free_bytes=0)
    site = Site(eng, SiteOptions(port=0, oidc=oidc))
    site.start()
    return site


def stop_site(site: Site) -> None:
    site.stop()
    site.engine.close()


@pytest.fixture
def idp(rsa_key: SigningKey, ec_key: SigningKey) -> Iterator[JwksServer]:
    with JwksServer([rsa_key, ec_key]) as server:
        yield server


@pytest.fixture
def site(tmp_path: Path, idp: JwksServer) -> Iterator[Site]:
    s = start_site(tmp_path, settings(idp.url))
    try:
        yield s
    finally:
        stop_site(s)


@pytest.fixture
def http(site: Site) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=site.url, timeout=30) as c:
        yield c


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def audit(site: Site) -> list[dict]:
    path = site.engine.data_dir / "audit" / "audit.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def invalid_token(r: httpx.Response) -> str:
    """The error_description of an RFC 6750 invalid_token challenge (asserting it is one)."""
    assert r.status_code == 401, (r.status_code, r.text)
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith("Bearer ") and 'error="invalid_token"' in challenge, challenge
    return challenge.split('error_description="', 1)[1].rstrip('"')


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def hs256_with_public_key(key: SigningKey, claims: dict) -> str:
    """The classic confusion attack: HMAC keyed with the provider's public key (anyone has it)."""
    pem = key.private.public_key().public_bytes(serialization.Encoding.PEM,
                                                serialization.PublicFormat.SubjectPublicKeyInfo)
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT", "kid": key.kid}).encode())
    body = _b64(json.dumps(claims).encode())
    sig = hmac.new(pem, f"{head}.{body}".encode(), hashlib.sha256).digest()
    return f"{head}.{body}.{_b64(sig)}"


def test_valid_tokens_get_their_mapped_roles(site: Site, http: httpx.Client, rsa_key: SigningKey,
                                             ec_key: SigningKey) -> None:
    reader = rsa_key.token(user("rachel", "radiologist", "offline_access"))
    writer = SigningKey.token(rsa_key, user("tom", "technologist"), alg="PS256")
    admin = ec_key.token(user("ada", "pacs-admin", "radiologist"))

    r = http.post("/api/instances", content=CT.read_bytes(), headers=bearer(writer))
    assert r.status_code == 200, r.text

    q = http.get("/dicom-web/studies", headers=bearer(reader))
    assert q.status_code == 200 and len(q.json()) == 1
    me = http.get("/api/session", headers=bearer(reader)).json()
    assert (me["name"], me["role"], me["method"]) == ("rachel", "reader", "oidc")
    # A reader may not store or administer: 403, and no invalid_token challenge (the token holds).
    for r in (http.post("/api/instances", content=CT.read_bytes(), headers=bearer(reader)),
              http.get("/api/users", headers=bearer(reader))):
        assert r.status_code == 403 and "rachel" in r.text
        assert "invalid_token" not in r.headers.get("www-authenticate", "")
    # The widest of the mapped roles applies (admin over reader); ES256 keys work.
    assert http.get("/api/users", headers=bearer(admin)).status_code == 200
    assert http.get("/api/session", headers=bearer(admin)).json()["role"] == "admin"

    # A valid token whose roles map to nothing of ours: 403 naming what it held.
    r = http.get("/dicom-web/studies", headers=bearer(rsa_key.token(user("guest", "offline_access"))))
    assert r.status_code == 403 and "offline_access" in r.text and "role_map" in r.text


def test_refused_tokens_are_401_invalid_token(site: Site, http: httpx.Client, rsa_key: SigningKey,
                                             rogue: SigningKey, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    claims = user("rachel", "radiologist")
    now = int(time.time())

    r = http.get("/dicom-web/studies")
    assert r.status_code == 401 and "error=" not in r.headers["www-authenticate"]  # RFC 6750 3.1
    # Not a JWT: our own token stores answer (they know no such token).
    r = http.get("/dicom-web/studies", headers=bearer("garbage"))
    assert r.status_code == 401

    cases = {
        "malformed token": "eyJhbGciOiJSUzI1NiJ9.not-base64!.xx",
        "signature does not verify": rogue.token(claims),
        "token expired": rsa_key.token(claims, iat=now - 7200, nbf=now - 7200, exp=now - 3600),
        "token not valid yet (nbf)": rsa_key.token(claims, nbf=now + 3600, exp=now + 7200),
        "token issued in the future (iat)": rsa_key.token(claims, iat=now + 3600, exp=now + 7200),
        "wrong issuer": rsa_key.token(claims, iss="https://evil.test/realms/hospital"),
        "wrong audience": rsa_key.token(claims, aud="some-other-app"),
        "token lacks the exp claim": rsa_key.token(claims, exp=None),
        "token lacks the aud claim": rsa_key.token(claims, aud=None),
        "algorithm none not accepted": jwt.encode({**claims, "iss": ISSUER, "aud": AUDIENCE,
                                                   "exp": now + 300}, None, algorithm="none"),
        "algorithm HS256 not accepted": hs256_with_public_key(
            rsa_key, {**claims, "iss": ISSUER, "aud": AUDIENCE, "exp": now + 300}),
        "unknown signing key nobody": rsa_key.token(claims, kid="nobody"),
    }
    for expected, token in cases.items():
        r = http.get("/dicom-web/studies", headers=bearer(token))
        assert invalid_token(r) == expected, (expected, r.text)
    # Within leeway (30 s) an expired token still holds: clocks differ a little.
    assert http.get("/dicom-web/studies", headers=bearer(
        rsa_key.token(claims, iat=now - 600, nbf=now - 600, exp=now - 10))).status_code == 200

    # Each refusal logged with its reason, and recorded as a failed User Authentication.
    logged = [r.getMessage() for r in caplog.records if "OIDC token from" in r.getMessage()]
    assert len(logged) == len(cases)
    failures = [e for e in audit(site) if e["event"] == "login" and e["outcome"] == "failure"]
    # One line per reason a minute: "none" and HS256 are one reason (an algorithm not accepted).
    assert len(failures) == len(cases) - 1
    assert all(e["code"] == "DCM 110114" and e["detail"]["method"] == "oidc" for e in failures)
    reasons = " | ".join(e["detail"]["reason"] for e in failures)
    for expected in ("expired", "wrong issuer", "wrong audience", "signature", "'none'", "lacks the exp"):
        assert expected in reasons
    # ... and never the token itself.
    trail = (site.engine.data_dir / "audit" / "audit.jsonl").read_text() + caplog.text
    signatures = [t.rsplit(".", 1)[-1] for t in cases.values()]
    assert sum(len(sig) >= 16 for sig in signatures) >= 9
    assert not [sig for sig in signatures if len(sig) >= 16 and sig in trail]


def test_refusals_are_throttled_in_the_audit_not_lost(site: Site, http: httpx.Client,
                                                      rsa_key: SigningKey) -> None:
    expired = rsa_key.token(user("rachel", "radiologist"), exp=int(time.time()) - 3600)
    for _ in range(5):
        invalid_token(http.get("/dicom-web/studies", headers=bearer(expired)))
    site.audit.clock = lambda: time.time() + 61
    invalid_token(http.get("/dicom-web/studies", headers=bearer(expired)))
    failures = [e for e in audit(site) if e["outcome"] == "failure"]
    assert len(failures) == 2 and failures[1]["detail"]["suppressed"] == 4


def test_success_is_audited_once_per_user_and_role(site: Site, http: httpx.Client,
                                                   rsa_key: SigningKey) -> None:
    token = rsa_key.token(user("rachel", "radiologist"))
    for _ in range(3):
        assert http.get("/dicom-web/studies", headers=bearer(token)).status_code == 200
    ok = [e for e in audit(site) if e["event"] == "login" and e["outcome"] == "success"]
    assert [(e["user"], e["detail"]) for e in ok] == [("rachel", {"method": "oidc", "role": "reader"})]


def test_key_rotation_without_restart(site: Site, http: httpx.Client, idp: JwksServer,
                                      rsa_key: SigningKey) -> None:
    clock = clock_of(site)
    new = SigningKey("rsa-2", "RS256")
    token = new.token(user("rachel", "radiologist"))
    clock.advance(61)  # past jwks_refresh_min (60 s) since the start's fetch
    assert invalid_token(http.get("/dicom-web/studies", headers=bearer(token))) == "unknown signing key rsa-2"
    fetched = idp.fetches
    assert fetched == 2  # the start's, and the one the unknown kid asked for
    # A flood of invented kids within jwks_refresh_min fetches nothing more.
    for i in range(20):
        invalid_token(http.get("/dicom-web/studies", headers=bearer(new.token(user("x", "radiologist"),
                                                                              kid=f"forged-{i}"))))
    assert idp.fetches == fetched
    # ... and writes one audit line, however many kids are invented (the rest are counted).
    unknown = [e for e in audit(site) if "does not hold" in e["detail"].get("reason", "")]
    assert len(unknown) == 1
    # The provider rotates: the new key is published (the old one kept for tokens in flight).
    idp.keys.append(new)
    clock.advance(61)
    assert http.get("/dicom-web/studies", headers=bearer(token)).status_code == 200
    old = bearer(rsa_key.token(user("r", "radiologist")))
    assert http.get("/dicom-web/studies", headers=old).status_code == 200
    # The old key retired: its tokens stop working once the set is fetched again, those already
    # verified (and remembered) too.
    idp.keys.remove(rsa_key)
    assert http.get("/dicom-web/studies", headers=old).status_code == 200
    clock.advance(61)
    http.get("/dicom-web/studies", headers=bearer(new.token(user("x", "radiologist"), kid="refetch")))
    assert invalid_token(http.get("/dicom-web/studies", headers=old)) == "unknown signing key rsa-1"
    assert http.get("/dicom-web/studies", headers=bearer(token)).status_code == 200


def test_jwks_from_a_file_and_rotation(tmp_path: Path, rsa_key: SigningKey, ec_key: SigningKey) -> None:
    path = tmp_path / "jwks.json"
    write_jwks(path, [rsa_key])
    site = start_site(tmp_path, settings(str(path)))
    try:
        with httpx.Client(base_url=site.url, timeout=30) as http:
            clock = clock_of(site)
            ada = bearer(rsa_key.token(user("ada", "pacs-admin")))
            assert http.get("/api/users", headers=ada).status_code == 200
            token = ec_key.token(user("ada", "pacs-admin"))
            clock.advance(61)
            assert invalid_token(http.get("/api/users", headers=bearer(token))) == "unknown signing key ec-1"
            write_jwks(path, [rsa_key, ec_key])
            # Asked again at once: still within jwks_refresh_min, the file is not read again.
            assert invalid_token(http.get("/api/users", headers=bearer(token))) == "unknown signing key ec-1"
            clock.advance(61)
            assert http.get("/api/users", headers=bearer(token)).status_code == 200
    finally:
        stop_site(site)


def test_provider_down_at_start_then_up(tmp_path: Path, rsa_key: SigningKey) -> None:
    with JwksServer([rsa_key]) as idp:
        url, port = idp.url, idp.server.server_address[1]
    # Nothing listens there now: the site starts anyway, and says why it cannot check tokens.
    site = start_site(tmp_path, settings(url))
    try:
        clock = clock_of(site)
        with httpx.Client(base_url=site.url, timeout=30) as http:
            token = rsa_key.token(user("rachel", "radiologist"))
            r = http.get("/dicom-web/studies", headers=bearer(token))
            assert r.status_code == 503 and "no signing keys" in r.text and url in r.text
            assert "Connection refused" in r.text
            # Local users go on working meanwhile.
            site.users.add("local", "reader")
            local = site.users.issue_token("local")
            assert http.get("/dicom-web/studies", headers=bearer(local)).status_code == 200
            # The provider comes back: the next token after jwks_refresh_min fetches the keys.
            with JwksServer([rsa_key], port=port) as back:
                assert http.get("/dicom-web/studies", headers=bearer(token)).status_code == 503
                clock.advance(61)
                assert http.get("/dicom-web/studies", headers=bearer(token)).status_code == 200
                assert back.fetches == 1
    finally:
        stop_site(site)


def test_session_and_user_tokens_still_work_beside_oidc(site: Site, http: httpx.Client) -> None:
    site.users.add("wendy", "writer", password="correct horse battery")
    session = http.post("/api/session", json={"name": "wendy", "password": "correct horse battery"}).json()
    assert http.get("/api/session", headers=bearer(session["token"])).json()["method"] == "session"
    assert http.get("/api/stats", headers=bearer(site.users.issue_token("wendy"))).status_code == 200
    # And no anonymous access on loopback: naming a provider means users are identified.
    assert http.get("/dicom-web/studies").status_code == 401


def test_config_section(tmp_path: Path, rsa_key: SigningKey) -> None:
    jwks = tmp_path / "jwks.json"
    write_jwks(jwks, [rsa_key])
    cfg = tmp_path / "dicomvault.toml"
    cfg.write_text(f"""
[http.oidc]
issuer = "{ISSUER}"
audience = ["{AUDIENCE}", "viewer"]
jwks = "jwks.json"
roles_claim = "resource_access.dicomvault.roles"
role_map = {{ radiologist = "reader", "pacs-admin" = "admin" }}
leeway = 10
""")
    oidc = load_config(cfg).http.oidc
    assert oidc is not None
    assert (oidc.jwks, oidc.audience, oidc.leeway) == (str(jwks), (AUDIENCE, "viewer"), 10.0)
    assert oidc.roles_for(["pacs-admin", "other"]) == ["admin"]
    assert oidc.algorithms == ("RS256", "ES256", "PS256")
    good = {"issuer": ISSUER, "audience": AUDIENCE, "jwks": str(jwks), "role_map": {"r": "reader"}}
    bad = [
        ({**good, "isuser": "typo"}, "unknown key(s) isuser"),
        ({k: v for k, v in good.items() if k != "audience"}, "missing audience"),
        ({**good, "role_map": {"r": "superuser"}}, "'superuser' is not a role"),
        ({**good, "jwks": "missing.json"}, "no such file"),
        ({**good, "algorithms": ["HS256"]}, "algorithms"),
        ({**good, "algorithms": ["none"]}, "algorithms"),
        ({**good, "leeway": "soon"}, "leeway"),
        ({**good, "jwks_refresh_min": 0}, "jwks_refresh_min: must be a number of seconds 1-86400"),
    ]
    for table, message in bad:
        with pytest.raises(OidcSettingsError, match=re.escape(message)):
            parse_oidc(table, "cfg: http.oidc", tmp_path)


def test_jwks_over_https_is_verified(tmp_path: Path, rsa_key: SigningKey) -> None:
    _, ca_crt, *ca = certificate(tmp_path, "site-ca")
    server_key, server_crt, *_ = certificate(tmp_path, "sso", (ca[0], ca[1]))
    rogue_key, rogue_crt, *_ = certificate(tmp_path, "rogue")
    with JwksServer([rsa_key], tls_policy.server_context(server_crt, server_key)) as idp:
        good = JwksCache(idp.url, ("RS256",), ca=ca_crt)
        assert good.refresh() and good.find("rsa-1", "RS256")
        # Without the site CA (system roots only) the provider's certificate is not trusted.
        untrusted = JwksCache(idp.url, ("RS256",))
        assert not untrusted.refresh() and not untrusted.loaded
        assert "certificate verify failed" in str(untrusted.last_error)
    # A server the site CA did not sign (a man in the middle) is refused, keys kept as they were.
    with JwksServer([SigningKey("evil", "RS256")], tls_policy.server_context(rogue_crt, rogue_key)) as evil:
        good.source = evil.url
        assert not good.refresh(force=True) and "certificate verify failed" in str(good.last_error)
        assert good.find("rsa-1", "RS256") and not good.find("evil", "RS256")
