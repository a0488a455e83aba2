"""`python -m dicomvault.web --data DIR [--http-port N] ...`: a site without the DIMSE SCP (the
engine, the replication feed, admin endpoints, optionally replicating from an upstream)."""

from __future__ import annotations

import argparse
import logging
import sys

from ..errors import DicomVaultError
from .site import add_site_arguments, options_from_args, run_site


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m dicomvault.web", description=__doc__)
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("-v", "--verbose", action="store_true")
    add_site_arguments(p, replica=False)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return run_site(args.data, options_from_args(args))
    except DicomVaultError as exc:
        print(f"dicomvault site: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
