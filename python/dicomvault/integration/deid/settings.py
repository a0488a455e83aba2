"""`[deidentify]`: the research projects objects are de-identified for, and what is kept.

```toml
[deidentify]
keep_mapping = "none"                  # "none" (default) | "encrypted": original -> pseudonym pairs
mapping_key_file = "deid-mapping.key"  # the AES-256 key (32 bytes, or 64 hex digits), mode 0600
# mapping_key = "<64 hex digits>"      # ... or the key itself
retain = ["dates"]                     # default retain options of every project

[deidentify.projects.LUNG-2026]
secret_file = "lung-2026.secret"       # the project's secret (at least 16 bytes), mode 0600
# secret = "..."                       # ... or the secret itself
retain = ["dates", "patient"]          # this project's default retain options
keep_mapping = "encrypted"             # this project's choice (default: the table's)
```
Relative paths are relative to the configuration file. A secret or key file that others may
read is refused: it is what turns pseudonyms back into patients.
"""

from __future__ import annotations

import re
import stat
from dataclasses import dataclass, field
from pathlib import Path

from ...config_values import ConfigError, check_str, check_str_list, unknown_keys
from ...errors import RequestError
from .profile import Options

KEEP_MAPPING = ("none", "encrypted")
PROJECT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
MIN_SECRET = 16


@dataclass(frozen=True)
class Project:
    name: str
    secret: bytes = field(repr=False)
    retain: Options = field(default_factory=Options)
    keep_mapping: str = "none"
    mapping_key: bytes | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DeidSettings:
    projects: tuple[Project, ...] = ()

    def project(self, name: str) -> Project:
        for p in self.projects:
            if p.name == name:
                return p
        known = ", ".join(p.name for p in self.projects) or "none: add [deidentify.projects.NAME]"
        raise RequestError(f"unknown de-identification project {name!r} (configured: {known})")


def _private_file(value: object, where: str, base: Path) -> bytes:
    path = Path(check_str(value, where))
    path = path if path.is_absolute() else base / path
    try:
        st = path.stat()
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read {path}: {exc.strerror or exc}") from exc
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise ConfigError(f"{where}: {path} is readable by others (mode {stat.S_IMODE(st.st_mode):o}); "
                          f"chmod 600 it")
    return data


def parse_key(raw: bytes, where: str) -> bytes:
    """An AES-256 key: 32 raw bytes, or 64 hex digits (surrounding whitespace ignored)."""
    text = raw.strip()
    if len(raw) == 32 and len(text) != 64:
        return raw
    try:
        key = bytes.fromhex(text.decode("ascii"))
    except (UnicodeDecodeError, ValueError):
        key = b""
    if len(key) != 32:
        raise ConfigError(f"{where}: a mapping key is 32 bytes or 64 hex digits")
    return key


def _secret(table: dict[str, object], where: str, base: Path) -> bytes:
    if ("secret" in table) == ("secret_file" in table):
        raise ConfigError(f"{where}: give one of secret or secret_file")
    if "secret" in table:
        secret = check_str(table["secret"], f"{where}.secret").encode()
    else:
        secret = _private_file(table["secret_file"], f"{where}.secret_file", base).strip()
    if len(secret) < MIN_SECRET:
        raise ConfigError(f"{where}: the secret must be at least {MIN_SECRET} bytes")
    return secret


def _keep(value: object, where: str) -> str:
    if value not in KEEP_MAPPING:
        raise ConfigError(f"{where}: must be one of {', '.join(KEEP_MAPPING)}, got {value!r}")
    return str(value)


def _retain(value: object, where: str) -> Options:
    try:
        return Options.parse(check_str_list(value, where), where)
    except RequestError as exc:
        raise ConfigError(str(exc)) from exc


def parse_deidentify(table: object, where: str, base: Path) -> DeidSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown_keys(table, {"keep_mapping", "mapping_key", "mapping_key_file", "retain", "projects"}, where)
    keep = _keep(table.get("keep_mapping", "none"), f"{where}.keep_mapping")
    if "mapping_key" in table and "mapping_key_file" in table:
        raise ConfigError(f"{where}: give one of mapping_key or mapping_key_file")
    key = None
    if "mapping_key" in table:
        text = check_str(table["mapping_key"], f"{where}.mapping_key")
        key = parse_key(text.encode(), f"{where}.mapping_key")
    elif "mapping_key_file" in table:
        key = parse_key(_private_file(table["mapping_key_file"], f"{where}.mapping_key_file", base),
                        f"{where}.mapping_key_file")
    retain = _retain(table.get("retain", []), f"{where}.retain")
    projects = table.get("projects", {})
    if not isinstance(projects, dict):
        raise ConfigError(f"{where}.projects: expected tables [deidentify.projects.NAME]")
    out = []
    for name, item in projects.items():
        w = f"{where}.projects.{name}"
        if not PROJECT_NAME.match(name):
            raise ConfigError(f"{w}: a project name is 1-40 letters, digits, '.', '_' or '-'")
        if not isinstance(item, dict):
            raise ConfigError(f"{w}: expected a table")
        unknown_keys(item, {"secret", "secret_file", "retain", "keep_mapping"}, w)
        p_keep = _keep(item.get("keep_mapping", keep), f"{w}.keep_mapping")
        if p_keep == "encrypted" and key is None:
            raise ConfigError(f"{w}: keep_mapping = \"encrypted\" needs {where}.mapping_key_file "
                              "(or mapping_key)")
        out.append(Project(name=name, secret=_secret(item, w, base),
                           retain=_retain(item["retain"], f"{w}.retain") if "retain" in item else retain,
                           keep_mapping=p_keep, mapping_key=key if p_keep == "encrypted" else None))
    return DeidSettings(tuple(out))
