"""The pynetdicom internals our subclasses override or use, in one list.

pyproject.toml pins pynetdicom to the release line these were read from (>=3.0.4,<3.1); after an
upgrade, tests/dimse/test_pynetdicom_private.py fails with the names that are gone or changed,
instead of our subclasses failing at run time. Each entry: (owner, name, what we do with it).
Overridden methods that are copies of pynetdicom's with a few lines changed (no smaller seam)
say so; re-read them against the new pynetdicom when this list changes.
"""

from __future__ import annotations

import inspect
from typing import Any

from pynetdicom import fsm
from pynetdicom.acse import ACSE
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.pdu_primitives import A_ASSOCIATE
from pynetdicom.presentation import PresentationContext
from pynetdicom.transport import AddressInformation, AssociationServer, AssociationSocket, RequestHandler

# (owner, attribute, use). Methods are checked to exist and be callable; instance attributes
# (set in __init__) are checked on a fresh instance.
METHODS: list[tuple[type, str, str]] = [
    (ApplicationEntity, "_create_socket", "overridden: adopts the requestor association (association.py)"),
    (RequestHandler, "_create_association", "overridden: adopts the acceptor association"),
    (RequestHandler, "handle", "overridden: copy of 3.0.4's, the DUL thread started first (association.py)"),
    (Association, "_run_reactor", "overridden: copy of 3.0.4's loop, event-driven + pause fix"),
    (Association, "_serve_request", "called by the copied reactor loop"),
    (Association, "_get_valid_context", "called by send_c_store for a pre-encoded data set"),
    (DULServiceProvider, "_decode_pdu", "overridden (A-ASSOCIATE-RQ cache); called by fastpath.py"),
    (DULServiceProvider, "_process_recv_primitive", "called by the copied DUL loop"),
    (DULServiceProvider, "_is_transport_event", "called by the copied DUL loop"),
    (DULServiceProvider, "run_reactor", "overridden: copy of 3.0.4's loop, select() + native reads"),
    (ACSE, "_negotiate_as_acceptor", "overridden: copy of 3.0.4's, negotiation memoised (accept_memo.py)"),
    (ACSE, "_check_user_identity", "called by the copied _negotiate_as_acceptor"),
    (ACSE, "_check_sop_class_extended", "called by the copied _negotiate_as_acceptor"),
    (ACSE, "_check_sop_class_common_extended", "called by the copied _negotiate_as_acceptor"),
    (ACSE, "_check_async_ops", "called by the copied _negotiate_as_acceptor"),
]
# Instance attributes of pynetdicom's value objects our memos copy field by field (accept_memo.py,
# negotiation_cache.py): a copy that missed a new field would share it between associations.
CONTEXT_ATTRIBUTES = ["_context_id", "_abstract_syntax", "_transfer_syntax", "result", "_scu_role",
                      "_scp_role", "_as_scu", "_as_scp"]
PRIMITIVE_LISTS = ["_user_information", "_presentation_context_definition_list",
                   "_presentation_context_definition_results_list"]
ASSOCIATION_ATTRIBUTES = ["_reactor_checkpoint", "_is_paused", "_kill", "_dul_ready", "_accepted_cx",
                          "_rejected_cx", "_started_dul"]
DUL_ATTRIBUTES = ["_kill_thread", "_idle_timer", "_run_loop_delay", "_recv_pdu", "event_queue",
                  "to_provider_queue", "to_user_queue", "state_machine", "artim_timer"]
SOCKET_ATTRIBUTES = ["_is_connected"]
AE_ATTRIBUTES = ["_servers"]  # workers_proc.py registers its server as start_server does
# Signatures we call or override with positional arguments.
SIGNATURES: list[tuple[Any, list[str]]] = [
    (ApplicationEntity._create_socket, ["self", "assoc", "address", "tls_args"]),
    (AssociationServer.__init__, ["self", "ae", "address", "ae_title", "contexts", "ssl_context",
                                  "evt_handlers", "request_handler"]),
    (AssociationSocket.__init__, ["self", "assoc", "client_socket", "address"]),
    (Association._get_valid_context, ["self", "ab_syntax", "tr_syntax", "role", "context_id",
                                      "allow_conversion"]),
    (Association.send_c_store, ["self", "dataset", "msg_id", "priority", "originator_aet", "originator_id"]),
]


def problems() -> list[str]:
    """What of the above the installed pynetdicom no longer has (empty: all there)."""
    out: list[str] = []
    for owner, name, use in METHODS:
        if not callable(getattr(owner, name, None)):
            out.append(f"{owner.__name__}.{name} ({use})")
    assoc = Association(ApplicationEntity("CHECK"), "requestor")
    for name in ASSOCIATION_ATTRIBUTES:
        if not hasattr(assoc, name):
            out.append(f"Association().{name}")
    for name in DUL_ATTRIBUTES:
        if not hasattr(assoc.dul, name):
            out.append(f"DULServiceProvider().{name}")
    ae = ApplicationEntity("CHECK")
    for name in AE_ATTRIBUTES:
        if not hasattr(ae, name):
            out.append(f"ApplicationEntity().{name}")
    sock = AssociationSocket(assoc, address=AddressInformation.from_tuple(("127.0.0.1", 0)))
    try:
        for name in SOCKET_ATTRIBUTES:
            if not hasattr(sock, name):
                out.append(f"AssociationSocket().{name}")
    finally:
        sock.close()
    for func, params in SIGNATURES:
        got = list(inspect.signature(func).parameters)
        if got[:len(params)] != params:
            out.append(f"{func.__qualname__}{tuple(got)} (expected {tuple(params)})")
    cx = PresentationContext()
    if sorted(vars(cx)) != sorted(CONTEXT_ATTRIBUTES):
        out.append(f"PresentationContext() fields {sorted(vars(cx))} (expected {sorted(CONTEXT_ATTRIBUTES)})")
    primitive = A_ASSOCIATE()
    for name in PRIMITIVE_LISTS:
        if not isinstance(getattr(primitive, name, None), list):
            out.append(f"A_ASSOCIATE().{name}")
    # the other fields of an A-ASSOCIATE primitive are immutable values (shared by its copies)
    mutable = [k for k, v in vars(primitive).items()
               if k not in PRIMITIVE_LISTS and isinstance(v, (list, dict, set))]
    if mutable:
        out.append(f"A_ASSOCIATE() has more mutable fields: {mutable}")
    # dul.EncodedPDataStateMachine takes over these actions: same events, same next states
    for action, (event, state, after) in {"DT-1": ("Evt9", "Sta6", "Sta6"), "AR-7": ("Evt9", "Sta8", "Sta8"),
                                          "AE-6": ("Evt6", "Sta2", "Sta3"),
                                          "AE-7": ("Evt7", "Sta3", "Sta6")}.items():
        next_state = fsm.ACTIONS.get(action, ("", None, ""))[2]  # AE-6: (accepted, rejected)
        if fsm.TRANSITION_TABLE.get((event, state)) != action or after not in (next_state, next_state[0]):
            out.append(f"fsm {action} is no longer ({event}, {state}) -> {after}")
    return out
