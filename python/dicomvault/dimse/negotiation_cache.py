"""Less repeated work in association negotiation: UID validation remembered, and an A-ASSOCIATE-RQ
seen before not decoded again.

Why: dcmtk storescu (like many workstations) proposes ~120 presentation contexts, each with up to
~30 transfer syntaxes, and pynetdicom turns every one of those UIDs into a pydicom `UID` several
times while decoding the A-ASSOCIATE-RQ, negotiating and encoding the A-ASSOCIATE-AC, each time
with pydicom's and pynetdicom's regex validation: ~11 ms of GIL-holding CPU per such association
(measured on the captured storescu request, bench/README.md). Both memos here are reached through
places pynetdicom offers, not by replacing its functions:

- `MemoisedUIValidator` is pynetdicom's documented `_config.VALIDATORS["UI"]` hook (installed by
  server.configure_pynetdicom), remembering the verdict per UID and validation settings.
- `associate_rq_cache` is used by our DUL (dul.EventDrivenDUL._decode_pdu): a peer sends the same
  A-ASSOCIATE-RQ bytes every time (same AE titles, contexts, maximum PDU), so the decoded PDU is
  kept and handed out again. pynetdicom only reads a received PDU, so sharing it is safe.
- With the PDU, the cache keeps (`CachedRequest`) the A-ASSOCIATE (request) primitive that
  pynetdicom's state machine (AE-6) makes from it per association: made once (7.7 ms for getscu's
  ~120 contexts: every UID becomes a validated pydicom UID again), each association getting its
  own copy (its own lists; the items in them, which pynetdicom only reads, shared). Our DUL's
  state machine does AE-6 with it (dul.py).
Together: ~11 -> ~6 ms per storescu association (bench/README.md); with the primitive and the
answer remembered too (accept_memo.py), see bench/RESULTS.md "Association set-up".

Both are bounded: the vocabulary seen in practice is a few hundred UIDs and a handful of peers; a
peer inventing new ones per association only restarts a cache, it cannot grow it.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from pydicom import config as pydicom_config
from pydicom.uid import UID, AllTransferSyntaxes
from pynetdicom import _config
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE

from .accept_memo import proposed_key

MAX_UIDS = 4096
MAX_REQUESTS = 16  # distinct A-ASSOCIATE-RQs kept (~0.3 MB each for 120 contexts)

Validator = Callable[[Any], tuple[bool, str]]


class MemoisedUIValidator:
    """A `_config.VALIDATORS["UI"]` function: `wrapped`'s verdict, remembered per distinct
    (UID, settings it depends on: pynetdicom's ENFORCE_UID_CONFORMANCE, and pydicom's reading
    validation mode, with which pydicom's UID() may raise)."""

    def __init__(self, wrapped: Validator) -> None:
        self.wrapped = wrapped
        self._cache: dict[tuple[str, bool, Any], tuple[bool, str]] = {}
        self._lock = threading.Lock()

    def __call__(self, value: Any) -> tuple[bool, str]:
        if not isinstance(value, str):
            return self.wrapped(value)
        key = (str(value), bool(_config.ENFORCE_UID_CONFORMANCE),
               pydicom_config.settings.reading_validation_mode)
        try:
            return self._cache[key]
        except KeyError:
            pass
        verdict = self.wrapped(value)
        with self._lock:
            if len(self._cache) >= MAX_UIDS:
                self._cache.clear()
            self._cache[key] = verdict
        return verdict


def memoise_ui_validation() -> None:
    """Wraps pynetdicom's current UI validator (idempotent), its cache filled with the verdicts on
    the UIDs every peer proposes (pydicom's transfer syntaxes, pynetdicom's SOP classes): a few ms
    at start instead of during the first associations."""
    current = _config.VALIDATORS["UI"]
    if isinstance(current, MemoisedUIValidator):
        return
    memo = MemoisedUIValidator(current)
    for uid in _known_uids():
        memo(uid)
    _config.VALIDATORS["UI"] = memo


def _known_uids() -> list[UID]:
    from pynetdicom import sop_class

    uids = [UID(u) for u in AllTransferSyntaxes]
    uids += [v for v in vars(sop_class).values() if isinstance(v, UID)]
    return uids[:MAX_UIDS // 2]


class CachedRequest:
    """A decoded A-ASSOCIATE-RQ PDU and the A-ASSOCIATE (request) primitive made from it once
    (pynetdicom's `to_primitive`), of which every association gets its own copy."""

    def __init__(self, pdu: A_ASSOCIATE_RQ) -> None:
        self.pdu = pdu
        self._primitive: A_ASSOCIATE | None = None

    def primitive(self) -> A_ASSOCIATE:
        made = self._primitive
        if made is None:
            made = self.pdu.to_primitive()
            proposed_key(made)  # kept on it, and so on every copy: accept_memo.NegotiationMemo's key
            self._primitive = made
        return copy_primitive(made)


def copy_primitive(primitive: A_ASSOCIATE) -> A_ASSOCIATE:
    """A copy of an A-ASSOCIATE primitive with its own lists (and so its own result fields)."""
    new = A_ASSOCIATE.__new__(A_ASSOCIATE)
    new.__dict__.update(primitive.__dict__)
    new._user_information = list(primitive._user_information)
    new._presentation_context_definition_list = list(primitive._presentation_context_definition_list)
    new._presentation_context_definition_results_list = list(
        primitive._presentation_context_definition_results_list)
    return new


class AssociateRqCache:
    """Decoded A-ASSOCIATE-RQ PDUs (`CachedRequest`s) by their bytes, least recently used dropped first."""

    def __init__(self, size: int = MAX_REQUESTS) -> None:
        self.size = size
        self._pdus: OrderedDict[bytes, CachedRequest] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, raw: bytes) -> CachedRequest | None:
        with self._lock:
            pdu = self._pdus.get(raw)
            if pdu is not None:
                self._pdus.move_to_end(raw)
            return pdu

    def put(self, raw: bytes, request: CachedRequest) -> None:
        with self._lock:
            self._pdus[raw] = request
            while len(self._pdus) > self.size:
                self._pdus.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._pdus.clear()

    def __len__(self) -> int:
        return len(self._pdus)


associate_rq_cache = AssociateRqCache()
