"""`dicomvault send | query | retrieve`: the SCU commands. `add_commands(sub, common)` registers
them on the main parser (cli.py); `python -m dicomvault.dimse.scu_cli` runs them standalone.

Exit codes: 0 all good, 1 some objects failed (the summary lists them), 2 nothing could be done
(bad arguments, peer unreachable or refusing): the same convention as the other commands.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from ..engine import DEFAULT_DATA_DIR, Engine
from ..errors import DicomVaultError
from ..textout import print_table

if TYPE_CHECKING:
    from . import scu

# Repeated here (scu.py has the same) so that registering the commands imports no pynetdicom:
# `dicomvault ls` should not pay for it. The command functions import scu when they run.
DEFAULT_CALLING_AE = "DICOMVAULT"
DEFAULT_MAX_PDU = 131072
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")


def _scu() -> Any:
    from . import scu

    return scu


def _peer(text: str) -> scu.Peer:
    try:
        return _scu().Peer.parse(text)  # type: ignore[no-any-return]
    except DicomVaultError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _add_connection_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--calling-ae", default=DEFAULT_CALLING_AE, metavar="AE",
                   help="our AE title (default: %(default)s)")
    p.add_argument("--max-pdu", type=int, default=DEFAULT_MAX_PDU, metavar="BYTES",
                   help="maximum PDU we receive, 0 = unlimited (default: %(default)s)")


class _Progress:
    """One self-rewriting stderr line, only on a terminal."""

    def __init__(self, total: int) -> None:
        self.total, self.enabled = total, sys.stderr.isatty()
        self.bytes, self.start, self.last = 0, time.monotonic(), 0.0
        self.lock = threading.Lock()

    def __call__(self, done: int, nbytes: int) -> None:
        with self.lock:
            self.bytes += nbytes
            now = time.monotonic()
            if self.enabled and (now - self.last > 0.2 or done == self.total):
                self.last = now
                el = max(now - self.start, 1e-9)
                sys.stderr.write(f"\r{done}/{self.total} sent, {done / el:,.1f} inst/s, "
                                 f"{self.bytes / el / 1e6:,.1f} MB/s ")
                sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def _quiet() -> None:
    """pynetdicom narrates every association at INFO; keep that for -v (DEBUG) only."""
    if not logging.getLogger().isEnabledFor(logging.DEBUG):
        logging.getLogger("pynetdicom").setLevel(logging.WARNING)


def cmd_send(args: argparse.Namespace) -> int:
    _quiet()
    scu = _scu()
    items, bad, skipped = scu.scan(args.paths)
    if not items and not bad:
        raise scu.ScuError(f"no DICOM files in {', '.join(args.paths)}")
    progress = _Progress(len(items))
    report = scu.send_files(items, args.to, calling_ae=args.calling_ae, associations=args.jobs,
                            max_pdu=args.max_pdu, progress=progress)
    progress.done()
    report.files += len(bad)
    report.failed[:0] = bad
    if bad:
        report.statuses["not sent"] += len(bad)
    report.skipped = skipped
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        d = report.as_dict()
        print(f"sent {len(items)} files ({report.bytes / 1e6:,.1f} MB) to {args.to} over "
              f"{min(args.jobs, max(1, len(items)))} association(s) in {report.seconds:.2f} s: "
              f"{d['instances_per_s']} instances/s, {d['mb_per_s']} MB/s")
        for status, n in sorted(report.statuses.items()):
            print(f"  {status}: {n}")
        for path, why in report.failed:
            print(f"  failed {path}: {why}")
        if skipped:
            print(f"  skipped {len(skipped)} non-DICOM files (e.g. {skipped[0][0]})")
    return 0 if len(report.failed) == 0 else 1


def cmd_query(args: argparse.Namespace) -> int:
    _quiet()
    scu = _scu()
    ident = scu.build_identifier(args.level, args.keys or [], use_defaults=not args.no_defaults)
    rows = [scu.dataset_to_dict(ds) for ds in scu.find(args.to, ident, patient_root=args.patient_root,
                                                       calling_ae=args.calling_ae, max_pdu=args.max_pdu)]
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return 0
    cols = [kw for kw in scu.dataset_to_dict(ident) if kw != "QueryRetrieveLevel"]
    for r in rows:  # keys the peer added on its own go last
        cols += [k for k in r if k not in cols and k != "QueryRetrieveLevel"]
    print_table(cols, rows)
    print(f"({len(rows)} matches at {args.to})")
    return 0


def cmd_retrieve(args: argparse.Namespace) -> int:
    _quiet()
    scu = _scu()
    if args.move_to_self and not args.port:
        raise scu.ScuError("--move-to-self needs --port (where the peer sends the objects to)")
    with Engine(args.data) as engine:
        if args.move_to_self:
            report = scu.retrieve_move(args.peer, engine, args.study, args.series, port=args.port,
                                       listen_host=args.listen_host, calling_ae=args.calling_ae,
                                       max_pdu=args.max_pdu)
        else:
            report = scu.retrieve_get(args.peer, engine, args.study, args.series, calling_ae=args.calling_ae,
                                      max_pdu=args.max_pdu)
    d = report.as_dict()
    if args.json:
        print(json.dumps(d, indent=2))
    else:
        what = f"series {args.series}" if args.series else f"study {args.study}"
        print(f"{report.mode} of {what} from {args.peer} into {args.data}: {report.received} received"
              f"{'' if report.expected is None else f' of {report.expected} expected'}, "
              f"{report.bytes / 1e6:,.1f} MB in {report.seconds:.2f} s ({d['instances_per_s']} instances/s); "
              f"final status {report.final_status}")
        for status, n in sorted(report.local.items()):
            print(f"  stored here, {status}: {n}")
        if report.remote:
            print("  peer's count: " + ", ".join(f"{k} {v}" for k, v in report.remote.items()))
    return 0 if report.ok else 1


def add_commands(sub: Any, common: argparse.ArgumentParser) -> None:
    """Registers send, query and retrieve on the main parser's subparsers."""
    p = sub.add_parser("send", help="C-STORE files and folders (recursive) to a DICOM peer")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--to", type=_peer, required=True, metavar="AE@HOST:PORT")
    p.add_argument("-j", "--jobs", type=int, default=1, metavar="N", help="parallel associations (default 1)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_connection_args(p)
    p.set_defaults(func=cmd_send)

    p = sub.add_parser("query", help="C-FIND a DICOM peer")
    p.add_argument("--to", type=_peer, required=True, metavar="AE@HOST:PORT")
    p.add_argument("--level", default="STUDY", type=str.upper, choices=LEVELS)
    p.add_argument("-k", "--key", dest="keys", action="append", metavar="Keyword[=Value]",
                   help="matching key (with a value) or return key (without); repeatable")
    p.add_argument("--no-defaults", action="store_true", help="ask only for the -k keys")
    p.add_argument("--patient-root", action="store_true", help="Patient Root model (default Study Root)")
    p.add_argument("--json", action="store_true", help="a JSON array of objects keyed by DICOM keywords")
    _add_connection_args(p)
    p.set_defaults(func=cmd_query)

    p = sub.add_parser("retrieve", parents=[common],
                       help="pull a study/series from a DICOM peer into our archive (C-GET or C-MOVE)")
    p.add_argument("--from", dest="peer", type=_peer, required=True, metavar="AE@HOST:PORT")
    p.add_argument("--study", required=True, metavar="UID")
    p.add_argument("--series", metavar="UID")
    p.add_argument("--move-to-self", action="store_true",
                   help="C-MOVE to our AE title instead of C-GET (the peer must know us at --port)")
    p.add_argument("--port", type=int, metavar="N", help="where we listen for the C-MOVE sub-operations")
    p.add_argument("--listen-host", default="0.0.0.0", metavar="ADDR",
                   help="address of that listener (default: %(default)s)")
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    _add_connection_args(p)
    p.set_defaults(func=cmd_retrieve)


def main(argv: Sequence[str] | None = None) -> int:
    """Standalone entry point (the same commands as `dicomvault send|query|retrieve`)."""
    parser = argparse.ArgumentParser(prog="dicomvault-scu", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", default=str(DEFAULT_DATA_DIR), metavar="DIR",
                        help="data directory (default: %(default)s)")
    sub = parser.add_subparsers(dest="command", required=True)
    add_commands(sub, common)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return int(args.func(args))
    except DicomVaultError as exc:
        print(f"dicomvault {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
