"""`[audit]`: where the audit trail is sent, beside the local log that is always written.

```toml
[audit]
syslog = "tls://audit.example.org:6514"   # or "udp://audit.example.org:514"; absent: not sent
syslog_ca = "audit-ca.crt"                # the repository's certificate is checked against it
                                          # (default: the system's roots); host name included
syslog_cert = "dicomvault.crt"            # ours, for mutual authentication (with syslog_key)
syslog_key = "dicomvault.key"
source_id = "DICOMVAULT"                  # AuditSourceID (default: [dimse] ae_title)
site = "St. Elsewhere Radiology"          # AuditEnterpriseSiteID (default: none)
```
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..config_values import optional_file
from ..errors import DicomVaultError
from .syslog import Endpoint, TargetError, parse_target

_KEYS = {"syslog", "syslog_ca", "syslog_cert", "syslog_key", "source_id", "site"}


class AuditSettingsError(DicomVaultError):
    """The `[audit]` table is invalid (the message names the file and key)."""


@dataclass(frozen=True)
class AuditSettings:
    endpoint: Endpoint | None = None  # None: the log is kept locally only
    source_id: str | None = None
    site: str | None = None


def _text(table: dict[str, Any], key: str, where: str) -> str | None:
    value = table.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or not value.strip():
        raise AuditSettingsError(f"{where}.{key}: must be a non-empty string, got {value!r}")
    return value.strip()


def parse_audit(table: object, where: str, base: Path) -> AuditSettings:
    if not isinstance(table, dict):
        raise AuditSettingsError(f"{where}: [audit] must be a table")
    extra = sorted(set(table) - _KEYS)
    if extra:
        raise AuditSettingsError(f"{where}: unknown key(s) {', '.join(extra)} "
                                 f"(allowed: {', '.join(sorted(_KEYS))})")
    ca, cert, key = (optional_file(table, k, where, base, AuditSettingsError)
                     for k in ("syslog_ca", "syslog_cert", "syslog_key"))
    endpoint = None
    if "syslog" in table:
        url = table["syslog"]
        if not isinstance(url, str):
            raise AuditSettingsError(f"{where}.syslog: must be a string like tls://host:6514, got {url!r}")
        try:
            target = parse_target(url)
        except TargetError as exc:
            raise AuditSettingsError(f"{where}.syslog: {exc}") from exc
        if target.scheme == "udp" and (ca or cert or key):
            raise AuditSettingsError(f"{where}: syslog_ca, syslog_cert and syslog_key are for tls://, "
                                     f"not {url}")
        if (cert is None) != (key is None):
            raise AuditSettingsError(f"{where}: syslog_cert and syslog_key go together")
        endpoint = Endpoint(target, ca, cert, key)
    elif ca or cert or key:
        raise AuditSettingsError(f"{where}: syslog_ca, syslog_cert and syslog_key need syslog")
    return AuditSettings(endpoint, _text(table, "source_id", where), _text(table, "site", where))
