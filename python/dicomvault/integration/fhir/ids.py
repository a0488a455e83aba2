"""Reversible FHIR resource ids for DICOM identifiers.

A FHIR id is 1-64 characters of ``[A-Za-z0-9.-]``. A conforming Study Instance UID (digits and
dots, at most 64) is already one, and is its own id; so is a Patient ID of letters, digits and
dots. Any other character (``-`` itself included, so decoding is unambiguous) becomes ``-`` and
two lower-case hex digits per UTF-8 byte. An identifier whose encoding passes 64 characters has
no id: it is served without one (its identifier still names it) and cannot be read by id.
"""

from __future__ import annotations

import re

from ...errors import NotFoundError

MAX_ID = 64
_PLAIN = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789.")
_ID_RE = re.compile(r"[A-Za-z0-9.\-]{1,64}")
_ESCAPE_RE = re.compile(r"-([0-9a-f]{2})")


def to_fhir_id(value: str) -> str | None:
    """The id of a Study Instance UID or Patient ID; None when it cannot have one (empty, or
    longer than 64 characters once escaped)."""
    if not value:
        return None
    out = "".join(c if c in _PLAIN else "".join(f"-{b:02x}" for b in c.encode()) for c in value)
    return out if len(out) <= MAX_ID else None


def from_fhir_id(fhir_id: str, what: str) -> str:
    """The identifier an id names; NotFoundError (naming ``what`` and the id) for a string that
    no identifier encodes to, so a read of it is a 404 like any other unknown id."""
    if not _ID_RE.fullmatch(fhir_id):
        raise NotFoundError(f"{what} id {fhir_id[:80]!r} is not a valid FHIR id")
    raw = bytearray()
    pos = 0
    for m in _ESCAPE_RE.finditer(fhir_id):
        raw += fhir_id[pos:m.start()].encode()
        raw.append(int(m.group(1), 16))
        pos = m.end()
    raw += fhir_id[pos:].encode()
    try:
        value = raw.decode()
    except UnicodeDecodeError:
        raise NotFoundError(f"{what} id {fhir_id!r} does not encode an identifier") from None
    if to_fhir_id(value) != fhir_id:
        # a stray "-" or an escaped plain character: not an id this module makes
        raise NotFoundError(f"{what} id {fhir_id!r} does not encode an identifier")
    return value
