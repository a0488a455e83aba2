"""Who may do what over HTTP: users, roles and tokens kept in `<data>/auth/users.json`
(`users`), login sessions held in memory (`sessions`), share links to one study in
`<data>/auth/shares.json` (`shares`), the role table and the one access decision
`authorize(principal, action)` (`roles`), and the `dicomvault users|shares ...` commands
(`commands`, `share_commands`)."""

from __future__ import annotations

from .roles import (
    ACTIONS,
    ADMIN,
    READ,
    REPLICATE,
    ROLE_ACTIONS,
    ROLES,
    SHARE,
    WRITE,
    Principal,
    authorize,
    check_role,
)
from .sessions import Session, SessionStore
from .shares import ShareInfo, ShareStore
from .users import UserInfo, UserStore, split_token_spec, validate_name

__all__ = [
    "ACTIONS",
    "ADMIN",
    "READ",
    "REPLICATE",
    "ROLES",
    "ROLE_ACTIONS",
    "SHARE",
    "WRITE",
    "Principal",
    "Session",
    "SessionStore",
    "ShareInfo",
    "ShareStore",
    "UserInfo",
    "UserStore",
    "authorize",
    "check_role",
    "split_token_spec",
    "validate_name",
]
