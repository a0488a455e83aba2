"""The Security Alert of a change to the security configuration (users, tokens, peers, ...):
one function, so every command and route that changes who may do what writes the same record.

    config_changed(data_dir, "users", "add", "alice", detail={"role": "reader"})

writes `security-alert` (DCM 110113, EventTypeCode Security Configuration) with
`detail.change` = "users-add" (as peer changes say "peer-added"), `detail.what` = "users",
`detail.action` = "add", `detail.target` = "alice". From the CLI, the user is `cli:<login>` and
the client "local"; a route passes its principal and the peer address. Secrets (passwords,
tokens) never go in `detail`.
"""

from __future__ import annotations

import os
from typing import Any

from .log import SECURITY_ALERT, SUCCESS, AuditLog, Record, cli_user


def config_changed(where: AuditLog | str | os.PathLike[str], what: str, action: str, target: str | None,
                   *, user: str | None = None, client: str | None = None,
                   detail: dict[str, Any] | None = None) -> Record | None:
    """Writes (and fsyncs: call it off the event loop) the record of one change; `where` is the
    audit log or its data directory. Returns what was written."""
    log = where if isinstance(where, AuditLog) else AuditLog(where)
    if user is None:
        user, client = cli_user(), client or "local"
    return log.record(SECURITY_ALERT, SUCCESS, user=user, client=client,
                      detail={"alert": "security-configuration", "change": f"{what}-{action}", "what": what,
                              "action": action, "target": target, **(detail or {})})
