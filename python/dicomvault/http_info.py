"""`<data>/http.json`: where the server holding a data directory serves HTTP, and its per-start
admin token (mode 0600: whoever can read the data directory may administer the running server,
nobody else). Written by site.py, read by the CLI commands that must go through that server."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

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
