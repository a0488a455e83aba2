"""The server configuration: a TOML file (read with tomllib), overridden by command-line options.

```toml
data = "/var/lib/dicomvault"      # data directory; relative paths are relative to this file

[dimse]
ae_title = "DICOMVAULT"
host = "127.0.0.1"
port = 11112
accept_unknown_callers = true
max_pdu = 131072
max_associations = 128
workers = 1                        # DIMSE receiver processes; 1 = in the server process
tuned_reactor = true               # event-driven reactors of our associations (dimse/association.py)
fast_path = true                   # C-STORE/C-ECHO read and answered natively (dimse/fastpath.py)
tls_port = 2762                    # DICOM TLS listener beside `port` (0 or absent: none)
tls_cert = "dicomvault.crt"        # our certificate chain and key (PEM), for TLS both ways
tls_key = "dicomvault.key"
tls_ca = "ca.crt"                  # callers must present a certificate it signed; verifies TLS peers
acse_timeout = 30                  # seconds for association setup and release
dimse_timeout = 120                # seconds a peer may take to answer within a DIMSE exchange
network_timeout = 300              # seconds without a byte before an association is dropped

[[peers]]
ae_title = "STORESCP"
host = "127.0.0.1"
port = 11113
tls = false                        # C-MOVE and storage commitment to this peer over TLS
```

`[replication]` and `[[forward]]` are documented in replication/settings.py, `tiers` and
`[tiering]` (tiered placement) in storage/settings.py, `[storage]` (the free-space reserve) in
storage/reserve.py.

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .engine import DEFAULT_DATA_DIR
from .errors import DicomVaultError
from .replication.settings import ReplicationSettings, parse_settings
from .storage.reserve import Reserve, parse_reserve
from .storage.settings import TieringSettings, default_settings, parse_tiering

DEFAULT_AE_TITLE = "DICOMVAULT"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_DIMSE_PORT = 11112


class ConfigError(DicomVaultError):
    """The configuration file or an option is invalid (the message names the file and key)."""


def check_ae_title(value: object, where: str) -> str:
    """A valid AE title (PS3.5 AE: 1-16 chars of default repertoire, no backslash or control
    characters, not only spaces), stripped of its padding."""
    if not isinstance(value, str):
        raise ConfigError(f"{where}: AE title must be a string, got {value!r}")
    title = value.strip()
    if not title or len(title) > 16 or "\\" in title or any(ord(c) < 32 or ord(c) > 126 for c in title):
        raise ConfigError(f"{where}: invalid AE title {value!r} (1-16 printable ASCII characters, no '\\')")
    return title


def _check_port(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ConfigError(f"{where}: port must be an integer 0-65535, got {value!r}")
    return value


def _check_int(value: object, where: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{where}: must be an integer {lo}-{hi}, got {value!r}")
    return value


def _check_seconds(value: object, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0.1 <= value <= 86400:
        raise ConfigError(f"{where}: must be a number of seconds 0.1-86400, got {value!r}")
    return float(value)


def _check_str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: must be a non-empty string, got {value!r}")
    return value


@dataclass(frozen=True)
class PeerConfig:
    """A known remote AE: a C-MOVE destination, a storage commitment report destination."""

    ae_title: str
    host: str
    port: int
    tls: bool = False  # our associations to it (C-MOVE, storage commitment reports) use TLS


@dataclass(frozen=True)
class DimseConfig:
    ae_title: str = DEFAULT_AE_TITLE
    host: str = DEFAULT_HOST
    port: int = DEFAULT_DIMSE_PORT
    accept_unknown_callers: bool = True
    max_pdu: int = 131072
    # Sized for a hospital, not a laptop: 32 storescu clients at once against the old default of
    # 16 lost 4 associations to "local limit exceeded"; 128 took 96 at once (RSS 119 MB).
    max_associations: int = 128
    # Processes receiving DIMSE associations (dimse/workers.py). 1 = in the server process; N >= 2:
    # N receiver processes share the port, the server process alone writes the data directory.
    workers: int = 1
    # Our associations' event-driven reactors, large socket reads and native message encoding
    # (dimse/association.py, dul.py, encoded.py) instead of pynetdicom's 1 ms polling loops; false:
    # pynetdicom's reactors and encoding as they are, with only the reactor pause fix, for A/B runs.
    tuned_reactor: bool = True
    # C-STORE and C-ECHO read off the socket and answered natively (dimse/fastpath.py); needs
    # tuned_reactor (its reactor drives the reads).
    fast_path: bool = True
    # DICOM TLS (PS3.15 B.1, BCP 195): a second listener on tls_port with tls_cert/tls_key; with
    # tls_ca, callers must present a certificate it signed. The same files authenticate us to
    # peers configured with tls = true.
    tls_port: int = 0
    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_ca: Path | None = None
    # Seconds. A peer that stalls mid-PDU (or idles) holds an association and a worker until
    # network_timeout drops it: sites with flaky senders lower it.
    acse_timeout: float = 30.0
    dimse_timeout: float = 120.0
    network_timeout: float = 300.0


@dataclass(frozen=True)
class HttpConfig:
    """`[http]`: the HTTP service (DICOMweb, WADO-URI, /api, replication feed)."""

    host: str | None = None
    port: int | None = None
    # "auto" (anonymous may read and store on loopback while no users exist), "none", or a role
    anonymous: str = "auto"
    public_url: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body: int = 8 << 30
    tls_cert: str | None = None
    tls_key: str | None = None


@dataclass(frozen=True)
class Config:
    data_dir: Path = DEFAULT_DATA_DIR
    dimse: DimseConfig = field(default_factory=DimseConfig)
    peers: tuple[PeerConfig, ...] = ()
    # [replication] and [[forward]]: parsed by replication/settings.py (which documents them)
    replication: ReplicationSettings = field(default_factory=ReplicationSettings)
    http: HttpConfig = field(default_factory=HttpConfig)
    # `tiers` and [tiering]: parsed by storage/settings.py (which documents them)
    tiering: TieringSettings = field(default_factory=default_settings)
    # [storage]: the free-space reserve (storage/reserve.py)
    reserve: Reserve = field(default_factory=Reserve)

    def with_overrides(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        ae_title: str | None = None,
        host: str | None = None,
        port: int | None = None,
    ) -> Config:
        """Command-line options win over the file; None means "not given"."""
        dimse = self.dimse
        if ae_title is not None:
            dimse = replace(dimse, ae_title=check_ae_title(ae_title, "--ae"))
        if host is not None:
            dimse = replace(dimse, host=_check_str(host, "--host"))
        if port is not None:
            dimse = replace(dimse, port=_check_port(port, "--dimse-port"))
        return replace(self, data_dir=Path(data_dir) if data_dir is not None else self.data_dir, dimse=dimse)


_DIMSE_KEYS = {
    "ae_title", "host", "port", "accept_unknown_callers", "max_pdu", "max_associations", "workers",
    "tuned_reactor", "fast_path", "tls_port", "tls_cert", "tls_key", "tls_ca",
    "acse_timeout", "dimse_timeout", "network_timeout",
}
_PEER_KEYS = {"ae_title", "host", "port", "tls"}
_PEER_REQUIRED = ("ae_title", "host", "port")
_TOP_KEYS = {"data", "dimse", "peers", "replication", "forward", "http", "tiers", "tiering", "storage"}
_HTTP_KEYS = {"host", "port", "anonymous", "public_url", "cors_origins", "max_body", "tls_cert", "tls_key"}
_ANONYMOUS = ("auto", "none", "reader", "writer", "admin")


def _unknown(table: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})"
        )


def _tls_file(table: dict[str, Any], key: str, where: str, base: Path) -> Path | None:
    if key not in table:
        return None
    path = Path(_check_str(table[key], f"{where}.{key}"))
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise ConfigError(f"{where}.{key}: no such file {path}")
    return path


def _parse_dimse(table: object, where: str, base: Path = Path(".")) -> DimseConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [dimse] must be a table")
    _unknown(table, _DIMSE_KEYS, where)
    d = DimseConfig()
    accept = _check_bool(table.get("accept_unknown_callers", d.accept_unknown_callers),
                         f"{where}.accept_unknown_callers")
    tuned = _check_bool(table.get("tuned_reactor", d.tuned_reactor), f"{where}.tuned_reactor")
    fast = _check_bool(table.get("fast_path", d.fast_path), f"{where}.fast_path")
    if fast and not tuned and "fast_path" in table:
        raise ConfigError(f"{where}.fast_path = true needs tuned_reactor = true "
                          "(its reactor reads the socket)")
    return DimseConfig(
        ae_title=check_ae_title(table.get("ae_title", d.ae_title), f"{where}.ae_title"),
        host=_check_str(table.get("host", d.host), f"{where}.host"),
        port=_check_port(table.get("port", d.port), f"{where}.port"),
        accept_unknown_callers=accept,
        # 0 = unlimited in DICOM; otherwise at least the PS3.8 minimum a peer must accept.
        max_pdu=_check_int(table.get("max_pdu", d.max_pdu), f"{where}.max_pdu", 0, 1 << 30),
        max_associations=_check_int(
            table.get("max_associations", d.max_associations), f"{where}.max_associations", 1, 1024
        ),
        workers=_check_int(table.get("workers", d.workers), f"{where}.workers", 1, 64),
        tuned_reactor=tuned,
        fast_path=fast and tuned,
        acse_timeout=_check_seconds(table.get("acse_timeout", d.acse_timeout), f"{where}.acse_timeout"),
        dimse_timeout=_check_seconds(table.get("dimse_timeout", d.dimse_timeout), f"{where}.dimse_timeout"),
        network_timeout=_check_seconds(table.get("network_timeout", d.network_timeout),
                                       f"{where}.network_timeout"),
        **_parse_tls(table, where, base),
    )


def _parse_tls(table: dict[str, Any], where: str, base: Path) -> dict[str, Any]:
    tls = {
        "tls_port": _check_port(table["tls_port"], f"{where}.tls_port") if table.get("tls_port") else 0,
        "tls_cert": _tls_file(table, "tls_cert", where, base),
        "tls_key": _tls_file(table, "tls_key", where, base),
        "tls_ca": _tls_file(table, "tls_ca", where, base),
    }
    if (tls["tls_cert"] is None) != (tls["tls_key"] is None):
        raise ConfigError(f"{where}: tls_cert and tls_key go together")
    if tls["tls_port"] and tls["tls_cert"] is None:
        raise ConfigError(f"{where}.tls_port needs tls_cert and tls_key")
    if tls["tls_port"] and tls["tls_port"] == table.get("port", DEFAULT_DIMSE_PORT):
        raise ConfigError(f"{where}.tls_port must differ from port")
    return tls


def _check_bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    return value


def _parse_peers(items: object, where: str) -> tuple[PeerConfig, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{where}: peers must be an array of tables ([[peers]])")
    peers: list[PeerConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        w = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise ConfigError(f"{w}: must be a table")
        _unknown(item, _PEER_KEYS, w)
        for key in _PEER_REQUIRED:
            if key not in item:
                raise ConfigError(f"{w}: missing {key}")
        title = check_ae_title(item["ae_title"], f"{w}.ae_title")
        if title in seen:
            raise ConfigError(f"{w}: AE title {title!r} is configured twice")
        seen.add(title)
        host, port = _check_str(item["host"], f"{w}.host"), _check_port(item["port"], f"{w}.port")
        peers.append(PeerConfig(title, host, port, tls=_check_bool(item.get("tls", False), f"{w}.tls")))
    return tuple(peers)


def _parse_http(table: object, where: str, base: Path) -> HttpConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: must be a table")
    _unknown(table, _HTTP_KEYS, where)
    anonymous = table.get("anonymous", "auto")
    if anonymous not in _ANONYMOUS:
        raise ConfigError(f"{where}.anonymous: must be one of {', '.join(_ANONYMOUS)}, got {anonymous!r}")
    origins = table.get("cors_origins", [])
    if not isinstance(origins, list) or not all(isinstance(o, str) and o for o in origins):
        raise ConfigError(f"{where}.cors_origins: must be a list of origins, got {origins!r}")
    return HttpConfig(
        host=_check_str(table["host"], f"{where}.host") if "host" in table else None,
        port=_check_int(table["port"], f"{where}.port", 0, 65535) if "port" in table else None,
        anonymous=anonymous,
        public_url=_check_str(table["public_url"], f"{where}.public_url") if "public_url" in table else None,
        cors_origins=tuple(origins),
        max_body=_check_int(table.get("max_body", 8 << 30), f"{where}.max_body", 1, 1 << 50),
        tls_cert=str(_tls_file(table, "tls_cert", where, base) or "") or None,
        tls_key=str(_tls_file(table, "tls_key", where, base) or "") or None,
    )


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """The configuration in `path` (defaults for everything when None)."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        with p.open("rb") as f:
            doc = tomllib.load(f)
    except OSError as exc:
        raise ConfigError(f"cannot read config file {p}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {p}: {exc}") from exc
    except UnicodeDecodeError as exc:  # found by tests/test_fuzz_python_parsers.py
        raise ConfigError(f"config file {p} is not UTF-8 text (TOML must be): byte {exc.start}") from exc
    where = str(p)
    _unknown(doc, _TOP_KEYS, where)
    data_dir = DEFAULT_DATA_DIR
    if "data" in doc:
        data_dir = Path(_check_str(doc["data"], f"{where}: data"))
        if not data_dir.is_absolute():
            data_dir = p.parent / data_dir
    return Config(
        data_dir=data_dir,
        dimse=_parse_dimse(doc.get("dimse", {}), f"{where}: dimse", p.parent),
        peers=_parse_peers(doc.get("peers", []), f"{where}: peers"),
        replication=parse_settings(doc, where, p.parent),
        http=_parse_http(doc.get("http", {}), f"{where}: http", p.parent),
        tiering=parse_tiering(doc, where),
        reserve=parse_reserve(doc.get("storage", {}), f"{where}: storage"),
    )
