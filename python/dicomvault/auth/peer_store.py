"""The peers an operator admitted with `dicomvault peers add`: `<data>/auth/peers.json`.

Kept beside users.json with the same discipline (jsonfile.StampedJson): the CLI edits it under a
lock whether or not a server runs, and a running server sees the change at its next association
(one stat per look), so admitting a modality never needs a restart. Peers from the TOML file's
[[peers]] are the other source; dimse/peers.py merges the two, this file winning for a title
that is in both (the CLI is how a site changes its mind at 3 a.m.).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from ..config_values import ConfigError
from ..errors import ConflictError, DicomVaultError, NotFoundError
from .jsonfile import Doc, StampedJson
from .peer_settings import PeerConfig, parse_peer

PEERS_FILE = "peers.json"
_LOCK = ".peers.lock"


class UnknownPeerError(NotFoundError):
    """`peers remove` (or DELETE /api/peers/AE) of a title peers.json does not hold."""


def _parse(doc: Doc | None) -> dict[str, PeerConfig]:
    if doc is None:
        return {}
    entries = doc.get("peers", [])
    if not isinstance(entries, list):
        raise DicomVaultError(f"{PEERS_FILE}: 'peers' must be a list")
    out: dict[str, PeerConfig] = {}
    for i, entry in enumerate(entries):
        if isinstance(entry, dict):
            entry = {k: v for k, v in entry.items() if k != "added"}
        try:
            peer = parse_peer(entry, f"{PEERS_FILE} peers[{i}]")
        except ConfigError as exc:
            raise DicomVaultError(str(exc)) from exc
        out[peer.ae_title] = peer
    return out


class PeerStore:
    """`<data>/auth/peers.json`: add, remove, list; `current()` is what a server consults."""

    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.path = Path(data_dir) / "auth" / PEERS_FILE
        self._file = StampedJson(self.path, _LOCK, _parse)

    def current(self) -> dict[str, PeerConfig]:
        return self._file.current()

    def add(self, peer: PeerConfig, *, replace: bool = False) -> bool:
        """Adds `peer`; True if it replaced an entry of the same AE title (only with `replace`)."""

        def change(doc: Doc | None) -> tuple[Doc, bool]:
            doc = doc or {"peers": []}
            entries: list[dict[str, Any]] = doc.setdefault("peers", [])
            kept = [e for e in entries if str(e.get("ae_title", "")).strip() != peer.ae_title]
            replaced = len(kept) != len(entries)
            if replaced and not replace:
                raise ConflictError(f"peer {peer.ae_title!r} exists; `peers add --replace` changes it")
            entry = peer.as_dict()
            entry["added"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            doc["peers"] = kept + [entry]
            return doc, replaced

        return self._file.mutate(change)

    def remove(self, ae_title: str) -> None:
        title = ae_title.strip()

        def change(doc: Doc | None) -> tuple[Doc, None]:
            entries = (doc or {}).get("peers", [])
            kept = [e for e in entries if str(e.get("ae_title", "")).strip() != title]
            if len(kept) == len(entries):
                raise UnknownPeerError(f"no peer {title!r} in {self.path}")
            return {**(doc or {}), "peers": kept}, None

        self._file.mutate(change)
