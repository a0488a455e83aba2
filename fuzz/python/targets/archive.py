"""A scratch archive for the targets that query or read: a data directory holding pydicom's test
files, made once per process."""

from __future__ import annotations

import atexit
import shutil
import tempfile
from pathlib import Path
from typing import Any

from dicomvault.engine import Engine

from .corpus import DICOM_FILES, dicom_file

_made: dict[str, Any] = {}


def archive() -> Engine:
    eng = _made.get("engine")
    if eng is None:
        root = Path(tempfile.mkdtemp(prefix="fuzz-archive-"))
        eng = Engine(root / "data", min_free_bytes=0)
        outcomes = eng.store_buffers([dicom_file(n) for n in DICOM_FILES])
        failed = [o for o in outcomes if isinstance(o, Exception)]
        if failed:
            raise RuntimeError(f"the fuzz archive in {root} could not store its files: {failed}")
        _made.update(engine=eng, root=root)
        atexit.register(_remove)
    return eng


def _remove() -> None:
    _made["engine"].close()
    shutil.rmtree(_made["root"], ignore_errors=True)
