"""The `dicomvault` command line. Every command takes `--data DIR` (default ./dicomvault-data).

Read-only commands (ls, stats, export, verify) open the data directory read-only, so they work
beside a running server or ingest; writers take the directory lock and a second writer is refused.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

from .analysis.commands import add_jobs_commands
from .analysis.settings import AnalysisSettings
from .audit.commands import add_audit_commands
from .audit.log import DATA_DELETION, EXPORT, SUCCESS, AuditLog, cli_user
from .auth.commands import add_users_commands
from .auth.share_commands import add_shares_commands
from .bench.cli import add_commands as add_bench_commands
from .dimse.peer_commands import add_peers_commands
from .dimse.scu_cli import add_commands as add_scu_commands
from .dr.commands import add_commands as add_dr_commands
from .dr.commands import add_heal_arguments
from .engine import DEFAULT_DATA_DIR, Engine, StoreOutcome
from .errors import DicomVaultError, StorageFullError
from .failures import store_failure
from .integration.iocm_commands import add_rejected_commands
from .integration.patient_commands import add_patient_commands
from .integration.worklist_commands import add_worklist_commands
from .replication.commands import add_commands as add_replication_commands
from .site_args import add_serve_site_arguments, add_site_arguments
from .storage.read_check import DEFAULT as READ_CHECK_DEFAULT
from .textout import print_table, walk_paths
from .tiering.commands import add_tier_commands

log = logging.getLogger("dicomvault")

LS_COLUMNS = {
    "patients": [
        "PatientID",
        "PatientName",
        "PatientBirthDate",
        "PatientSex",
        "NumberOfPatientRelatedStudies",
    ],
    "studies": [
        "StudyInstanceUID",
        "PatientID",
        "PatientName",
        "StudyDate",
        "AccessionNumber",
        "ModalitiesInStudy",
        "StudyDescription",
        "NumberOfStudyRelatedInstances",
    ],
    "series": [
        "SeriesInstanceUID",
        "StudyInstanceUID",
        "Modality",
        "SeriesNumber",
        "SeriesDescription",
        "NumberOfSeriesRelatedInstances",
    ],
    "instances": [
        "SOPInstanceUID",
        "SeriesInstanceUID",
        "StudyInstanceUID",
        "SOPClassUID",
        "InstanceNumber",
        "Rows",
        "Columns",
    ],
}


def _iter_files(paths: Sequence[str]) -> Iterator[Path]:
    try:
        for path, _named in walk_paths(paths):
            yield path
    except FileNotFoundError as exc:
        raise DicomVaultError(str(exc)) from exc


def _batches(files: list[Path], max_files: int = 32, max_bytes: int = 32 << 20) -> Iterator[list[Path]]:
    batch: list[Path] = []
    size = 0
    for f in files:
        try:
            fsize = f.stat().st_size
        except OSError:
            fsize = 0
        if batch and (len(batch) >= max_files or size + fsize > max_bytes):
            yield batch
            batch, size = [], 0
        batch.append(f)
        size += fsize
    if batch:
        yield batch


class _Progress:
    """One self-rewriting line on stderr (only when it is a terminal, or when forced)."""

    def __init__(self, total_files: int, total_bytes: int, enabled: bool) -> None:
        self.total_files, self.total_bytes, self.enabled = total_files, total_bytes, enabled
        self.files = self.bytes = 0
        self.start = time.monotonic()
        self._last = 0.0
        self._lock = threading.Lock()

    def advance(self, files: int, nbytes: int) -> None:
        with self._lock:
            self.files += files
            self.bytes += nbytes
            now = time.monotonic()
            if self.enabled and (now - self._last > 0.2 or self.files == self.total_files):
                self._last = now
                frac = self.bytes / self.total_bytes if self.total_bytes else 1.0
                bar = "#" * int(30 * frac)
                rate = self.bytes / max(now - self.start, 1e-9) / 1e6
                sys.stderr.write(
                    f"\r[{bar:<30}] {self.files}/{self.total_files} files "
                    f"{self.bytes / 1e6:,.1f}/{self.total_bytes / 1e6:,.1f} MB {rate:,.1f} MB/s"
                )
                sys.stderr.flush()

    def done(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def cmd_ingest(args: argparse.Namespace) -> int:
    files = list(_iter_files(args.paths))
    sizes = {f: (f.stat().st_size if f.exists() else 0) for f in files}
    total = sum(sizes.values())
    progress = _Progress(len(files), total, enabled=args.progress or sys.stderr.isatty())
    stored = replaced = duplicates = 0
    rejected: list[tuple[str, str]] = []
    # The first storage-full refusal stops the run: every later file would be refused too, and
    # the operator must hear "the archive is full", not one rejection per file.
    full: list[tuple[str, str]] = []
    # An I/O or index error is the archive's, not the file's: it stops the run the same way
    # (it was reported as one "rejected" file after another with exit 0).
    broken: list[tuple[str, str]] = []
    lock = threading.Lock()
    t0 = time.monotonic()
    reserve, verify_reads = None, READ_CHECK_DEFAULT
    if args.config:
        from .config import load_config

        config = load_config(args.config)
        reserve, verify_reads = config.reserve, config.verify_reads
    with Engine(args.data, reserve=reserve, verify_reads=verify_reads) as engine:

        def run(batch: list[Path]) -> None:
            nonlocal stored, replaced, duplicates
            if full or broken:
                return
            results = engine.store_files(batch)
            with lock:
                for path, res in zip(batch, results, strict=True):
                    if isinstance(res, StoreOutcome):
                        if res.duplicate:
                            duplicates += 1
                        elif res.replaced:
                            # Same SOP Instance UID, other content: the newest is kept.
                            replaced += 1
                        else:
                            stored += 1
                    elif isinstance(res, StorageFullError):
                        full.append((str(path), str(res)))
                    elif store_failure(res) is None:
                        broken.append((str(path), str(res)))
                    else:
                        rejected.append((str(path), str(res)))
                        log.warning("rejected %s: %s", path, res)
            progress.advance(len(batch), sum(sizes[p] for p in batch))

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            for fut in [pool.submit(run, b) for b in _batches(files)]:
                fut.result()
    progress.done()
    elapsed = time.monotonic() - t0
    not_stored = len(files) - stored - replaced - duplicates - len(rejected)
    summary = {
        "files": len(files),
        "bytes": total,
        "seconds": round(elapsed, 3),
        "mb_per_s": round(total / elapsed / 1e6, 1) if elapsed > 0 else None,
        "stored": stored,
        "replaced": replaced,
        "duplicates": duplicates,
        "rejected": [{"path": p, "reason": r} for p, r in rejected],
        "storage_full": {"reason": full[0][1], "not_stored": not_stored} if full else None,
        "archive_error": {"reason": broken[0][1], "not_stored": not_stored} if broken and not full else None,
    }
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        print(
            f"{len(files)} files, {total / 1e6:,.1f} MB in {elapsed:.2f} s "
            f"({summary['mb_per_s']} MB/s): {stored} stored, {replaced} replaced, {duplicates} duplicates, "
            f"{len(rejected)} rejected"
        )
        for p, r in rejected:
            print(f"  rejected {p}: {r}")
    if full:
        print(
            f"dicomvault ingest: storage full, stopped with {not_stored} file(s) not stored: {full[0][1]}\n"
            "  Everything reported stored is durable. Free space and run the same command again: "
            "the files already stored are skipped as duplicates.",
            file=sys.stderr,
        )
        return 2
    if broken:
        print(
            f"dicomvault ingest: archive error, stopped with {not_stored} file(s) not stored: "
            f"{broken[0][1]}\n"
            "  The files are not at fault. Everything reported stored is durable; once the cause is "
            "fixed, run the same command again.",
            file=sys.stderr,
        )
        return 2
    return 1 if rejected and args.strict else 0


def _level_uid(args: argparse.Namespace) -> tuple[str, str]:
    for level in ("study", "series", "instance"):
        uid = getattr(args, level)
        if uid:
            return level, uid
    raise DicomVaultError("give one of --study, --series or --instance")


def _add_level_args(p: argparse.ArgumentParser) -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--study", metavar="UID")
    g.add_argument("--series", metavar="UID")
    g.add_argument("--instance", metavar="UID")


def _audit_scope(engine: Engine, level: str, uid: str) -> tuple[str | None, str | None]:
    """(patient ID, study UID) of what a command is about to touch, for its audit record."""
    found = engine.instances(level, uid)
    return (found[0].patient_id or None, found[0].study_uid) if found else (None, None)


def _verify_reads(args: argparse.Namespace) -> str:
    """`[storage] verify_reads` of the --config file, if one is given."""
    if not args.config:
        return READ_CHECK_DEFAULT
    from .config import load_config

    return load_config(args.config).verify_reads


def cmd_export(args: argparse.Namespace) -> int:
    level, uid = _level_uid(args)
    if args.deidentify:
        from .config import load_config
        from .integration.deid.commands import export_deidentified

        if not args.config:
            raise DicomVaultError("--deidentify needs --config FILE with a [deidentify] table naming "
                                  "the project")
        return export_deidentified(args, level, uid, load_config(args.config).deidentify)
    if args.retain or args.allow_burned_in:
        raise DicomVaultError("--retain and --allow-burned-in go with --deidentify PROJECT")
    with Engine(args.data, read_only=True, verify_reads=_verify_reads(args)) as engine:
        patient, study = _audit_scope(engine, level, uid)
        paths = engine.export(level, uid, args.output, as_received=args.as_received)
    what = {"level": level, "uid": uid, "files": len(paths), "to": str(args.output),
            "as_received": args.as_received}
    AuditLog(args.data).record(EXPORT, SUCCESS, user=cli_user(), client="local", patient=patient, study=study,
                               detail=what)
    print(f"exported {len(paths)} files to {args.output}")
    return 0


def _jsonable(v: Any) -> Any:
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    return v


def cmd_ls(args: argparse.Namespace) -> int:
    with Engine(args.data, read_only=True) as engine:
        rows = [
            {k: _jsonable(v) for k, v in row.items()}
            for row in engine.ls(
                args.what, patient_id=args.patient_id, study=args.study, columns=LS_COLUMNS[args.what]
            )
        ]
    if args.json:
        print(json.dumps(rows, indent=1, ensure_ascii=False))
        return 0
    print_table(LS_COLUMNS[args.what], rows)
    print(f"({len(rows)} {args.what})")
    return 0


def cmd_verify(args: argparse.Namespace) -> int:
    if args.heal:
        from .dr.commands import cmd_heal

        return cmd_heal(args)
    t0 = time.monotonic()
    with Engine(args.data, read_only=True) as engine:
        rate = int(args.remote_rate * 1e6) if args.remote_rate else None
        if rate is None and args.config:
            from .config import load_config

            rate = load_config(args.config).tiering.verify_rate
        report = engine.verify(remote=not args.local_only, rate_limit=rate)
    elapsed = time.monotonic() - t0
    out = {
        "checked": report.checked,
        "remote_checked": report.remote_checked,
        "ok": report.ok,
        "damaged": [{"hash": h, "reason": r} for h, r in report.damaged],
        "missing": report.missing,
        "unreferenced": report.unreferenced,
        "bytes": report.bytes,
        "seconds": round(elapsed, 3),
        "mb_per_s": round(report.bytes / elapsed / 1e6, 1) if elapsed > 0 else None,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"checked {report.checked} blobs ({report.bytes / 1e6:,.1f} MB stored) in {elapsed:.2f} s: "
            f"{report.ok} ok, {len(report.damaged)} damaged, {len(report.missing)} missing, "
            f"{report.unreferenced} unreferenced"
        )
        for h, r in report.damaged:
            print(f"  damaged {h}: {r}")
        for h in report.missing:
            print(f"  missing {h}")
    return 0 if report.clean else 2


def cmd_stats(args: argparse.Namespace) -> int:
    with Engine(args.data, read_only=True) as engine:
        stats = engine.stats()
    if args.json:
        print(json.dumps(stats, indent=2, default=_jsonable))
        return 0
    for k, v in stats.items():
        if k != "tiers":
            print(f"{k:>20}: {v}")
    for name, t in stats["tiers"].items():
        print(f"tier {name}: " + ", ".join(f"{k}={v}" for k, v in t.items()))
    return 0


def cmd_delete(args: argparse.Namespace) -> int:
    level, uid = _level_uid(args)
    with Engine(args.data) as engine:
        patient, study = _audit_scope(engine, level, uid)
        n = engine.delete(level, uid)
        after = engine.stats()
    AuditLog(args.data).record(DATA_DELETION, SUCCESS, user=cli_user(), client="local", patient=patient,
                               study=study, detail={"level": level, "uid": uid, "instances": n})
    print(f"deleted {n} instances; {after['objects']} objects, {after['stored_bytes']:,} bytes stored remain")
    return 0


def cmd_compact(args: argparse.Namespace) -> int:
    with Engine(args.data) as engine:
        print(json.dumps(engine.compact(args.threshold), indent=2))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    # Imported here: the other commands need neither pynetdicom nor the server's start-up cost.
    from .allocator import tune_allocator
    from .config import load_config

    tune_allocator()
    from .dimse import serve

    config = load_config(args.config).with_overrides(
        data_dir=args.data, ae_title=args.ae, host=args.host, port=args.dimse_port,
        accept_unknown_callers=True if args.accept_unknown_callers else None,
    )

    from .site import start_services
    from .site_args import serve_site_options

    site_options = replace(serve_site_options(args, config.http, config.replication),
                           deidentify=config.deidentify)

    forward_tls = None
    if any(rule.tls for rule in config.replication.forward):
        from .dimse.tls import client_context

        forward_tls = client_context(config.dimse)

    from .config_values import check_port

    hl7 = config.hl7 if args.hl7_port is None else replace(
        config.hl7, port=check_port(args.hl7_port, "--hl7-port"), port_explicit=True)

    def services(engine: Engine) -> Any:
        from .dimse.peers import Peers
        from .dimse.tls import client_context
        from .integration.hl7.service import start_hl7
        from .priors.service import start_priors

        url, site_stop = start_services(engine, site_options, config.replication.forward, config.tiering,
                                        forward_tls, config.analysis)
        print(f"dicomvault serving HTTP {url} data={config.data_dir}", flush=True)
        # before the HL7 listener, so the first order is seen
        priors = start_priors(engine, config.priors, peer_of=Peers(config.peers, engine.data_dir).get,
                              calling_ae=config.dimse.ae_title, promote_days=config.tiering.promote_days,
                              tls=lambda: client_context(config.dimse))

        def stop() -> None:
            if priors is not None:
                priors.stop()
            site_stop()

        try:
            listener = start_hl7(engine.index, str(engine.data_dir), hl7)
        except DicomVaultError:
            stop()
            raise
        except OSError as exc:
            if hl7.port_explicit:
                stop()
                raise DicomVaultError(f"HL7 listener on {hl7.host}:{hl7.port}: {exc}") from exc
            log.warning("HL7 listener not started: default port %s:%d: %s (set [hl7] port or "
                        "--hl7-port)", hl7.host, hl7.port, exc)
            listener = None
        if listener is None:
            return stop
        print(f"dicomvault serving HL7 {listener.address[0]}:{listener.address[1]} data={config.data_dir}",
              flush=True)

        def stop_all() -> None:
            listener.stop()
            stop()

        return stop_all

    def ready(host: str, port: int) -> None:
        # One parseable line on stdout so scripts (and tests) know the port is bound.
        print(
            f"dicomvault serving DIMSE {config.dimse.ae_title}@{host}:{port} data={config.data_dir}",
            flush=True,
        )

    return serve(config, shutdown_timeout=args.shutdown_timeout, ready=ready, services=services)


def _run_replica_site(args: argparse.Namespace) -> int:
    """`replicate` without --once: a site replicating from --from until SIGTERM."""
    from .site import run_site
    from .site_args import options_from_args

    return run_site(args.data, options_from_args(args, replicate_from=args.source, token=args.token))


def _analysis_settings(path: str | None) -> AnalysisSettings:
    from .config import load_config

    return load_config(path).analysis


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dicomvault", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data", default=str(DEFAULT_DATA_DIR), metavar="DIR", help="data directory (default: %(default)s)"
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("ingest", parents=[common], help="store files and folders (recursive)")
    p.add_argument("paths", nargs="+")
    p.add_argument(
        "-j",
        "--jobs",
        type=int,
        # Twice the cores: a batch spends much of its time waiting on fdatasync and the index's
        # WAL sync, and more batches in flight share each sync (measured: bench/RESULTS.md Tiers).
        default=max(4, 2 * (os.cpu_count() or 2)),
        help="parallel batches (default: %(default)s)",
    )
    p.add_argument("--json", action="store_true", help="print the summary as JSON")
    p.add_argument("--progress", action="store_true", help="show progress even when not a terminal")
    p.add_argument("--strict", action="store_true", help="exit 1 if any file was rejected")
    p.add_argument("--config", metavar="FILE", help="TOML configuration: its [storage] reserve")
    p.set_defaults(func=cmd_ingest)

    p = sub.add_parser("export", parents=[common], help="write Part-10 files of a study/series/instance")
    _add_level_args(p)
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--as-received", action="store_true",
                   help="the bytes exactly as received, without the patient corrections made since")
    p.add_argument("--deidentify", metavar="PROJECT",
                   help="de-identify for this [deidentify] project (PS3.15 Annex E; docs/integration.md)")
    p.add_argument("--retain", metavar="LIST",
                   help="retain options: dates,full-dates,patient,device,institution,private "
                        "(default: the project's)")
    p.add_argument("--allow-burned-in", action="store_true",
                   help="also export objects that may carry burned-in annotation (listed in the report)")
    p.add_argument("--config", metavar="FILE", help="TOML configuration: its [deidentify] projects")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("ls", parents=[common], help="list patients, studies, series or instances")
    p.add_argument("what", nargs="?", default="studies", choices=list(LS_COLUMNS))
    p.add_argument("--patient-id")
    p.add_argument("--study", metavar="UID")
    p.add_argument("--json", action="store_true", help="one JSON array of objects keyed by DICOM keywords")
    p.set_defaults(func=cmd_ls)

    p = sub.add_parser("verify", parents=[common], help="re-read every blob of every tier and check its hash")
    p.add_argument("--json", action="store_true")
    p.add_argument("--remote-rate", type=float, metavar="MB_S",
                   help="read object-store tiers at most this fast (MB/s; default: unlimited)")
    p.add_argument("--local-only", action="store_true", help="skip the object-store tiers")
    p.add_argument("--config", metavar="FILE", help="TOML configuration: its [tiering] verify_rate")
    add_heal_arguments(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("stats", parents=[common], help="objects, bytes, compression, tiers")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)

    p = sub.add_parser("delete", parents=[common], help="delete a study/series/instance and reclaim space")
    _add_level_args(p)
    p.set_defaults(func=cmd_delete)

    p = sub.add_parser("compact", parents=[common], help="rewrite volumes whose garbage passed a threshold")
    p.add_argument("--threshold", type=float, default=0.25)
    p.set_defaults(func=cmd_compact)

    p = sub.add_parser("serve", help="run the DIMSE SCP until SIGTERM/SIGINT")
    # No defaults here: an option given on the command line overrides the config file, an
    # option not given leaves the file's value (or the built-in default).
    p.add_argument("--data", metavar="DIR", help=f"data directory (default: {DEFAULT_DATA_DIR})")
    p.add_argument("--config", metavar="FILE", help="TOML configuration (see README)")
    p.add_argument("--ae", metavar="TITLE", help="our AE title (default: DICOMVAULT)")
    p.add_argument("--host", metavar="ADDR", help="listen address (default: 127.0.0.1)")
    p.add_argument("--dimse-port", type=int, metavar="N", help="DIMSE port (default: 11112)")
    p.add_argument("--accept-unknown-callers", action="store_true",
                   help="let any calling AE in, with every service (a lab or a benchmark; a hospital "
                        "admits its nodes with `dicomvault peers add`)")
    p.add_argument(
        "--shutdown-timeout",
        type=float,
        default=30.0,
        metavar="SECONDS",
        help="on SIGTERM, wait this long for active associations (default: %(default)s)",
    )
    p.add_argument("--hl7-port", type=int, metavar="N",
                   help="HL7 v2 MLLP port, 0 = off (default: [hl7] port, else 2575)")
    add_serve_site_arguments(p)
    p.set_defaults(func=cmd_serve)

    add_replication_commands(sub, common, add_site_arguments=add_site_arguments, run_site=_run_replica_site,
                             forward_tls=_forward_tls, forward_ae=_forward_ae)
    add_users_commands(sub, common)
    add_peers_commands(sub, common)
    add_worklist_commands(sub, common)
    add_patient_commands(sub, common)
    add_jobs_commands(sub, common, _analysis_settings)
    add_audit_commands(sub, common)
    add_shares_commands(sub, common)
    add_rejected_commands(sub, common)
    add_dr_commands(sub, common)
    add_bench_commands(sub, common)
    add_scu_commands(sub, common)
    add_tier_commands(sub, str(DEFAULT_DATA_DIR))
    return parser


def _forward_tls(config_path: str | None) -> Any:
    """Our DICOM TLS client context, from the [dimse] TLS files of the configuration."""
    from .config import load_config
    from .dimse.tls import client_context

    return client_context(load_config(config_path).dimse)


def _forward_ae(title: str) -> Any:
    """The AE `forward run` associates from: ours (dimse/association.py)."""
    from .dimse.association import requestor_ae

    return requestor_ae(title)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        return args.func(args)
    except DicomVaultError as exc:
        print(f"dicomvault {args.command}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
