"""Write transactions: a record cache plus one RocksDB WriteBatch.

A :class:`Txn` is built while holding the index write lock.  Records are
loaded once and mutated in memory; on :meth:`Txn.finish` the hierarchy is
pruned (series, studies, patients and blobs whose counts reached zero are
deleted, cascading counters upwards), every changed record is written, the
secondary-index entries of each changed record are diffed against the
entries of its original version, the change-feed entries and the stats
counters are added, and everything goes into a single WriteBatch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from rocksdict import WriteBatch

from . import keys, secondary
from .feed import feed_key
from .record_cache import RecordCache
from .records import (
    BlobRecord,
    Change,
    InstanceRecord,
    PatientRecord,
    Record,
    SeriesRecord,
    Stats,
    StudyRecord,
)
from .schema import (
    CF_BLOBS,
    CF_FEED,
    CF_INSTANCES,
    CF_META,
    CF_PATIENTS,
    CF_SERIES,
    CF_STUDIES,
    META_STATS,
)

_DECODERS: dict[str, type[Record]] = {
    CF_PATIENTS: PatientRecord,
    CF_STUDIES: StudyRecord,
    CF_SERIES: SeriesRecord,
    CF_INSTANCES: InstanceRecord,
    CF_BLOBS: BlobRecord,
}


# The records `_prune` deletes once written: an empty series, study or patient, an unreferenced blob.
_EMPTY: dict[str, Callable[[Any], bool]] = {
    CF_SERIES: lambda r: r.num_instances <= 0,
    CF_STUDIES: lambda r: r.num_instances <= 0,
    CF_PATIENTS: lambda r: r.num_instances <= 0 and r.num_studies <= 0,
    CF_BLOBS: lambda r: r.refcount <= 0,
}

PACK_META_PREFIX = b"tier/pack/"


def pack_meta_key(pack_key: str) -> bytes:
    """Meta-CF key of a pack's live-blob count (empty value: the pack holds nothing live)."""
    return PACK_META_PREFIX + pack_key.encode()


def _no_entries(_rec: Any) -> Mapping[bytes, bytes]:
    return {}


_ENTRIES: dict[str, Callable[[Any], Mapping[bytes, bytes]]] = {
    CF_PATIENTS: secondary.patient_entries,
    CF_STUDIES: secondary.study_entries,
    CF_SERIES: secondary.series_entries,
    CF_INSTANCES: secondary.instance_entries,
    CF_BLOBS: _no_entries,
}


@dataclass(slots=True)
class _Slot:
    cf: str
    key: bytes
    orig_entries: Mapping[bytes, bytes]
    rec: Any
    dirty: bool = False
    new_entries: Mapping[bytes, bytes] | None = None  # set by finish for a written record


@dataclass(slots=True)
class Txn:
    """Pending changes of one write batch (not thread-safe: use under the write lock)."""

    cfs: dict[str, Any]  # CF name -> rocksdict CF (Rdict)
    handles: dict[str, Any]  # CF name -> ColumnFamily handle
    stats: Stats
    now: float
    slots: dict[tuple[str, bytes], _Slot] = field(default_factory=dict)
    changes: list[Change] = field(default_factory=list)
    released: list[bytes] = field(default_factory=list)
    # extra meta-CF keys written in the same batch (e.g. a replication cursor, so that applying
    # replicated changes and advancing the cursor are one atomic write)
    meta: dict[bytes, bytes] = field(default_factory=dict)
    # pack key -> change in the number of live blobs placed in it (object-store tiers)
    pack_delta: dict[str, int] = field(default_factory=dict)
    # packs whose last live blob left in this batch (the caller deletes the objects)
    emptied_packs: list[str] = field(default_factory=list)
    # records written by earlier transactions (see record_cache.py); None: always read the DB
    cache: RecordCache | None = None

    # -- record cache -----------------------------------------------------

    def _slot(self, cf: str, key: bytes) -> _Slot:
        slot = self.slots.get((cf, key))
        if slot is None:
            hit = self.cache.take(cf, key) if self.cache is not None else None
            if hit is not None:
                rec, orig = hit
            else:
                raw = self.cfs[cf].get(key)
                rec = _DECODERS[cf].decode(raw) if raw is not None else None
                orig = _ENTRIES[cf](rec) if rec is not None else {}
            slot = _Slot(cf, key, orig, rec)
            self.slots[(cf, key)] = slot
        return slot

    def get(self, cf: str, key: bytes) -> Any:
        """Current (pending) record or None; loads it once from the DB."""
        return self._slot(cf, key).rec

    def put(self, cf: str, key: bytes, rec: Record) -> None:
        """Set the pending record."""
        slot = self._slot(cf, key)
        slot.rec = rec
        slot.dirty = True

    def delete(self, cf: str, key: bytes) -> None:
        """Mark the record deleted."""
        slot = self._slot(cf, key)
        slot.rec = None
        slot.dirty = True

    def add_change(self, change: Change) -> Change:
        """Append a feed entry, assigning the next sequence number."""
        self.stats.last_seq += 1
        change.seq = self.stats.last_seq
        change.at = change.at or self.now
        self.changes.append(change)
        return change

    # -- prune + batch --------------------------------------------------------

    def _dirty(self, cf: str) -> list[_Slot]:
        return [s for s in self.slots.values() if s.cf == cf and s.dirty and s.rec is not None]

    def _anything_to_prune(self) -> bool:
        """Whether a written record is one `_prune` removes. Pruning only cascades from such a
        record, so a batch without one (every plain store) skips the four scans below."""
        for s in self.slots.values():
            if s.dirty and s.rec is not None:
                empty = _EMPTY.get(s.cf)
                if empty is not None and empty(s.rec):
                    return True
        return False

    def _prune(self) -> None:
        if not self._anything_to_prune():
            return
        st = self.stats
        for slot in self._dirty(CF_SERIES):
            se: SeriesRecord = slot.rec
            if se.num_instances > 0:
                continue
            study: StudyRecord | None = self.get(CF_STUDIES, keys.encode(se.study_uid))
            if study is not None:
                study.num_series -= 1
                if se.modality:
                    n = study.modalities.get(se.modality, 0) - 1
                    if n > 0:
                        study.modalities[se.modality] = n
                    else:
                        study.modalities.pop(se.modality, None)
                self.put(CF_STUDIES, keys.encode(se.study_uid), study)
                patient: PatientRecord | None = self.get(CF_PATIENTS, keys.encode(study.patient_id))
                if patient is not None:
                    patient.num_series -= 1
                    self.put(CF_PATIENTS, keys.encode(study.patient_id), patient)
            self.delete(CF_SERIES, slot.key)
            st.series -= 1
        for slot in self._dirty(CF_STUDIES):
            study = slot.rec
            if study.num_instances > 0:
                continue
            patient = self.get(CF_PATIENTS, keys.encode(study.patient_id))
            if patient is not None:
                patient.num_studies -= 1
                self.put(CF_PATIENTS, keys.encode(study.patient_id), patient)
            self.delete(CF_STUDIES, slot.key)
            st.studies -= 1
        for slot in self._dirty(CF_PATIENTS):
            if slot.rec.num_instances > 0 or slot.rec.num_studies > 0:
                continue
            self.delete(CF_PATIENTS, slot.key)
            st.patients -= 1
        for slot in self._dirty(CF_BLOBS):
            blob: BlobRecord = slot.rec
            if blob.refcount > 0:
                continue
            self.delete(CF_BLOBS, slot.key)
            st.blobs -= 1
            st.blob_bytes -= blob.stored_len
            st.count_tier(blob.tier, -1, -blob.stored_len, -blob.logical_len)
            if blob.pack_key:
                self.count_pack(blob.pack_key, -1)
            self.released.append(blob.hash)

    def count_pack(self, key: str, delta: int) -> None:
        self.pack_delta[key] = self.pack_delta.get(key, 0) + delta

    def _apply_pack_counts(self) -> None:
        for key, delta in self.pack_delta.items():
            if delta == 0:
                continue
            mkey = pack_meta_key(key)
            raw = self.cfs[CF_META].get(mkey)
            n = (int(raw) if raw else 0) + delta
            if n > 0:
                self.meta[mkey] = str(n).encode()
            else:
                self.meta[mkey] = b""
                self.emptied_packs.append(key)

    def finish(self) -> WriteBatch | None:
        """Prune, then build the WriteBatch (None if nothing changed)."""
        self._prune()
        self._apply_pack_counts()
        batch = WriteBatch(raw_mode=True)
        h = self.handles
        idx = h["idx"]
        for slot in self.slots.values():
            if not slot.dirty:
                continue
            handle = h[slot.cf]
            if slot.rec is None:
                batch.delete(slot.key, handle)
                new_entries: Mapping[bytes, bytes] = {}
            else:
                batch.put(slot.key, slot.rec.encode(), handle)
                new_entries = _ENTRIES[slot.cf](slot.rec)
            slot.new_entries = new_entries
            old = slot.orig_entries
            if old is new_entries:
                # The same memoized entries (secondary.py `_memo`: a study, series or patient
                # record whose indexed values did not change, the usual case of every store after
                # a series' first): nothing to diff.
                continue
            for k in old:
                if k not in new_entries:
                    batch.delete(k, idx)
            for k, v in new_entries.items():
                if old.get(k) != v:
                    batch.put(k, v, idx)
        for ch in self.changes:
            batch.put(feed_key(ch.seq), ch.encode(), h[CF_FEED])
        for k, v in self.meta.items():
            batch.put(k, v, h[CF_META])
        if batch.is_empty():
            return None
        batch.put(META_STATS, self.stats.encode(), h[CF_META])
        return batch

    def written(self) -> None:
        """The batch of :meth:`finish` is in the database: its records go to the cache as written."""
        if self.cache is None:
            return
        for slot in self.slots.values():
            if slot.dirty and slot.new_entries is not None:
                self.cache.keep(slot.cf, slot.key, slot.rec, slot.new_entries)
