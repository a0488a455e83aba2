"""The LD_PRELOAD shim of the I/O fault tests (iofault.c beside this file): compiled with gcc once
per run into a temporary directory, and the environment that arms it for a process."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

SOURCE = Path(__file__).with_name("iofault.c")
WRITES = "write,pwrite,pwrite64,writev,pwritev,pwritev64"
SYNCS = "fdatasync,fsync,sync_file_range"
READS = "read,pread,pread64,preadv,preadv64"


def build(out_dir: Path) -> Path | None:
    """The shim's .so, or None when there is no C compiler."""
    gcc = shutil.which("gcc") or shutil.which("cc")
    if gcc is None:
        return None
    lib = out_dir / "iofault.so"
    subprocess.run(
        [gcc, "-shared", "-fPIC", "-O2", "-Wall", "-Werror", "-o", str(lib), str(SOURCE), "-ldl"],
        check=True,
        capture_output=True,
        text=True,
    )
    return lib


def shim_env(
    lib: Path,
    *,
    path: str,
    ops: str,
    errno: str,
    arm: Path,
    log: Path,
    nth: int = 1,
    count: int = 0,
    prob: float | None = None,
    seed: int = 0,
) -> dict[str, str]:
    """Environment variables that load the shim: calls `ops` on files whose path contains `path`
    fail with `errno` while `arm` exists (from the `nth` armed call on, `count` of them, 0 =
    all; or each with probability `prob`); each failure is logged to `log`."""
    env = {
        "LD_PRELOAD": str(lib),
        "IOFAULT_PATH": path,
        "IOFAULT_OPS": ops,
        "IOFAULT_ERRNO": errno,
        "IOFAULT_ARM": str(arm),
        "IOFAULT_LOG": str(log),
        "IOFAULT_NTH": str(nth),
        "IOFAULT_COUNT": str(count),
        "IOFAULT_SEED": str(seed),
    }
    if prob is not None:
        env["IOFAULT_PROB"] = str(prob)
    return env


def injected(log: Path) -> list[str]:
    """The failures the shim injected so far ("<op> <path>" each)."""
    return log.read_text().splitlines() if log.exists() else []
