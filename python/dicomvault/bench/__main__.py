"""`python -m dicomvault.bench ...` = `dicomvault bench ...` (until the main CLI wires it)."""

from __future__ import annotations

import argparse
import sys

from ..errors import DicomVaultError
from .cli import add_commands


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="dicomvault")
    add_commands(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    try:
        return int(args.func(args))
    except DicomVaultError as exc:
        print(f"dicomvault bench: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
