"""The tier layout of a data directory, kept in `<data>/tiers.json`.

Why it is stored beside the data and not only in the config file: which tiers exist decides
where blobs can be found. A command run without `--config` (`ls`, `export`, `verify`, a DR
tool) must still see the landing tier's objects and reach the object store, and a config that
drops a tier still holding blobs must be refused, not silently lose them from view.

`resolve(data_dir, configured)`: the layout to open with. No stored layout: the configured one
(or the default) is stored. A stored layout and a configured one: the configured one wins if it
keeps every local tier of the stored layout that still holds volumes (renaming or removing a
tier is a migration: move its studies away first); S3 tiers may change endpoint or credentials.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import DicomVaultError
from .settings import TierSpec, default_settings

LAYOUT_FILE = "tiers.json"


class LayoutError(DicomVaultError):
    """The configured tiers cannot open this data directory (the message says why)."""


def _load(path: Path) -> tuple[TierSpec, ...] | None:
    try:
        doc = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise LayoutError(f"cannot read the tier layout {path}: {exc}") from exc
    fields = {f.name for f in dataclasses.fields(TierSpec)}
    try:
        return tuple(TierSpec(**{k: v for k, v in t.items() if k in fields}) for t in doc["tiers"])
    except (KeyError, TypeError) as exc:
        raise LayoutError(f"tier layout {path} is malformed: {exc}") from exc


def store_layout(data_dir: Path, tiers: Sequence[TierSpec]) -> None:
    """Writes `<data_dir>/tiers.json` (atomically, mode 0600)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    path = data_dir / LAYOUT_FILE
    tmp = path.with_suffix(".tmp")
    # Credentials of an S3 tier may be in it: readable by the archive's user only.
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"tiers": [dataclasses.asdict(t) for t in tiers]}, f, indent=2)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _has_volumes(blobs: Path, tier: TierSpec) -> bool:
    d = blobs / (tier.path or "")
    # Every lane's volumes (core/src/store/lanes.rs: lane k writes in `lane-k/`).
    return d.is_dir() and any(p.stat().st_size > 0 for p in (*d.glob("*.dat"), *d.glob("lane-*/*.dat")))


def resolve(data_dir: Path, configured: Sequence[TierSpec] | None, *, write: bool) -> tuple[TierSpec, ...]:
    path = data_dir / LAYOUT_FILE
    stored = _load(path)
    if configured is None:
        if stored is not None:
            return stored
        # A data directory from before tiers keeps its blobs in volumes/, the default warm
        # tier's path: it opens unchanged, with a landing tier in front.
        tiers = default_settings().tiers
    else:
        tiers = tuple(configured)
    if stored is not None and configured is not None:
        names = {t.name: t for t in tiers}
        blobs = data_dir / "blobs"
        for old in stored:
            new = names.get(old.name)
            if old.is_local and _has_volumes(blobs, old) and (new is None or new.path != old.path):
                raise LayoutError(
                    f"tier {old.name!r} ({blobs / (old.path or '')}) still holds blobs but the "
                    f"configuration {'drops it' if new is None else 'moves it'}: move its studies "
                    "to another tier first (dicomvault tier move), or keep it in the config"
                )
            if not old.is_local and (new is None or new.is_local):
                raise LayoutError(
                    f"object-store tier {old.name!r} is in this data directory's layout but not in "
                    "the configuration: its blobs would be unreachable"
                )
    if write and tiers != stored:
        store_layout(data_dir, tiers)
    return tiers
