"""`dicomvault rejected list|restore`: the IOCM rejected set from the command line (iocm.py)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..audit.log import SUCCESS, AuditLog, cli_user
from ..engine import Engine
from .iocm import list_rejected, restore, restore_audit


def cmd_list(args: argparse.Namespace) -> int:
    with Engine(args.data, read_only=True) as engine:
        rows = list_rejected(engine, args.study)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    for r in rows:
        print(f"{r['SOPInstanceUID']}  {r['state']:<7}  {r['code']} {r['title']}  note={r['note']}  "
              f"study={r['StudyInstanceUID']}")
    print(f"{len(rows)} rejected instance(s)")
    return 0


def cmd_restore(args: argparse.Namespace) -> int:
    with Engine(args.data) as engine:
        entries = restore(engine, instance=args.instance, note=args.note)
    event, study, detail = restore_audit(entries)
    AuditLog(args.data).record(event, SUCCESS, user=cli_user(), client="local", study=study, detail=detail)
    print(f"restored {len(entries)} instance(s)")
    return 0


def add_rejected_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("rejected", help="instances hidden by IOCM rejection notes: list, restore (admin)")
    rsub = p.add_subparsers(dest="rejected_command", required=True)
    q = rsub.add_parser("list", parents=[common], help="the rejected set (hidden, pending, deleted)")
    q.add_argument("--study", metavar="UID", help="only this study's")
    q.add_argument("--json", action="store_true", help="JSON rows")
    q.set_defaults(func=cmd_list)
    q = rsub.add_parser("restore", parents=[common], help="put hidden instances back (audited)")
    g = q.add_mutually_exclusive_group(required=True)
    g.add_argument("--instance", metavar="UID", help="one SOP Instance UID")
    g.add_argument("--note", metavar="UID", help="everything one rejection note hid")
    q.set_defaults(func=cmd_restore)
