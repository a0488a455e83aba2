"""The free-space reserve: what every write leaves free on each filesystem holding a local tier
(the check itself is native, core::store::Reserve and check_free_space).

Why a reserve: the index beside the blobs must always be able to commit what the store accepted
(RocksDB turns read-only after a failed WAL write or flush) and an operator must be able to run
deletes to get out of a full disk. Why it scales: what it must hold grows with the archive, while
a fixed reserve sized for a large disk (it was 64 MiB) leaves a small volume nothing to store.

```toml
[storage]
reserve_min = "16MB"       # never less than this free ...
reserve_fraction = 0.02    # ... else this share of the filesystem's size ...
reserve_max = "4GB"        # ... capped at this
```
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .read_check import KEYS as READ_CHECK_KEYS
from .settings import SettingsError, parse_size

# [storage] keys of this module; verify_reads is read_check.py's
_KEYS = {"reserve_min", "reserve_fraction", "reserve_max"}


@dataclass(frozen=True)
class Reserve:
    """`fraction` of the filesystem's size, at least `floor`, at most `ceiling` bytes (the floor
    wins if they cross)."""

    floor: int = 16 << 20
    fraction: float = 0.02
    ceiling: int = 4 << 30

    @classmethod
    def fixed(cls, nbytes: int) -> Reserve:
        return cls(nbytes, 0.0, nbytes)

    def bytes_for(self, fs_size: int) -> int:
        return max(self.floor, min(self.ceiling, int(fs_size * self.fraction)))


NONE = Reserve.fixed(0)


def parse_reserve(table: object, where: str) -> Reserve:
    """The `[storage]` table (absent: the defaults)."""
    if not isinstance(table, dict):
        raise SettingsError(f"{where}: [storage] must be a table")
    extra = sorted(set(table) - _KEYS - READ_CHECK_KEYS)
    if extra:
        allowed = ", ".join(sorted(_KEYS | READ_CHECK_KEYS))
        raise SettingsError(f"{where}: unknown key(s) {', '.join(extra)} (allowed: {allowed})")
    d = Reserve()
    fraction: Any = table.get("reserve_fraction", d.fraction)
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 <= fraction <= 0.5:
        raise SettingsError(
            f"{where}.reserve_fraction: a share of the filesystem from 0 to 0.5, got {fraction!r}"
        )
    floor = parse_size(table.get("reserve_min", d.floor), f"{where}.reserve_min")
    ceiling = parse_size(table.get("reserve_max", max(d.ceiling, floor)), f"{where}.reserve_max")
    if ceiling < floor:
        raise SettingsError(f"{where}: reserve_max ({ceiling} bytes) is below reserve_min ({floor} bytes)")
    return Reserve(floor, float(fraction), ceiling)
