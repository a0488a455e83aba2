"""CLI: `dicomvault replicate` and `dicomvault forward status|run`.

`add_commands(subparsers, common)` registers them; `common` is the parent parser holding --data.
"""

from __future__ import annotations

import argparse
import json
import ssl
from collections.abc import Callable
from typing import Any

from ..engine import Engine
from ..errors import DicomVaultError
from . import state
from .client import ReplicationError, SiteClient
from .puller import Puller


def cmd_replicate(args: argparse.Namespace) -> int:
    if args.once:
        with Engine(args.data) as engine:
            index = engine.index
            if state.role(index) == state.PRIMARY and state.upstream(index) is not None:
                raise DicomVaultError(f"{args.data} was promoted to primary; use `dicomvault dr failback`")
            state.set_role(index, state.REPLICA)
            puller = Puller(engine, SiteClient(args.source, args.token, cafile=args.ca,
                                               insecure=args.insecure))
            try:
                total = puller.catch_up(max_errors=args.retries)
            except ReplicationError as exc:
                raise DicomVaultError(str(exc)) from exc
            finally:
                puller.close()
        print(json.dumps({"applied": total.applied, "blobs_fetched": total.blobs_fetched,
                          "bytes_fetched": total.bytes_fetched, "seq": total.seq,
                          "upstream_seq": total.upstream_seq}))
        return 0
    # Without --once a replica is a site (HTTP feed for chains, status): the CLI passes in the
    # composition root's runner, so this package never imports the layers above it.
    return int(args.run_site(args))


def cmd_forward_status(args: argparse.Namespace) -> int:
    from .forward import forward_status

    rows = forward_status(args.data)
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    if not rows:
        print("no forwarding destinations have run on this data directory")
    for r in rows:
        print(f"{r['name']:<16} {r['ae_title']}@{r['host']}:{r['port']}  pending {r['pending']}  "
              f"sent {r['sent']}  failed {r['failed']}  cursor {r['seq']}/{r['last_seq']}  "
              f"last error: {r['last_error'] or '-'}")
    return 0


def cmd_forward_run(args: argparse.Namespace) -> int:
    from .forward import run_forwarders
    from .settings import load_forward_rules

    rules = load_forward_rules(args.config)
    # the TLS files are the [dimse] table's of the same configuration (the CLI reads it)
    tls_context = args.forward_tls(args.config) if any(rule.tls for rule in rules) else None
    return run_forwarders(args.data, rules, once=args.once, tls_context=tls_context, make_ae=args.forward_ae)


def add_commands(sub: Any, common: argparse.ArgumentParser, *, add_site_arguments: Callable[..., None],
                 run_site: Callable[[argparse.Namespace], int],
                 forward_tls: Callable[[str | None], ssl.SSLContext],
                 forward_ae: Callable[[str], Any]) -> None:
    """`forward_tls(config path)`: our DICOM TLS client context from that configuration;
    `forward_ae(our AE title)`: the AE forwarding associates from (forward.MakeAE)."""
    p = sub.add_parser("replicate", parents=[common],
                       help="replicate from another site (until SIGTERM, or --once)")
    p.add_argument("--from", dest="source", required=True, metavar="URL", help="upstream site URL")
    p.add_argument("--token", required=True, help="replication token the upstream gave us")
    p.add_argument("--once", action="store_true", help="catch up to the upstream's last change, then exit")
    p.add_argument("--retries", type=int, default=3, help="with --once: transient errors tolerated")
    add_site_arguments(p, replica=True)
    p.set_defaults(func=cmd_replicate, run_site=run_site)

    fwd = sub.add_parser("forward", help="forwarding to DICOM peers")
    fsub = fwd.add_subparsers(dest="forward_command", required=True)
    p = fsub.add_parser("status", parents=[common], help="per-destination queue status")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_forward_status)
    p = fsub.add_parser("run", parents=[common], help="forward per the config's [[forward]] rules")
    p.add_argument("--config", required=True, metavar="FILE")
    p.add_argument("--once", action="store_true", help="drain the queues, then exit")
    p.set_defaults(func=cmd_forward_run, forward_tls=forward_tls, forward_ae=forward_ae)
