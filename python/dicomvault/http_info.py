"""`<data>/http.json`: where the server holding a data directory serves HTTP, and its per-start
admin token (mode 0600: whoever can read the data directory may administer the running server,
nobody else). Written by site.py, read by the CLI commands that must go through that server."""

from __future__ import annotations

import json
import os
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from .errors import DicomVaultError

HTTP_INFO = "http.json"


def write_http_info(data_dir: str | os.PathLike[str], info: dict[str, Any]) -> None:
    path = Path(data_dir) / HTTP_INFO
    # A new file of our own (O_EXCL: no planted link or older file with wider permissions is
    # reused), 0600 whatever the umask: the admin token must not be readable by others.
    fd, tmp = tempfile.mkstemp(prefix=".http.", suffix=".tmp", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump(info, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_http_info(data_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        return json.loads((Path(data_dir) / HTTP_INFO).read_text())
    except (FileNotFoundError, ValueError):
        return None


def remove_http_info(data_dir: str | os.PathLike[str]) -> None:
    (Path(data_dir) / HTTP_INFO).unlink(missing_ok=True)


def call_local_server(data_dir: str | os.PathLike[str], method: str, path: str,
                      body: dict[str, Any] | None = None, timeout: float = 60) -> Any:
    """A request to the API of the server holding `data_dir`, as its local admin (the token of
    its http.json): for the CLI commands that must not open a data directory a server holds.
    The decoded JSON answer, or None for an empty one (204)."""
    info = read_http_info(data_dir)
    if info is None:
        raise DicomVaultError(f"{data_dir} is locked by a process that serves no HTTP admin API "
                              f"(no {data_dir}/{HTTP_INFO}); stop it first")
    req = urllib.request.Request(info["url"] + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": f"Bearer {info['admin_token']}",
                                          "Content-Type": "application/json"})
    ctx = None
    if info.get("tls"):
        # Our own server on this machine, proven by the token in its data directory.
        ctx = ssl.create_default_context()
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    try:
        with urllib.request.urlopen(req, timeout=timeout, context=ctx) as resp:
            raw = resp.read()
    except urllib.error.HTTPError as exc:
        raise DicomVaultError(f"{info['url']}{path}: HTTP {exc.code}: {exc.read().decode(errors='replace')}"
                              ) from exc
    except OSError as exc:
        raise DicomVaultError(f"{info['url']}{path}: {exc}") from exc
    return json.loads(raw) if raw else None
