"""Reading the audit log from where a sender left off, and that place (the cursor).

The local hash-chained log is the only spool: whatever any process appended (the server, the
CLI, DIMSE workers) is read back from `<data>/audit/audit.jsonl` in order of `seq`. The cursor
(`<data>/audit/syslog.cursor`, JSON `{"seq": N, "offset": B}`, replaced atomically) is the last
seq the repository is known to have and the byte offset just past its line. The seq is what
counts: the offset only saves reading the log from its start, and a cursor whose offset does not
fall on a line boundary is ignored in favour of a scan that skips every seq up to N.

Reads take the writers' flock shared, so a line is only read once its writer's fsync is done; a
line without its newline (a torn append) is never read: the next writer cuts it off.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .log import AUDIT_DIR, AUDIT_FILE

CURSOR_FILE = "syslog.cursor"
CHUNK = 64 * 1024
# Records are a few hundred bytes; a line this long is damage, not a record.
MAX_LINE = 1 << 20

log = logging.getLogger("dicomvault.audit.syslog")


@dataclass(frozen=True)
class Position:
    seq: int = 0  # the last seq sent (0: none)
    offset: int = 0  # just past that record's line

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "offset": self.offset})


def cursor_path(data_dir: str | os.PathLike[str]) -> Path:
    return Path(data_dir) / AUDIT_DIR / CURSOR_FILE


def load_cursor(path: Path) -> Position:
    """The cursor in `path`; the start of the log when there is none (or it is unreadable,
    which resends everything rather than skipping anything)."""
    try:
        doc = json.loads(path.read_text())
        seq, offset = int(doc["seq"]), int(doc["offset"])
    except FileNotFoundError:
        return Position()
    except (OSError, ValueError, KeyError, TypeError) as exc:
        log.error("audit: syslog cursor %s is unreadable (%s); sending the whole log again", path, exc)
        return Position()
    return Position(max(seq, 0), max(offset, 0))


def save_cursor(path: Path, pos: Position) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.write(fd, pos.to_json().encode() + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


class AuditTail:
    """The chained records after a position, read a chunk at a time (memory stays bounded by
    `CHUNK` and the records asked for, whatever the backlog)."""

    def __init__(self, data_dir: str | os.PathLike[str], start: Position) -> None:
        self.path = Path(data_dir) / AUDIT_DIR / AUDIT_FILE
        self.seq = start.seq
        self.offset = start.offset
        self.skipped = 0  # damaged lines passed over (counted, logged)
        self._checked = False

    def rewind(self, pos: Position) -> None:
        """Back to `pos` (what the repository is known to have): the records after it are read again."""
        self.seq, self.offset, self._checked = pos.seq, pos.offset, False

    def read(self, limit: int) -> list[tuple[Position, dict[str, Any]]]:
        """Up to `limit` records after the current position, each with the position just past it."""
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            return []
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            size = os.fstat(fd).st_size
            if not self._checked:
                self._check_offset(fd, size)
            out: list[tuple[Position, dict[str, Any]]] = []
            while len(out) < limit and self.offset < size:
                block = os.pread(fd, min(CHUNK, size - self.offset), self.offset)
                cut = block.rfind(b"\n")
                if cut < 0:
                    if size - self.offset <= MAX_LINE:
                        block = os.pread(fd, size - self.offset, self.offset)
                        cut = block.rfind(b"\n")
                    if cut < 0:
                        if size - self.offset > MAX_LINE and self._skip_long_line(fd, size):
                            continue
                        break  # a line still being written, or torn: not sent until complete
                start = self.offset
                for line in block[:cut].split(b"\n"):
                    start += len(line) + 1
                    rec = self._record(line, start)
                    if rec is not None:
                        out.append((Position(self.seq, start), rec))
                    self.offset = start
                    if len(out) >= limit:
                        break
            return out
        finally:
            os.close(fd)

    def _record(self, line: bytes, end: int) -> dict[str, Any] | None:
        try:
            rec = json.loads(line)
        except ValueError:
            self.skipped += 1
            log.error("audit: line ending at byte %d of %s is not JSON; not sent (`dicomvault audit "
                      "verify` tells more)", end, self.path)
            return None
        seq = rec.get("seq") if isinstance(rec, dict) else None
        if not isinstance(seq, int) or seq <= self.seq:
            return None  # from before the chain, or already sent
        self.seq = seq
        return rec

    def _check_offset(self, fd: int, size: int) -> None:
        """A cursor offset past the end or inside a line (a log restored from a backup, say) is
        dropped: reading from the start and skipping seqs up to the cursor is always right."""
        self._checked = True
        if self.offset == 0:
            return
        if self.offset > size or os.pread(fd, 1, self.offset - 1) != b"\n":
            log.warning("audit: syslog cursor offset %d does not fit %s; finding seq %d from the start",
                        self.offset, self.path, self.seq)
            self.offset = 0

    def _skip_long_line(self, fd: int, size: int) -> bool:
        """Passes over a line longer than MAX_LINE; False while it has no newline yet."""
        pos = self.offset + MAX_LINE
        while pos < size:
            block = os.pread(fd, min(CHUNK, size - pos), pos)
            nl = block.find(b"\n")
            if nl >= 0:
                self.skipped += 1
                log.error("audit: a line of %d bytes at byte %d of %s is not a record; not sent",
                          pos + nl - self.offset, self.offset, self.path)
                self.offset = pos + nl + 1
                return True
            pos += len(block)
        return False
