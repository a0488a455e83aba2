"""`dicomvault bench` and `dicomvault bench compare`: `add_commands` registers them on the main
CLI's subparsers (python/dicomvault/cli.py); `python -m dicomvault.bench` runs them standalone."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .workloads import WORKLOADS


def _cmd_bench(args: argparse.Namespace) -> int:
    if args.bench_command == "compare":
        from .compare import compare_files

        print(compare_files(Path(args.a), Path(args.b)))
        return 0
    if args.target is None:
        args.parser.error("--target DIR or --target s3://BUCKET is required")
    from .report_text import summary
    from .runner import PHASES, BenchConfig, run

    cfg = BenchConfig(
        target=args.target,
        workload=args.workload,
        duration=args.duration,
        size_gb=args.size,
        seed=args.seed,
        threads=args.threads,
        phases=[p.strip() for p in args.phases.split(",") if p.strip()] if args.phases else list(PHASES),
        scale=args.scale,
        phase_seconds=args.phase_seconds,
        keep=args.keep,
        progress=args.progress if args.progress is not None else sys.stderr.isatty(),
        dimse=args.dimse,
        associations=args.associations,
        endpoint=args.endpoint,
        sse=args.sse,
    )
    result = run(cfg)
    print(summary(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    if args.html:
        from .report_html import render

        Path(args.html).write_text(render(result), encoding="utf-8")
    return 0


def _positive(kind: type[float] | type[int]):  # type: ignore[no-untyped-def]
    def parse(text: str) -> float | int:
        v = kind(text)
        if v <= 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return v

    return parse


def add_commands(
    subparsers: argparse._SubParsersAction, common: argparse.ArgumentParser | None = None
) -> None:
    """Registers `bench` (and its `compare` subcommand). `common` is the main CLI's parent parser
    (--data); bench ignores --data: it works in a fresh directory under --target."""
    parents = [common] if common is not None else []
    p = subparsers.add_parser(
        "bench",
        parents=parents,
        help="benchmark a storage device or an object store with a synthetic PACS workload",
        description="Runs the real engine on --target with a synthetic modality workload and measures the "
        "device's own limits in the same run; with --target s3://BUCKET, measures an S3-compatible "
        "store's PUT/GET/ranged-read limits with the same workload; see docs/bench.md.",
    )
    p.set_defaults(func=_cmd_bench, bench_command=None, parser=p)
    p.add_argument(
        "--target",
        metavar="DIR|s3://BUCKET[/PREFIX]",
        help="directory on the device under test, or a bucket of an S3-compatible store (a fresh "
        "subdirectory or key prefix is used and removed afterwards)",
    )
    p.add_argument(
        "--endpoint",
        metavar="URL",
        help="S3 endpoint of an s3:// target, e.g. http://127.0.0.1:8333 (default: AWS_ENDPOINT_URL, "
        "else AWS); credentials and region come from the AWS environment variables",
    )
    p.add_argument(
        "--sse",
        choices=("AES256", "aws:kms"),
        help="server-side encryption of the objects an s3:// target writes",
    )
    p.add_argument("--workload", choices=WORKLOADS, default="mixed", help="(default: %(default)s)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--duration", type=_positive(float), metavar="S", help="ingest for S seconds")
    g.add_argument("--size", type=_positive(float), metavar="GB", help="ingest GB (10^9 bytes; default 1)")
    p.add_argument("--seed", type=int, default=0, help="workload seed (default: %(default)s)")
    p.add_argument(
        "--threads",
        type=_positive(int),
        default=4,
        metavar="N",
        help="engine ingest/query/retrieve threads (default: %(default)s)",
    )
    p.add_argument(
        "--phases",
        metavar="LIST",
        help="comma list of ingest,query,retrieve,scrub,dimse (default: all but dimse)",
    )
    p.add_argument("--json", metavar="FILE", help="write the result as JSON (fields: docs/bench.md)")
    p.add_argument("--html", metavar="FILE", help="write a self-contained HTML report with charts")
    p.add_argument(
        "--scale",
        type=_positive(float),
        default=1.0,
        metavar="F",
        help="multiply image sizes and series lengths by F (small for smoke tests; default 1)",
    )
    p.add_argument(
        "--phase-seconds",
        type=_positive(float),
        default=10.0,
        metavar="S",
        help="time cap of each device probe and of the query and retrieve phases (default: %(default)s)",
    )
    p.add_argument("--keep", action="store_true", help="keep the run's data directory under --target")
    p.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress line on stderr (default: when stderr is a terminal)",
    )
    p.add_argument(
        "--dimse",
        action="store_true",
        help="also ingest the same objects over DIMSE: dcmtk storescu into `dicomvault serve` on the target",
    )
    p.add_argument(
        "--associations",
        type=_positive(int),
        default=4,
        metavar="N",
        help="parallel storescu associations of the DIMSE phase (default: %(default)s)",
    )
    sub = p.add_subparsers(dest="bench_command")
    c = sub.add_parser("compare", help="per figure: A, B and B/A of two --json results")
    c.add_argument("a", metavar="A.json")
    c.add_argument("b", metavar="B.json")
    c.set_defaults(func=_cmd_bench)
