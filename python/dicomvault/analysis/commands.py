"""CLI: `dicomvault jobs list|show|add|retry` — the analysis jobs.

Reads open the index read-only, so they work beside a running server. `add` and `retry` write:
they open the data directory when nothing holds it (the jobs then run at the next `serve`), and
otherwise go through the running server's API (`POST /api/jobs`, `POST /api/jobs/{id}/retry`)
with the admin token it left in `<data>/http.json`, so the one process that writes the index
stays the one that writes the queue (and starts the job at once).
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from collections.abc import Callable
from typing import Any

from ..engine import Engine
from ..errors import LockedError
from ..http_info import call_local_server
from ..textout import print_table
from .jobs import STATES, JobStore, view
from .settings import AnalysisSettings

SettingsLoader = Callable[[str | None], AnalysisSettings]

_COLUMNS = ["id", "state", "analyzer", "study_uid", "series", "attempts", "updated", "seconds", "note"]


def _when(t: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t)) if t else ""


def _row(j: dict[str, Any]) -> dict[str, Any]:
    note = j["last_error"] if j["state"] in ("failed", "queued") and j["last_error"] else j["summary"]
    return {**j, "series": len(j["series_uids"] or []), "attempts": f"{j['attempts']}/{j['max_attempts']}",
            "updated": _when(j["finished"] or j["started"] or j["queued"]), "note": (note or "")[:80],
            "seconds": "" if j["seconds"] is None else f"{j['seconds']:.1f}"}


def cmd_list(args: argparse.Namespace) -> int:
    with Engine(args.data, read_only=True) as engine:
        rows = [view(j) for j in JobStore(engine.index).jobs(state=args.state, analyzer=args.analyzer,
                                                                  study_uid=args.study, limit=args.limit)]
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print_table(_COLUMNS, [_row(j) for j in rows])
    print(f"({len(rows)} jobs)")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    with Engine(args.data, read_only=True) as engine:
        job = view(JobStore(engine.index).require(args.id), full=True)
    if args.json:
        print(json.dumps(job, indent=1))
        return 0
    for k in ("id", "state", "analyzer", "event", "study_uid", "patient_id", "reason", "attempts",
              "max_attempts",
              "last_error", "summary", "runs", "instances", "seconds"):
        print(f"{k:14} {job.get(k)}")
    for k in ("created", "queued", "started", "finished", "not_before"):
        print(f"{k:14} {_when(job.get(k))}")
    for uid in job["series_uids"] or []:
        print(f"series         {uid}")
    for name, seconds in (job.get("timings") or {}).items():
        print(f"time {name:9} {seconds:.3f} s")
    for m in job.get("measurements") or []:
        print(f"measurement    {m['label']}: {m['value']:g} {m['unit']}")
    for f in job.get("flags") or []:
        print(f"flag           {f['severity']} {f['code']}: {f['reason']}")
    for o in job["objects"]:
        print(f"object         {o['sop_uid']} (series {o['series_uid']})")
    if job.get("last_traceback") and job["state"] != "done":
        print("last failure:\n" + job["last_traceback"].rstrip())
    return 0


def cmd_retry(args: argparse.Namespace) -> int:
    try:
        with Engine(args.data) as engine:
            engine.ensure_writable()
            out = view(JobStore(engine.index).retry(args.id))
    except LockedError:
        out = call_local_server(args.data, "POST", f"/api/jobs/{args.id}/retry")
    print(f"job {out['id']} ({out['analyzer']}, study {out['study_uid']}): {out['state']}")
    return 0


def cmd_add(args: argparse.Namespace, settings_of: SettingsLoader) -> int:
    try:
        with Engine(args.data) as engine:
            engine.ensure_writable()
            from .events import CompletionReader
            from .plugins import load

            s = settings_of(args.config)
            reader = CompletionReader(engine.index, JobStore(engine.index), load(s),
                                      quiet_seconds=s.quiet_seconds, max_attempts=s.retries + 1)
            out = [view(j) for j in reader.analyse_study(args.study, args.analyzer)]
    except LockedError:
        out = call_local_server(args.data, "POST", "/api/jobs", {"study_uid": args.study,
                                                                 "analyzers": args.analyzer})
    for j in out:
        print(f"job {j['id']}: {j['analyzer']} on {len(j['series_uids'])} series of study {j['study_uid']}: "
              f"{j['state']}")
    if not out:
        print(f"no analyzer wants study {args.study}")
    return 0


def add_jobs_commands(sub: Any, common: argparse.ArgumentParser, settings_of: SettingsLoader) -> None:
    """`settings_of(config file or None)`: the [analysis] settings, as the CLI reads its configuration."""
    jobs = sub.add_parser("jobs", parents=[common], help="analysis jobs (queued, running, done, failed)")
    # `dicomvault jobs` alone lists
    jobs.set_defaults(func=cmd_list, state=None, analyzer=None, study=None, limit=100, json=False)
    jsub = jobs.add_subparsers(dest="jobs_command")
    p = jsub.add_parser("list", parents=[common], help="jobs, newest first")
    p.add_argument("--state", choices=STATES)
    p.add_argument("--analyzer", metavar="NAME", help="one analyzer instance's jobs")
    p.add_argument("--study", metavar="UID")
    p.add_argument("--limit", type=int, default=100, metavar="N",
                   help="at most N jobs (default: %(default)s)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = jsub.add_parser("show", parents=[common], help="one job: its series, timings, result and last error")
    p.add_argument("id", type=int)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)

    p = jsub.add_parser("add", parents=[common], help="analyse a study already archived")
    p.add_argument("--study", required=True, metavar="UID")
    p.add_argument("--analyzer", action="append", default=[], metavar="NAME",
                   help="only this analyzer instance (repeatable; default: every one that wants it)")
    p.add_argument("--config", metavar="FILE",
                   help="TOML configuration: its [analysis] (when no server holds the data directory)")
    p.set_defaults(func=functools.partial(cmd_add, settings_of=settings_of))

    p = jsub.add_parser("retry", parents=[common], help="queue a job again now (attempts counted from zero)")
    p.add_argument("id", type=int)
    p.set_defaults(func=cmd_retry)
