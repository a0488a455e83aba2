"""CLI: `dicomvault dr status|promote|failback`, `backup DIR`, `restore DIR`, and the heal side
of `verify --heal --from URL`.

Commands that write go through a running server when one holds the data directory (its URL and
admin token are in `<data>/http.json`), else open the directory themselves.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..engine import Engine
from ..errors import DicomVaultError, LockedError
from ..http_info import call_local_server
from ..replication.client import ReplicationError, SiteClient


def _admin(data: str, path: str, body: dict[str, Any], timeout: float = 3600) -> dict[str, Any]:
    """POSTs to the admin API of the server holding `data`."""
    answer: dict[str, Any] = call_local_server(data, "POST", path, body, timeout)
    return answer


def _client(args: argparse.Namespace, url: str | None = None) -> SiteClient:
    return SiteClient(url or args.source, args.token, cafile=getattr(args, "ca", None),
                      insecure=getattr(args, "insecure", False))


def cmd_backup(args: argparse.Namespace) -> int:
    from .backup import backup

    try:
        with Engine(args.data) as engine:
            out = backup(engine, args.dir, verify=args.verify).as_dict()
    except LockedError:
        target = str(Path(args.dir).resolve())
        out = _admin(args.data, "/api/admin/backup", {"dir": target, "verify": args.verify})
    print(json.dumps(out, indent=1))
    return 0 if not out.get("damaged") else 2


def cmd_restore(args: argparse.Namespace) -> int:
    from .backup import restore

    report = restore(args.dir, args.data, verify=not args.no_verify)
    print(json.dumps(report.as_dict(), indent=1))
    return 0 if not report.damaged else 2


def cmd_status(args: argparse.Namespace) -> int:
    from .status import site_status

    st = site_status(args.data)
    if args.json:
        print(json.dumps(st, indent=1))
        return 0
    print(f"{st['data']}: {st['role']}, feed {st['feed_id'] or '-'} at seq {st['last_seq']}, "
          f"{st['objects']} objects")
    up = st.get("upstream")
    if up:
        print(f"  upstream {up['url']}: applied seq {up['seq']} of {up['upstream_seq']} "
              f"(lag {up['lag_events']} events at the last pull)")
    if not st["replicas"]:
        print("  no replica has pulled from this site")
    for name, r in st["replicas"].items():
        print(f"  replica {name} ({r['address']}, token {r['token']}): acked seq {r['acked_seq']}, "
              f"lag {r['lag_events']} events / {r['lag_seconds']:.1f} s (RPO), "
              f"last pull {r['last_pull_seconds_ago']:.1f} s ago, last error: {r['last_error'] or '-'}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    from ..replication import state
    from .failover import promote

    with Engine(args.data) as engine:
        client = None
        up = state.upstream(engine.index)
        if up is not None and args.token:
            client = SiteClient(up.url, args.token, cafile=args.ca, insecure=args.insecure, timeout=5)
        try:
            rep = promote(engine, force=args.force, client=client)
        finally:
            if client is not None:
                client.close()
    print(json.dumps({"promoted": True, "was": rep.was, "seq": rep.seq, "upstream_seq": rep.upstream_seq,
                      "lag_events": rep.lag_events, "upstream_reachable": rep.upstream_reachable,
                      "forced": rep.forced}))
    return 0


def cmd_failback(args: argparse.Namespace) -> int:
    from .failover import failback

    client = _client(args)
    try:
        with Engine(args.data) as engine:
            rep = failback(engine, client, discard_divergent=args.discard_divergent)
    except ReplicationError as exc:
        raise DicomVaultError(str(exc)) from exc
    finally:
        client.close()
    print(json.dumps(rep.__dict__, indent=1))
    if rep.divergent and not args.discard_divergent:
        print(f"{len(rep.divergent)} instance(s) exist only here (never reached {args.source}); "
              "re-send them there or rerun with --discard-divergent")
    return 0


def cmd_heal(args: argparse.Namespace) -> int:
    """`verify --heal --from URL --token T`."""
    from .heal import heal

    if not args.source or not args.token:
        raise DicomVaultError("verify --heal needs --from URL and --token TOKEN")
    try:
        client = _client(args)
        try:
            with Engine(args.data) as engine:
                out = heal(engine, client).as_dict()
        finally:
            client.close()
    except LockedError:
        out = _admin(args.data, "/api/admin/heal", {"from": args.source, "token": args.token,
                                                 "cafile": args.ca, "insecure": args.insecure})
    print(json.dumps(out, indent=1))
    return 0 if out["clean"] else 2


def add_heal_arguments(p: argparse.ArgumentParser) -> None:
    """Options `verify` gains: --heal --from URL --token TOKEN [--ca PEM] [--insecure]."""
    p.add_argument("--heal", action="store_true",
                   help="fetch missing or corrupt blobs by hash from --from, verify and replace them")
    p.add_argument("--from", dest="source", metavar="URL", help="site to heal from")
    p.add_argument("--token", help="replication token of that site")
    p.add_argument("--ca", metavar="PEM", help="CA bundle for an https site")
    p.add_argument("--insecure", action="store_true", help="do not verify the site's certificate")


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    p = sub.add_parser("backup", parents=[common], help="consistent backup (checkpoint + blobs) into DIR")
    p.add_argument("dir")
    p.add_argument("--verify", action="store_true", help="verify every blob of the backup afterwards")
    p.set_defaults(func=cmd_backup)
    p = sub.add_parser("restore", parents=[common], help="restore a backup into --data (empty)")
    p.add_argument("dir")
    p.add_argument("--no-verify", action="store_true", help="skip the verification of the restored site")
    p.set_defaults(func=cmd_restore)

    dr = sub.add_parser("dr", help="disaster recovery: status, promote, failback")
    dsub = dr.add_subparsers(dest="dr_command", required=True)
    p = dsub.add_parser("status", parents=[common], help="role, upstream, per-replica lag (RPO)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_status)
    p = dsub.add_parser("promote", parents=[common], help="make this replica the writable primary")
    p.add_argument("--force", action="store_true", help="promote even if behind its upstream")
    p.add_argument("--token", help="token to ask the upstream how far it is (if reachable)")
    p.add_argument("--ca", metavar="PEM")
    p.add_argument("--insecure", action="store_true")
    p.set_defaults(func=cmd_promote)
    p = dsub.add_parser("failback", parents=[common], help="re-sync this old primary from the new one")
    p.add_argument("--from", dest="source", required=True, metavar="URL", help="the new primary")
    p.add_argument("--token", required=True)
    p.add_argument("--ca", metavar="PEM")
    p.add_argument("--insecure", action="store_true")
    p.add_argument("--discard-divergent", action="store_true",
                   help="delete instances only this site holds, so both hold the same set")
    p.set_defaults(func=cmd_failback)
