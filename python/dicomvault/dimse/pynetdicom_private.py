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
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dul import DULServiceProvider
from pynetdicom.transport import AddressInformation, AssociationServer, AssociationSocket, RequestHandler

# (owner, attribute, use). Methods are checked to exist and be callable; instance attributes
# (set in __init__) are checked on a fresh instance.
METHODS: list[tuple[type, str, str]] = [
    (ApplicationEntity, "_create_socket", "overridden: adopts the requestor association (association.py)"),
    (RequestHandler, "_create_association", "overridden: adopts the acceptor association"),
    (Association, "_run_reactor", "overridden: copy of 3.0.4's loop, event-driven + pause fix"),
    (Association, "_serve_request", "called by the copied reactor loop"),
    (Association, "_get_valid_context", "called by send_c_store for a pre-encoded data set"),
    (DULServiceProvider, "_decode_pdu", "overridden (A-ASSOCIATE-RQ cache); called by fastpath.py"),
    (DULServiceProvider, "_process_recv_primitive", "called by the copied DUL loop"),
    (DULServiceProvider, "_is_transport_event", "called by the copied DUL loop"),
    (DULServiceProvider, "run_reactor", "overridden: copy of 3.0.4's loop, select() + native reads"),
]
ASSOCIATION_ATTRIBUTES = ["_reactor_checkpoint", "_is_paused", "_kill", "_dul_ready"]
DUL_ATTRIBUTES = ["_kill_thread", "_idle_timer", "_run_loop_delay", "_recv_pdu", "event_queue",
                  "to_provider_queue", "to_user_queue", "state_machine"]
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
    # dul.EncodedPDataStateMachine takes over these two actions: same events, same next states
    for action, (event, state) in {"DT-1": ("Evt9", "Sta6"), "AR-7": ("Evt9", "Sta8")}.items():
        next_state = fsm.ACTIONS.get(action, ("", None, ""))[2]
        if fsm.TRANSITION_TABLE.get((event, state)) != action or next_state != state:
            out.append(f"fsm {action} is no longer ({event}, {state}) -> {state}")
    return out
