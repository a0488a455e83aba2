"""Who gets an association and what it may do with it, decided once, in the A-ASSOCIATE exchange.

The decision itself is `Peers.admit` (peers.py: calling AE title bound to the address it calls
from and, for DICOM TLS, to its certificate). It is applied here in two places of pynetdicom's
acceptor, through the ACSE our associations use (`ArchiveACSE`, installed by association.py):
- before negotiation: an unknown or misplaced caller gets A-ASSOCIATE-RJ (rejected-permanent,
  service-user, calling AE title not recognised), logged with the command that would admit it;
- after negotiation, before the A-ASSOCIATE-AC goes out: every presentation context the peer may
  not use is answered "user-rejection". Doing it on the negotiated result (not on what the peer
  proposed) keeps each proposed context answered, as PS3.8 asks, and sees the roles: a storage
  context on which the peer can only receive (C-GET sub-operations) is retrieval, not storage.
Nothing is checked per message afterwards: an operation on a refused context cannot be sent.

The address a decision needs is the caller's, which our own relays hide (the DICOM TLS relay and
the worker processes connect to the SCP from loopback). Those relays decide at the edge with the
real address and certificate (`edge_verdict`), answer A-ASSOCIATE-RJ themselves, and tell an SCP in
the same process where a relayed connection came from (`RelayOrigins`). The SCP behind worker
processes listens on an internal loopback port that only they use, so it trusts their host checks
(`trust_relays`) and still applies AE titles and permissions.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, cast

from pydicom.uid import UID
from pynetdicom import evt
from pynetdicom.sop_class import (
    ModalityPerformedProcedureStep,
    ModalityWorklistInformationFind,
    StorageCommitmentPushModel,
    Verification,
)

from ..audit.dimse import Refusals
from .accept_memo import MemoisedACSE
from .common import log

# A-ASSOCIATE-RJ: rejected-permanent, DICOM UL service-user, calling AE title not recognised
RJ_CALLING_AE = (0x01, 0x01, 0x03)
USER_REJECTION = 0x01  # presentation context result: user-rejection


@dataclass(frozen=True)
class Verdict:
    """A caller admitted (`allow`: the services it may use) or refused (`refused`: why, and `hint`:
    the command that would admit it)."""

    title: str
    allow: frozenset[str]
    refused: str | None = None
    hint: str | None = None


Admit = Callable[[str, str, str | None, bool], Verdict]  # (calling AE, address, cert sha256, host checked)


@lru_cache(maxsize=4096)
def service_of(uid: str) -> str:
    """The service a presentation context's abstract syntax belongs to: echo, query, retrieve,
    commit, worklist, mpps, or store (anything else: unrestricted storage accepts unknown and
    private classes)."""
    if uid == Verification:
        return "echo"
    if uid == StorageCommitmentPushModel:
        return "commit"
    if uid == ModalityWorklistInformationFind:
        return "worklist"
    if uid == ModalityPerformedProcedureStep:
        return "mpps"
    keyword = UID(uid).keyword
    if keyword.endswith("Find"):
        return "query"
    if keyword.endswith(("Get", "Move")):
        return "retrieve"
    return "store"


def context_allowed(uid: str, peer_is_scu: bool, allow: frozenset[str]) -> bool:
    """Whether a negotiated context stays accepted for a peer allowed `allow`. `peer_is_scu`: the
    peer may send requests on it (for storage: store to us); a storage context where it only
    receives carries C-GET sub-operations, so it belongs to retrieval."""
    service = service_of(uid)
    if service == "echo" or service in allow:
        return True
    return service == "store" and not peer_is_scu and "retrieve" in allow


class RelayOrigins:
    """Where the connections our in-process relays opened to the SCP really came from:
    (relay's local address, port) -> (caller's address, its certificate's SHA-256 or None)."""

    def __init__(self) -> None:
        self._by_local: dict[tuple[str, int], tuple[str, str | None]] = {}
        self._lock = threading.Lock()

    def register(self, upstream: socket.socket, address: str, cert: str | None) -> None:
        local = upstream.getsockname()[:2]
        with self._lock:
            self._by_local[(str(local[0]), int(local[1]))] = (address, cert)

    def take(self, address: str, port: int) -> tuple[str, str | None] | None:
        with self._lock:
            return self._by_local.pop((address, port), None)


relay_origins = RelayOrigins()


class ArchiveACSE(MemoisedACSE):
    """pynetdicom's ACSE with the archive's admission (`ae.admission`, an `Admit`; None: admit
    every caller to every service, as pynetdicom does), run for every association; the
    negotiation behind it is remembered (accept_memo.py)."""

    def _negotiate_as_acceptor(self) -> None:
        admit = cast(Admit | None, getattr(self.assoc.ae, "admission", None))
        if admit is None:
            super()._negotiate_as_acceptor()
            return
        calling = str(self.requestor.primitive.calling_ae_title).strip()
        address, port = str(self.assoc.requestor.address), int(self.assoc.requestor.port)
        origin = relay_origins.take(address, port)
        cert = None
        checked = False
        if origin is not None:  # relayed by our TLS relay, which checked host and certificate
            address, cert = origin
            checked = True
        elif getattr(self.assoc.ae, "trust_relays", False):
            checked = True
        verdict = admit(calling, address, cert, checked)
        self.assoc.verdict = verdict  # type: ignore[attr-defined]
        self.assoc.client_address = address  # type: ignore[attr-defined]  # the caller's, for the audit trail
        if verdict.refused is not None:
            self.requestor.ae_title = calling
            self.send_reject(*RJ_CALLING_AE)
            evt.trigger(self.assoc, evt.EVT_REJECTED, {})
            self.assoc.kill()
            return
        super()._negotiate_as_acceptor()

    def send_accept(self) -> None:
        verdict = cast(Verdict | None, getattr(self.assoc, "verdict", None))
        if verdict is not None:
            self._refuse_contexts(verdict)
        super().send_accept()

    def _refuse_contexts(self, verdict: Verdict) -> None:
        accepted: dict[int, Any] = self.assoc._accepted_cx
        refused = [cx for cx in accepted.values()
                   if not context_allowed(str(cx.abstract_syntax), bool(cx.as_scp), verdict.allow)]
        if not refused:
            return
        for cx in refused:
            del accepted[cx.context_id]
            cx.result = USER_REJECTION
            self.assoc._rejected_cx.append(cx)
        services = sorted({service_of(str(cx.abstract_syntax)) for cx in refused})
        log.warning("association from %s@%s: %d presentation context(s) refused: %s not allowed for this "
                    "peer (allowed: %s); `dicomvault peers add %s ... --replace --allow ...` changes that",
                    verdict.title, self.assoc.requestor.address, len(refused), ", ".join(services),
                    ", ".join(sorted(verdict.allow)) or "echo only", verdict.title)


def calling_title(pdu: bytes) -> str | None:
    """The calling AE title of an A-ASSOCIATE-RQ PDU (PS3.8 9.3.2), or None if it is not one."""
    if len(pdu) < 42 or pdu[0] != 0x01:
        return None
    return pdu[26:42].decode("ascii", "replace").strip(" \0")


def reject_pdu(result: int, source: int, reason: int) -> bytes:
    """An A-ASSOCIATE-RJ PDU (PS3.8 9.3.4)."""
    return struct.pack(">BBIBBBB", 0x03, 0, 4, 0, result, source, reason)


def edge_verdict(admit: Admit, pdu: bytes, address: str, cert: str | None) -> Verdict | None:
    """The decision a relay takes on the A-ASSOCIATE-RQ it is about to pass on: None when the
    bytes are not one (the SCP behind will refuse them as pynetdicom does)."""
    title = calling_title(pdu)
    if title is None:
        return None
    return admit(title, address, cert, False)


def log_refusal(verdict: Verdict, address: str, audit: Refusals | None = None) -> None:
    log.warning(
        "association rejected: %s@%s: %s; %s", verdict.title, address, verdict.refused, verdict.hint)
    if audit is not None:
        audit.refused(verdict.title, address, str(verdict.refused))
