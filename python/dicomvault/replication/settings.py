"""The `[replication]` and `[[forward]]` tables of the server's TOML configuration.

```toml
[replication]
tokens = ["replica-b=SECRET", "SECRET2"]   # who may pull (NAME=SECRET names a replica)
http_port = 8080
replicate_from = "https://primary:8080"    # this site is a replica of that one
token = "SECRET"                            # ... pulling with this token
tls_cert = "/etc/dicomvault/cert.pem"       # serve HTTPS
tls_key = "/etc/dicomvault/key.pem"
ca = "/etc/dicomvault/ca.pem"               # verify an https upstream with this CA

[[forward]]
name = "orthanc"                            # names the durable queue (cursor) of this destination
ae_title = "ORTHANC"
host = "10.0.0.5"
port = 4242
modalities = ["CT", "MR"]                   # optional: only these (default: all)
calling_aes = ["CT_SCANNER_1"]              # optional: only objects received from these AEs
our_ae_title = "DICOMVAULT"                 # optional: calling AE title we use
tls = true                                  # optional: DICOM TLS, with [dimse] tls_cert/tls_key/tls_ca
deidentify = "LUNG-2026"                    # optional: send de-identified for this [deidentify] project
deidentify_retain = ["dates"]               # optional: its retain options (default: the project's)
allow_burned_in = false                     # optional: also send objects flagged for burned-in text
```
Unknown keys are errors.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import DicomVaultError, RequestError
from ..integration.deid.profile import Options
from ..integration.deid.settings import DeidSettings, Project, parse_deidentify


class SettingsError(DicomVaultError):
    """A `[replication]` or `[[forward]]` entry is invalid (the message names the file and key)."""


@dataclass(frozen=True)
class ForwardRule:
    name: str
    ae_title: str
    host: str
    port: int
    modalities: frozenset[str] = frozenset()
    calling_aes: frozenset[str] = frozenset()
    our_ae_title: str = "DICOMVAULT"
    tls: bool = False  # associations over DICOM TLS (our certificate and CA: [dimse] tls_*)
    # de-identified on the way out for this project (integration/deid), with these options
    # (None: the project's), objects flagged for burned-in annotation held back unless allowed
    deidentify: Project | None = None
    deidentify_retain: Options | None = None
    allow_burned_in: bool = False

    def matches(self, modality: str, calling_ae: str) -> bool:
        if self.modalities and modality.upper() not in self.modalities:
            return False
        return not self.calling_aes or calling_ae in self.calling_aes


@dataclass(frozen=True)
class ReplicationSettings:
    tokens: tuple[str, ...] = ()
    http_port: int | None = None
    replicate_from: str | None = None
    token: str | None = None
    tls_cert: str | None = None
    tls_key: str | None = None
    ca: str | None = None
    forward: tuple[ForwardRule, ...] = field(default_factory=tuple)


def _strs(value: object, where: str) -> frozenset[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise SettingsError(f"{where}: must be a list of non-empty strings, got {value!r}")
    return frozenset(v.strip() for v in value)


def _str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"{where}: must be a non-empty string, got {value!r}")
    return value.strip()


def _bool(value: object, where: str) -> bool:
    if not isinstance(value, bool):
        raise SettingsError(f"{where}: must be true or false, got {value!r}")
    return value


def _deid_options(item: dict[str, Any], where: str, deid: DeidSettings) -> dict[str, Any]:
    """The de-identification keys of one [[forward]] rule."""
    if "deidentify" not in item:
        for key in ("deidentify_retain", "allow_burned_in"):
            if key in item:
                raise SettingsError(f"{where}.{key}: only with deidentify = \"PROJECT\"")
        return {}
    try:
        project = deid.project(_str(item["deidentify"], f"{where}.deidentify"))
        retain = Options.parse(_strs(item["deidentify_retain"], f"{where}.deidentify_retain"),
                               f"{where}.deidentify_retain") if "deidentify_retain" in item else None
    except RequestError as exc:
        raise SettingsError(f"{where}: {exc}") from exc
    return {"deidentify": project, "deidentify_retain": retain,
            "allow_burned_in": _bool(item.get("allow_burned_in", False), f"{where}.allow_burned_in")}


def parse_forward(items: object, where: str, deid: DeidSettings | None = None) -> tuple[ForwardRule, ...]:
    if not isinstance(items, list):
        raise SettingsError(f"{where}: forward must be an array of tables ([[forward]])")
    rules, seen = [], set()
    allowed = {"name", "ae_title", "host", "port", "modalities", "calling_aes", "our_ae_title", "tls",
               "deidentify", "deidentify_retain", "allow_burned_in"}
    for i, item in enumerate(items):
        w = f"{where}[{i}]"
        if not isinstance(item, dict):
            raise SettingsError(f"{w}: must be a table")
        extra = sorted(set(item) - allowed)
        if extra:
            raise SettingsError(f"{w}: unknown key(s) {', '.join(extra)}")
        for key in ("name", "ae_title", "host", "port"):
            if key not in item:
                raise SettingsError(f"{w}: missing {key}")
        port = item["port"]
        if not isinstance(port, int) or isinstance(port, bool) or not 1 <= port <= 65535:
            raise SettingsError(f"{w}.port: must be an integer 1-65535, got {port!r}")
        name = _str(item["name"], f"{w}.name")
        if name in seen:
            raise SettingsError(f"{w}: destination {name!r} is configured twice")
        seen.add(name)
        rules.append(ForwardRule(
            name=name, ae_title=_str(item["ae_title"], f"{w}.ae_title"), host=_str(item["host"], f"{w}.host"),
            port=port,
            modalities=frozenset(m.upper() for m in _strs(item.get("modalities", []), f"{w}.modalities")),
            calling_aes=_strs(item.get("calling_aes", []), f"{w}.calling_aes"),
            our_ae_title=_str(item.get("our_ae_title", "DICOMVAULT"), f"{w}.our_ae_title"),
            tls=_bool(item.get("tls", False), f"{w}.tls"),
            **_deid_options(item, w, deid or DeidSettings()),
        ))
    return tuple(rules)


def parse_settings(doc: dict[str, Any], where: str, base: Path) -> ReplicationSettings:
    """From a whole parsed config file: reads `[replication]` and `[[forward]]`, ignores the rest."""
    rep = doc.get("replication", {})
    if not isinstance(rep, dict):
        raise SettingsError(f"{where}: [replication] must be a table")
    allowed = {"tokens", "http_port", "replicate_from", "token", "tls_cert", "tls_key", "ca"}
    extra = sorted(set(rep) - allowed)
    if extra:
        raise SettingsError(f"{where}: [replication]: unknown key(s) {', '.join(extra)}")

    def path(key: str) -> str | None:
        v = rep.get(key)
        return None if v is None else str(base / _str(v, f"{where}: replication.{key}"))

    port = rep.get("http_port")
    if port is not None and (not isinstance(port, int) or not 0 <= port <= 65535):
        raise SettingsError(f"{where}: replication.http_port must be an integer 0-65535, got {port!r}")
    return ReplicationSettings(
        tokens=tuple(sorted(_strs(rep.get("tokens", []), f"{where}: replication.tokens"))),
        http_port=port,
        replicate_from=_str(rep["replicate_from"], f"{where}: replication.replicate_from")
        if "replicate_from" in rep else None,
        token=_str(rep["token"], f"{where}: replication.token") if "token" in rep else None,
        tls_cert=path("tls_cert"), tls_key=path("tls_key"), ca=path("ca"),
        forward=parse_forward(doc.get("forward", []), f"{where}: forward",
                              parse_deidentify(doc.get("deidentify", {}), f"{where}: deidentify", base)),
    )


def load_settings(path: str | os.PathLike[str]) -> ReplicationSettings:
    p = Path(path)
    try:
        doc = tomllib.loads(p.read_text())
    except OSError as exc:
        raise SettingsError(f"cannot read config file {p}: {exc.strerror or exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"config file {p}: {exc}") from exc
    return parse_settings(doc, str(p), p.parent)


def load_forward_rules(path: str | os.PathLike[str]) -> tuple[ForwardRule, ...]:
    return load_settings(path).forward
