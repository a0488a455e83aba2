"""CLI: `dicomvault users add|list|remove|token|passwd|revoke`.

They edit `<data>/auth/users.json` directly, whether or not a server holds the data directory:
the file has its own lock, and a running server sees the change on its next request. Every
change is a Security Alert in the audit log (audit/changes.py), done by `cli:<login name>`.
"""

from __future__ import annotations

import argparse
import getpass
import json
import sys
from typing import Any

from ..audit.changes import config_changed
from ..errors import RequestError
from ..textout import print_table
from .roles import ROLES
from .users import UserStore

_LIST_COLUMNS = ["name", "role", "password", "tokens", "created"]


def read_password(name: str) -> str:
    """From standard input when it is not a terminal (scripts: `echo secret | dicomvault users
    add ...`), else typed twice without echo."""
    stream = sys.stdin
    if stream is None:
        raise RequestError(f"no standard input to read the password of {name!r} from")
    if not stream.isatty():
        # Only the line end is dropped: leading or trailing spaces may be part of the password.
        password = stream.readline().rstrip("\r\n")
        if not password:
            raise RequestError(f"no password for {name!r} on standard input")
        return password
    first = getpass.getpass(f"password for {name}: ")
    second = getpass.getpass(f"password for {name} (again): ")
    if first != second:
        raise RequestError(f"the two passwords typed for {name!r} differ; nothing changed")
    if not first:
        raise RequestError(f"empty password for {name!r}; nothing changed")
    return first


def cmd_add(args: argparse.Namespace) -> int:
    store = UserStore(args.data)
    password = read_password(args.name) if args.password else None
    info = store.add(args.name, args.role, password)
    config_changed(args.data, "users", "add", info.name,
                   detail={"role": info.role, "password": info.has_password})
    how = "with a password" if info.has_password else "without a password (`users token` gives it one)"
    print(f"added user {info.name} (role {info.role}) {how}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    users = UserStore(args.data).list()
    if args.json:
        print(json.dumps([u.as_dict() for u in users], indent=1))
        return 0
    rows: list[dict[str, Any]] = [
        {"name": u.name, "role": u.role, "password": "yes" if u.has_password else "no",
         "tokens": u.tokens, "created": u.created}
        for u in users
    ]
    print_table(_LIST_COLUMNS, rows)
    print(f"({len(rows)} users)")
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    UserStore(args.data).remove(args.name)
    config_changed(args.data, "users", "remove", args.name)
    print(f"removed user {args.name}")
    return 0


def cmd_token(args: argparse.Namespace) -> int:
    # The token alone on stdout, so `TOKEN=$(dicomvault users token NAME)` just works.
    token = UserStore(args.data).issue_token(args.name)
    config_changed(args.data, "users", "token", args.name)
    print(token, flush=True)
    return 0


def cmd_passwd(args: argparse.Namespace) -> int:
    store = UserStore(args.data)
    store.get(args.name)  # an unknown user fails before anyone types a password
    store.set_password(args.name, read_password(args.name))
    config_changed(args.data, "users", "passwd", args.name)
    print(f"password of {args.name} changed")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    n = UserStore(args.data).revoke_tokens(args.name)
    config_changed(args.data, "users", "revoke", args.name, detail={"tokens": n})
    print(f"revoked {n} tokens of {args.name}")
    return 0


def add_users_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    users = sub.add_parser("users", help="HTTP users, roles and bearer tokens")
    usub = users.add_subparsers(dest="users_command", required=True)

    p = usub.add_parser("add", parents=[common], help="add a user with a role")
    p.add_argument("name")
    p.add_argument("--role", required=True, choices=ROLES)
    p.add_argument("--password", action="store_true",
                   help="set a password for HTTP Basic (read from stdin when it is not a terminal)")
    p.set_defaults(func=cmd_add)

    p = usub.add_parser("list", parents=[common], help="users, roles, token counts (never secrets)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    # The commands that take just a user name.
    for name, func, help_ in (
        ("remove", cmd_remove, "remove a user and all its tokens"),
        ("token", cmd_token, "issue a bearer token; prints it alone on stdout"),
        ("passwd", cmd_passwd, "set a user's password (stdin when not a terminal)"),
        ("revoke", cmd_revoke, "revoke every bearer token of a user"),
    ):
        p = usub.add_parser(name, parents=[common], help=help_)
        p.add_argument("name")
        p.set_defaults(func=func)
