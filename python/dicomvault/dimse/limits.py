"""The DIMSE limits of `[dimse]` that pynetdicom does not enforce itself: associations per
calling AE title, the size of a C-STORE data set (the pynetdicom-read path; the native reader
bounds its own, fastpath.py), and the logging and counting of what they refuse.

The per-peer limit is checked when the A-ASSOCIATE-RQ has arrived, in an EVT_REQUESTED handler:
pynetdicom documents that a handler of that event may reject the association itself, and then
skips its own negotiation, so the negotiation (peers and permissions) stays untouched here.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable
from io import BytesIO
from typing import Any

from pynetdicom.dimse_messages import C_STORE_RQ

from ..refusals import REFUSALS
from .common import log, peer_desc
from .status import OUT_OF_RESOURCES

# A-ASSOCIATE-RJ result, source, reason (PS3.8 9.3.4): rejected-transient, service provider
# (presentation related function), local-limit-exceeded. The same answer pynetdicom gives when
# max_associations is reached, so callers retry later as they already do for that one.
LOCAL_LIMIT_EXCEEDED = (0x02, 0x03, 0x02)


def calling_title(assoc: Any) -> str:
    """The calling AE title of an acceptor association that has its A-ASSOCIATE-RQ ('' if not yet)."""
    primitive = getattr(assoc.requestor, "primitive", None)
    title = getattr(primitive, "calling_ae_title", None)
    return str(title).strip() if title is not None else ""


def _holds_slot(a: Any) -> bool:
    if not a.is_acceptor or a.is_rejected or a.is_aborted or a.is_released:
        return False
    # Started and finished: gone, whatever its flags say. Not started yet: it already answered
    # (the DUL thread sends the A-ASSOCIATE-AC, accept_memo.py) and holds its slot.
    return a.ident is None or a.is_alive()


def peer_count(associations: Iterable[Any], title: str) -> int:
    """Acceptor associations among `associations` from `title` that hold a slot."""
    return sum(1 for a in associations if _holds_slot(a) and calling_title(a) == title)


def per_peer_limit(limit: int) -> Any:
    """EVT_REQUESTED handler: more than `limit` associations from one calling AE title -> reject.

    The count is of the associations this handler let in, not only of pynetdicom's
    `active_associations` (the running Association threads): the accepting thread starts an
    association's thread after its DUL thread, which may already have answered, so under load a
    third request from a caller holding two could arrive while the second was not yet a running
    thread, and got in (seen once in a loaded test run)."""
    admitted: weakref.WeakSet[Any] = weakref.WeakSet()
    lock = threading.Lock()

    def on_requested(event: Any) -> None:
        assoc = event.assoc
        title = calling_title(assoc)
        with lock:
            active = peer_count({*assoc.ae.active_associations, *admitted, assoc}, title)
            if active <= limit:
                admitted.add(assoc)
                return
        log.warning("association rejected: %s: local limit exceeded: %d associations from %r active, "
                    "[dimse] max_associations_per_peer = %d", peer_desc(event), active - 1, title, limit)
        REFUSALS.count("association", "max_associations_per_peer")
        assoc.acse.send_reject(*LOCAL_LIMIT_EXCEEDED)
        # what pynetdicom's own negotiation does after a rejection: wait for the DUL to end
        assoc.kill()

    return on_requested


def oversize(caller: str, sop_uid: str, received: int, limit: int) -> tuple[int, str]:
    """The C-STORE status for a data set over `[dimse] max_object_size`, logged and counted."""
    why = f"object of {received} bytes exceeds [dimse] max_object_size = {limit}"
    log.warning("C-STORE from %s of %s refused (0x%04X): %s", caller, sop_uid or "?", OUT_OF_RESOURCES, why)
    REFUSALS.count("store", "max_object_size")
    return OUT_OF_RESOURCES, f"object larger than {limit} bytes"


class OversizeDataSet(BytesIO):
    """The data set buffer of a C-STORE-RQ that pynetdicom reassembles: once more than `limit`
    bytes have arrived, what it held is freed and further fragments are only counted; the store
    handler then answers `oversize` instead of storing. Why: pynetdicom gathers a whole message
    in memory before any handler runs, so without this a caller could fill the memory with one
    endless object."""

    def __init__(self, limit: int, initial: bytes = b"") -> None:
        super().__init__()
        self.limit = limit
        self.received = 0
        self.exceeded = False
        if initial:
            self.write(initial)

    def write(self, data: Any) -> int:
        n = len(data)
        self.received += n
        if self.exceeded:
            return n
        if self.received > self.limit:
            self.exceeded = True
            self.seek(0)
            self.truncate()
            return n
        return super().write(data)


def bound_message(message: Any, limit: int) -> None:
    """After pynetdicom took a P-DATA into `message` (its DIMSEMessage being reassembled): the
    data set of an unfinished C-STORE-RQ goes into an OversizeDataSet bounded by `limit`."""
    if limit <= 0 or message is None or isinstance(message.data_set, OversizeDataSet):
        return
    if not isinstance(message, C_STORE_RQ) or getattr(message, "_data_set_file", None) is not None:
        return
    current: BytesIO = message.data_set
    message.data_set = OversizeDataSet(limit, current.getvalue())


def refused_size(dataset: Any, limit: int) -> int | None:
    """The bytes received of a C-STORE data set over `limit` (0: none), else None: one that
    OversizeDataSet dropped, or one that came whole in the PDU that carried its command, before
    the bound was in place."""
    if isinstance(dataset, OversizeDataSet) and dataset.exceeded:
        return dataset.received
    if limit and dataset is not None:
        size = len(dataset.getbuffer())
        if size > limit:
            return size
    return None


def association_reason(text: str) -> str:
    """The /metrics label of a rejection reason: server.rejection_reason's words, or an
    admission verdict's (dimse/peers.py)."""
    if text.startswith("local limit exceeded"):
        return "max_associations"
    if text.startswith("calling AE title"):
        return "unknown_calling_ae"
    if text.startswith("peer "):
        return "peer_address_or_certificate"
    return "no_acceptable_context"


def count_admission_refusal(refused: str) -> None:
    """Counts a caller refused by the admission at the edge (a receiver process or the TLS relay
    answers the A-ASSOCIATE-RJ itself, without pynetdicom's EVT_REJECTED)."""
    REFUSALS.count("association", association_reason(refused))
