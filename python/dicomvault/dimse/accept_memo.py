"""An acceptor's answer to an A-ASSOCIATE-RQ, worked out once per distinct question: the
presentation context negotiation and the encoded A-ASSOCIATE-AC are remembered by everything they
depend on; who the caller is, what it may do and the per-association checks still run every time.

Why: dcmtk getscu and storescu propose ~120 presentation contexts. On the captured getscu request
(bench/assoc_setup.py), pynetdicom's negotiation of them (`negotiate_unrestricted`) took 2.9 ms
and the A-ASSOCIATE-AC's building and encoding 2.2 ms, GIL held, for an answer that is the same
for every association from the same workstation (with the request's primitive, negotiation_cache.py,
~7.7 ms more: ~15 ms of CPU per association, all of the 16-35 ms getscu waited for its AC).

What is remembered, and keyed by what:
- `NegotiationMemo`: the negotiated contexts and SCP/SCU role replies, by the proposed contexts
  (id, abstract syntax, transfer syntaxes), the proposed roles, the acceptor's supported contexts
  (syntaxes and roles) and pynetdicom's UNRESTRICTED_STORAGE_SERVICE. Every association gets its
  own copies: admission (admission.py) refuses contexts per caller by changing them.
- `AcceptMemo`: the A-ASSOCIATE-AC PDU and its bytes, by every field of the A-ASSOCIATE (accept)
  primitive that goes into it: AE titles, the per-context results and syntaxes (after admission's
  refusals), and every user information item (maximum PDU, implementation UID and name, role
  replies, user identity response, extended negotiation). Used by the DUL's state machine (dul.py).
Not remembered: admission (peers.py: title, address, certificate, per association), user identity
(EVT_USER_ID handlers), the AE-title, association-limit and extended-negotiation checks, the
events. `MemoisedACSE._negotiate_as_acceptor` is pynetdicom 3.0.4's, copied (no smaller seam: the
negotiation call is inline in it), with the negotiation taken from the memo.

Both memos are bounded (a handful of distinct workstations' requests in practice); a peer varying
its request per association only evicts entries, it cannot grow them.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Hashable
from typing import Any, cast

from pynetdicom import _config, evt
from pynetdicom.acse import ACSE
from pynetdicom.pdu import A_ASSOCIATE_AC
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import PresentationContext, negotiate_as_acceptor, negotiate_unrestricted

_ACSE_LOG = logging.getLogger("pynetdicom.acse")  # the copied method's messages keep their logger

MAX_NEGOTIATIONS = 32
MAX_ACCEPTS = 64  # per caller AE title and admission outcome, so more than negotiations

Negotiated = tuple[list[PresentationContext], list[Any]]


class _Lru:
    """A small thread-safe LRU map."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._items: OrderedDict[Hashable, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable) -> Any | None:
        with self._lock:
            value = self._items.get(key)
            if value is None:
                self.misses += 1
            else:
                self.hits += 1
                self._items.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Any) -> None:
        with self._lock:
            self._items[key] = value
            while len(self._items) > self.size:
                self._items.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self.hits = self.misses = 0

    def __len__(self) -> int:
        return len(self._items)


def clone_context(cx: PresentationContext) -> PresentationContext:
    """A copy of a negotiated context that can be changed without touching the original. Not
    deepcopy: that rebuilds (and re-validates) every UID, which are immutable strings anyway."""
    new = PresentationContext.__new__(PresentationContext)
    new.__dict__.update(cx.__dict__)
    new._transfer_syntax = list(cx._transfer_syntax)
    return new


def _clone_item(item: Any) -> Any:
    new = type(item).__new__(type(item))
    new.__dict__.update(item.__dict__)
    return new


def proposed_key(primitive: A_ASSOCIATE) -> tuple[Any, ...]:
    """The proposed presentation contexts of an A-ASSOCIATE (request) primitive, as a key (kept on
    the primitive: negotiation_cache.py hands out copies of one primitive per distinct request)."""
    key = getattr(primitive, "_dv_proposed_key", None)
    if key is None:
        key = tuple((cx.context_id, str(cx.abstract_syntax), tuple(str(ts) for ts in cx.transfer_syntax))
                    for cx in primitive.presentation_context_definition_list)
        primitive._dv_proposed_key = key  # type: ignore[attr-defined]
    return cast(tuple[Any, ...], key)


def supported_key(contexts: list[PresentationContext]) -> tuple[Any, ...]:
    return tuple((str(cx.abstract_syntax), tuple(str(ts) for ts in cx.transfer_syntax),
                  cx.scu_role, cx.scp_role) for cx in contexts)


class _Memo:
    """What both memos share: an _Lru, its hit counts, clear() and len()."""

    def __init__(self, size: int) -> None:
        self._lru = _Lru(size)

    @property
    def stats(self) -> tuple[int, int]:
        """(hits, misses) since the last clear()."""
        return self._lru.hits, self._lru.misses

    def clear(self) -> None:
        self._lru.clear()

    def __len__(self) -> int:
        return len(self._lru)


class NegotiationMemo(_Memo):
    """Presentation context negotiations (pynetdicom's functions) by everything they read."""

    def __init__(self, size: int = MAX_NEGOTIATIONS) -> None:
        super().__init__(size)

    def negotiate(self, request: A_ASSOCIATE, supported: list[PresentationContext],
                  rq_roles: dict[Any, tuple[Any, Any]]) -> Negotiated:
        """pynetdicom's negotiation of `request`'s contexts against `supported` (the unrestricted
        one if pynetdicom's UNRESTRICTED_STORAGE_SERVICE is set): fresh objects, for this
        association alone."""
        unrestricted = bool(_config.UNRESTRICTED_STORAGE_SERVICE)
        key = (proposed_key(request), supported_key(supported),
               tuple(sorted((str(uid), roles) for uid, roles in rq_roles.items())), unrestricted)
        done = cast(Negotiated | None, self._lru.get(key))
        if done is None:
            negotiate = negotiate_unrestricted if unrestricted else negotiate_as_acceptor
            done = negotiate(request.presentation_context_definition_list, supported, rq_roles)
            self._lru.put(key, done)
        result, roles = done
        return [clone_context(cx) for cx in result], [_clone_item(item) for item in roles]


def _item_key(item: Any) -> Hashable:
    return (type(item), tuple(sorted(vars(item).items())))


def accept_key(primitive: A_ASSOCIATE) -> Hashable | None:
    """Everything of an A-ASSOCIATE (accept) primitive its A-ASSOCIATE-AC PDU is made of; None if
    a field cannot be a key (an unhashable user information value: then it is just encoded)."""
    contexts = tuple((cx.context_id, cx.result, tuple(str(ts) for ts in cx.transfer_syntax))
                     for cx in primitive.presentation_context_definition_results_list)
    key = (str(primitive.application_context_name), primitive.calling_ae_title, primitive.called_ae_title,
           primitive.result, primitive.result_source, primitive.diagnostic, contexts,
           tuple(_item_key(item) for item in primitive.user_information))
    try:
        hash(key)
    except TypeError:
        return None
    return key


class AcceptMemo(_Memo):
    """Encoded A-ASSOCIATE-AC PDUs by `accept_key`."""

    def __init__(self, size: int = MAX_ACCEPTS) -> None:
        super().__init__(size)

    def encoded(self, primitive: A_ASSOCIATE) -> tuple[A_ASSOCIATE_AC, bytes]:
        """(the PDU, its bytes) of an A-ASSOCIATE (accept) primitive, as pynetdicom's AE-7 makes
        them. The PDU may be shared with other associations: it is only read (EVT_PDU_SENT)."""
        key = accept_key(primitive)
        done = cast(tuple[A_ASSOCIATE_AC, bytes] | None, self._lru.get(key) if key is not None else None)
        if done is None:
            pdu = A_ASSOCIATE_AC(primitive)
            done = (pdu, pdu.encode())
            if key is not None:
                self._lru.put(key, done)
        return done


negotiations = NegotiationMemo()
accepts = AcceptMemo()


class MemoisedACSE(ACSE):
    """pynetdicom's ACSE whose acceptor negotiation takes presentation contexts from `negotiations`."""

    def _negotiate_as_acceptor(self) -> None:
        """pynetdicom 3.0.4's ACSE._negotiate_as_acceptor, copied; the line marked dicomvault
        differs (and its logger and type casts are spelled for this module)."""
        # For convenience
        assoc_rq = cast(A_ASSOCIATE, self.requestor.primitive)
        # Set the Requestor's AE Title
        self.requestor.ae_title = assoc_rq.calling_ae_title

        # If we reject association -> [result, source, diagnostic]
        reject_assoc_rsd: tuple[int, ...] = tuple()

        # Calling AE Title not recognised
        authorised_aet = [s.strip() for s in self.assoc.ae.require_calling_aet]
        if self.assoc.ae.require_calling_aet and assoc_rq.calling_ae_title not in authorised_aet:
            reject_assoc_rsd = (0x01, 0x01, 0x03)

        # Called AE Title not recognised
        if self.assoc.ae.require_called_aet and assoc_rq.called_ae_title != self.acceptor.ae_title.strip():
            reject_assoc_rsd = (0x01, 0x01, 0x07)

        # Extended Negotiation items
        # User Identity Negotiation items
        if self.requestor.user_identity:
            is_valid, id_response = self._check_user_identity()

            if not is_valid:
                # Transient, ACSE related, no reason given
                _ACSE_LOG.info("User identity failed verification")
                reject_assoc_rsd = (0x02, 0x02, 0x01)

            if id_response:
                # Add the User Identity Negotiation (response) item
                self.acceptor.add_negotiation_item(id_response)

        # SOP Class Extended Negotiation items
        for item in self._check_sop_class_extended():
            self.acceptor.add_negotiation_item(item)

        # SOP Class Common Extended Negotiation items
        #   Note: No response items are allowed
        self.acceptor._common_ext = self._check_sop_class_common_extended()

        # Asynchronous Operations Window Negotiation items
        if self.requestor.asynchronous_operations != (1, 1):
            async_rsp = self._check_async_ops()

            # Add any Async Ops (response) item
            if async_rsp:
                self.acceptor.add_negotiation_item(async_rsp)

        # DUL Presentation Related Rejections
        # Maximum number of associations reached (local-limit-exceeded)
        active_acceptors = [tt for tt in self.assoc.ae.active_associations if tt.is_acceptor]
        if len(active_acceptors) > self.assoc.ae.maximum_associations:
            reject_assoc_rsd = (0x02, 0x03, 0x02)

        if reject_assoc_rsd:
            _ACSE_LOG.info("Rejecting Association")
            self.send_reject(*reject_assoc_rsd)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return

        # Negotiate Presentation Contexts
        # SCP/SCU Role Selection Negotiation request items
        # {SOP Class UID : (SCU role, SCP role)}
        rq_roles = {
            uid: (item.scu_role, item.scp_role) for uid, item in self.requestor.role_selection.items()
        }

        # dicomvault: the negotiation remembered (pynetdicom's functions run on a miss)
        result, ac_roles = negotiations.negotiate(assoc_rq, self.acceptor.supported_contexts, rq_roles)

        # Accepted contexts are stored as {context ID : context}
        self.assoc._accepted_cx = {cast(int, cx.context_id): cx for cx in result if cx.result == 0x00}
        self.assoc._rejected_cx = [cx for cx in result if cx.result != 0x00]

        # Add any SCP/SCU Role Selection Negotiation response items
        for role_item in ac_roles:
            self.acceptor.add_negotiation_item(role_item)

        # Send the A-ASSOCIATE (accept) primitive
        _ACSE_LOG.info("Accepting Association")
        self.send_accept()

        # Callbacks/Logging
        evt.trigger(self.assoc, evt.EVT_ACCEPTED, {})

        # Association established OK
        self.assoc.is_established = True
        evt.trigger(self.assoc, evt.EVT_ESTABLISHED, {})
