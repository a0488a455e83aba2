"""CLI: `dicomvault shares list|revoke ID`: an administrator's way to see and stop share links
without the viewer. Like `users`, they edit `<data>/auth/shares.json` directly; a running server
refuses a revoked link on its next request. A revocation is written to the audit log as done by
`cli:<login name>`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..audit.log import SHARE_REVOKED, SUCCESS, AuditLog, cli_user
from ..textout import print_table
from .shares import ShareStore

_LIST_COLUMNS = ["id", "study", "created_by", "created", "expires", "status", "note"]


def cmd_list(args: argparse.Namespace) -> int:
    store = ShareStore(args.data)
    now = store.clock()
    rows: list[dict[str, Any]] = [s.as_dict(now) for s in store.list()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print_table(_LIST_COLUMNS, rows)
    print(f"({len(rows)} shares)")
    return 0


def cmd_revoke(args: argparse.Namespace) -> int:
    who = cli_user()
    info, changed = ShareStore(args.data).revoke(args.id, who)
    if changed:
        AuditLog(args.data).record(SHARE_REVOKED, SUCCESS, user=who, client="local", study=info.study,
                                   detail={"share": info.id})
        print(f"revoked share {info.id} (study {info.study}, created by {info.created_by})")
    else:
        print(f"share {info.id} was already revoked")
    return 0


def add_shares_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    shares = sub.add_parser("shares", help="share links: read-only links to one study")
    ssub = shares.add_subparsers(dest="shares_command", required=True)

    p = ssub.add_parser("list", parents=[common], help="every share link (never its token)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = ssub.add_parser("revoke", parents=[common], help="revoke a share link by its id")
    p.add_argument("id")
    p.set_defaults(func=cmd_revoke)
