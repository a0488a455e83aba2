"""The server configuration: a TOML file (read with tomllib), overridden by command-line options.

```toml
data = "/var/lib/dicomvault"      # data directory; relative paths are relative to this file

[dimse]
ae_title = "DICOMVAULT"
host = "127.0.0.1"
port = 11112
accept_unknown_callers = false     # true: any caller may echo, store, query, retrieve
max_pdu = 131072
max_associations = 128
max_associations_per_peer = 64    # per calling AE title
max_object_size = "4GiB"           # a C-STORE data set larger is refused (0xA700), never buffered
max_query_results = 10000          # C-FIND matches answered; more: 0xA700 after these
acse_timeout = 30                  # seconds for the A-ASSOCIATE-RQ (and A-RELEASE-RP)
dimse_timeout = 120                # seconds for a DIMSE message we wait for
pending_interval = 0.1             # seconds between C-GET/C-MOVE pending responses (0: one per object)
network_timeout = 300              # an association idle this long is dropped
tcp_max_segment = 16384            # TCP segment size we announce (bytes, 0: the OS's); see below
workers = 1                        # DIMSE receiver processes; 1 = in the server process
tuned_reactor = true               # event-driven reactors of our associations (dimse/association.py)
fast_path = true                   # C-STORE/C-ECHO read and answered natively (dimse/fastpath.py)
tls_port = 2762                    # DICOM TLS listener beside `port` (0 or absent: none)
tls_cert = "dicomvault.crt"        # our certificate chain and key (PEM), for TLS both ways
tls_key = "dicomvault.key"
tls_ca = "ca.crt"                  # callers must present a certificate it signed; verifies TLS peers

[http]
max_body = "8GiB"                  # larger request bodies: 413, refused before they are read
max_query_results = 1000           # QIDO-RS results per response (Warning 299 when cut)
rate_limit = 0                     # requests/s per user or token (0: off), token bucket
rate_limit_per_address = 0         # requests/s per client address (0: off)
rate_burst = 200                   # requests a bucket holds (a burst allowed at once)

[[peers]]
ae_title = "STORESCP"
host = "127.0.0.1"
port = 11113
tls = false                        # C-MOVE and storage commitment to this peer over TLS
```

`[http.oidc]` (OpenID Connect bearer tokens) is documented in auth/oidc_settings.py;
`[audit]` (sending the audit trail to a syslog repository) is documented in audit/settings.py,
`[replication]` and `[[forward]]` in replication/settings.py, `[deidentify]` (research projects,
their secrets, the mapping) in integration/deid/settings.py, `tiers` and
`[tiering]` (tiered placement) in storage/settings.py, `[storage]` (the free-space reserve) in
storage/reserve.py, `[analysis]` (the analysis pipeline and its analyzers) in analysis/settings.py.

Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .analysis.settings import AnalysisSettings, parse_analysis
from .audit.settings import AuditSettings, parse_audit
from .auth.oidc_settings import OidcSettings, parse_oidc
from .auth.peer_settings import PeerConfig, parse_peer
from .config_values import (
    ConfigError,
    check_ae_title,
    optional_file,
)
from .config_values import check_bool as _check_bool
from .config_values import check_port as _check_port
from .config_values import check_str as _check_str
from .config_values import unknown_keys as _unknown
from .engine import DEFAULT_DATA_DIR
from .integration.deid.settings import DeidSettings, parse_deidentify
from .integration.hl7.settings import Hl7Config, parse_hl7
from .integration.priors_settings import PriorsConfig, parse_priors
from .replication.settings import ReplicationSettings, parse_settings
from .storage.read_check import DEFAULT as READ_CHECK_DEFAULT
from .storage.read_check import parse_verify_reads
from .storage.reserve import Reserve, parse_reserve
from .storage.settings import SettingsError, TieringSettings, default_settings, parse_size, parse_tiering

DEFAULT_AE_TITLE = "DICOMVAULT"
DEFAULT_HOST = "127.0.0.1"
DEFAULT_DIMSE_PORT = 11112







def _check_int(value: object, where: str, lo: int, hi: int) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{where}: must be an integer {lo}-{hi}, got {value!r}")
    return value


def _check_tcp_segment(value: object, where: str) -> int:
    # Linux takes TCP_MAXSEG up to 32,767; 536 is the smallest segment every IPv4 host accepts.
    if value == 0 and type(value) is int:
        return 0
    return _check_int(value, where + " (0: the OS's)", 536, 32767)


def _check_seconds(value: object, where: str, lo: float = 0.1, hi: float = 86_400.0) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{where}: must be a number of seconds {lo:g}-{hi:g}, got {value!r}")
    return float(value)


def _check_rate(value: object, where: str) -> float:
    if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1e6:
        raise ConfigError(f"{where}: must be requests per second, 0 (off) to 1000000, got {value!r}")
    return float(value)


def _check_size(value: object, where: str, lo: int, hi: int) -> int:
    """A byte count: an integer or a text like "4GB"/"512MiB"."""
    try:
        size = parse_size(value, where)
    except SettingsError as exc:
        raise ConfigError(str(exc)) from exc
    if not lo <= size <= hi:
        raise ConfigError(f"{where}: must be {lo}-{hi} bytes, got {value!r}")
    return size




@dataclass(frozen=True)
class DimseConfig:
    ae_title: str = DEFAULT_AE_TITLE
    host: str = DEFAULT_HOST
    port: int = DEFAULT_DIMSE_PORT
    # Callers that are no peer (`dicomvault peers add`) get A-ASSOCIATE-RJ unless this is true.
    accept_unknown_callers: bool = False
    max_pdu: int = 131072
    # Sized for a hospital, not a laptop: 32 storescu clients at once against the old default of
    # 16 lost 4 associations to "local limit exceeded"; 128 took 96 at once (RSS 119 MB).
    max_associations: int = 128
    # One caller (keyed by its calling AE title) cannot take every slot: a modality opens a few,
    # a router or another archive sending a backlog at most a few dozen; the rest stay free for
    # everybody else. Refused as A-ASSOCIATE-RJ transient, local limit exceeded.
    max_associations_per_peer: int = 64
    # A C-STORE data set larger than this is refused (0xA700) as it streams in, never held in
    # memory; the association goes on. The largest clinical objects (breast tomosynthesis, whole
    # slide images) reach 2-3 GB.
    max_object_size: int = 4 << 30
    # C-FIND matches answered to one request (no paging in DIMSE): more end with 0xA700.
    max_query_results: int = 10_000
    # seconds: the A-ASSOCIATE-RQ after connecting (and the ARTIM timer), one DIMSE message we
    # wait for, and an association without any traffic (dropped then).
    acse_timeout: float = 30.0
    dimse_timeout: float = 120.0
    network_timeout: float = 300.0
    # seconds: a C-GET or C-MOVE sends a pending response (its counts so far) once this much time
    # passed since its last one; 0: after every sub-operation. PS3.4 makes them optional; one per
    # object cost the requestor a message per object (~15 % of a small-object C-MOVE's time).
    pending_interval: float = 0.1
    # bytes: the largest TCP segment our listening sockets announce to callers (TCP_MAXSEG), 0 =
    # the OS's. Only loopback (64 KB segments) and jumbo-frame links exceed it; Ethernet is 1,460.
    # Why: a client that reads slower than we send (dcmtk findscu printing each of 2,000 C-FIND
    # matches) is never given a larger receive buffer by the kernel, so its window stays at about
    # one 64 KB loopback segment; it then holds back window updates smaller than a segment, and a
    # third of those answers waited out a 200 ms window probe. With 16 KB segments none did
    # (bench/RESULTS.md).
    tcp_max_segment: int = 16384
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
    # [http.oidc]: bearer tokens of the site's identity provider (auth/oidc_settings.py)
    oidc: OidcSettings | None = None
    # QIDO-RS: results per response; a query matching more is cut with Warning 299 (PS3.18).
    max_query_results: int = 1000
    # Token buckets, requests per second (0 = off): per user or token, and per client address.
    # Off by default: a viewer loading a study sends hundreds of frame requests in seconds.
    rate_limit: float = 0.0
    rate_limit_per_address: float = 0.0
    rate_burst: int = 200


@dataclass(frozen=True)
class IocmConfig:
    """[iocm]: what a rejection note titled 113039 (Data Retention Policy Expired) does to the
    instances it references: delete them (true) or hide them like the other titles (false)."""

    delete_on_retention_expired: bool = False


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
    # [storage]: the free-space reserve (storage/reserve.py) and how reads check what they
    # decode (storage/read_check.py)
    reserve: Reserve = field(default_factory=Reserve)
    verify_reads: str = READ_CHECK_DEFAULT
    # [audit]: the audit repository the log is sent to (audit/settings.py)
    audit: AuditSettings = field(default_factory=AuditSettings)
    # [iocm]: IHE IOCM rejection notes (docs/integration.md)
    iocm: IocmConfig = field(default_factory=IocmConfig)
    # [hl7]: the HL7 v2 MLLP listener (integration/hl7/settings.py)
    hl7: Hl7Config = field(default_factory=Hl7Config)
    # [priors]: prior studies made ready when an order arrives (integration/priors_settings.py)
    priors: PriorsConfig = field(default_factory=PriorsConfig)
    # [deidentify]: research projects for de-identified export (integration/deid/settings.py)
    deidentify: DeidSettings = field(default_factory=DeidSettings)
    # [analysis]: the analysis pipeline and its analyzer instances (analysis/settings.py)
    analysis: AnalysisSettings = field(default_factory=AnalysisSettings)

    def with_overrides(
        self,
        *,
        data_dir: str | os.PathLike[str] | None = None,
        ae_title: str | None = None,
        host: str | None = None,
        port: int | None = None,
        accept_unknown_callers: bool | None = None,
    ) -> Config:
        """Command-line options win over the file; None means "not given"."""
        dimse = self.dimse
        if accept_unknown_callers is not None:
            dimse = replace(dimse, accept_unknown_callers=accept_unknown_callers)
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
    "max_associations_per_peer", "max_object_size", "max_query_results", "acse_timeout", "dimse_timeout",
    "network_timeout", "pending_interval", "tcp_max_segment",
}
_TOP_KEYS = {"data", "dimse", "peers", "replication", "forward", "http", "tiers", "tiering", "storage",
              "audit", "iocm", "hl7", "priors", "deidentify", "analysis"}
_HTTP_KEYS = {"host", "port", "anonymous", "public_url", "cors_origins", "max_body", "tls_cert", "tls_key",
              "oidc", "max_query_results", "rate_limit", "rate_limit_per_address", "rate_burst"}
_ANONYMOUS = ("auto", "none", "reader", "writer", "admin")




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
        max_associations_per_peer=_check_int(
            table.get("max_associations_per_peer", d.max_associations_per_peer),
            f"{where}.max_associations_per_peer", 1, 1024),
        max_object_size=_check_size(
            table.get("max_object_size", d.max_object_size), f"{where}.max_object_size", 1024, 1 << 40),
        max_query_results=_check_int(table.get("max_query_results", d.max_query_results),
                                     f"{where}.max_query_results", 1, 10_000_000),
        acse_timeout=_check_seconds(table.get("acse_timeout", d.acse_timeout), f"{where}.acse_timeout"),
        dimse_timeout=_check_seconds(table.get("dimse_timeout", d.dimse_timeout), f"{where}.dimse_timeout"),
        network_timeout=_check_seconds(table.get("network_timeout", d.network_timeout),
                                       f"{where}.network_timeout"),
        pending_interval=_check_seconds(table.get("pending_interval", d.pending_interval),
                                        f"{where}.pending_interval", 0.0, 60.0),
        tcp_max_segment=_check_tcp_segment(table.get("tcp_max_segment", d.tcp_max_segment),
                                           f"{where}.tcp_max_segment"),
        tuned_reactor=tuned,
        fast_path=fast and tuned,
        **_parse_tls(table, where, base),
    )


def _parse_tls(table: dict[str, Any], where: str, base: Path) -> dict[str, Any]:
    tls = {
        "tls_port": _check_port(table["tls_port"], f"{where}.tls_port") if table.get("tls_port") else 0,
        "tls_cert": optional_file(table, "tls_cert", where, base),
        "tls_key": optional_file(table, "tls_key", where, base),
        "tls_ca": optional_file(table, "tls_ca", where, base),
    }
    if (tls["tls_cert"] is None) != (tls["tls_key"] is None):
        raise ConfigError(f"{where}: tls_cert and tls_key go together")
    if tls["tls_port"] and tls["tls_cert"] is None:
        raise ConfigError(f"{where}.tls_port needs tls_cert and tls_key")
    if tls["tls_port"] and tls["tls_port"] == table.get("port", DEFAULT_DIMSE_PORT):
        raise ConfigError(f"{where}.tls_port must differ from port")
    return tls




def _parse_peers(items: object, where: str) -> tuple[PeerConfig, ...]:
    if not isinstance(items, list):
        raise ConfigError(f"{where}: peers must be an array of tables ([[peers]])")
    peers: list[PeerConfig] = []
    seen: set[str] = set()
    for i, item in enumerate(items):
        peer = parse_peer(item, f"{where}[{i}]")
        if peer.ae_title in seen:
            raise ConfigError(f"{where}[{i}]: AE title {peer.ae_title!r} is configured twice")
        seen.add(peer.ae_title)
        peers.append(peer)
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
        max_body=_check_size(table.get("max_body", 8 << 30), f"{where}.max_body", 1, 1 << 50),
        max_query_results=_check_int(table.get("max_query_results", 1000), f"{where}.max_query_results",
                                     1, 1_000_000),
        rate_limit=_check_rate(table.get("rate_limit", 0), f"{where}.rate_limit"),
        rate_limit_per_address=_check_rate(table.get("rate_limit_per_address", 0),
                                           f"{where}.rate_limit_per_address"),
        rate_burst=_check_int(table.get("rate_burst", 200), f"{where}.rate_burst", 1, 1_000_000),
        tls_cert=str(optional_file(table, "tls_cert", where, base) or "") or None,
        tls_key=str(optional_file(table, "tls_key", where, base) or "") or None,
        oidc=parse_oidc(table["oidc"], f"{where}.oidc", base) if "oidc" in table else None,
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
        verify_reads=parse_verify_reads(doc.get("storage", {}), f"{where}: storage"),
        audit=parse_audit(doc.get("audit", {}), f"{where}: audit", p.parent),
        iocm=_parse_iocm(doc.get("iocm", {}), f"{where}: iocm"),
        hl7=parse_hl7(doc.get("hl7", {}), f"{where}: hl7", p.parent),
        priors=parse_priors(doc.get("priors", {}), f"{where}: priors"),
        deidentify=parse_deidentify(doc.get("deidentify", {}), f"{where}: deidentify", p.parent),
        analysis=parse_analysis(doc.get("analysis", {}), f"{where}: analysis"),
    )


def _parse_iocm(table: object, where: str) -> IocmConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    _unknown(table, {"delete_on_retention_expired"}, where)
    return IocmConfig(delete_on_retention_expired=_check_bool(
        table.get("delete_on_retention_expired", False), f"{where}.delete_on_retention_expired"))
