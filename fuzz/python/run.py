"""Runs one Python fuzz target under atheris (libFuzzer, coverage-guided).

    python fuzz/python/run.py TARGET [libFuzzer options...] [corpus dirs...]
    python fuzz/python/run.py TARGET --write-seeds DIR

The target's seeds are written to fuzz/python/seeds/TARGET/ (built from real inputs every run,
so they follow the test files) and passed to libFuzzer after the given corpus directories.
Only the archive's own modules are instrumented: coverage of pydicom, Starlette or tomllib does not
steer the mutations, which keeps executions fast and the search on our code. `make fuzz` runs
every target; a failing input is written where -artifact_prefix says (see the Makefile).

libFuzzer ends the process without running Python's exit handlers, so the scratch data
directories the targets make are left in TMPDIR: point it at a directory to remove afterwards.
"""

from __future__ import annotations

import hashlib
import os
import sys
import traceback
import warnings
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def write_seeds(target: object, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    n = 0
    for seed in target.seeds():  # type: ignore[attr-defined]
        (out / hashlib.sha1(seed).hexdigest()).write_bytes(seed)
        n += 1
    return n


def _aborting(one_input: Callable[[bytes], None]) -> Callable[[bytes], None]:
    """A finding aborts the process: libFuzzer's SIGABRT handler writes the input at once. Left to
    atheris, an exception exits through the C atexit handlers, and those of a target with a RocksDB
    index and worker threads open can hang until the timeout kills the process unrecorded."""

    def run(data: bytes) -> None:
        try:
            one_input(data)
        except Exception:
            traceback.print_exc()
            sys.stderr.flush()
            os.abort()

    return run


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    name = argv[1]
    import atheris

    # pydicom warns about every odd file; mutated ones are all odd.
    warnings.simplefilter("ignore")

    from targets import TARGETS

    if name not in TARGETS:
        raise SystemExit(f"unknown fuzz target {name!r}; one of {', '.join(TARGETS)}")
    with atheris.instrument_imports(include=["dicomvault", "targets"]):
        target = __import__(f"targets.{name}", fromlist=["one_input"])
    if len(argv) == 4 and argv[2] == "--write-seeds":
        print(f"{name}: {write_seeds(target, Path(argv[3]))} seeds in {argv[3]}")
        return
    seeds = HERE / "seeds" / name
    write_seeds(target, seeds)
    # libFuzzer writes new inputs to the first directory and reads the others: the seeds go last.
    args = [argv[0], *argv[2:], str(seeds)]
    atheris.Setup(args, _aborting(target.one_input))
    atheris.Fuzz()


if __name__ == "__main__":
    main(sys.argv)
