"""Plain-text output shared by the CLI commands: the files named on a command line, and tables."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any


def walk_paths(paths: Iterable[str | os.PathLike[str]]) -> Iterator[tuple[Path, bool]]:
    """(path, named) for every file under the given paths, folders recursively in sorted order;
    `named` is True for a file given on the command line itself (its failures are errors, while
    a non-DICOM file met inside a folder is only skipped). A missing path raises
    FileNotFoundError naming it."""
    for p in paths:
        path = Path(p)
        if path.is_dir():
            for root, dirs, files in os.walk(path):
                dirs.sort()
                for name in sorted(files):
                    yield Path(root) / name, False
        elif path.exists():
            yield path, True
        else:
            raise FileNotFoundError(f"no such file or directory: {path}")


def cell(v: Any) -> str:
    """A value as a table cell: multi-valued as DICOM writes them (backslash-separated)."""
    if v is None:
        return ""
    if isinstance(v, list | tuple):
        return "\\".join(cell(x) for x in v)
    if isinstance(v, dict):
        return json.dumps(v)
    return str(v)


def print_table(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> None:
    """Left-aligned columns sized to their widest cell, header first."""
    table = [[cell(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c)] + [len(t[i]) for t in table]) for i, c in enumerate(columns)]
    print("  ".join(c.ljust(w) for c, w in zip(columns, widths, strict=True)))
    for t in table:
        print("  ".join(v.ljust(w) for v, w in zip(t, widths, strict=True)))
