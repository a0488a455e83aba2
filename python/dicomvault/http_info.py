"""`<data>/http.json`: where the server holding a data directory serves HTTP, and its per-start
admin token (mode 0600: whoever can read the data directory may administer the running server,
nobody else). Written by site.py, read by the CLI commands that must go through that server."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

HTTP_INFO = "http.json"


def write_http_info(data_dir: str | os.PathLike[str], info: dict[str, Any]) -> None:
    path = Path(data_dir) / HTTP_INFO
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(info, f)
    os.replace(tmp, path)


def read_http_info(data_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        return json.loads((Path(data_dir) / HTTP_INFO).read_text())
    except (FileNotFoundError, ValueError):
        return None


def remove_http_info(data_dir: str | os.PathLike[str]) -> None:
    (Path(data_dir) / HTTP_INFO).unlink(missing_ok=True)
