"""`[http.oidc]`: OpenID Connect bearer tokens from a site's identity provider (auth/oidc.py).

```toml
[http.oidc]
issuer = "https://sso.example.org/realms/hospital"        # the token's `iss`, exactly
audience = "dicomvault"                                   # the token's `aud` must name it (or a list)
jwks = "https://sso.example.org/realms/hospital/protocol/openid-connect/certs"  # or a file path
username_claim = "preferred_username"                     # falls back to `sub` when absent
roles_claim = "realm_access.roles"                        # dots walk into objects
role_map = { radiologist = "reader", technologist = "writer", "pacs-admin" = "admin" }
leeway = 30                                               # seconds of clock skew on exp/nbf/iat
jwks_refresh_min = 60      # an unknown `kid` fetches the JWKS again at most this often (seconds)
jwks_max_age = 3600        # keys are fetched again after this long, so removed keys stop working
jwks_ca = "sso-ca.pem"     # the CA of an https JWKS URL (default: the system's roots)
algorithms = ["RS256", "ES256", "PS256"]
```

Unknown keys are errors; `issuer`, `audience`, `jwks` and `role_map` are required.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config_values import existing_file
from ..errors import DicomVaultError
from .roles import ROLES

# Asymmetric signatures only: the JWKS is public, so an HMAC "verified" with a public key as its
# secret would let anyone who fetched it mint tokens, and "none" is no signature at all.
ALLOWED_ALGORITHMS: tuple[str, ...] = ("RS256", "ES256", "PS256")

_KEYS = {"issuer", "audience", "jwks", "username_claim", "roles_claim", "role_map", "leeway",
         "jwks_refresh_min", "jwks_max_age", "jwks_ca", "algorithms"}
_REQUIRED = ("issuer", "audience", "jwks", "role_map")


class OidcSettingsError(DicomVaultError):
    """An `[http.oidc]` entry is invalid (the message names the file and key)."""


@dataclass(frozen=True)
class OidcSettings:
    issuer: str
    audience: tuple[str, ...]
    # an http(s) URL, or an absolute path to a JWKS file
    jwks: str
    role_map: tuple[tuple[str, str], ...]
    username_claim: str = "preferred_username"
    roles_claim: str = "roles"
    leeway: float = 30.0
    jwks_refresh_min: float = 60.0
    jwks_max_age: float = 3600.0
    jwks_ca: Path | None = None
    algorithms: tuple[str, ...] = ALLOWED_ALGORITHMS

    @property
    def jwks_is_url(self) -> bool:
        return is_url(self.jwks)

    def roles_for(self, idp_values: list[str]) -> list[str]:
        """Our roles that the identity provider's role or group names map to."""
        table = dict(self.role_map)
        return [table[v] for v in idp_values if v in table]


def is_url(source: str) -> bool:
    return source.startswith(("https://", "http://"))


def _str(table: dict[str, Any], key: str, where: str, default: str | None = None) -> str:
    value = table.get(key, default)
    if not isinstance(value, str) or not value.strip():
        raise OidcSettingsError(f"{where}.{key}: must be a non-empty string, got {value!r}")
    return value.strip()


def _seconds(table: dict[str, Any], key: str, where: str, default: float, hi: float, lo: float = 0) -> float:
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
        raise OidcSettingsError(f"{where}.{key}: must be a number of seconds {lo:g}-{hi:g}, got {value!r}")
    return float(value)


def _audience(value: object, where: str) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(a, str) and a for a in items):
        raise OidcSettingsError(f"{where}.audience: must be a string or a list of strings, got {value!r}")
    return tuple(items)


def _role_map(value: object, where: str) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, dict) or not value:
        raise OidcSettingsError(f"{where}.role_map: must be a table of identity-provider role = our role, "
                                f"e.g. {{ radiologist = \"reader\" }}; got {value!r}")
    out = []
    for idp, ours in value.items():
        if ours not in ROLES:
            raise OidcSettingsError(f"{where}.role_map.{idp}: {ours!r} is not a role; roles are "
                                    f"{', '.join(ROLES)}")
        out.append((idp, ours))
    return tuple(out)


def _algorithms(value: object, where: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not value or not all(a in ALLOWED_ALGORITHMS for a in value):
        raise OidcSettingsError(f"{where}.algorithms: must be a non-empty list of "
                                f"{', '.join(ALLOWED_ALGORITHMS)}, got {value!r}")
    return tuple(value)


def parse_oidc(table: object, where: str, base: Path) -> OidcSettings:
    """`table` is the `[http.oidc]` table; relative paths are relative to `base` (the config
    file's directory)."""
    if not isinstance(table, dict):
        raise OidcSettingsError(f"{where}: must be a table")
    extra = sorted(set(table) - _KEYS)
    if extra:
        raise OidcSettingsError(f"{where}: unknown key(s) {', '.join(extra)} "
                                f"(allowed: {', '.join(sorted(_KEYS))})")
    for key in _REQUIRED:
        if key not in table:
            raise OidcSettingsError(f"{where}: missing {key}")
    jwks = _str(table, "jwks", where)
    if not is_url(jwks):
        # A file is checked now, so a typo fails the start rather than every token later.
        jwks = str(existing_file(jwks, f"{where}.jwks", base, OidcSettingsError))
    ca = table.get("jwks_ca")
    return OidcSettings(
        issuer=_str(table, "issuer", where),
        audience=_audience(table["audience"], where),
        jwks=jwks,
        role_map=_role_map(table["role_map"], where),
        username_claim=_str(table, "username_claim", where, "preferred_username"),
        roles_claim=_str(table, "roles_claim", where, "roles"),
        leeway=_seconds(table, "leeway", where, 30.0, 600.0),
        # At least a second: each token naming an unknown kid may cost a fetch from the provider.
        jwks_refresh_min=_seconds(table, "jwks_refresh_min", where, 60.0, 86400.0, lo=1.0),
        jwks_max_age=_seconds(table, "jwks_max_age", where, 3600.0, 30 * 86400.0, lo=60.0),
        jwks_ca=None if ca is None else existing_file(_str(table, "jwks_ca", where), f"{where}.jwks_ca", base,
                                                      OidcSettingsError),
        algorithms=_algorithms(table.get("algorithms", list(ALLOWED_ALGORITHMS)), where),
    )
