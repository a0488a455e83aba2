"""A stand-in identity provider for the OIDC tests: real RSA and EC keys (cryptography), tokens
signed with PyJWT, and the JWKS served by a real HTTP server on a loopback port (or written to
a file), whose key set the test can change while it runs."""

from __future__ import annotations

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

ISSUER = "https://sso.test/realms/hospital"
AUDIENCE = "dicomvault"


class SigningKey:
    def __init__(self, kid: str, alg: str) -> None:
        self.kid, self.alg = kid, alg
        if alg == "ES256":
            self.private: Any = ec.generate_private_key(ec.SECP256R1())
            self.jwk = json.loads(ECAlgorithm.to_jwk(self.private.public_key()))
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.jwk = json.loads(RSAAlgorithm.to_jwk(self.private.public_key()))
        self.jwk.update({"kid": kid, "use": "sig"})

    def token(self, claims: dict[str, Any] | None = None, *, lifetime: float = 300, kid: str | None = None,
              alg: str | None = None, **overrides: Any) -> str:
        """A token as a Keycloak realm issues one; `overrides` replace claims (None removes)."""
        now = int(time.time())
        body: dict[str, Any] = {"iss": ISSUER, "aud": AUDIENCE, "sub": "f1e2d3", "iat": now,
                                "nbf": now, "exp": now + int(lifetime), **(claims or {})}
        for k, v in overrides.items():
            if v is None:
                body.pop(k, None)
            else:
                body[k] = v
        return jwt.encode(body, self.private, algorithm=alg or self.alg,
                          headers={"kid": kid or self.kid})


def user(name: str, *roles: str) -> dict[str, Any]:
    return {"preferred_username": name, "realm_access": {"roles": list(roles)}}


class JwksServer:
    """Serves {"keys": [...]} at /certs; counts the fetches."""

    def __init__(self, keys: list[SigningKey]) -> None:
        self.keys = list(keys)
        self.fetches = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                owner.fetches += 1
                body = json.dumps({"keys": [k.jwk for k in owner.keys]}).encode()
                self.send_response(200 if self.path == "/certs" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/certs"
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> JwksServer:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_jwks(path: Path, keys: list[SigningKey]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"keys": [k.jwk for k in keys]}))
    tmp.replace(path)
