"""[hl7]: the MLLP listener's settings (docs/integration.md, HL7 section)."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from ...config_values import (
    ConfigError,
    check_ae_title,
    check_port,
    check_str,
    check_str_list,
    optional_file,
    unknown_keys,
)

DEFAULT_PORT = 2575


@dataclass(frozen=True)
class Hl7Config:
    """host, port (0: off), max_message bytes, idle_timeout seconds, and `stations`: modality ->
    Scheduled Station AE Title, for orders that name no station (IPC-9 / OBR-21)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_message: int = 1 << 20
    idle_timeout: float = 60.0
    max_connections: int = 32
    # sender addresses or networks admitted; empty: any that reaches `host` (loopback only)
    allow: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    stations: dict[str, str] = field(default_factory=dict)
    # the default port busy (another archive on this host, parallel tests) is a warning, a port
    # someone chose a failure
    port_explicit: bool = False
    # MLLP over TLS (BCP 195, tls_policy.py) when a certificate is set; with `tls_ca`, senders
    # must present a certificate it signed
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None


def parse_hl7(table: object, where: str, base: Path = Path(".")) -> Hl7Config:
    """The [hl7] table; relative TLS file names are relative to `base` (the config file's folder)."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    keys = {"host", "port", "max_message", "idle_timeout", "max_connections", "allow", "stations",
            "tls_cert", "tls_key", "tls_ca"}
    unknown_keys(table, keys, where)
    max_message = table.get("max_message", 1 << 20)
    bad = isinstance(max_message, bool) or not isinstance(max_message, int)
    if bad or not 1024 <= max_message <= 1 << 28:
        raise ConfigError(f"{where}.max_message: must be 1024-268435456 bytes, got {max_message!r}")
    idle = table.get("idle_timeout", 60.0)
    if not isinstance(idle, int | float) or isinstance(idle, bool) or not 0.1 <= idle <= 86_400:
        raise ConfigError(f"{where}.idle_timeout: must be 0.1-86400 seconds, got {idle!r}")
    conns = table.get("max_connections", 32)
    if isinstance(conns, bool) or not isinstance(conns, int) or not 1 <= conns <= 4096:
        raise ConfigError(f"{where}.max_connections: must be 1-4096, got {conns!r}")
    allow = []
    for text in check_str_list(table.get("allow", []), f"{where}.allow"):
        try:
            allow.append(ipaddress.ip_network(text, strict=False))
        except ValueError as exc:
            raise ConfigError(f"{where}.allow: {exc}") from exc
    stations = table.get("stations", {})
    if not isinstance(stations, dict):
        raise ConfigError(f"{where}.stations: expected a table modality = \"AE\"")
    cert, key, ca = (optional_file(table, k, where, base) for k in ("tls_cert", "tls_key", "tls_ca"))
    if cert is None and (key is not None or ca is not None):
        raise ConfigError(f"{where}: tls_key and tls_ca need tls_cert (the listener's certificate)")
    return Hl7Config(
        host=check_str(table.get("host", "127.0.0.1"), f"{where}.host"),
        port=check_port(table.get("port", DEFAULT_PORT), f"{where}.port"),
        port_explicit="port" in table, max_message=max_message, idle_timeout=float(idle),
        max_connections=conns, allow=tuple(allow), tls_cert=cert, tls_key=key, tls_ca=ca,
        stations={str(k).upper(): check_ae_title(v, f"{where}.stations.{k}") for k, v in stations.items()})
