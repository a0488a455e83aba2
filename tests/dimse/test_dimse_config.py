"""The server configuration file (TOML) and its command-line overrides."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomvault.config import Config, ConfigError, PeerConfig, load_config


def _write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "dicomvault.toml"
    p.write_text(text)
    return p


def test_full_file(tmp_path: Path) -> None:
    cfg = load_config(_write(tmp_path, """
data = "store"
[dimse]
ae_title = "ARCHIVE"
host = "0.0.0.0"
port = 104
accept_unknown_callers = false
max_pdu = 65536
max_associations = 4
[[peers]]
ae_title = "STORESCP"
host = "127.0.0.1"
port = 11113
[[peers]]
ae_title = "VIEWER "
host = "10.0.0.2"
port = 104
"""))
    assert cfg.data_dir == tmp_path / "store"  # relative to the file
    d = cfg.dimse
    assert (d.ae_title, d.host, d.port, d.accept_unknown_callers, d.max_pdu, d.max_associations) == (
        "ARCHIVE", "0.0.0.0", 104, False, 65536, 4)
    assert cfg.peers == (PeerConfig("STORESCP", "127.0.0.1", 11113), PeerConfig("VIEWER", "10.0.0.2", 104))


def test_defaults_and_overrides(tmp_path: Path) -> None:
    assert load_config(None) == Config()
    cfg = load_config(_write(tmp_path, '[dimse]\nport = 4242\nae_title = "FROMFILE"\n'))
    over = cfg.with_overrides(data_dir="/d", ae_title="CLI", host=None, port=None)
    assert (str(over.data_dir), over.dimse.ae_title, over.dimse.port, over.dimse.host) == (
        "/d", "CLI", 4242, "127.0.0.1")
    assert cfg.with_overrides(port=1111).dimse.port == 1111


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[dimse]\nae_tilte = 'X'\n", "unknown key(s) ae_tilte"),
        ("[dimse]\nport = 70000\n", "port must be an integer"),
        ("[dimse]\nae_title = 'WAY_TOO_LONG_AE_TITLE'\n", "invalid AE title"),
        ("[dimse]\naccept_unknown_callers = 'yes'\n", "must be true or false"),
        ("[[peers]]\nae_title = 'A'\n", "missing host"),
        ("[[peers]]\nae_title = 'A'\nhost = 'h'\nallow = ['stor']\n", "unknown service(s) stor"),
        ("[[peers]]\nae_title = 'A'\nhost = 'h'\ncert = 'ab:cd'\n", "not a SHA-256 fingerprint"),
        ("[[peers]]\nae_title='A'\nhost='h'\nport=1\n[[peers]]\nae_title='A'\nhost='h'\nport=2\n",
         "configured twice"),
        ("[dimse\n", "dicomvault.toml"),
        ("[dimse]\nmax_object_size = '4 lightyears'\n", "max_object_size: not a size"),
        ("[dimse]\nmax_object_size = 10\n", "max_object_size: must be 1024-"),
        ("[dimse]\nnetwork_timeout = 0\n", "network_timeout: must be a number of seconds"),
        ("[dimse]\nmax_associations_per_peer = 0\n", "max_associations_per_peer: must be an integer"),
        ("[http]\nrate_limit = -1\n", "rate_limit: must be requests per second"),
        ("[dimse]\ntcp_max_segment = 100\n", "tcp_max_segment (0: the OS's): must be an integer 536-32767"),
        ("[dimse]\ntcp_max_segment = 65536\n", "tcp_max_segment (0: the OS's): must be an integer 536-32767"),
        ("[dimse]\ntcp_max_segment = false\n", "tcp_max_segment (0: the OS's): must be an integer 536-32767"),
        ("[http]\nrate_limits = 5\n", "unknown key(s) rate_limits"),
    ],
)
def test_errors_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        load_config(_write(tmp_path, text))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read config file"):
        load_config(tmp_path / "nope.toml")


def test_limits(tmp_path: Path) -> None:
    """Every limit of [dimse] and [http], with sizes as text; absent ones keep their defaults."""
    cfg = load_config(_write(tmp_path, """
[dimse]
max_associations_per_peer = 8
max_object_size = "2GiB"
max_query_results = 500
acse_timeout = 10
dimse_timeout = 60.5
network_timeout = 600
[http]
max_body = "1GB"
max_query_results = 100
rate_limit = 50
rate_limit_per_address = 20.5
rate_burst = 400
"""))
    d, h = cfg.dimse, cfg.http
    assert (d.max_associations_per_peer, d.max_object_size, d.max_query_results) == (8, 2 << 30, 500)
    assert (d.acse_timeout, d.dimse_timeout, d.network_timeout) == (10.0, 60.5, 600.0)
    assert (h.max_body, h.max_query_results, h.rate_limit, h.rate_limit_per_address, h.rate_burst) == (
        10**9, 100, 50.0, 20.5, 400)
    defaults = Config()
    assert (defaults.dimse.max_associations, defaults.dimse.max_associations_per_peer) == (128, 64)
    assert defaults.dimse.max_object_size == 4 << 30 and defaults.http.max_body == 8 << 30
    assert defaults.http.rate_limit == defaults.http.rate_limit_per_address == 0  # off
