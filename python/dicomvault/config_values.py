"""Checks of single configuration values, shared by every table's parser (config.py and the
settings modules under it): each names the key it refused."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .errors import DicomVaultError


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


def check_port(value: object, where: str) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= 65535:
        raise ConfigError(f"{where}: port must be an integer 0-65535, got {value!r}")
    return value


def check_str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{where}: must be a non-empty string, got {value!r}")
    return value


def unknown_keys(table: dict[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise ConfigError(
            f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})"
        )


def check_bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: must be true or false, got {value!r}")
    return value


def check_str_list(value: object, where: str) -> list[str]:
    if isinstance(value, str):
        value = [v.strip() for v in value.split(",") if v.strip()]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise ConfigError(f"{where}: must be a list of strings, got {value!r}")
    return value


def existing_file(value: str, where: str, base: Path, error: type[DicomVaultError] = ConfigError) -> Path:
    """A file the configuration names (relative to `base`, the config file's folder), which must
    exist; `error` (the section's own error class) names `where` otherwise."""
    path = Path(value)
    path = path if path.is_absolute() else base / path
    if not path.is_file():
        raise error(f"{where}: no such file {path}")
    return path


def optional_file(table: dict[str, Any], key: str, where: str, base: Path,
                  error: type[DicomVaultError] = ConfigError) -> Path | None:
    """`existing_file` of table[key], None when the key is absent."""
    if key not in table:
        return None
    value = table[key]
    if not isinstance(value, str) or not value:
        raise error(f"{where}.{key}: must be a file name, got {value!r}")
    return existing_file(value, f"{where}.{key}", base, error)
