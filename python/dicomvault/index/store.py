"""The Index: patient/study/series/instance records, blob refcounts, secondary
indexes, change feed and stats in one RocksDB, written with group commits.

Thread-safety: any number of threads may call the write methods
(:meth:`Index.add_instance`, :meth:`Index.add_instances`, :meth:`Index.delete`)
concurrently.  The read-modify-write of shared records happens under one
write lock held only while building and writing the batch (``sync=False``);
the WAL sync that makes the batch durable is shared with the other writers
(see commit.py) and happens outside that lock.  A write method returns only
once its batch is durable.  Readers take no lock.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self, TypeVar

from rocksdict import Checkpoint, Rdict, WriteOptions

from .. import _native  # type: ignore[attr-defined]
from . import keys, secondary
from .commit import GroupCommitter
from .errors import (
    IndexClosedError,
    IndexFullError,
    IndexStoreError,
    InvalidInstanceError,
    NotFoundError,
    ReadOnlyIndexError,
)
from .feed import last_seq_on_disk, read_changes
from .patients import PatientCorrections
from .query import Planner, QueryStats, scan, scan_keys
from .record_cache import RecordCache
from .records import (
    DELETED,
    PATIENT_CHANGES,
    PATIENT_KEYWORDS,
    REJECTED,
    REPLACED,
    RESTORED,
    SERIES_KEYWORDS,
    STORED,
    STUDY_KEYWORDS,
    BlobRecord,
    Change,
    InstanceRecord,
    PatientRecord,
    SeriesRecord,
    Stats,
    StudyRecord,
    syntax_pair,
)
from .rejections import REJECTED_PREFIX, RejectedEntry, Rejection, entry_key
from .schema import (
    CF_BLOBS,
    CF_FEED,
    CF_IDX,
    CF_INSTANCES,
    CF_META,
    CF_PATIENTS,
    CF_SERIES,
    CF_STUDIES,
    COLUMN_FAMILIES,
    META_STATS,
    check_schema,
    open_db,
)
from .txn import PACK_META_PREFIX, Txn

T = TypeVar("T")
HASH_LEN = 32
_STUDY_LEVEL_KEYS = PATIENT_KEYWORDS | STUDY_KEYWORDS


@dataclass(frozen=True)
class Placement:
    """One blob's new place, for :meth:`Index.set_placements`."""

    hash: bytes
    from_tier: str
    to_tier: str
    codec: int
    stored_len: int
    pack_key: str = ""
    pack_offset: int = 0
    pack_digest: bytes = b""


@dataclass(slots=True)
class AddResult:
    """Outcome of indexing one instance.

    ``duplicate``: same SOP Instance UID and same hash already indexed (no-op).
    ``replaced``: same SOP Instance UID with a different hash; the new object
    replaced the old one ("keep newest") and ``old_hash`` names the old blob.
    ``released_blobs``: hashes whose refcount reached 0 (the engine may free them).
    ``new_blob``: this hash had no blob record before (first reference).
    """

    sop_uid: str
    duplicate: bool = False
    replaced: bool = False
    seq: int | None = None
    old_hash: bytes | None = None
    new_blob: bool = False
    released_blobs: list[bytes] = field(default_factory=list)


@dataclass(slots=True)
class DeleteResult:
    """Outcome of a delete: removed SOP UIDs, blobs whose refcount hit 0, feed seqs."""

    level: str
    uid: str
    deleted: list[str] = field(default_factory=list)
    released_blobs: list[bytes] = field(default_factory=list)
    first_seq: int | None = None
    last_seq: int | None = None


def _pick(attrs: Mapping[str, str], wanted: frozenset[str]) -> dict[str, str]:
    return {k: v for k, v in attrs.items() if k in wanted and v}


def _fill_missing(target: dict[str, str], attrs: Mapping[str, str], wanted: frozenset[str]) -> bool:
    """Copy attributes the record lacks (first non-empty value wins)."""
    present = attrs.keys() & wanted  # a set operation in C: most attributes are not wanted
    if present <= target.keys() and all(target.values()):
        # The usual case after a study's first object: nothing is missing. Checked in C; the
        # loop below cost ~2 µs per record level, three per store.
        return False
    changed = False
    for k in present:
        v = attrs[k]
        if v and not target.get(k):
            target[k] = v
            changed = True
    return changed


def _series_order(number: int | None, uid: str) -> tuple[bool, int, str]:
    """Series of a study in SeriesNumber order (unnumbered last), then by UID."""
    return number is None, number or 0, uid


class Index(PatientCorrections):
    """The dicomvault metadata index (see the package docstring for the layout)."""

    def __init__(self, path: str, db: Rdict, read_only: bool, secondary_path: str | None,
                 durable: bool) -> None:
        """Use :meth:`Index.open`."""
        self.path = path
        self.read_only = read_only or secondary_path is not None
        self._secondary_path = secondary_path
        self._durable = durable
        self._closed = False
        self._wlock = threading.Lock()
        # Packs of object-store tiers whose last live blob left (see drain_emptied_packs).
        self._emptied_packs: list[str] = []
        self._wopts = WriteOptions()
        self._wopts.sync = False
        self._attach_db(db)
        self._committer = GroupCommitter(self._sync_wal)
        self._committer.start_seq(self._stats.last_seq)
        self._planner = Planner(self._cfs, self._current_stats)
        # Whether any rejected entry exists: while none does (the common case), a store does
        # not look its SOP UID up in the rejected set.
        self._has_rejections = any(True for _ in self._rejected_items())
        # Likewise for patient merges: while none exists a new study does not look its
        # PatientID up among the merged ones.
        self._has_merges = self._any_merge()
        self._load_coerced()
        # IOCM policy for 113039 (retention expired): delete the referenced instances instead of
        # hiding them. The engine sets it from [iocm] delete_on_retention_expired.
        self.delete_on_retention_expired = False

    # ------------------------------------------------------------------ open/close

    @classmethod
    def open(cls, path: str | os.PathLike[str], read_only: bool = False,
             secondary_path: str | None = None, durable: bool = True) -> Index:
        """Open (create if missing and writable) the index at ``path``.

        ``read_only=True`` opens a consistent view as of now, even while a
        writer process holds the database (CLI ``ls``/``stats``/``export``/
        ``verify``); call :meth:`refresh` to see newer writes.
        ``secondary_path`` opens a RocksDB secondary instance instead (needs a
        private scratch directory) that :meth:`refresh` catches up cheaply.
        ``durable=False`` skips WAL syncs (bulk rebuilds, benchmarks only).
        Raises IndexLockedError if another writer holds ``path``.
        """
        p = os.fspath(path)
        if not read_only and secondary_path is None:
            os.makedirs(p, exist_ok=True)
        db = open_db(p, read_only=read_only, secondary_path=secondary_path)
        try:
            check_schema(db, p, writable=not (read_only or secondary_path))
        except BaseException:
            db.close()
            raise
        index = cls(p, db, read_only, secondary_path, durable)
        if not (read_only or secondary_path) and index._stats.blobs and not index._stats.tiers:
            index._backfill_tier_counts()
        return index

    def _backfill_tier_counts(self) -> None:
        """Indexes written before per-tier counters existed get them once, from the records."""

        def build(txn: Txn) -> None:
            txn.stats.tiers = {}
            for _, v in scan(self._cfs[CF_BLOBS], b"", None):
                b = BlobRecord.decode(v)
                txn.stats.count_tier(b.tier, 1, b.stored_len, b.logical_len)
            txn.meta[b"tier/counted"] = b"1"  # something to write, so the stats go in too

        self._commit("count blobs per tier", build)

    def _attach_db(self, db: Rdict) -> None:
        self._db = db
        self._cfs: dict[str, Any] = {n: db.get_column_family(n) for n in COLUMN_FAMILIES}
        self._handles: dict[str, Any] = {n: db.get_column_family_handle(n) for n in COLUMN_FAMILIES}
        self._stats = self._load_stats()
        self._records = RecordCache()  # a new database (a restore) holds other records
        self._meta_memo: dict[bytes, bytes | None] = {}  # get_meta_cached (a new database: forgotten)
        if hasattr(self, "_planner"):
            self._planner.cfs = self._cfs

    def _load_stats(self) -> Stats:
        raw = self._cfs[CF_META].get(META_STATS)
        st = Stats.decode(raw) if raw is not None else Stats()
        st.last_seq = max(st.last_seq, last_seq_on_disk(self._cfs[CF_FEED]))
        return st

    def _current_stats(self) -> Stats:
        return self._stats

    def _sync_wal(self) -> None:
        try:
            self._db.flush_wal(True)
        except Exception as exc:  # rocksdict raises bare Exception
            raise IndexStoreError(f"WAL sync failed for index at {self.path!r}: {exc}") from exc

    def close(self) -> None:
        """Sync outstanding writes and close the database (idempotent)."""
        if self._closed:
            return
        with self._wlock:
            if not self.read_only and self._committer.written_ticket:
                self._committer.sync_all()
            self._closed = True
            self._release_db()

    def _release_db(self) -> None:
        """Close the DB and drop every CF object/handle (they keep RocksDB's LOCK alive).

        Iterators of unfinished find()/studies() generators also pin the DB
        until they are garbage collected.
        """
        db, cfs, handles = self._db, self._cfs, self._handles
        self._cfs, self._handles = {}, {}
        self._planner.cfs = self._cfs
        for cf in cfs.values():
            cf.close()
        cfs.clear()
        handles.clear()
        db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    def refresh(self) -> None:
        """Read-only/secondary: make writes committed by the writer visible."""
        self._check_open()
        if self._secondary_path is not None:
            self._db.try_catch_up_with_primary()
            self._stats = self._load_stats()
        elif self.read_only:
            self._release_db()
            self._attach_db(open_db(self.path, read_only=True))
        self._load_coerced()

    def checkpoint(self, target_dir: str | os.PathLike[str]) -> None:
        """Consistent on-disk copy (RocksDB checkpoint, hard links) without stopping ingest.

        ``target_dir`` must not exist yet; open it later with :meth:`open`.
        """
        self._check_open()
        if not self.read_only:
            self._committer.sync_all()
        try:
            Checkpoint(self._db).create_checkpoint(os.fspath(target_dir))
        except Exception as exc:  # rocksdict raises bare Exception
            raise IndexStoreError(f"checkpoint of {self.path!r} into {os.fspath(target_dir)!r} "
                                  f"failed: {exc}") from exc

    def _check_open(self) -> None:
        if self._closed:
            raise IndexClosedError(self.path)

    def _check_writable(self, op: str) -> None:
        self._check_open()
        if self.read_only:
            raise ReadOnlyIndexError(self.path, op)

    # --------------------------------------------------------------- commits

    def _commit(self, op: str, build: Callable[[Txn], T]) -> tuple[T, Txn]:
        """Build a txn and write it under the write lock; then wait for durability."""
        self._check_writable(op)
        with self._wlock:
            self._check_open()
            txn = Txn(self._cfs, self._handles, self._stats.copy(), time.time(), cache=self._records)
            out = build(txn)
            batch = txn.finish()
            if txn.meta:
                self._meta_memo.clear()  # under the write lock: get_meta_cached fills under it too
            if batch is None:
                ticket = self._committer.written_ticket
            else:
                try:
                    self._db.write(batch, self._wopts)
                except Exception as exc:  # rocksdict raises bare Exception
                    cls = IndexFullError if "No space left" in str(exc) else IndexStoreError
                    raise cls(f"{op}: write to index {self.path!r} failed: {exc}") from exc
                self._stats = txn.stats
                txn.written()
                ticket = self._committer.note_written(txn.stats.last_seq)
                self._emptied_packs.extend(txn.emptied_packs)
        if self._durable:
            self._committer.wait_durable(ticket)
        return out, txn

    @property
    def commit_stats(self) -> dict[str, int]:
        """Batches written and WAL syncs performed since open (group-commit efficiency)."""
        return {"commits": self._committer.commits, "syncs": self._committer.syncs}

    # --------------------------------------------------------------- adding

    @staticmethod
    def _prepare(inst: Mapping[str, Any]) -> InstanceRecord:
        raw_attrs = inst.get("attrs")
        if not isinstance(raw_attrs, Mapping):
            raise InvalidInstanceError("instance has no 'attrs' mapping")
        try:
            # The engine's case, every key and value a str (else join raises), checked in C:
            # the comprehension below cost ~3 µs per store.
            "".join(raw_attrs)
            "".join(raw_attrs.values())
            attrs = dict(raw_attrs)
        except TypeError:
            attrs = {str(k): v if isinstance(v, str) else str(v) for k, v in raw_attrs.items()
                     if v is not None}
        sop = keys.norm_uid(attrs.get("SOPInstanceUID"))
        for kw in ("SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
            v = keys.norm_uid(attrs.get(kw))
            if not v:
                raise InvalidInstanceError(f"instance {sop or '<no SOPInstanceUID>'} lacks {kw}")
            attrs[kw] = v
        h = inst.get("hash")
        if not isinstance(h, bytes | bytearray | memoryview) or len(h) != HASH_LEN:
            raise InvalidInstanceError(f"instance {sop}: 'hash' must be {HASH_LEN} bytes, got {h!r:.80}")
        if "SOPClassUID" in attrs:
            attrs["SOPClassUID"] = keys.norm_uid(attrs["SOPClassUID"])
        pid = keys.norm_text(attrs.get("PatientID"))
        try:
            return InstanceRecord(
                sop_uid=sop,
                series_uid=attrs["SeriesInstanceUID"],
                study_uid=attrs["StudyInstanceUID"],
                patient_id=pid,
                sop_class_uid=attrs.get("SOPClassUID", ""),
                instance_number=keys.parse_int(attrs.get("InstanceNumber")),
                hash=bytes(h),
                prefix=bytes(inst.get("prefix") or b""),
                transfer_syntax=str(inst.get("transfer_syntax") or ""),
                logical_len=int(inst.get("logical_len") or 0),
                stored_len=int(inst.get("stored_len") or 0),
                codec=int(inst.get("codec") or 0),
                tier=str(inst.get("tier") or "hot"),
                received_at=float(inst.get("received_at") or time.time()),
                attrs=attrs,
            )
        except (TypeError, ValueError) as exc:
            raise InvalidInstanceError(f"instance {sop}: bad field: {exc}") from exc

    def _attach(self, txn: Txn, rec: InstanceRecord, count_blob: bool = True) -> bool:
        """Add an instance and its counters; returns True if its blob record is new.
        ``count_blob=False``: the blob reference is already held (an instance restored from the
        rejected set)."""
        st, now, a = txn.stats, txn.now, rec.attrs
        study_key = keys.encode(rec.study_uid)
        study: StudyRecord | None = txn.get(CF_STUDIES, study_key)
        new_study = study is None
        if study is None:
            received_id = rec.patient_id
            if self._has_merges:
                rec.patient_id = self._survivor(txn, received_id)
            study = StudyRecord(study_uid=rec.study_uid, patient_id=rec.patient_id,
                                attrs=_pick(a, _STUDY_LEVEL_KEYS), created_at=now)
            study.attrs["PatientID"] = rec.patient_id
            st.studies += 1
        else:
            rec.patient_id = study.patient_id  # a study belongs to the patient it was created for
            _fill_missing(study.attrs, a, _STUDY_LEVEL_KEYS)
        pkey = keys.encode(study.patient_id)
        patient: PatientRecord | None = txn.get(CF_PATIENTS, pkey)
        if new_study:
            self._new_study_values(txn, study, patient, received_id, a)
        if patient is None:
            patient = PatientRecord(patient_id=study.patient_id, attrs=_pick(a, PATIENT_KEYWORDS),
                                    created_at=now)
            st.patients += 1
        else:
            _fill_missing(patient.attrs, a, PATIENT_KEYWORDS)
        if new_study:
            patient.num_studies += 1
        series_key = study_key + keys.encode(rec.series_uid)
        series: SeriesRecord | None = txn.get(CF_SERIES, series_key)
        if series is None:
            series = SeriesRecord(study_uid=rec.study_uid, series_uid=rec.series_uid,
                                  modality=keys.norm_text(a.get("Modality")),
                                  series_number=keys.parse_int(a.get("SeriesNumber")),
                                  attrs=_pick(a, SERIES_KEYWORDS), created_at=now)
            study.num_series += 1
            patient.num_series += 1
            st.series += 1
            if series.modality:
                study.modalities[series.modality] = study.modalities.get(series.modality, 0) + 1
        else:
            if _fill_missing(series.attrs, a, SERIES_KEYWORDS):
                if not series.modality:
                    series.modality = keys.norm_text(series.attrs.get("Modality"))
                    if series.modality:
                        study.modalities[series.modality] = study.modalities.get(series.modality, 0) + 1
                if series.series_number is None:
                    series.series_number = keys.parse_int(series.attrs.get("SeriesNumber"))
        for r in (series, study, patient):
            r.num_instances += 1
            r.logical_bytes += rec.logical_len
            r.stored_bytes += rec.stored_len
            r.updated_at = now
        if rec.sop_class_uid:
            study.sop_classes[rec.sop_class_uid] = study.sop_classes.get(rec.sop_class_uid, 0) + 1
        pair = syntax_pair(rec)
        study.syntaxes[pair] = study.syntaxes.get(pair, 0) + 1
        st.objects += 1
        st.logical_bytes += rec.logical_len
        st.stored_bytes += rec.stored_len
        new_blob = self._ref_blob(txn, rec) if count_blob else False
        txn.put(CF_SERIES, series_key, series)
        txn.put(CF_STUDIES, study_key, study)
        txn.put(CF_PATIENTS, pkey, patient)
        txn.put(CF_INSTANCES, keys.encode(rec.sop_uid), rec)
        return new_blob

    @staticmethod
    def _ref_blob(txn: Txn, rec: InstanceRecord) -> bool:
        """One more reference to the record's blob; True if the blob record is new."""
        st = txn.stats
        blob: BlobRecord | None = txn.get(CF_BLOBS, rec.hash)
        new_blob = blob is None
        if blob is None:
            blob = BlobRecord(hash=rec.hash, logical_len=rec.logical_len, stored_len=rec.stored_len,
                              codec=rec.codec, tier=rec.tier, created_at=txn.now)
            st.blobs += 1
            st.blob_bytes += rec.stored_len
            st.count_tier(rec.tier, 1, rec.stored_len, rec.logical_len)
        blob.refcount += 1
        txn.put(CF_BLOBS, rec.hash, blob)
        return new_blob

    @staticmethod
    def _unref_blob(txn: Txn, blob_hash: bytes) -> None:
        """One reference fewer (a blob reaching 0 is released when the txn finishes)."""
        blob: BlobRecord | None = txn.get(CF_BLOBS, blob_hash)
        if blob is not None:
            blob.refcount -= 1
            txn.put(CF_BLOBS, blob_hash, blob)

    def _detach(self, txn: Txn, rec: InstanceRecord, count_blob: bool = True) -> None:
        """Remove an instance and its counters (empty parents are pruned at finish).
        ``count_blob=False``: the blob reference stays (the instance goes to the rejected set)."""
        st, now = txn.stats, txn.now
        study_key = keys.encode(rec.study_uid)
        series_key = study_key + keys.encode(rec.series_uid)
        series: SeriesRecord | None = txn.get(CF_SERIES, series_key)
        study: StudyRecord | None = txn.get(CF_STUDIES, study_key)
        pid = study.patient_id if study is not None else rec.patient_id
        patient: PatientRecord | None = txn.get(CF_PATIENTS, keys.encode(pid))
        for cf, k, r in ((CF_SERIES, series_key, series), (CF_STUDIES, study_key, study),
                         (CF_PATIENTS, keys.encode(pid), patient)):
            if r is None:
                continue  # inconsistent index; verify will report it
            r.num_instances -= 1
            r.logical_bytes -= rec.logical_len
            r.stored_bytes -= rec.stored_len
            r.updated_at = now
            txn.put(cf, k, r)
        if study is not None and rec.sop_class_uid:
            n = study.sop_classes.get(rec.sop_class_uid, 0) - 1
            if n > 0:
                study.sop_classes[rec.sop_class_uid] = n
            else:
                study.sop_classes.pop(rec.sop_class_uid, None)
        if study is not None:
            pair = syntax_pair(rec)
            n = study.syntaxes.get(pair, 0) - 1
            if n > 0:
                study.syntaxes[pair] = n
            else:
                study.syntaxes.pop(pair, None)
        st.objects -= 1
        st.logical_bytes -= rec.logical_len
        st.stored_bytes -= rec.stored_len
        if count_blob:
            self._unref_blob(txn, rec.hash)
        txn.delete(CF_INSTANCES, keys.encode(rec.sop_uid))

    def _add_one(self, txn: Txn, rec: InstanceRecord, rejection: Rejection | None = None) -> AddResult:
        if self._has_rejections:
            entry = self._rejected_entry(txn, rec.sop_uid)
            if entry is not None:
                return self._add_rejected(txn, rec, entry)
        res = self._add_visible(txn, rec)
        if rejection is not None and not res.duplicate:
            self._reject(txn, rejection)
        return res

    def _add_visible(self, txn: Txn, rec: InstanceRecord) -> AddResult:
        res = AddResult(sop_uid=rec.sop_uid)
        old: InstanceRecord | None = txn.get(CF_INSTANCES, keys.encode(rec.sop_uid))
        if old is not None and old.hash == rec.hash:
            res.duplicate = True
            return res
        kind = STORED
        if old is not None:
            self._detach(txn, old)
            res.replaced, res.old_hash, kind = True, old.hash, REPLACED
        res.new_blob = self._attach(txn, rec)
        ch = txn.add_change(Change(kind=kind, level="instance", sop_uid=rec.sop_uid,
                                   series_uid=rec.series_uid, study_uid=rec.study_uid,
                                   patient_id=rec.patient_id, hash=rec.hash,
                                   old_hash=res.old_hash, logical_len=rec.logical_len))
        res.seq = ch.seq
        return res

    def add_instance(self, inst: Mapping[str, Any]) -> AddResult:
        """Index one stored object; returns once the index record is durable.

        ``inst`` keys: ``attrs`` (keyword -> str; the three UIDs are required),
        ``hash`` (32 bytes), ``prefix`` (Part-10 preamble + meta bytes),
        ``transfer_syntax``, ``logical_len``, ``stored_len``, ``codec``, ``tier``,
        ``received_at``; optionally ``rejection`` (a :class:`Rejection`: this object is an
        IOCM rejection note, whose references are hidden in the same batch).  Same SOP UID +
        same hash -> ``duplicate=True`` (no write); different hash -> replaced ("keep
        newest"), the old blob's refcount drops and it is listed in ``released_blobs`` if it
        hit 0.  An instance a stored note rejected goes to the rejected set, not the hierarchy.
        """
        return self.add_instances([inst])[0]

    def add_instances(self, insts: Iterable[Mapping[str, Any]]) -> list[AddResult]:
        """Index several objects in ONE WriteBatch (one feed entry each); durable on return."""
        items = [(self._prepare(i), i.get("rejection")) for i in insts]
        if not items:
            return []

        def build(txn: Txn) -> list[AddResult]:
            return [self._add_one(txn, r, rej) for r, rej in items]

        results, txn = self._commit("add instances", build)
        released = set(txn.released)
        for r in results:
            if r.old_hash is not None and r.old_hash in released:
                r.released_blobs.append(r.old_hash)
                released.discard(r.old_hash)
        return results

    # --------------------------------------------------------------- IOCM rejected set

    def _rejected_items(self) -> Iterator[tuple[bytes, bytes]]:
        p = REJECTED_PREFIX
        return ((k, v) for k, v in scan(self._cfs[CF_META], p, keys.prefix_upper_bound(p)) if v)

    def _rejected_entry(self, txn: Txn, sop_uid: str) -> RejectedEntry | None:
        k = entry_key(sop_uid)
        raw = txn.meta.get(k)
        if raw is None:
            raw = self._cfs[CF_META].get(k)
        return RejectedEntry.decode(raw) if raw else None

    def _add_rejected(self, txn: Txn, rec: InstanceRecord, entry: RejectedEntry) -> AddResult:
        """An instance a stored note rejected arrives: it joins its entry, not the hierarchy."""
        res = AddResult(sop_uid=rec.sop_uid)
        if entry.deleted:
            # The note's policy deleted this instance: a late copy is not kept either. Its blob
            # was just written and nothing names it, so the engine frees it.
            if txn.get(CF_BLOBS, rec.hash) is None and rec.hash not in txn.released:
                txn.released.append(rec.hash)
            res.duplicate = True
            return res
        if entry.record:
            old = InstanceRecord.decode(entry.record)
            if old.hash == rec.hash:
                res.duplicate = True
                return res
            self._unref_blob(txn, old.hash)
            res.replaced, res.old_hash = True, old.hash
        res.new_blob = self._ref_blob(txn, rec)
        entry.record, entry.study_uid, entry.series_uid = rec.encode(), rec.study_uid, rec.series_uid
        txn.meta[entry_key(rec.sop_uid)] = entry.encode()
        # A STORED change with its hash: a replica fetches the blob and the record (the feed
        # serves hidden records too) and hides it there by the same note.
        ch = txn.add_change(Change(kind=STORED, level="instance", sop_uid=rec.sop_uid,
                                   series_uid=rec.series_uid, study_uid=rec.study_uid,
                                   patient_id=rec.patient_id, hash=rec.hash, old_hash=res.old_hash,
                                   logical_len=rec.logical_len))
        res.seq = ch.seq
        return res

    def _reject(self, txn: Txn, rejection: Rejection) -> None:
        """Hide (or, for a deleting title under the delete policy, delete) what a note names."""
        delete = rejection.deletes and self.delete_on_retention_expired
        self._has_rejections = True
        for ref in rejection.refs:
            sop = keys.norm_uid(ref.sop_uid)
            if not sop or sop == keys.norm_uid(rejection.note_uid):
                continue
            if self._rejected_entry(txn, sop) is not None:
                continue  # an earlier note rejected it already; that note stays its reason
            entry = RejectedEntry(sop_uid=sop, study_uid=keys.norm_uid(ref.study_uid),
                                  series_uid=keys.norm_uid(ref.series_uid), note_uid=rejection.note_uid,
                                  code=rejection.code, at=txn.now, deleted=delete)
            cur: InstanceRecord | None = txn.get(CF_INSTANCES, keys.encode(sop))
            if cur is not None:
                self._detach(txn, cur, count_blob=delete)
                entry.study_uid, entry.series_uid = cur.study_uid, cur.series_uid
                if not delete:
                    entry.record = cur.encode()
                txn.add_change(Change(kind=DELETED if delete else REJECTED, level="instance",
                                      sop_uid=sop, series_uid=cur.series_uid, study_uid=cur.study_uid,
                                      patient_id=cur.patient_id, hash=cur.hash if delete else None,
                                      logical_len=cur.logical_len))
            txn.meta[entry_key(sop)] = entry.encode()

    def _restore_one(self, txn: Txn, sop_uid: str) -> RejectedEntry | None:
        """Put a hidden instance back into the hierarchy and forget its entry."""
        entry = self._rejected_entry(txn, sop_uid)
        if entry is None:
            return None
        txn.meta[entry_key(sop_uid)] = b""
        if entry.record and txn.get(CF_INSTANCES, keys.encode(entry.sop_uid)) is None:
            rec = InstanceRecord.decode(entry.record)
            self._attach(txn, rec, count_blob=False)
            txn.add_change(Change(kind=RESTORED, level="instance", sop_uid=rec.sop_uid,
                                  series_uid=rec.series_uid, study_uid=rec.study_uid,
                                  patient_id=rec.patient_id, logical_len=rec.logical_len))
        elif entry.record:
            self._unref_blob(txn, InstanceRecord.decode(entry.record).hash)
        else:
            # Nothing held (not arrived, or deleted by policy): a RESTORED change still tells a
            # replica to forget its entry.
            txn.add_change(Change(kind=RESTORED, level="instance", sop_uid=entry.sop_uid,
                                  series_uid=entry.series_uid, study_uid=entry.study_uid))
        return entry

    def _drop_rejected(self, txn: Txn, sop_uid: str, blob_hash: bytes | None) -> None:
        """A replicated delete of an instance this site holds hidden: drop it for good."""
        entry = self._rejected_entry(txn, sop_uid)
        if entry is None or not entry.record:
            return
        rec = InstanceRecord.decode(entry.record)
        if blob_hash is not None and rec.hash != blob_hash:
            return
        self._unref_blob(txn, rec.hash)
        txn.meta[entry_key(sop_uid)] = b""
        txn.add_change(Change(kind=DELETED, level="instance", sop_uid=rec.sop_uid,
                              series_uid=rec.series_uid, study_uid=rec.study_uid,
                              patient_id=rec.patient_id, hash=rec.hash, logical_len=rec.logical_len))

    def _rejected_under(self, level: str, uid: str) -> list[RejectedEntry]:
        """Hidden instances (with a record held) under a patient/study/series/instance."""
        out = []
        for _, v in self._rejected_items():
            e = RejectedEntry.decode(v)
            if not e.record:
                continue
            if level == "patient":
                hit = InstanceRecord.decode(e.record).patient_id == uid
            else:
                hit = uid == {"study": e.study_uid, "series": e.series_uid, "instance": e.sop_uid}[level]
            if hit:
                out.append(e)
        return out

    def rejected(self, study_uid: str | None = None, note_uid: str | None = None) -> list[RejectedEntry]:
        """The rejected set (optionally of one study or one note), in SOP Instance UID order."""
        self._check_open()
        study = keys.norm_uid(study_uid) if study_uid else None
        note = keys.norm_uid(note_uid) if note_uid else None
        out = []
        for _, v in self._rejected_items():
            e = RejectedEntry.decode(v)
            if (study is None or e.study_uid == study) and (note is None or e.note_uid == note):
                out.append(e)
        return out

    def rejected_record(self, sop_uid: str) -> InstanceRecord | None:
        """The record of an instance held hidden (None if it is not, or not arrived)."""
        self._check_open()
        raw = self._cfs[CF_META].get(entry_key(sop_uid))
        if not raw:
            return None
        e = RejectedEntry.decode(raw)
        return InstanceRecord.decode(e.record) if e.record else None

    def restore(self, sop_uids: Sequence[str]) -> list[RejectedEntry]:
        """Put hidden instances back (an admin's correction of a rejection), one durable batch;
        returns the entries restored (unknown UIDs are skipped)."""
        uids = [keys.norm_uid(u) for u in sop_uids]

        def build(txn: Txn) -> list[RejectedEntry]:
            return [e for e in (self._restore_one(txn, u) for u in uids) if e is not None]

        done, _ = self._commit(f"restore {len(uids)} rejected instances", build)
        return done

    # --------------------------------------------------------------- deleting

    def _sops_under(self, level: str, uid: str) -> list[str]:
        if level == "instance":
            return [uid] if self._cfs[CF_INSTANCES].get(keys.encode(uid)) is not None else []
        if level == "series":
            prefixes = [secondary.hierarchy_prefix(st, uid) for st in self._studies_of_series(uid)]
        elif level == "study":
            prefixes = [secondary.hierarchy_prefix(uid)]
        elif level == "patient":
            p = secondary.IDX_STUDY_PATIENT_ID.prefix + keys.encode(uid)
            prefixes = [secondary.hierarchy_prefix(keys.decode_at(k, len(p))[0])
                        for k in scan_keys(self._cfs[CF_IDX], p, keys.prefix_upper_bound(p))]
        else:
            raise ValueError(f"unknown level {level!r} for UID {uid!r}")
        out: list[str] = []
        for p in prefixes:
            for k in scan_keys(self._cfs[CF_IDX], p, keys.prefix_upper_bound(p)):
                out.append(secondary.sop_from_hierarchy_key(k))
        return out

    @staticmethod
    def _level(level: str) -> str:
        lv = level.strip().lower()
        lv = {"image": "instance", "instances": "instance", "studies": "study"}.get(lv, lv)
        if lv not in ("patient", "study", "series", "instance"):
            raise ValueError(f"unknown level {level!r}: expected patient, study, series or instance")
        return lv

    def delete(self, level: str, uid: str) -> DeleteResult:
        """Delete a study, series, instance (or patient: by PatientID) and everything under it.

        Empty series/studies/patients are removed, secondary entries dropped,
        blob refcounts decremented; ``released_blobs`` lists hashes that hit 0
        (the engine deletes those blobs).  One feed entry per deleted instance,
        one batch, durable on return.  Raises NotFoundError for unknown UIDs.
        """
        lv = self._level(level)
        uid = keys.norm_uid(uid) if lv != "patient" else keys.norm_text(uid)
        result = DeleteResult(level=lv, uid=uid)

        def build(txn: Txn) -> None:
            for sop in self._sops_under(lv, uid):
                rec: InstanceRecord | None = txn.get(CF_INSTANCES, keys.encode(sop))
                if rec is None:
                    continue
                self._detach(txn, rec)
                ch = txn.add_change(Change(kind=DELETED, level="instance", sop_uid=sop,
                                           series_uid=rec.series_uid, study_uid=rec.study_uid,
                                           patient_id=rec.patient_id, hash=rec.hash,
                                           logical_len=rec.logical_len))
                result.deleted.append(sop)
                result.first_seq = result.first_seq or ch.seq
                result.last_seq = ch.seq
            if self._has_rejections:
                # What a rejection note hides under it goes too: a delete leaves nothing behind.
                for entry in self._rejected_under(lv, uid):
                    self._drop_rejected(txn, entry.sop_uid, None)
                    result.deleted.append(entry.sop_uid)
            if not result.deleted:
                raise NotFoundError(lv, uid)

        _, txn = self._commit(f"delete {lv} {uid}", build)
        result.released_blobs = list(txn.released)
        return result

    # --------------------------------------------------------------- replication

    def apply_replicated(self, changes: Iterable[tuple[Change, Mapping[str, Any] | None]],
                         meta: Mapping[bytes, bytes]) -> list[bytes]:
        """Apply changes shipped from another site and write ``meta`` (the replication
        cursor) in ONE batch: a crash leaves either both or neither, so replay from the
        stored cursor is exact, and re-applying a change is a no-op anyway.

        Each item is (upstream change, instance dict for stored/replaced, shaped as for
        :meth:`add_instance`).  A stored/replaced change whose instance is already indexed
        with that hash is a duplicate; a deleted change removes the instance only if it still
        names the deleted hash (so an out-of-date delete never removes a newer version).
        Local feed entries are written as usual, so this site can feed another (chains).
        Returns the hashes whose refcount reached 0 (the caller frees those blobs).
        """
        items = [(ch, self._prepare(inst) if inst is not None else None,
                  inst.get("rejection") if inst is not None else None) for ch, inst in changes]
        meta = {bytes(k): bytes(v) for k, v in meta.items()}

        def build(txn: Txn) -> None:
            txn.meta.update(meta)
            for ch, rec, rejection in items:
                if ch.kind in PATIENT_CHANGES:
                    self._apply_patient_change(txn, ch)
                elif ch.kind == RESTORED:
                    self._restore_one(txn, ch.sop_uid)
                elif ch.kind == REJECTED:
                    continue  # derived here from the note itself (stored before it in the feed)
                elif ch.kind == DELETED:
                    key = keys.encode(keys.norm_uid(ch.sop_uid))
                    cur: InstanceRecord | None = txn.get(CF_INSTANCES, key)
                    if cur is None and self._has_rejections:
                        self._drop_rejected(txn, ch.sop_uid, ch.hash)
                        continue
                    if cur is None or (ch.hash is not None and cur.hash != ch.hash):
                        continue
                    self._detach(txn, cur)
                    txn.add_change(Change(kind=DELETED, level="instance", sop_uid=cur.sop_uid,
                                          series_uid=cur.series_uid, study_uid=cur.study_uid,
                                          patient_id=cur.patient_id, hash=cur.hash,
                                          logical_len=cur.logical_len))
                elif rec is not None:
                    self._add_one(txn, rec, rejection)

        _, txn = self._commit("apply replicated changes", build)
        return list(txn.released)

    def get_meta(self, key: bytes) -> bytes | None:
        """A raw value of the meta column family (replication cursors, site role)."""
        self._check_open()
        raw = self._cfs[CF_META].get(bytes(key))
        return bytes(raw) if raw else None  # b"" is how put_meta(key, None) deletes

    def get_meta_cached(self, key: bytes) -> bytes | None:
        """:meth:`get_meta` of a key read on every store (the site role, engine.ensure_writable),
        remembered by a writable index. Every write of a meta key goes through `_commit`, which
        forgets them all; the value is read and remembered under the same write lock, so a
        concurrent write cannot leave an older value remembered. A read-only index (another
        process writes) always reads."""
        if self.read_only:
            return self.get_meta(key)
        self._check_open()
        k = bytes(key)
        try:
            return self._meta_memo[k]
        except KeyError:
            pass
        with self._wlock:
            value = self._meta_memo[k] = self.get_meta(k)
        return value

    def meta_items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of the meta column family under ``prefix`` (deleted ones skipped)."""
        self._check_open()
        p = bytes(prefix)
        return [(bytes(k), bytes(v)) for k, v in scan(self._cfs[CF_META], p, keys.prefix_upper_bound(p))
                if v]

    def meta_range(self, lo: bytes, hi: bytes | None) -> list[tuple[bytes, bytes]]:
        """Every (key, value) of the meta column family with lo <= key < hi (deleted ones skipped):
        range scans of the namespaces kept there (the worklist's date index)."""
        self._check_open()
        return [(bytes(k), bytes(v)) for k, v in scan(self._cfs[CF_META], bytes(lo), hi) if v]

    def put_meta_many(self, items: Mapping[bytes, bytes | None]) -> None:
        """:meth:`put_meta` of several keys in one durable batch."""
        for k in items:
            if bytes(k) in (META_STATS, b"schema"):
                raise ValueError(f"meta key {bytes(k)!r} is reserved")

        def build(txn: Txn) -> None:
            for k, v in items.items():
                txn.meta[bytes(k)] = b"" if v is None else bytes(v)

        if items:
            self._commit(f"put {len(items)} meta keys", build)

    def put_meta(self, key: bytes, value: bytes | None) -> None:
        """Durably set (None: delete) a meta key; ``schema`` and ``stats`` are reserved."""
        k = bytes(key)
        if k in (META_STATS, b"schema"):
            raise ValueError(f"meta key {k!r} is reserved")

        def build(txn: Txn) -> None:
            if value is None:
                txn.meta[k] = b""
            else:
                txn.meta[k] = bytes(value)

        self._commit(f"put meta {k!r}", build)

    def set_placements(self, moves: Sequence[Placement]) -> list[bytes]:
        """Switches blobs to a new tier in one durable batch: the index step of a tier move,
        after the copy was read back and verified and before the old copy is freed.

        A move applies only if the blob is still placed where the mover found it
        (``from_tier``): a blob deleted or moved by someone else meanwhile is left alone.
        Returns the hashes switched (the caller frees their old copies; for the others it
        frees the new copy instead)."""

        def build(txn: Txn) -> list[bytes]:
            done = []
            for m in moves:
                blob: BlobRecord | None = txn.get(CF_BLOBS, m.hash)
                if blob is None or blob.tier != m.from_tier:
                    continue
                st = txn.stats
                st.count_tier(blob.tier, -1, -blob.stored_len, -blob.logical_len)
                st.count_tier(m.to_tier, 1, m.stored_len, blob.logical_len)
                st.blob_bytes += m.stored_len - blob.stored_len
                if blob.pack_key:
                    txn.count_pack(blob.pack_key, -1)
                if m.pack_key:
                    txn.count_pack(m.pack_key, 1)
                blob.tier, blob.codec, blob.stored_len = m.to_tier, m.codec, m.stored_len
                blob.pack_key, blob.pack_offset, blob.pack_digest = m.pack_key, m.pack_offset, m.pack_digest
                blob.moved_at = txn.now
                txn.put(CF_BLOBS, m.hash, blob)
                done.append(m.hash)
            return done

        done, _ = self._commit(f"move {len(moves)} blobs", build)
        return done

    def tier_counts(self) -> dict[str, tuple[int, int, int]]:
        """tier name -> (blobs, stored bytes, logical bytes) placed there, from the counters."""
        self._check_open()
        return {k: (int(v[0]), int(v[1]), int(v[2])) for k, v in self._stats.tiers.items()}

    def drain_emptied_packs(self) -> list[str]:
        """Packs whose last live blob left since the last call (moved back, deleted): their
        objects can be deleted. A crash loses this list; the orphan sweep finds them again."""
        with self._wlock:
            out, self._emptied_packs = self._emptied_packs, []
        return out

    def live_packs(self) -> dict[str, int]:
        """pack key -> number of live blobs in it."""
        return {k[len(PACK_META_PREFIX):].decode(): int(v) for k, v in self.meta_items(PACK_META_PREFIX)}

    # --------------------------------------------------------------- lookups

    def get_instance(self, sop_uid: str) -> InstanceRecord | None:
        """Instance record by SOP Instance UID."""
        self._check_open()
        raw = self._cfs[CF_INSTANCES].get(keys.encode(keys.norm_uid(sop_uid)))
        return InstanceRecord.decode(raw) if raw is not None else None

    def sending_fields(self, sop_uids: list[str]) -> list[tuple[bytes, str, str, str] | None]:
        """(blob hash, transfer syntax, SOP Class UID, Study Instance UID) of each instance (None:
        not indexed), in one multi-get and without building records: a retrieve's native batches
        (dimse/fastretrieve.py) look up a hundred objects at a time."""
        self._check_open()
        if not sop_uids:
            return []
        raws = self._cfs[CF_INSTANCES].get([keys.encode(keys.norm_uid(u)) for u in sop_uids])
        # read natively; a record that reader hands back (False) is decoded here, as all were
        out: list[tuple[bytes, str, str, str] | None] = _native.sending_fields(raws)
        for i, row in enumerate(out):
            if row is False:
                f = InstanceRecord.fields_of(raws[i])
                out[i] = (bytes(f.get("hash", b"")), str(f.get("transfer_syntax", "")),
                          str(f.get("sop_class_uid", "")), str(f.get("study_uid", "")))
        return out

    def get_study(self, study_uid: str) -> StudyRecord | None:
        """Study record by Study Instance UID."""
        self._check_open()
        raw = self._cfs[CF_STUDIES].get(keys.encode(keys.norm_uid(study_uid)))
        return StudyRecord.decode(raw) if raw is not None else None

    def get_patient(self, patient_id: str) -> PatientRecord | None:
        """Patient record by PatientID."""
        self._check_open()
        raw = self._cfs[CF_PATIENTS].get(keys.encode(keys.norm_text(patient_id)))
        return PatientRecord.decode(raw) if raw is not None else None

    def _studies_of_series(self, series_uid: str) -> list[str]:
        p = secondary.IDX_SERIES_UID.prefix + keys.encode(series_uid)
        return [keys.decode_at(k, len(p))[0]
                for k in scan_keys(self._cfs[CF_IDX], p, keys.prefix_upper_bound(p))]

    def get_series(self, series_uid: str) -> SeriesRecord | None:
        """Series record by Series Instance UID (the first one if the UID is reused)."""
        self._check_open()
        uid = keys.norm_uid(series_uid)
        for st in self._studies_of_series(uid):
            raw = self._cfs[CF_SERIES].get(keys.pack(st, uid))
            if raw is not None:
                return SeriesRecord.decode(raw)
        return None

    def series_of(self, study_uid: str) -> list[SeriesRecord]:
        """Series of a study ordered by SeriesNumber (unnumbered last), then UID."""
        self._check_open()
        p = keys.encode(keys.norm_uid(study_uid))
        recs = [SeriesRecord.decode(v) for _, v in scan(self._cfs[CF_SERIES], p, keys.prefix_upper_bound(p))]
        recs.sort(key=lambda s: _series_order(s.series_number, s.series_uid))
        return recs

    def _series_uids_of(self, study_uid: str) -> list[str]:
        """The series UIDs of series_of, without building their records (a C-GET lists its study
        before the first image: ~20 us a series less)."""
        p = keys.encode(keys.norm_uid(study_uid))
        fields_of = SeriesRecord.fields_of
        rows = scan(self._cfs[CF_SERIES], p, keys.prefix_upper_bound(p))
        found = [(f.get("series_number"), str(f.get("series_uid", "")))
                 for f in (fields_of(v) for _, v in rows)]
        found.sort(key=lambda s: _series_order(*s))
        return [uid for _, uid in found]

    def _instances_at(self, prefix: bytes) -> list[InstanceRecord]:
        ks = [keys.encode(secondary.sop_from_hierarchy_key(k))
              for k in scan_keys(self._cfs[CF_IDX], prefix, keys.prefix_upper_bound(prefix))]
        if not ks:
            return []
        return [InstanceRecord.decode(v) for v in self._cfs[CF_INSTANCES].get(ks) if v is not None]

    def instances_of(self, level: str, uid: str) -> list[InstanceRecord]:
        """All instance records of a patient/study/series/instance.

        Ordered by series (SeriesNumber, then UID), then InstanceNumber, then SOP UID.
        """
        self._check_open()
        if self._level(level) == "instance":
            rec = self.get_instance(uid)
            return [rec] if rec is not None else []
        return [r for p in self._hierarchy_prefixes(level, uid) for r in self._instances_at(p)]

    def syntaxes_of(self, level: str, uid: str) -> list[tuple[str, str, str]]:
        """(SOP Instance UID, SOP Class UID, transfer syntax) of instances_of(level, uid), in the
        same order, from the records' fields without building records (a C-MOVE proposes its
        sub-association's contexts from them before its first image)."""
        self._check_open()
        if self._level(level) == "instance":
            recs = [r for r in [self.get_instance(uid)] if r is not None]
            return [(r.sop_uid, r.sop_class_uid, r.transfer_syntax) for r in recs]
        out = []
        fields_of = InstanceRecord.fields_of
        for p in self._hierarchy_prefixes(level, uid):
            ks = [keys.encode(secondary.sop_from_hierarchy_key(k))
                  for k in scan_keys(self._cfs[CF_IDX], p, keys.prefix_upper_bound(p))]
            for v in self._cfs[CF_INSTANCES].get(ks) if ks else []:
                if v is not None:
                    f = fields_of(v)
                    out.append((f.get("sop_uid", ""), f.get("sop_class_uid", ""),
                                f.get("transfer_syntax", "")))
        return out

    def sop_uids_of(self, level: str, uid: str) -> list[str]:
        """The SOP Instance UIDs of instances_of(level, uid), in the same order, read from the
        hierarchy index alone (no instance record decoded: a C-GET's first image waits on it)."""
        return list(self.iter_sop_uids_of(level, uid))

    def iter_sop_uids_of(self, level: str, uid: str) -> Iterator[str]:
        """sop_uids_of, as the index is read (a C-GET starts reading its first object while the
        rest of the study is being listed)."""
        self._check_open()
        if self._level(level) == "instance":
            if self.get_instance(uid) is not None:
                yield uid
            return
        for p in self._hierarchy_prefixes(level, uid):
            for k in scan_keys(self._cfs[CF_IDX], p, keys.prefix_upper_bound(p)):
                yield secondary.sop_after_series_prefix(k, len(p))

    def _hierarchy_prefixes(self, level: str, uid: str) -> list[bytes]:
        """Hierarchy index prefixes of the series under a patient/study/series, in series order."""
        lv = self._level(level)
        if lv == "patient":
            p = secondary.IDX_STUDY_PATIENT_ID.prefix + keys.encode(keys.norm_text(uid))
            return [q for k in scan_keys(self._cfs[CF_IDX], p, keys.prefix_upper_bound(p))
                    for q in self._hierarchy_prefixes("study", keys.decode_at(k, len(p))[0])]
        if lv == "series":
            sid = keys.norm_uid(uid)
            return [secondary.hierarchy_prefix(st, sid) for st in self._studies_of_series(sid)]
        study = keys.norm_uid(uid)
        return [secondary.hierarchy_prefix(study, series) for series in self._series_uids_of(study)]

    def studies(self) -> Iterator[StudyRecord]:
        """Every study record, in Study Instance UID order."""
        self._check_open()
        for _, v in scan(self._cfs[CF_STUDIES], b"", None):
            yield StudyRecord.decode(v)

    def patients(self) -> Iterator[PatientRecord]:
        """Every patient record, in PatientID order."""
        self._check_open()
        for _, v in scan(self._cfs[CF_PATIENTS], b"", None):
            yield PatientRecord.decode(v)

    def instances(self) -> Iterator[InstanceRecord]:
        """Every instance record, in SOP Instance UID order."""
        self._check_open()
        for _, v in scan(self._cfs[CF_INSTANCES], b"", None):
            yield InstanceRecord.decode(v)

    def blob(self, hash: bytes) -> BlobRecord | None:
        """Blob record (refcount, sizes, codec, tier) by content hash."""
        self._check_open()
        raw = self._cfs[CF_BLOBS].get(bytes(hash))
        return BlobRecord.decode(raw) if raw is not None else None

    def blobs_of(self, hashes: list[bytes]) -> list[BlobRecord | None]:
        """The blob record of each content hash (None: no such blob), in one multi-get."""
        self._check_open()
        if not hashes:
            return []
        return [BlobRecord.decode(raw) if raw is not None else None
                for raw in self._cfs[CF_BLOBS].get([bytes(h) for h in hashes])]

    def blobs(self) -> Iterator[tuple[bytes, BlobRecord]]:
        """Every (hash, blob record), in hash order (for verify)."""
        self._check_open()
        for k, v in scan(self._cfs[CF_BLOBS], b"", None):
            yield k, BlobRecord.decode(v)

    def stats(self) -> dict[str, int]:
        """Exact counters: objects, logical_bytes, stored_bytes (sum over instances),
        patients, studies, series, blobs, blob_bytes (distinct blobs), last_seq."""
        self._check_open()
        return self._stats.as_dict()

    def check(self) -> list[str]:
        """Full consistency check (counters, refcounts, secondary entries, stats); see check.py."""
        self._check_open()
        from .check import check_index

        return check_index(self._cfs, self.stats, self.tier_counts, self.live_packs)

    # --------------------------------------------------------------- queries & feed

    def find(self, level: str, query: Mapping[str, str | None], limit: int | None = None,
             stats: QueryStats | None = None) -> Iterator[dict[str, str]]:
        """C-FIND/QIDO query (PS3.4 C.2.2.2), see query.py.

        ``level``: PATIENT, STUDY, SERIES or IMAGE.  ``query``: keyword -> match
        string; every key is returned, plus the level's unique key (and the
        upper-level UIDs for SERIES/IMAGE).  Values are strings ("" if absent).
        ``stats`` (a :class:`QueryStats`) counts what the query reads.
        """
        self._check_open()
        return self._planner.find(level, query, limit, stats)

    def find_values(self, level: str, query: Mapping[str, str | None], columns: list[str],
                    limit: int | None = None, stats: QueryStats | None = None) -> Iterator[list[str]]:
        """:meth:`find`, each match as the texts of ``columns`` (keywords) in that order; no dict
        per match (C-FIND writes them into its responses at once)."""
        self._check_open()
        return self._planner.find_values(level, query, columns, limit, stats)

    def explain(self, level: str, query: Mapping[str, str | None]) -> dict[str, Any]:
        """The candidate source the planner picks for a query (debugging)."""
        self._check_open()
        return self._planner.explain(level, query)

    def changes(self, since: int = 0, limit: int = 1000) -> list[Change]:
        """Feed entries with seq > ``since``, oldest first, at most ``limit``.

        On a writable index only durable entries are returned, so a consumer
        never acts on a change that a crash could still undo.
        """
        self._check_open()
        upto = None if self.read_only or not self._durable else self._committer.durable_seq
        return read_changes(self._cfs[CF_FEED], since, limit, upto)

    def last_seq(self) -> int:
        """Highest durable feed seq (0 if the feed is empty)."""
        self._check_open()
        if self.read_only or not self._durable:
            return self._stats.last_seq
        return self._committer.durable_seq


__all__ = ["AddResult", "DeleteResult", "Index"]
