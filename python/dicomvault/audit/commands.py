"""CLI: `dicomvault audit verify` (re-computes the hash chain of `<data>/audit/audit.jsonl`
against its head; exit 1 at the first break), `dicomvault audit search` (the records matching
patient, user, study, event and a time window, as a table or JSON lines) and `dicomvault audit
status` (how far the syslog sender got: its cursor against the log's last seq, and its state)."""

from __future__ import annotations

import argparse
import json
import os
from datetime import UTC, datetime
from typing import Any

from ..textout import print_table
from .log import EVENTS, search, verify
from .sender import last_seq, status_path
from .tail import cursor_path, load_cursor

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


def cmd_status(args: argparse.Namespace) -> int:
    last = last_seq(args.data)
    state: dict[str, Any] = {}
    try:
        state = json.loads(status_path(args.data).read_text())
    except FileNotFoundError:
        pass
    except (OSError, ValueError) as exc:
        state = {"state": f"unreadable status file ({exc})"}
    if state.get("state") in ("starting", "up", "down") and not _alive(state.get("pid")):
        state["state"] = f"{state['state']} when its server (pid {state.get('pid')}) ended without stopping"
    sent = load_cursor(cursor_path(args.data)).seq
    doc = {"last_seq": last, "sent_seq": sent, "backlog": max(0, last - sent), **state}
    if args.json:
        print(json.dumps(doc))
        return 0
    print(f"audit log: last seq {last}")
    if not state:
        print("syslog: never configured in this data directory (the log is kept locally only)")
        return 0
    print(f"syslog {state.get('target')}: {state.get('state')}; sent up to seq {sent}, "
          f"backlog {doc['backlog']} record(s)")
    if state.get("state") == "down":
        print(f"  down since {_when(state.get('down_since'))}: {state.get('last_error')}")
    return 0


def _alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def _when(t: object) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat(timespec="seconds") if isinstance(t, int | float) else "?"


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
    st = asub.add_parser("status", parents=[common],
                         help="the syslog sender: what it sent, the backlog, an outage (exit 0)")
    st.add_argument("--json", action="store_true")
    st.set_defaults(func=cmd_status)
