"""The one facade the rest of Python calls: store, read, export, delete, verify.

Data path of a store: native core (parse, hash, compress, durable append; GIL released) →
index commit (one atomic batch, group-synced WAL) → acknowledge. The blob is durable before the
index names it, so a crash between the two leaves at most an unreferenced blob, never an index
entry without bytes.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _native  # type: ignore[attr-defined]
from .attributes import decode_attrs
from .errors import DicomVaultError, RejectedError, UIDMismatchError, UnknownObjectError
from .filemeta import file_meta_prefix
from .index import Change, Index, InstanceRecord
from .locks import ReadWriteLock

DEFAULT_DATA_DIR = Path("./dicomvault-data")
HOT_TIER = "hot"
LEVELS = ("study", "series", "instance")


@dataclass(frozen=True)
class StoreOutcome:
    """What happened to one object that was accepted."""

    sop_instance_uid: str
    study_instance_uid: str
    sop_class_uid: str
    hash: bytes
    logical_len: int
    stored_len: int
    duplicate: bool
    replaced: bool = False


@dataclass
class VerifyReport:
    checked: int = 0
    ok: int = 0
    bytes: int = 0
    damaged: list[tuple[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unreferenced: int = 0

    @property
    def clean(self) -> bool:
        return not self.damaged and not self.missing


class Engine:
    """An open data directory: `<data>/blobs` (native blob store) + `<data>/index` (RocksDB).

    A writable engine holds the directory's lock (taken by the blob store); a read-only one takes
    no lock and can run beside a writer (CLI `ls`, `stats`, `export`, `verify`).
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
        *,
        read_only: bool = False,
        sync: bool = True,
        level: int = 1,
        volume_size: int = 1 << 30,
        min_free_bytes: int = 64 << 20,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.min_free_bytes = min_free_bytes
        self.read_only = read_only
        if read_only:
            if not (self.data_dir / "index").exists():
                raise DicomVaultError(f"no dicomvault data directory at {self.data_dir}")
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        # The blob store first: it takes the directory lock, so a second writer fails here
        # with a clear error before touching the index.
        self.vault = _native.Vault(
            str(self.data_dir / "blobs"),
            read_only=read_only,
            sync=sync,
            level=level,
            volume_size=volume_size,
            # The reserve keeps room for the index to commit what the blob store accepted
            # (RocksDB turns read-only after a failed WAL write) and for deletes to run.
            min_free_bytes=0 if read_only else min_free_bytes,
        )
        try:
            self.index = Index.open(str(self.data_dir / "index"), read_only=read_only)
        except BaseException:
            self.vault.close()
            raise
        self._lock = ReadWriteLock()

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self.index.close()
        self.vault.close()

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- store -----------------------------------------------------------------------------------
    def _record(
        self, native: dict[str, Any], prefix: bytes | None, source_ae: str | None = None
    ) -> dict[str, Any]:
        """Index record of a stored object; prefix None = arrived without file meta, so one is
        made now (once, at receive time, so every later export gives the same bytes)."""
        attrs = decode_attrs(native["attrs"])
        for key in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID"):
            if not attrs.get(key):
                raise RejectedError(f"missing {key}")
        if prefix is None:
            prefix = file_meta_prefix(
                attrs.get("SOPClassUID", ""), attrs["SOPInstanceUID"], native["transfer_syntax"], source_ae
            )
        return {
            "attrs": attrs,
            "hash": native["hash"],
            "prefix": prefix,
            "transfer_syntax": native["transfer_syntax"],
            "logical_len": native["logical_len"],
            "stored_len": native["stored_len"],
            "codec": native["codec"],
            "tier": HOT_TIER,
            "received_at": time.time(),
        }

    def _commit(self, records: list[dict[str, Any]]) -> list[StoreOutcome]:
        results = self.index.add_instances(records)
        released: list[bytes] = []
        outcomes = []
        for rec, res in zip(records, results, strict=True):
            released.extend(res.released_blobs)
            attrs = rec["attrs"]
            outcomes.append(
                StoreOutcome(
                    sop_instance_uid=str(attrs["SOPInstanceUID"]),
                    study_instance_uid=str(attrs["StudyInstanceUID"]),
                    sop_class_uid=str(attrs.get("SOPClassUID", "")),
                    hash=rec["hash"],
                    logical_len=rec["logical_len"],
                    stored_len=rec["stored_len"],
                    duplicate=res.duplicate,
                    replaced=res.replaced,
                )
            )
        if released:
            self.vault.delete(released)
        return outcomes

    def store_files(self, paths: Sequence[str | os.PathLike[str]]) -> list[StoreOutcome | Exception]:
        """Stores files (Part-10 or bare datasets); one result per path, in order.

        A rejected file yields its exception in its slot and stores nothing; the others go on.
        """
        return self._store_batch(lambda: self.vault.ingest_files([os.fspath(p) for p in paths]))

    def store_buffers(self, buffers: Sequence[bytes]) -> list[StoreOutcome | Exception]:
        """Like store_files, for Part-10 files already in memory (STOW-RS bodies, generators)."""
        return self._store_batch(lambda: self.vault.ingest_buffers(list(buffers)))

    def _store_batch(self, ingest: Callable[[], list[Any]]) -> list[StoreOutcome | Exception]:
        with self._lock.shared():
            natives = ingest()
            results: list[StoreOutcome | Exception] = list(natives)
            records, slots = [], []
            for i, native in enumerate(natives):
                if isinstance(native, Exception):
                    continue
                try:
                    records.append(self._record(native, bytes(native["prefix"])))
                    slots.append(i)
                except DicomVaultError as exc:
                    results[i] = exc
            if records:
                for i, outcome in zip(slots, self._commit(records), strict=True):
                    results[i] = outcome
            return results

    def store_dataset(
        self,
        dataset: bytes | _native.ReceivedDataSet,
        transfer_syntax: str,
        *,
        expected_sop_instance_uid: str | None = None,
        expected_sop_class_uid: str | None = None,
        calling_ae: str | None = None,
    ) -> StoreOutcome:
        """Stores one dataset received without file meta (DIMSE C-STORE, STOW-RS).

        With `expected_*` (the C-STORE request's Affected SOP Instance/Class UID), a dataset that
        says otherwise is refused with `UIDMismatchError` before the index names it, so a sender
        told "failed" never finds the object archived anyway.

        A `ReceivedDataSet` (the DIMSE reader's, see dimse/fastpath.py) is consumed without a copy.
        """
        with self._lock.shared():
            if isinstance(dataset, _native.ReceivedDataSet):
                native = self.vault.ingest_received(dataset, transfer_syntax)
            else:
                native = self.vault.ingest_dataset(dataset, transfer_syntax)
            record = self._record(native, None, calling_ae)
            for key, expected in (
                ("SOPInstanceUID", expected_sop_instance_uid),
                ("SOPClassUID", expected_sop_class_uid),
            ):
                found = record["attrs"].get(key, "")
                if expected is not None and found != expected.rstrip("\0 "):
                    raise UIDMismatchError(f"request names {key} {expected}, the dataset holds {found!r}")
            return self._commit([record])[0]

    def apply_replicated(
        self, items: Sequence[tuple[Change, Mapping[str, Any] | None]], meta: Mapping[bytes, bytes]
    ) -> None:
        """Applies a page of an upstream's change feed (whose blobs are already stored) and the
        replication cursor in one index batch, then frees blobs nothing references any more.

        Under the shared lock: a delete or compaction never runs between the blob puts of the
        page and the index commit that names them."""
        with self._lock.shared():
            released = self.index.apply_replicated(items, meta)
            if released:
                self.vault.delete(released)

    def replace_blob(self, blob_hash: bytes, codec: int, logical_len: int, stored: bytes) -> bool | Exception:
        """Swaps a damaged or missing blob for a good copy (heal). The copy is decoded and its
        BLAKE3 checked before it is written; returns True or the exception that refused it.

        Exclusive: nobody reads or dedups against the blob while the damaged record is dropped."""
        with self._lock.exclusive():
            # The damaged record still counts as present: drop it first so the good copy is written.
            if self.vault.contains(blob_hash):
                self.vault.delete([blob_hash])
            res = self.vault.put_stored([(blob_hash, codec, logical_len, stored)])[0]
            return res if isinstance(res, Exception) else True

    # -- read ------------------------------------------------------------------------------------
    def instances(self, level: str, uid: str) -> list[InstanceRecord]:
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        found = list(self.index.instances_of(level, uid))
        if not found:
            raise UnknownObjectError(level, uid)
        return found

    def instance(self, sop_instance_uid: str) -> InstanceRecord | None:
        """The index record of one instance, or None."""
        return self.index.get_instance(sop_instance_uid)

    def read_dataset(self, sop_instance_uid: str) -> tuple[str, bytes]:
        """(transfer syntax UID, dataset bytes as received), hash-verified."""
        _, ts, dataset = self.read_instance(sop_instance_uid)
        return ts, dataset

    def read_record(self, rec: InstanceRecord) -> tuple[str, bytes]:
        """(transfer syntax UID, dataset bytes) of an index record the caller already holds
        (a retrieve that listed a study), hash-verified, without looking the record up again."""
        return self.vault.read(rec.hash)

    @staticmethod
    def dataset_length(rec: InstanceRecord) -> int:
        """Length of the dataset bytes `read_record(rec)` returns, known before reading: the
        record's logical length counts the canonical form, `transfer syntax UID + NUL + dataset`
        (core/src/object.rs), so a retrieve can announce its Content-Length up front."""
        return rec.logical_len - len(rec.transfer_syntax.encode("ascii")) - 1

    def read_instance(self, sop_instance_uid: str) -> tuple[InstanceRecord, str, bytes]:
        """(index record, transfer syntax UID, dataset bytes as received), hash-verified."""
        rec = self.index.get_instance(sop_instance_uid)
        if rec is None:
            raise UnknownObjectError("instance", sop_instance_uid)
        ts, dataset = self.vault.read(rec.hash)
        return rec, ts, dataset

    def read_file(self, sop_instance_uid: str) -> bytes:
        """The object as a Part-10 file (byte-identical to the ingested file, if it came as one)."""
        rec = self.index.get_instance(sop_instance_uid)
        if rec is None:
            raise UnknownObjectError("instance", sop_instance_uid)
        _, dataset = self.vault.read(rec.hash)
        return rec.prefix + dataset

    def export(self, level: str, uid: str, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Writes `<out>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm` for every instance under uid."""
        out = Path(out_dir)
        items, paths = [], []
        for rec in self.instances(level, uid):
            path = out / rec.study_uid / rec.series_uid / f"{rec.sop_uid}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            items.append((rec.hash, rec.prefix, str(path)))
            paths.append(path)
        errors = [e for e in self.vault.export_files(items) if e is not None]
        if errors:
            raise errors[0]
        return paths

    # -- delete / maintenance --------------------------------------------------------------------
    def delete(self, level: str, uid: str, *, compact_threshold: float = 0.25) -> int:
        """Deletes everything under uid; frees blobs no other instance references and compacts
        volumes whose garbage passed the threshold. Returns the number of instances deleted."""
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        with self._lock.exclusive():
            res = self.index.delete(level, uid)
            if res.released_blobs:
                self.vault.delete(list(res.released_blobs))
            self.vault.compact(compact_threshold)
            return len(res.deleted)

    def compact(self, threshold: float = 0.25) -> dict[str, Any]:
        with self._lock.exclusive():
            return self.vault.compact(threshold)

    def verify(self) -> VerifyReport:
        """Re-reads every blob, checks its hash, and checks the index names no missing blob."""
        native = self.vault.verify()
        report = VerifyReport(
            checked=native["checked"],
            ok=native["ok"],
            bytes=native["bytes"],
            damaged=[(h.hex(), msg) for h, msg in native["damaged"]],
        )
        present = set(self.vault.hashes())
        referenced = 0
        for h, _rec in self.index.blobs():
            referenced += 1
            if h not in present:
                report.missing.append(h.hex())
        report.unreferenced = max(0, len(present) - (referenced - len(report.missing)))
        return report

    def stats(self) -> dict[str, Any]:
        idx = dict(self.index.stats())
        tiers = {HOT_TIER: self.vault.stats()}
        logical = int(idx.get("logical_bytes", 0))
        stored = int(idx.get("stored_bytes", 0))
        idx["compression_ratio"] = round(logical / stored, 3) if stored else None
        idx["tiers"] = tiers
        return idx

    def ls(
        self,
        what: str,
        *,
        patient_id: str | None = None,
        study: str | None = None,
        columns: Iterable[str] = (),
    ) -> Iterable[dict[str, Any]]:
        """Rows for `dicomvault ls`: patients, studies, series or instances, as keyword dicts
        holding `columns` (a C-FIND with those as universal return keys) and the filters."""
        query: dict[str, str] = dict.fromkeys(columns, "")
        if patient_id is not None:
            query["PatientID"] = patient_id
        if study is not None:
            query["StudyInstanceUID"] = study
        level = {"patients": "PATIENT", "studies": "STUDY", "series": "SERIES", "instances": "IMAGE"}[what]
        return self.index.find(level, query)
