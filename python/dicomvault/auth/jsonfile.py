"""Small JSON documents under `<data>/auth` that a running server and CLI processes share.

The pattern users.py established (its module docstring says why each step): readers keep a
parsed snapshot and re-read only when the file's (mtime_ns, size, inode) moves, or while the file
is young enough for that stamp to lie; writers take an fcntl lock on a separate lock file, re-read
under it, and replace the file atomically with mode 0600. `StampedJson` packages it for
users.json and shares.json.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from ..errors import DicomVaultError

Stamp = tuple[int, int, int]
Doc = dict[str, Any]
S = TypeVar("S")
T = TypeVar("T")

# Filesystem timestamps are coarse (a jiffy on ext4, a second or two elsewhere): two writes in
# one tick can leave mtime, size and even the inode number (freed and reused by the rename)
# unchanged. As git does for its index, a file loaded while it was this young is re-read on the
# next call until it has aged; these files are small, so the cost is nothing.
RACY_NS = 2_000_000_000


def ensure_private_dir(d: Path) -> None:
    d.parent.mkdir(parents=True, exist_ok=True)
    d.mkdir(mode=0o700, exist_ok=True)
    # mkdir's mode is filtered by the umask, and an existing directory keeps whatever it had.
    os.chmod(d, 0o700)


def atomic_replace(path: Path, body: bytes) -> None:
    """`path` holds `body` (mode 0600) or, after a crash, its old content: never half of either.
    Raises OSError."""
    tmp = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        try:
            os.fchmod(fd, 0o600)
            os.write(fd, body)
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    dfd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)


@contextlib.contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Holds an fcntl lock on `lock_path` (created 0600): one writer at a time across processes."""
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # also releases the flock


class StampedJson(Generic[S]):
    """One JSON object file and the snapshot parsed from it, kept in step with the file.

    `parse(doc)` turns the document (None when there is no file) into the snapshot, raising
    DicomVaultError for a bad one. Thread-safe."""

    def __init__(self, path: Path, lock_name: str, parse: Callable[[Doc | None], S]) -> None:
        self.path = path
        self._lock_path = path.parent / lock_name
        self._parse = parse
        self._lock = threading.Lock()
        self._snap: S | None = None
        self._stamp: Stamp | None = None
        self._loaded = False
        self._racy = False

    def _read(self) -> tuple[Doc | None, Stamp | None]:
        try:
            with open(self.path, "rb") as f:
                # fstat of the very inode read: a rename in between cannot pair new bytes with an old stamp
                st = os.fstat(f.fileno())
                raw = f.read()
        except FileNotFoundError:
            return None, None
        except OSError as exc:
            raise DicomVaultError(f"{self.path}: cannot read: {exc}") from exc
        try:
            doc = json.loads(raw)
        except ValueError as exc:
            raise DicomVaultError(f"{self.path}: not valid JSON ({exc}); fix or remove it") from exc
        if not isinstance(doc, dict):
            raise DicomVaultError(f"{self.path}: not a JSON object")
        return doc, (st.st_mtime_ns, st.st_size, st.st_ino)

    def _adopt(self, doc: Doc | None, stamp: Stamp | None) -> S:
        snap = self._parse(doc)
        self._snap, self._stamp, self._loaded = snap, stamp, True
        self._racy = stamp is not None and time.time_ns() - stamp[0] < RACY_NS
        return snap

    def current(self) -> S:
        """The snapshot of the file as it is now: one stat when nothing changed."""
        try:
            st = os.stat(self.path)
            stamp: Stamp | None = (st.st_mtime_ns, st.st_size, st.st_ino)
        except FileNotFoundError:
            stamp = None
        except OSError as exc:
            raise DicomVaultError(f"{self.path}: cannot stat: {exc}") from exc
        snap = self._snap
        if self._loaded and stamp == self._stamp and not self._racy and snap is not None:
            return snap
        with self._lock:
            return self._adopt(*self._read())

    def mutate(self, change: Callable[[Doc | None], tuple[Doc, T]]) -> T:
        """`change(doc)` gets a private copy of the document as the file holds it under the lock
        (None: no file yet) and returns (the document to write, a result). It raises to abandon
        (nothing is written); a document `parse` refuses is not written either."""
        try:
            ensure_private_dir(self.path.parent)
            with exclusive(self._lock_path):
                doc, _ = self._read()
                self._parse(doc)  # a damaged file is refused here, not half-edited by `change`
                new, result = change(json.loads(json.dumps(doc)) if doc is not None else None)
                self._parse(new)
                body = json.dumps(new, indent=1, sort_keys=True).encode()
                atomic_replace(self.path, body)
                with self._lock:
                    self._adopt(*self._read())
                return result
        except OSError as exc:
            raise DicomVaultError(f"{self.path}: cannot update: {exc}") from exc
