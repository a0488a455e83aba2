"""A stand-in identity provider for the OIDC tests: real RSA and EC keys (cryptography), tokens
signed with PyJWT, and the JWKS served by a real HTTP server on a loopback port (or written to
a file), whose key set the test can change while it runs."""

from __future__ import annotations

import datetime
import ipaddress
import json
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import NameOID
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

    def __init__(self, keys: list[SigningKey], tls: ssl.SSLContext | None = None, port: int = 0) -> None:
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

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        if tls is not None:
            self.server.socket = tls.wrap_socket(self.server.socket, server_side=True)
        scheme = "https" if tls is not None else "http"
        self.url = f"{scheme}://127.0.0.1:{self.server.server_address[1]}/certs"
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


def certificate(folder: Path, name: str, ca: tuple[Any, x509.Certificate] | None = None
                ) -> tuple[Path, Path, Any, x509.Certificate]:
    """(key file, certificate file, key, certificate) of an EC P-256 certificate for 127.0.0.1,
    signed by `ca` (key, certificate) or self-signed: made in milliseconds, unlike RSA keys."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    issuer_key, issuer = (key, subject) if ca is None else (ca[0], ca[1].subject)
    now = datetime.datetime.now(datetime.UTC)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca is None, path_length=None), critical=True)
               .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                              critical=False))
    cert = builder.sign(issuer_key, hashes.SHA256())
    key_path, cert_path = folder / f"{name}.key", folder / f"{name}.crt"
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path, key, cert
