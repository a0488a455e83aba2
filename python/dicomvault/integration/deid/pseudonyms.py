"""Deterministic pseudonyms under a project's secret: HMAC-SHA256 of the original value.

The same original gives the same pseudonym in the same project, on every export and every
machine holding the secret, so a study exported twice (or forwarded and exported) keeps its
UIDs, references between objects stay valid, and a patient keeps one pseudonym and one date
shift. Without the secret nothing leads back: HMAC is one-way, and the mapping is kept only
encrypted (mapping.py) or not at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from datetime import date, timedelta

# 2.25.<integer> is the UUID-derived UID root (PS3.5 B.2): a 128-bit value written in decimal
# fits the 64-character UID limit (at most 39 digits + 5).
UID_ROOT = "2.25."
# Dates move back by 1 .. MAX_SHIFT_DAYS days, the same for every date of one patient, so
# intervals between a patient's exams survive (PS3.15 E.3.6, Modified Dates).
MAX_SHIFT_DAYS = 3650


class Pseudonymizer:
    def __init__(self, project: str, secret: bytes) -> None:
        self.project = project
        self._secret = secret

    def _mac(self, kind: str, value: str) -> bytes:
        # The kind is part of the message: a UID and a patient ID with the same text get
        # unrelated pseudonyms.
        return hmac.new(self._secret, f"{kind}\0{value}".encode(), hashlib.sha256).digest()

    def uid(self, original: str) -> str:
        return UID_ROOT + str(int.from_bytes(self._mac("uid", original.strip("\0 "))[:16], "big"))

    def patient_id(self, original: str) -> str:
        # 16 base32 characters (80 bits): short enough for LO and for people to quote
        code = base64.b32encode(self._mac("patient", original)[:10]).decode()
        return f"{self.project[:40]}-{code}"[:64]

    def patient_name(self, original_id: str) -> str:
        """A name that says what it is; derived from the patient ID (one per patient), so the
        name and ID of one patient always go together."""
        return self.patient_id(original_id).replace("^", "_")

    def day_shift(self, original_id: str) -> int:
        """Days to subtract from every date of this patient (1 .. MAX_SHIFT_DAYS)."""
        return 1 + int.from_bytes(self._mac("dates", original_id)[:4], "big") % MAX_SHIFT_DAYS

    def dummy_uid(self, tag: int, original: str) -> str:
        """A UID standing in for a D-action UID (not a reference: unrelated to other UIDs)."""
        return self.uid(f"dummy:{tag:08X}:{original}")


def shift_da(value: str, days: int) -> str | None:
    """A DA value moved back `days` days; None when it is not a full YYYYMMDD date."""
    v = value.strip()
    if len(v) != 8 or not v.isdigit():
        return None
    try:
        d = date(int(v[:4]), int(v[4:6]), int(v[6:8]))
    except ValueError:
        return None
    moved = d - timedelta(days=days)
    return f"{moved.year:04d}{moved.month:02d}{moved.day:02d}"


def shift_dt(value: str, days: int) -> str | None:
    """A DT value with its date part moved back `days` days (time, fraction and offset kept);
    None when it does not start with a full date."""
    v = value.strip()
    head = shift_da(v[:8], days) if len(v) >= 8 else None
    return None if head is None else head + v[8:]
