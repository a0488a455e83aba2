"""dimse/accept_memo.py + negotiation_cache.py: an A-ASSOCIATE-RQ answered from the memos gets,
byte for byte, the A-ASSOCIATE-AC pynetdicom itself gives (a plain pynetdicom AE, nothing of ours,
with the same supported contexts is the reference), whatever the contexts, roles, caller, maximum
PDU or supported contexts; admission and user identity still decide per association.

Real sockets: the requests are raw A-ASSOCIATE-RQ PDUs (as a workstation sends them) written to
servers started here; the answers are read off the wire."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from dimse_helpers import HOST, free_port, pynetdicom_options_kept
from pynetdicom import AE, _config, build_context, evt
from pynetdicom.pdu import A_ASSOCIATE_AC, A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import (
    A_ASSOCIATE,
    ImplementationClassUIDNotification,
    MaximumLengthNotification,
    SCP_SCU_RoleSelectionNegotiation,
    UserIdentityNegotiation,
)
from pynetdicom.sop_class import (
    CTImageStorage,
    MRImageStorage,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

from dicomvault.auth.peer_store import PeerStore
from dicomvault.config import DimseConfig, PeerConfig
from dicomvault.dimse.accept_memo import accepts, negotiations
from dicomvault.dimse.negotiation_cache import associate_rq_cache
from dicomvault.dimse.peers import Peers
from dicomvault.dimse.server import SERVICE_CONTEXTS, build_ae
from dicomvault.dimse.transport import recv_pdu

RELEASE_RQ = bytes([5, 0, 0, 0, 0, 4, 0, 0, 0, 0])
STORE_CLASSES = [CTImageStorage, MRImageStorage, "1.2.840.10008.5.1.4.1.1.1", "1.2.840.10008.5.1.4.1.1.7",
                 "1.2.3.4.5.6.7"]  # the last one private: unrestricted storage accepts it
SYNTAXES = ["1.2.840.10008.1.2.4.70", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2"]


@dataclass(frozen=True)
class Request:
    calling: str = "WORKSTATION"
    contexts: tuple[tuple[str, tuple[str, ...]], ...] = ()
    roles: tuple[tuple[str, bool, bool], ...] = ()  # (SOP class, SCU role, SCP role)
    jwt: bytes | None = None  # a user identity (type 5: JSON web token, a server response requested)
    max_pdu: int = 16384

    def encode(self) -> bytes:
        p = A_ASSOCIATE()
        p.application_context_name = "1.2.840.10008.3.1.1.1"
        p.calling_ae_title = self.calling
        p.called_ae_title = "DICOMVAULT"
        items: list[Any] = []
        ml = MaximumLengthNotification()
        ml.maximum_length_received = self.max_pdu
        impl = ImplementationClassUIDNotification()
        impl.implementation_class_uid = "1.2.826.0.1.3680043.9.9999.1"
        items += [ml, impl]
        for uid, scu, scp in self.roles:
            role = SCP_SCU_RoleSelectionNegotiation()
            role.sop_class_uid = uid
            role.scu_role, role.scp_role = scu, scp
            items.append(role)
        if self.jwt is not None:
            ui = UserIdentityNegotiation()
            ui.user_identity_type = 5
            ui.primary_field = self.jwt
            ui.positive_response_requested = True
            items.append(ui)
        p.user_information = items
        cxs = []
        for i, (uid, syntaxes) in enumerate(self.contexts):
            cx = build_context(uid, list(syntaxes))
            cx.context_id = 2 * i + 1
            cxs.append(cx)
        p.presentation_context_definition_list = cxs
        return bytes(A_ASSOCIATE_RQ(p).encode())


def getscu_like() -> tuple[tuple[str, tuple[str, ...]], ...]:
    """Query/retrieve models and storage classes, each storage class in several syntaxes."""
    cxs: list[tuple[str, tuple[str, ...]]] = [
        (Verification, ("1.2.840.10008.1.2",)),
        (StudyRootQueryRetrieveInformationModelFind, tuple(SYNTAXES[1:])),
        (StudyRootQueryRetrieveInformationModelGet, tuple(SYNTAXES[1:]))]
    cxs += [(uid, tuple(SYNTAXES)) for uid in STORE_CLASSES]
    cxs += [(uid, ("1.2.840.10008.1.2",)) for uid in STORE_CLASSES[:2]]  # a class twice: two contexts
    return tuple(cxs)


def ask(port: int, raw: bytes) -> bytes:
    """Sends an A-ASSOCIATE-RQ, returns the answer PDU (released if accepted)."""
    with socket.create_connection((HOST, port), timeout=10) as sock:
        sock.sendall(raw)
        answer = recv_pdu(sock)
        if answer[0] == 0x02:
            sock.sendall(RELEASE_RQ)
            assert recv_pdu(sock)[0] == 0x06
        return answer


def accepted(answer: bytes) -> dict[int, tuple[int, str]]:
    """{context id: (result, transfer syntax)} of an A-ASSOCIATE-AC."""
    assert answer[0] == 0x02, f"not an A-ASSOCIATE-AC: PDU type {answer[0]:#x}"
    pdu = A_ASSOCIATE_AC()
    pdu.decode(answer)
    return {cx.context_id: (cx.result, str(cx.transfer_syntax[0]) if cx.transfer_syntax else "")
            for cx in pdu.to_primitive().presentation_context_definition_results_list}


@pytest.fixture(autouse=True)
def fresh_memos() -> Iterator[None]:
    with pynetdicom_options_kept():
        for memo in (negotiations, accepts, associate_rq_cache):
            memo.clear()
        yield
        for memo in (negotiations, accepts, associate_rq_cache):
            memo.clear()


def _start(ae: Any, handlers: list[Any] | None = None) -> tuple[Any, int]:
    port = free_port()
    server = ae.start_server((HOST, port), block=False, evt_handlers=handlers or [])
    return server, port


def archive_ae(peers: Peers, max_pdu: int = 131072, contexts: tuple[str, ...] = SERVICE_CONTEXTS) -> Any:
    d = DimseConfig(port=0, max_pdu=max_pdu, accept_unknown_callers=peers.accept_unknown)
    return build_ae(d, peers, contexts)


def reference_ae(max_pdu: int = 131072, contexts: tuple[str, ...] = SERVICE_CONTEXTS) -> AE:
    """pynetdicom alone, configured as the archive's AE (no admission, no memo)."""
    ae = AE("DICOMVAULT")
    ae.maximum_pdu_size = max_pdu
    for uid in contexts:
        ae.add_supported_context(uid)
    return ae


@pytest.fixture
def servers() -> Iterator[Callable[..., tuple[int, int]]]:
    """Starts (archive, pynetdicom reference) pairs on request; all stopped at the end."""
    started: list[Any] = []

    def start(max_pdu: int = 131072, contexts: tuple[str, ...] = SERVICE_CONTEXTS,
              peers: Peers | None = None) -> tuple[int, int]:
        ours, our_port = _start(archive_ae(peers or Peers([], accept_unknown=True), max_pdu, contexts))
        ref, ref_port = _start(reference_ae(max_pdu, contexts))
        started.extend([ours, ref])
        return our_port, ref_port

    yield start
    for server in started:
        server.shutdown()


def test_repeated_requests_get_pynetdicoms_own_answer(servers: Callable[..., tuple[int, int]]) -> None:
    _config.UNRESTRICTED_STORAGE_SERVICE = True  # as the archive runs; the reference AE reads it too
    ours, ref = servers()
    variants = [
        Request(contexts=getscu_like()),
        # C-GET: the caller proposes SCP roles for the classes it wants to receive
        Request(contexts=getscu_like(), roles=((CTImageStorage, False, True), (MRImageStorage, True, True))),
        Request(contexts=getscu_like(), roles=((CTImageStorage, True, False),)),
        Request(contexts=getscu_like()[:4]),  # fewer contexts
        # the same contexts, each one's syntaxes in the other order
        Request(contexts=tuple((uid, tuple(reversed(ts))) for uid, ts in getscu_like())),
        Request(contexts=getscu_like(), calling="OTHERWS"),
        Request(contexts=getscu_like()[1:]),  # the same classes under other context ids
    ]
    for _ in range(3):  # the first pass fills the memos, the next ones answer from them
        for request in variants:
            raw = request.encode()
            assert ask(ours, raw) == ask(ref, raw), request
    assert len(associate_rq_cache) == len(variants)
    assert accepts.stats[0] >= 2 * len(variants) and negotiations.stats[0] >= 2 * len(variants)
    # the variants are answered differently (so the comparison above could fail)
    answers = {ask(ours, r.encode()) for r in variants}
    assert len(answers) == len(variants)


def test_other_configurations_get_their_own_answer(servers: Callable[..., tuple[int, int]]) -> None:
    """One process, one memo, servers configured differently (as a config reload restarts them):
    maximum PDU and supported contexts are part of the answer."""
    raw = Request(contexts=getscu_like()).encode()
    configs = [dict(max_pdu=131072, contexts=(Verification, CTImageStorage)),
               dict(max_pdu=65536, contexts=(Verification, CTImageStorage)),
               dict(max_pdu=65536, contexts=(Verification, CTImageStorage, MRImageStorage)),
               dict(max_pdu=65536, contexts=(Verification, StudyRootQueryRetrieveInformationModelGet))]
    answers = []
    for cfg in configs:
        ours, ref = servers(**cfg)
        # set after the archive's AE is built (it sets it): the supported contexts decide storage too
        _config.UNRESTRICTED_STORAGE_SERVICE = False
        for _ in range(2):
            answer = ask(ours, raw)
            assert answer == ask(ref, raw), cfg
        answers.append(answer)
    assert len(set(answers)) == len(configs)


def test_admission_still_decides_per_caller(tmp_path: Path, servers: Callable[..., tuple[int, int]]) -> None:
    """Two callers propose the same contexts; one may store, the other only retrieve. Alternating,
    each gets its own refusals: the negotiation both share is not changed by either."""
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    store = PeerStore(tmp_path)
    store.add(PeerConfig("STORER", HOST, 0, allow=frozenset({"store"})))
    store.add(PeerConfig("GETTER", HOST, 0, allow=frozenset({"query", "retrieve"})))
    peers = Peers([], tmp_path)
    ours, _ = servers(peers=peers)
    # CT with the SCP role proposed: on it the caller receives (C-GET sub-operations)
    roles = ((CTImageStorage, False, True),)
    storer = Request(calling="STORER", contexts=getscu_like(), roles=roles).encode()
    getter = Request(calling="GETTER", contexts=getscu_like(), roles=roles).encode()
    ids = {uid: 2 * i + 1 for i, (uid, _) in enumerate(getscu_like())}
    find = ids[StudyRootQueryRetrieveInformationModelFind]
    get = ids[StudyRootQueryRetrieveInformationModelGet]
    ct, mr = ids[CTImageStorage], ids[MRImageStorage]
    for _ in range(3):
        s = accepted(ask(ours, storer))
        assert s[find][0] == s[get][0] == 0x01  # user-rejection: no query, no retrieve
        assert s[mr][0] == 0x00  # may store MR
        assert s[ct][0] == 0x00  # a storage class: a storer may have it in either role
        g = accepted(ask(ours, getter))
        assert g[find][0] == g[get][0] == g[ct][0] == 0x00
        assert g[mr][0] == 0x01  # MR on which it would be the SCU: storing, refused
    # many at once, the two callers mixed: each answer is that caller's (the memos are shared)
    expected = {storer: ask(ours, storer), getter: ask(ours, getter)}
    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(lambda raw: (raw, ask(ours, raw)), [storer, getter] * 12))
    assert all(answer == expected[raw] for raw, answer in answers)
    # an unknown caller, same contexts: refused outright (A-ASSOCIATE-RJ), every time
    stranger = Request(calling="STRANGER", contexts=getscu_like()).encode()
    for _ in range(2):
        assert ask(ours, stranger)[0] == 0x03
    # a peer's permissions changed while the server runs: the next association sees it
    store.add(PeerConfig("STORER", HOST, 0, allow=frozenset({"store", "query"})), replace=True)
    deadline = time.monotonic() + 5
    while accepted(ask(ours, storer))[find][0] != 0x00:
        assert time.monotonic() < deadline, "permission change not applied"
        time.sleep(0.1)


def test_user_identity_is_checked_per_association(servers: Callable[..., tuple[int, int]]) -> None:
    """The same request bytes (same token) three times: the EVT_USER_ID handler is asked each time,
    and its answer (a per-association server response, then a refusal) is what the caller gets."""
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    seen: list[bytes] = []
    verdict = {"ok": True}

    def user_id(event: Any) -> tuple[bool, bytes | None]:
        seen.append(event.primary_field)
        return verdict["ok"], f"response-{len(seen)}".encode() if verdict["ok"] else None

    ae = archive_ae(Peers([], accept_unknown=True))
    server, port = _start(ae, [(evt.EVT_USER_ID, user_id)])
    try:
        raw = Request(contexts=getscu_like(), jwt=b"eyJ.token").encode()
        first, second = ask(port, raw), ask(port, raw)
        assert first[0] == second[0] == 0x02
        assert b"response-1" in first and b"response-2" in second
        verdict["ok"] = False
        assert ask(port, raw)[0] == 0x03  # A-ASSOCIATE-RJ
        assert seen == [b"eyJ.token"] * 3
    finally:
        server.shutdown()


def test_memos_are_bounded(servers: Callable[..., tuple[int, int]]) -> None:
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    ours, ref = servers()
    for i in range(negotiations._lru.size + 5):
        raw = Request(contexts=getscu_like()[: 3 + i % 5], calling=f"WS{i}", max_pdu=16384 + i).encode()
        assert ask(ours, raw) == ask(ref, raw)
    assert len(negotiations) <= negotiations._lru.size and len(accepts) <= accepts._lru.size
