"""Share links: a read-only grant to ONE study for someone with no account, `<data>/auth/shares.json`.

A share is a random bearer token (only its SHA-256 is stored, as for user tokens), a short id
that names it in lists, the audit log and the CLI (never the token), the study, who created it
and when, when it expires, and whether it was revoked. A request bearing it acts as
`Principal("share:<id>", "reader", "share", study=<uid>)`; web/security.py confines that
principal to its study.

The file is shared by a running server and the CLI like users.json (auth/jsonfile.py): a
`dicomvault shares revoke` takes effect on the server's next request.
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from ..errors import AuthenticationError, DicomVaultError, NotFoundError, RequestError
from .jsonfile import Doc, StampedJson
from .roles import READER, Principal
from .sessions import iso_utc
from .users import AUTH_DIR, hash_token

SHARES_FILE = "shares.json"
LOCK_FILE = "shares.lock"
FILE_VERSION = 1

DAY = 86_400
DEFAULT_EXPIRES_IN = 7 * DAY
# A link outlives the conversation it was sent in; a quarter is the longest anyone should need
# without making a new one.
MAX_EXPIRES_IN = 90 * DAY
MIN_EXPIRES_IN = 60
MAX_NOTE_CHARS = 500
# Expired links stay listed this long (so a user sees what ran out), then the next change drops
# them: the file would otherwise grow by every link ever made. The audit log keeps the history.
KEEP_EXPIRED = 30 * DAY

_TOKEN_BYTES = 32
_ID_BYTES = 6
# The same UIDs web/dicomweb/routes.check_uid admits in a path: a share names a study exactly as
# the paths it may use spell it.
_UID_RE = re.compile(r"[0-9A-Za-z._-]{1,128}")


@dataclass(frozen=True, slots=True)
class ShareInfo:
    """One share as the file holds it, minus its token's hash."""

    id: str
    study: str
    created_by: str
    created: str
    expires: str
    expires_at: float
    revoked: bool
    note: str | None

    def status(self, now: float) -> str:
        if self.revoked:
            return "revoked"
        return "expired" if now >= self.expires_at else "active"

    def as_dict(self, now: float) -> dict[str, Any]:
        """For lists: never the token (it is not stored) nor its hash."""
        return {"id": self.id, "study": self.study, "created_by": self.created_by, "created": self.created,
                "expires": self.expires, "revoked": self.revoked, "status": self.status(now),
                "note": self.note}


@dataclass(frozen=True, slots=True)
class _Snapshot:
    by_id: dict[str, ShareInfo]
    by_token: dict[str, ShareInfo]  # SHA-256 hex of the token -> share


def check_study_uid(uid: Any) -> str:
    if not isinstance(uid, str) or not _UID_RE.fullmatch(uid) or uid in (".", ".."):
        raise RequestError(f"study {str(uid)[:80]!r} is not a study instance UID")
    return uid


def check_expires_in(seconds: Any) -> int:
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        raise RequestError(f"expires_in {seconds!r} is not a whole number of seconds")
    if not MIN_EXPIRES_IN <= seconds <= MAX_EXPIRES_IN:
        raise RequestError(f"expires_in {seconds} is outside [{MIN_EXPIRES_IN}, {MAX_EXPIRES_IN}] seconds "
                           f"(at most {MAX_EXPIRES_IN // DAY} days)")
    return seconds


def check_note(note: Any) -> str | None:
    if note is None:
        return None
    if not isinstance(note, str) or len(note) > MAX_NOTE_CHARS:
        raise RequestError(f"note must be text of at most {MAX_NOTE_CHARS} characters")
    return note


def _parse_time(text: str) -> float:
    return datetime.fromisoformat(text).timestamp()


class ShareStore:
    """The share links of one data directory. Thread-safe."""

    def __init__(self, data_dir: str | os.PathLike[str], *, clock: Callable[[], float] = time.time) -> None:
        self.dir = Path(data_dir) / AUTH_DIR
        self.path = self.dir / SHARES_FILE
        # Public so tests can move time forward.
        self.clock = clock
        self._file = StampedJson(self.path, LOCK_FILE, self._parse)

    def _parse(self, doc: Doc | None) -> _Snapshot:
        if doc is None:
            return _Snapshot({}, {})
        if doc.get("version") != FILE_VERSION or not isinstance(doc.get("shares"), dict):
            raise DicomVaultError(f"{self.path}: not a version {FILE_VERSION} shares file")
        by_id: dict[str, ShareInfo] = {}
        by_token: dict[str, ShareInfo] = {}
        for sid, rec in doc["shares"].items():
            try:
                info = ShareInfo(id=sid, study=check_study_uid(rec["study"]),
                                 created_by=str(rec["created_by"]), created=str(rec["created"]),
                                 expires=str(rec["expires"]),
                                 expires_at=_parse_time(rec["expires"]), revoked=bool(rec.get("revoked")),
                                 note=check_note(rec.get("note")))
                digest = str(rec["sha256"])
            except (DicomVaultError, ValueError, KeyError, TypeError) as exc:
                raise DicomVaultError(f"{self.path}: share {sid!r}: bad record ({exc})") from exc
            by_id[sid] = info
            by_token[digest] = info
        return _Snapshot(by_id, by_token)

    @staticmethod
    def _empty() -> Doc:
        return {"version": FILE_VERSION, "shares": {}}

    # -- changes --

    def create(self, study: str, created_by: str, expires_in: int = DEFAULT_EXPIRES_IN,
               note: str | None = None) -> tuple[ShareInfo, str]:
        """A new share of `study` and its token (returned once). The caller checks that the
        study exists and that `created_by` may share."""
        check_study_uid(study)
        check_expires_in(expires_in)
        check_note(note)
        token = secrets.token_urlsafe(_TOKEN_BYTES)
        now = self.clock()

        def change(doc: Doc | None) -> tuple[Doc, str]:
            doc = doc or self._empty()
            shares: dict[str, Any] = doc["shares"]
            for sid in [sid for sid, r in shares.items() if _parse_time(r["expires"]) + KEEP_EXPIRED < now]:
                del shares[sid]
            sid = secrets.token_hex(_ID_BYTES)
            while sid in shares:
                sid = secrets.token_hex(_ID_BYTES)
            shares[sid] = {"sha256": hash_token(token), "study": study, "created_by": created_by,
                           "created": iso_utc(now), "expires": iso_utc(now + expires_in), "revoked": False,
                           "note": note}
            return doc, sid

        sid = self._file.mutate(change)
        return self.get(sid), token

    def revoke(self, share_id: str, by: str) -> tuple[ShareInfo, bool]:
        """Revokes the share (the caller checks that `by` may); returns it and whether this call
        changed anything (False: it was already revoked)."""

        def change(doc: Doc | None) -> tuple[Doc, bool]:
            rec = (doc or self._empty())["shares"].get(share_id)
            if doc is None or rec is None:
                raise NotFoundError(f"no share {share_id[:40]!r} in {self.path}")
            if rec.get("revoked"):
                return doc, False
            rec.update(revoked=True, revoked_by=by, revoked_at=iso_utc(self.clock()))
            return doc, True

        changed = self._file.mutate(change)
        return self.get(share_id), changed

    # -- queries --

    def get(self, share_id: str) -> ShareInfo:
        info = self._file.current().by_id.get(share_id)
        if info is None:
            raise NotFoundError(f"no share {share_id[:40]!r} in {self.path}")
        return info

    def authenticate(self, token: str) -> Principal | None:
        """The principal of a share token; None when `token` is no share's; AuthenticationError,
        naming the share, when it is one that was revoked or has expired."""
        info = self._file.current().by_token.get(hash_token(token))
        if info is None:
            return None
        if info.revoked:
            raise AuthenticationError(f"share link {info.id} was revoked")
        if self.clock() >= info.expires_at:
            raise AuthenticationError(f"share link {info.id} expired at {info.expires}")
        return Principal(f"share:{info.id}", READER, "share", study=info.study)

    def expires(self, token: str) -> float | None:
        info = self._file.current().by_token.get(hash_token(token))
        return None if info is None else info.expires_at

    # Last: the method named `list` would shadow the builtin in annotations that follow it.
    def list(self, created_by: str | None = None) -> list[ShareInfo]:
        """Every share, newest first; only those `created_by` made when it is given."""
        shares = self._file.current().by_id.values()
        mine = [s for s in shares if created_by is None or s.created_by == created_by]
        return sorted(mine, key=lambda s: (s.created, s.id), reverse=True)
