"""Every message is kept as received, before its ACK: `<data>/hl7/received/` for those read,
`<data>/hl7/rejected/` (with a `.reason` beside) for those refused. The ACK means durable."""

from __future__ import annotations

import os
import re
import threading
import time
from pathlib import Path

_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_counter = threading.Lock()
_seq = [0]


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class Spool:
    def __init__(self, data_dir: str | os.PathLike[str]) -> None:
        self.root = Path(data_dir) / "hl7"

    def _write(self, kind: str, raw: bytes, control_id: str, reason: str | None) -> Path:
        folder = self.root / kind / time.strftime("%Y%m%d")
        folder.mkdir(parents=True, exist_ok=True)
        with _counter:
            _seq[0] += 1
            seq = _seq[0]
        label = _SAFE.sub("_", control_id)[:40] or "none"
        name = f"{time.strftime('%H%M%S')}-{os.getpid()}-{seq:06d}-{label}"
        path = folder / f"{name}.hl7"
        files = [(path, raw)]
        if reason is not None:
            files.append((folder / f"{name}.reason", reason.encode()))
        for target, body in files:
            tmp = target.with_suffix(target.suffix + ".tmp")
            with open(tmp, "wb") as f:
                f.write(body)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, target)
        _fsync_dir(folder)
        return path

    def received(self, raw: bytes, control_id: str) -> Path:
        return self._write("received", raw, control_id, None)

    def rejected(self, raw: bytes, control_id: str, reason: str) -> Path:
        return self._write("rejected", raw, control_id, reason)
