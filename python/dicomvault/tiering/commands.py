"""CLI: `dicomvault tier status|run|move|compact|reclaim`.

Each takes `--config FILE` (the server's TOML: tiers, `[tiering]` and its policies); without
it, the data directory's stored tier layout and no policies. They open the data directory as a
writer, so run them while the server is stopped, or use the HTTP API (`/api/tiers`) of a
running server, which does the same in-process.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from ..engine import Engine
from ..storage.settings import TieringSettings, default_settings, format_size
from ..textout import print_table
from . import jobs
from .compactor import Compactor


def load_settings(args: argparse.Namespace) -> tuple[str, TieringSettings]:
    """(data directory, tiering settings) from `--config` and `--data`."""
    if getattr(args, "config", None):
        from ..config import load_config  # config.py imports this package's settings

        config = load_config(args.config)
        data = args.data if args.data_given else str(config.data_dir)
        return data, config.tiering
    return args.data, default_settings()


def open_engine(args: argparse.Namespace, *, read_only: bool = False) -> tuple[Engine, TieringSettings]:
    data, settings = load_settings(args)
    tiers = settings.tiers if settings.configured else None
    return Engine(data, read_only=read_only, tiers=tiers), settings


def _size(n: int | None) -> str:
    return "-" if n is None else format_size(int(n))


def cmd_status(args: argparse.Namespace) -> int:
    engine, settings = open_engine(args)
    with engine:
        st = jobs.status(engine, settings)
    if args.json:
        print(json.dumps(st, indent=1))
        return 0
    rows: list[dict[str, Any]] = []
    for name, t in st["tiers"].items():
        rows.append({
            "tier": name, "backend": t["backend"], "codec": t["codec"], "studies": t["studies"],
            "objects": t["objects"], "stored": _size(t["stored_bytes"]), "logical": _size(t["logical_bytes"]),
            "ratio": t["ratio"] or "-", "capacity": _size(t["capacity"]), "free": _size(t["free_bytes"]),
            "pending": t["pending_moves_out"],
        })
    print_table(list(rows[0]), rows)
    if st["job"]:
        j = st["job"]
        print(f"job {j['id']}: {j['state']}, {j['done']}/{j['moves']} moves, {format_size(j['bytes'])}")
    print(f"promoted studies: {st['promoted']}")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    engine, settings = open_engine(args)
    with engine:
        t0 = time.monotonic()
        p = Compactor(engine, threads=args.threads or settings.compactor_threads).run_once()
        dt = time.monotonic() - t0
    r = p.report
    out = {"blobs": r.blobs, "logical_bytes": r.logical_bytes, "stored_bytes": r.stored_bytes,
           "seconds": round(dt, 3), "threads": p.threads, "failed": r.failed[:20],
           "volumes_removed": p.volumes_removed}
    print(json.dumps(out, indent=1))
    return 1 if r.failed else 0


def cmd_run(args: argparse.Namespace) -> int:
    engine, settings = open_engine(args)
    with engine:
        if args.dry_run:
            moves = jobs.plan(engine, settings, args.policy)
            if args.json:
                print(json.dumps(jobs.moves_summary(moves), indent=1))
            else:
                print_table(["study", "from", "to", "policy", "reason"], jobs.moves_summary(moves))
                print(f"({len(moves)} moves planned, nothing moved)")
            return 0
        compaction = Compactor(engine, threads=settings.compactor_threads).run_once()
        demoted = jobs.demote_expired(engine)
        job = jobs.run_policies(engine, settings, policy=args.policy, ignore_window=args.now)
        reclaimed = jobs.reclaim(engine)
    out = {"compacted": compaction.report.blobs, "demoted_blobs": demoted,
           "job": job.progress() if job else None, "reclaimed": reclaimed}
    print(json.dumps(out, indent=1))
    return 1 if job is not None and job.failed else 0


def cmd_move(args: argparse.Namespace) -> int:
    engine, _settings = open_engine(args)
    with engine:
        r = jobs.move_study(engine, args.study, args.to)
    print(json.dumps({"study": args.study, "to": args.to, "blobs": r.blobs, "skipped": r.skipped,
                      "stored_bytes": r.stored_bytes, "logical_bytes": r.logical_bytes,
                      "seconds": round(r.seconds, 3), "failed": r.failed[:20]}, indent=1))
    return 1 if r.failed else 0


def cmd_reclaim(args: argparse.Namespace) -> int:
    engine, _settings = open_engine(args)
    with engine:
        print(json.dumps(jobs.reclaim(engine), indent=1))
    return 0


class _DataAction(argparse.Action):
    def __call__(self, parser: Any, namespace: argparse.Namespace, values: Any, option: Any = None) -> None:
        namespace.data = values
        namespace.data_given = True


def add_tier_commands(sub: Any, default_data: str) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default=default_data, action=_DataAction, metavar="DIR",
                        help="data directory (default: the config's, else %(default)s)")
    common.add_argument("--config", metavar="FILE", help="TOML configuration with tiers and [tiering]")
    common.set_defaults(data_given=False)
    tier = sub.add_parser("tier", help="tiered storage: status, compaction, policies, moves")
    tsub = tier.add_subparsers(dest="tier_command", required=True)

    p = tsub.add_parser("status", parents=[common], help="per tier: objects, bytes, capacity, ratio, pending")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)

    p = tsub.add_parser("run", parents=[common], help="compact, then run the policies as a resumable job")
    p.add_argument("--policy", metavar="NAME", help="only this policy")
    p.add_argument("--dry-run", action="store_true", help="list the moves, move nothing")
    p.add_argument("--now", action="store_true", help="ignore the configured time window")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_run)

    p = tsub.add_parser("move", parents=[common], help="move one study to a tier")
    p.add_argument("--study", required=True, metavar="UID")
    p.add_argument("--to", required=True, metavar="TIER")
    p.set_defaults(func=cmd_move)

    p = tsub.add_parser("compact", parents=[common], help="move landing blobs to the next tier now")
    p.add_argument("--threads", type=int, default=0, help="threads (default: the config's, else every core)")
    p.set_defaults(func=cmd_compact)

    p = tsub.add_parser("reclaim", parents=[common], help="free what interrupted moves and ingests left")
    p.set_defaults(func=cmd_reclaim)
