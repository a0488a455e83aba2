"""The TOML configuration (config.py and the tables it hands on: replication/settings.py,
storage/settings.py, storage/reserve.py), read from a file as `serve` reads it.

Input: the file's bytes. Allowed outcomes: a Config, or ConfigError naming the file (a
DicomVaultError, which the CLI prints as one line)."""

from __future__ import annotations

import atexit
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import dicomvault.config
import dicomvault.replication.settings
import dicomvault.storage.reserve
import dicomvault.storage.settings
from dicomvault.config import Config, load_config
from dicomvault.errors import DicomVaultError

_dir = Path(tempfile.mkdtemp(prefix="fuzz-toml-"))
atexit.register(shutil.rmtree, _dir, ignore_errors=True)
_file = _dir / "dicomvault.toml"
_DOCS = Path(__file__).resolve().parents[3] / "docs"

FULL = b'''data = "d"
[dimse]
ae_title = "DICOMVAULT"
port = 11112
max_associations = 64
max_pdu = 16384
workers = 2
accept_unknown_callers = false
tls_port = 0

[http]
host = "0.0.0.0"
port = 8080
anonymous = "none"
cors_origins = ["https://viewer.example"]
max_body = 1073741824

[[peers]]
ae_title = "PACS"
host = "10.0.0.1"
port = 104
tls = false

[storage]
reserve_min = "16MB"
reserve_fraction = 0.02
reserve_max = "4GB"

[tiering]
compaction = "background"

[[tiers]]
name = "landing"
backend = "local"
path = "landing"
codec = "raw"
capacity = "200GB"

[[tiers]]
name = "warm"
backend = "local"
path = "volumes"
codec = "hot"
'''


def _toml_blocks(text: str) -> Iterator[str]:
    yield from re.findall(r"```toml\n(.*?)```", text, re.S)


def seeds() -> Iterator[bytes]:
    yield FULL
    # The examples in the docstrings of the modules parsing the tables, and in docs/.
    for module in (dicomvault.config, dicomvault.replication.settings, dicomvault.storage.settings,
                   dicomvault.storage.reserve):
        yield from (b.encode() for b in _toml_blocks(module.__doc__ or ""))
    for page in sorted(_DOCS.glob("*.md")):
        yield from (b.encode() for b in _toml_blocks(page.read_text()))


def one_input(data: bytes) -> None:
    _file.write_bytes(data)
    try:
        cfg = load_config(_file)
    except DicomVaultError:
        return
    if not isinstance(cfg, Config):
        raise AssertionError(f"load_config returned {cfg!r}")
