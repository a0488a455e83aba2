"""Who may do what over HTTP: users, roles and tokens kept in `<data>/auth/users.json`
(`users`), the role table and the one access decision `authorize(principal, action)` (`roles`),
and the `dicomvault users ...` commands (`commands`)."""

from __future__ import annotations

from .roles import (
    ACTIONS,
    ADMIN,
    READ,
    REPLICATE,
    ROLE_ACTIONS,
    ROLES,
    WRITE,
    Principal,
    authorize,
    check_role,
)
from .users import UserInfo, UserStore, split_token_spec, validate_name

__all__ = [
    "ACTIONS",
    "ADMIN",
    "READ",
    "REPLICATE",
    "ROLES",
    "ROLE_ACTIONS",
    "WRITE",
    "Principal",
    "UserInfo",
    "UserStore",
    "authorize",
    "check_role",
    "split_token_spec",
    "validate_name",
]
