"""Consistent backup while ingest continues, and restore.

Order is what makes it consistent: the RocksDB checkpoint first, then the blob volumes. A blob is
durable before the index names it and volumes are append-only, so every blob the checkpoint names
is already in a volume when we copy it. The one thing that moves bytes is compaction (it rewrites
live records into a new volume and removes the old one); rather than pausing it we check the
result: every blob the checkpointed index names must be readable in the copy, and any that is not
(its volume was compacted away mid-copy) is copied from the live store by hash, verified on write.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ..engine import Engine
from ..errors import DicomVaultError
from ..index import Index
from ..replication import state
from ..storage.layout import LAYOUT_FILE, store_layout

MANIFEST = "BACKUP.json"


@dataclass
class BackupReport:
    path: str
    objects: int = 0
    last_seq: int = 0
    blobs: int = 0
    bytes_copied: int = 0
    refetched: int = 0
    seconds: float = 0.0
    verified: bool = False
    damaged: list[str] = field(default_factory=list)

    @property
    def mb_per_s(self) -> float:
        return self.bytes_copied / 1e6 / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, object]:
        return {**asdict(self), "mb_per_s": round(self.mb_per_s, 1)}


def _copy_volumes(src: Path, dst: Path) -> int:
    """Copies volume and hint files present now, of every lane (`lane-k/`, core/src/store/lanes.rs);
    one that vanishes (compacted) is skipped."""
    dst.mkdir(parents=True, exist_ok=True)
    copied = 0
    for f in sorted(src.iterdir()):
        if f.is_dir() and f.name.startswith("lane-"):
            copied += _copy_volumes(f, dst / f.name)
            continue
        if not f.is_file():
            continue
        try:
            shutil.copyfile(f, dst / f.name)
            copied += (dst / f.name).stat().st_size
        except FileNotFoundError:
            continue
    return copied


def _copy_tiers(engine: Engine, out: Path) -> int:
    """Copies every local tier's volumes and writes the layout the copy opens with (a tier kept
    outside the data directory lands inside the copy). Object-store tiers are not copied: the
    backup names their packs, which the store keeps (it is its own replicated storage)."""
    copied = 0
    tiers = []
    for t in engine.tiers:
        if t.is_local:
            inside = not Path(t.path or "").is_absolute()
            rel = t.path if inside else f"tier-{t.name}"
            copied += _copy_volumes(engine.data_dir / "blobs" / (t.path or ""), out / "blobs" / (rel or ""))
            t = replace(t, path=rel)
        tiers.append(t)
    store_layout(out, tuple(tiers))
    return copied


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirs, files in os.walk(root):
        for name in files:
            fd = os.open(os.path.join(dirpath, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fd = os.open(dirpath, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _refetch(engine: Engine, copy: Engine, missing: list[bytes], out: Path, copied: int) -> tuple[int, int]:
    """Copies blobs the copied volumes lack from the live store. A blob the live store no longer
    has was released by a delete after the checkpoint: the backup then drops the instances naming
    it, i.e. it records that delete too and stays a consistent state of the archive."""
    gone: set[bytes] = set()
    fetched = 0
    for h in missing:
        try:
            item = (h, *engine.read_stored(h))
        except DicomVaultError:
            gone.add(h)
            continue
        res = copy.vault.put_stored([item])[0]
        if isinstance(res, Exception):
            raise DicomVaultError(f"backup {out}: blob {h.hex()} failed to copy: {res}")
        fetched += 1
        copied += len(item[3])
    if gone:
        for rec in list(copy.index.instances()):
            if rec.hash not in gone:
                continue
            live = engine.index.get_instance(rec.sop_uid)
            if live is not None and live.hash == rec.hash:
                raise DicomVaultError(f"backup {out}: blob {rec.hash.hex()} of instance {rec.sop_uid} "
                                      "is unreadable in the live store; run verify")
            copy.index.delete("instance", rec.sop_uid)
    return fetched, copied


def backup(engine: Engine, dest: str | os.PathLike[str], *, verify: bool = False) -> BackupReport:
    """Writes a restorable copy of `engine`'s data directory into `dest` (must not exist)."""
    out = Path(dest)
    if out.exists() and any(out.iterdir()):
        raise DicomVaultError(f"backup target {out} exists and is not empty")
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    engine.index.checkpoint(out / "index")
    report = BackupReport(path=str(out))
    report.bytes_copied = _copy_tiers(engine, out)
    with Engine(out, min_free_bytes=0) as copy:
        st = copy.index.stats()
        report.objects, report.last_seq = st["objects"], st["last_seq"]
        missing = [h for h, b in copy.index.blobs()
                   if not copy.vault.contains(h) and b.tier not in copy.remote_tiers]
        report.blobs = st["blobs"]
        if missing:
            report.refetched, report.bytes_copied = _refetch(engine, copy, missing, out,
                                                             report.bytes_copied)
        if verify:
            v = copy.verify()
            report.verified = v.clean
            report.damaged = [h for h, _ in v.damaged] + v.missing
    (out / "blobs" / "LOCK").unlink(missing_ok=True)
    (out / MANIFEST).write_text(json.dumps({
        "created_at": time.time(), "source": str(engine.data_dir.resolve()),
        "objects": report.objects, "last_seq": report.last_seq,
        "feed_id": state.feed_id(engine.index, create=False)}, indent=1))
    _fsync_tree(out)
    report.seconds = time.perf_counter() - t0
    return report


def restore(src: str | os.PathLike[str], data_dir: str | os.PathLike[str], *,
            verify: bool = True) -> BackupReport:
    """Restores a backup into `data_dir` (must not exist or be empty); verifies it by default.

    The restored site gets a new feed id: its feed may repeat seqs its replicas already saw
    (everything after the backup is gone), so they must replay rather than trust their cursors.
    """
    source, target = Path(src), Path(data_dir)
    if not (source / MANIFEST).exists() or not (source / "index" / "CURRENT").exists():
        raise DicomVaultError(f"{source} is not a dicomvault backup (no {MANIFEST} or index)")
    if target.exists() and any(target.iterdir()):
        raise DicomVaultError(f"restore target {target} exists and is not empty")
    t0 = time.perf_counter()
    target.mkdir(parents=True, exist_ok=True)
    shutil.copytree(source / "index", target / "index")
    report = BackupReport(path=str(target))
    report.bytes_copied = 0
    for d in sorted((source / "blobs").iterdir()):
        if d.is_dir():
            report.bytes_copied += _copy_volumes(d, target / "blobs" / d.name)
    if (source / LAYOUT_FILE).exists():
        shutil.copyfile(source / LAYOUT_FILE, target / LAYOUT_FILE)
        os.chmod(target / LAYOUT_FILE, 0o600)
    _fsync_tree(target)
    with Index.open(target / "index") as idx:
        state.new_feed_id(idx)
    with Engine(target) as eng:
        st = eng.index.stats()
        report.objects, report.last_seq, report.blobs = st["objects"], st["last_seq"], st["blobs"]
        if verify:
            v = eng.verify()
            report.verified = v.clean
            report.damaged = [h for h, _ in v.damaged] + v.missing
    report.seconds = time.perf_counter() - t0
    return report
