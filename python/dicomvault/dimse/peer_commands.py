"""CLI: `dicomvault peers add|list|remove` — the DICOM nodes that may call the archive.

They edit `<data>/auth/peers.json` (peer_store.py) whether or not a server holds the data
directory; a running server applies the change from its next association. Peers in the TOML
file's [[peers]] are listed too (`--config`), marked as such: they change only with that file.
"""

from __future__ import annotations

import argparse
import json
from typing import Any

from ..audit.log import SECURITY_ALERT, SUCCESS, AuditLog, cli_user
from ..auth.peer_settings import SERVICES, PeerConfig, parse_peer
from ..auth.peer_store import PeerStore
from ..config import load_config
from ..config_values import ConfigError
from ..errors import RequestError
from ..textout import print_table

_COLUMNS = ["ae_title", "host", "port", "allow", "move_to", "from", "cert", "tls", "source"]


def _peer_from_args(args: argparse.Namespace) -> PeerConfig:
    item: dict[str, Any] = {"ae_title": args.ae_title, "host": args.host, "port": args.port,
                            "allow": args.allow, "tls": args.tls}
    if args.move_to:
        item["move_to"] = args.move_to
    if args.from_hosts:
        item["from_hosts"] = args.from_hosts
    if args.cert:
        item["cert"] = args.cert
    try:
        return parse_peer(item, "peers add")
    except ConfigError as exc:
        raise RequestError(str(exc)) from exc


def _audit(data: str, detail: dict[str, Any]) -> None:
    """A peer change is a configuration change: an audit Security Alert, as its HTTP twin writes."""
    AuditLog(data).record(SECURITY_ALERT, SUCCESS, user=cli_user(), client="local", detail=detail)


def cmd_add(args: argparse.Namespace) -> int:
    peer = _peer_from_args(args)
    replaced = PeerStore(args.data).add(peer, replace=args.replace)
    _audit(args.data, {"change": "peer-replaced" if replaced else "peer-added", **peer.as_dict()})
    where = ", ".join(peer.from_hosts or (peer.host,))
    print(f"{'replaced' if replaced else 'added'} peer {peer.ae_title}: calls from {where}, "
          f"may {', '.join(sorted(peer.allow)) or 'only echo'}"
          + (f"; we call it at {peer.host}:{peer.port}" if peer.port else ""))
    return 0


def cmd_remove(args: argparse.Namespace) -> int:
    PeerStore(args.data).remove(args.ae_title)
    _audit(args.data, {"change": "peer-removed", "ae_title": args.ae_title.strip()})
    print(f"removed peer {args.ae_title.strip()}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    configured: tuple[PeerConfig, ...] = ()
    if args.config:
        configured = load_config(args.config).peers
    stored = PeerStore(args.data).current()
    rows: list[dict[str, Any]] = []
    for p in configured:
        if p.ae_title not in stored:
            rows.append({**p.as_dict(), "source": f"config {args.config}"})
    for p in stored.values():
        rows.append({**p.as_dict(), "source": "peers.json"})
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print_table(_COLUMNS, [{**r, "allow": ",".join(r["allow"]), "move_to": ",".join(r.get("move_to", [])),
                            "from": ",".join(r.get("from_hosts", [])) or r["host"],
                            "cert": (r.get("cert") or "")[:16], "tls": "yes" if r.get("tls") else "",
                            "port": r["port"] or ""} for r in rows])
    print(f"({len(rows)} peers)")
    return 0


def _services(text: str) -> list[str]:
    return [s.strip() for s in text.split(",") if s.strip()]


def add_peers_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    peers = sub.add_parser("peers", help="the DICOM nodes (AE title + host) that may call the archive")
    psub = peers.add_subparsers(dest="peers_command", required=True)

    p = psub.add_parser("add", parents=[common], help="admit a calling AE from a host, with permissions")
    p.add_argument("ae_title")
    p.add_argument("host", help="its address or hostname: where it may call from, and where we call it")
    p.add_argument("--port", type=int, default=0,
                   help="its DICOM port, when we call it (C-MOVE destination, commitment reports)")
    p.add_argument("--allow", type=_services, default=list(SERVICES),
                   help=f"services it may use, comma-separated from {','.join(SERVICES)} "
                        "(default: all; C-ECHO always)")
    p.add_argument("--move-to", type=_services, default=[], dest="move_to", metavar="AE,...",
                   help="C-MOVE destinations it may name besides itself ('*': any known peer)")
    p.add_argument("--from", type=_services, default=[], dest="from_hosts", metavar="HOST|CIDR,...",
                   help="addresses or networks it may call from instead of HOST ('*': anywhere)")
    p.add_argument("--cert", help="SHA-256 fingerprint of the client certificate its DICOM TLS "
                                  "associations must present (plain associations are then refused)")
    p.add_argument("--tls", action="store_true", help="we call it over DICOM TLS")
    p.add_argument("--replace", action="store_true", help="change an existing peer")
    p.set_defaults(func=cmd_add)

    p = psub.add_parser("list", parents=[common], help="the known peers (peers.json, and --config's)")
    p.add_argument("--config", help="also list the [[peers]] of this configuration file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_list)

    p = psub.add_parser("remove", parents=[common], help="forget a peer added with `peers add`")
    p.add_argument("ae_title")
    p.set_defaults(func=cmd_remove)
