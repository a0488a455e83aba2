"""The original -> pseudonym mapping of a project, kept encrypted or not at all.

`<data>/deid/<project>.mapping`: one line per export (or forwarded object), each the base64 of a
12-byte nonce and the AES-256-GCM ciphertext of a JSON record {time, context, pairs}, the project
name as associated data (a line moved to another project's file does not decrypt). Appended with
O_APPEND, mode 0600, fsync'd; nothing in clear ever reaches the disk. Without the key the file
says nothing but its size; with it, `read_mapping` gives the records back (re-identification
by whoever holds the key, as the project's ethics approval allows).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import time
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ...errors import DicomVaultError

MAPPING_DIR = "deid"
NONCE = 12


class MappingKeyError(DicomVaultError):
    """A mapping line does not decrypt with the key given (wrong key, wrong project, damage)."""


def mapping_path(data_dir: str | os.PathLike[str], project: str) -> Path:
    return Path(data_dir) / MAPPING_DIR / f"{project}.mapping"


def append_mapping(path: Path, key: bytes, project: str, pairs: list[dict[str, str]],
                   context: dict[str, Any]) -> None:
    if not pairs:
        return
    record = json.dumps({"time": time.time(), "context": context, "pairs": pairs}, sort_keys=True).encode()
    nonce = os.urandom(NONCE)
    line = base64.b64encode(nonce + AESGCM(key).encrypt(nonce, record, project.encode())) + b"\n"
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    try:
        os.write(fd, line)
        os.fsync(fd)
    finally:
        os.close(fd)


def read_mapping(path: str | os.PathLike[str], key: bytes, project: str) -> list[dict[str, Any]]:
    """Every record of a mapping file, decrypted; MappingKeyError at the first that does not."""
    records = []
    for n, line in enumerate(Path(path).read_bytes().splitlines(), 1):
        if not line.strip():
            continue
        try:
            blob = base64.b64decode(line, validate=True)
            plain = AESGCM(key).decrypt(blob[:NONCE], blob[NONCE:], project.encode())
        except (InvalidTag, binascii.Error, ValueError) as exc:
            raise MappingKeyError(f"{path}: line {n} does not decrypt with this key for project "
                                  f"{project!r}") from exc
        records.append(json.loads(plain))
    return records
