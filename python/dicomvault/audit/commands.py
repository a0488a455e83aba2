"""CLI: `dicomvault audit verify` (re-computes the hash chain of `<data>/audit/audit.jsonl`
against its head; exit 1 at the first break) and `dicomvault audit search` (the records matching
patient, user, study, event and a time window, as a table or JSON lines)."""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..textout import print_table
from .log import EVENTS, search, verify

_COLUMNS = ["seq", "time", "event", "outcome", "user", "client", "patient", "study"]


def cmd_verify(args: argparse.Namespace) -> int:
    r = verify(args.data)
    for line, why in r.breaks:
        print(f"line {line}: {why}")
    state = "intact" if r.intact else f"BROKEN ({len(r.breaks)} break(s))"
    print(f"audit log {state}: {r.lines} lines, {r.chained} chained"
          + (f", {r.unchained} from before the chain" if r.unchained else ""))
    return 0 if r.intact else 1


def cmd_search(args: argparse.Namespace) -> int:
    try:
        found = list(search(args.data, patient=args.patient, user=args.user, study=args.study,
                            event=args.event, since=args.since, until=args.until))
    except ValueError as exc:  # a --since/--until that is not ISO 8601
        print(f"dicomvault audit search: {exc}")
        return 2
    if args.json:
        for rec in found:
            print(json.dumps(rec, ensure_ascii=False))
        return 0
    rows: list[dict[str, Any]] = [{k: rec.get(k) for k in _COLUMNS} for rec in found]
    print_table(_COLUMNS, rows)
    print(f"({len(rows)} records)")
    return 0


def add_audit_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("audit", help="the audit trail: verify its hash chain, search it")
    asub = p.add_subparsers(dest="audit_command", required=True)
    v = asub.add_parser("verify", parents=[common], help="check the hash chain (exit 1 if broken)")
    v.set_defaults(func=cmd_verify)
    s = asub.add_parser("search", parents=[common], help="records matching every given criterion")
    s.add_argument("--patient", metavar="ID")
    s.add_argument("--user", metavar="NAME")
    s.add_argument("--study", metavar="UID")
    s.add_argument("--event", choices=sorted(EVENTS))
    s.add_argument("--since", metavar="TIME", help="ISO 8601 (UTC unless it says otherwise)")
    s.add_argument("--until", metavar="TIME")
    s.add_argument("--json", action="store_true", help="one JSON record per line")
    s.set_defaults(func=cmd_search)
