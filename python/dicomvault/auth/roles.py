"""Roles, actions and the one access decision of the archive: `authorize(principal, action)`.

Routes name the action they perform, never a role: which role may do what is decided here only,
so adding a role or moving an action between roles touches one table.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import AuthenticationError, PermissionDeniedError, RequestError

# QIDO, WADO-RS/URI, metadata, rendered, thumbnails, /api reads.
READ = "read"
# STOW-RS and deletes.
WRITE = "write"
# Users, backup, heal, status, jobs.
ADMIN = "admin"
# The replication feed and the blobs it names.
REPLICATE = "replicate"
# Share links: create, list and revoke read-only links to one study (auth/shares.py).
SHARE = "share"

ACTIONS: frozenset[str] = frozenset({READ, WRITE, ADMIN, REPLICATE, SHARE})

READER = "reader"
WRITER = "writer"
ADMIN_ROLE = "admin"
REPLICATOR = "replicator"

ROLE_ACTIONS: dict[str, frozenset[str]] = {
    READER: frozenset({READ}),
    # A writer that could not read back what it stored would break every STOW-then-verify client.
    # Sharing is a writer's (not a reader's) because a link hands a study to someone with no
    # account at all: it widens who can read, which is more than reading. Readers ask a writer.
    WRITER: frozenset({READ, WRITE, SHARE}),
    ADMIN_ROLE: ACTIONS,
    # A replica reads the feed and blobs, and DICOMweb reads let an operator check it from outside.
    REPLICATOR: frozenset({REPLICATE, READ}),
}

ROLES: tuple[str, ...] = tuple(ROLE_ACTIONS)

# session: a login of auth/sessions.py; share: a share link of auth/shares.py; oidc: a token of
# the site's identity provider (auth/oidc.py).
AuthMethod = Literal["token", "basic", "anonymous", "runtime", "session", "share", "oidc"]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who a request acts as: a user name (never a secret), its role, and how it proved it.

    `study` set means the principal exists for that one study (a share link): its role says
    which actions, and web/security.py confines it to routes naming that study."""

    name: str
    role: str
    method: AuthMethod
    study: str | None = None

    def can(self, action: str) -> bool:
        return action in ROLE_ACTIONS.get(self.role, frozenset())


def check_role(role: str) -> str:
    """`role` if it is one of ROLES; else a RequestError listing them (user input, e.g. the CLI)."""
    if role not in ROLE_ACTIONS:
        raise RequestError(f"unknown role {role!r}: choose one of {', '.join(ROLES)}")
    return role


def authorize(principal: Principal | None, action: str) -> None:
    """Returns when `principal` may perform `action`; raises AuthenticationError when nobody is
    authenticated, PermissionDeniedError when the role lacks the action. An action outside
    ACTIONS is a bug in the caller (a route naming a typo would otherwise be denied silently or,
    worse, allowed), so it raises ValueError."""
    if action not in ACTIONS:
        raise ValueError(f"unknown action {action!r}; actions are {sorted(ACTIONS)}")
    if principal is None:
        raise AuthenticationError(
            f"authentication required to {action}: send a Bearer token or Basic credentials"
        )
    if not principal.can(action):
        raise PermissionDeniedError(f"user {principal.name!r} (role {principal.role}) may not {action}")
