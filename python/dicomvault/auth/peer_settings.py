"""A known DICOM peer: who may call us (from where, with which certificate, for which services)
and where we call it. Parsed alike from the configuration file's [[peers]] (config.py) and from
`<data>/auth/peers.json` (peer_store.py)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..config_values import (
    ConfigError,
    check_ae_title,
    check_bool,
    check_port,
    check_str,
    check_str_list,
    unknown_keys,
)

# What a known peer may ask of us (C-ECHO is always allowed): C-STORE; C-FIND on the archive;
# C-GET and C-MOVE; storage commitment; C-FIND on the modality worklist; MPPS N-CREATE/N-SET.
# The worklist is its own service, not "query": a modality that reads its schedule need not be
# able to browse every patient's archived studies (and a viewer that queries the archive need
# not see the schedule).
SERVICES = ("store", "query", "retrieve", "commit", "worklist", "mpps")


@dataclass(frozen=True)
class PeerConfig:
    """A known remote AE: who may call us (from where, with which certificate, for what), and where
    we call it (C-MOVE destination, storage commitment reports, forwarding)."""

    ae_title: str
    host: str
    port: int  # 0: a caller only, never called back
    tls: bool = False  # our associations to it (C-MOVE, storage commitment reports) use TLS
    allow: frozenset[str] = frozenset(SERVICES)
    # C-MOVE destinations it may name besides itself ("*": any known peer)
    move_to: tuple[str, ...] = ()
    # addresses or networks (CIDR) it may call from ("*": anywhere); empty: `host` only
    from_hosts: tuple[str, ...] = ()
    # SHA-256 fingerprint (hex) of the client certificate its DICOM TLS associations must present
    cert: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON/TOML form (`parse_peer` reads it back)."""
        out: dict[str, Any] = {"ae_title": self.ae_title, "host": self.host, "port": self.port,
                               "allow": sorted(self.allow)}
        if self.tls:
            out["tls"] = True
        if self.move_to:
            out["move_to"] = list(self.move_to)
        if self.from_hosts:
            out["from_hosts"] = list(self.from_hosts)
        if self.cert:
            out["cert"] = self.cert
        return out


_PEER_KEYS = {"ae_title", "host", "port", "tls", "allow", "move_to", "from_hosts", "cert"}
_PEER_REQUIRED = ("ae_title", "host")


def parse_peer(item: object, w: str) -> PeerConfig:
    """One peer, from a [[peers]] table or an entry of `<data>/auth/peers.json`."""
    if not isinstance(item, dict):
        raise ConfigError(f"{w}: must be a table")
    unknown_keys(item, _PEER_KEYS, w)
    for key in _PEER_REQUIRED:
        if key not in item:
            raise ConfigError(f"{w}: missing {key}")
    title = check_ae_title(item["ae_title"], f"{w}.ae_title")
    host = check_str(item["host"], f"{w}.host")
    port = 0 if item.get("port", 0) == 0 else check_port(item["port"], f"{w}.port")
    allow = check_str_list(item.get("allow", list(SERVICES)), f"{w}.allow")
    bad = sorted(set(allow) - set(SERVICES))
    if bad:
        raise ConfigError(f"{w}.allow: unknown service(s) {', '.join(bad)} (services: {', '.join(SERVICES)})")
    move_to = tuple(t if t == "*" else check_ae_title(t, f"{w}.move_to")
                    for t in check_str_list(item.get("move_to", []), f"{w}.move_to"))
    from_hosts = tuple(check_str_list(item.get("from_hosts", []), f"{w}.from_hosts"))
    cert = item.get("cert")
    if cert is not None:
        cert = normalise_fingerprint(check_str(cert, f"{w}.cert"), f"{w}.cert")
    return PeerConfig(title, host, port, tls=check_bool(item.get("tls", False), f"{w}.tls"),
                      allow=frozenset(allow), move_to=move_to, from_hosts=from_hosts, cert=cert)


def normalise_fingerprint(text: str, where: str) -> str:
    """A SHA-256 certificate fingerprint as lowercase hex, from any of the usual spellings
    (`openssl x509 -fingerprint -sha256` prints AB:CD:..., with an optional `sha256:` prefix)."""
    hexed = text.strip().lower().removeprefix("sha256:").removeprefix("sha256=").replace(":", "")
    if len(hexed) != 64 or any(c not in "0123456789abcdef" for c in hexed):
        raise ConfigError(f"{where}: not a SHA-256 fingerprint (64 hex digits, colons allowed): {text!r}")
    return hexed
