"""The worklist store: entries and MPPS instances, durable in the archive's index.

They live in the index's `meta` column family under their own prefixes, written with the
index's synced batches (so an acknowledged add, N-CREATE or N-SET survives a crash, and an MPPS
update and the entry status it changes are one atomic batch), copied by its checkpoints
(`backup`), and readable beside a running server by a read-only open of the index:

    wl/e/ E(accession) E(requested procedure id) E(step id)      -> entry (version byte + msgpack)
    wl/d/ E(start date) <entry key components>                   -> b"1"  (date index)
    wl/a/ E(scheduled station AE) <entry key components>         -> b"1"  (station index)
    wl/m/ E(modality) <entry key components>                     -> b"1"  (modality index)
    wl/u/ E(study instance uid) <entry key components>           -> b"1"  (study index, MPPS links)
    mpps/ E(MPPS SOP instance uid)                               -> MPPS record

`E()` is the index's order-preserving component encoding (index/keys.py). One process writes
(the one holding the data directory: `serve`, or the CLI when nothing serves); inside it one lock
per index orders the read-modify-write of entries, whichever of DIMSE, HTTP or HL7 asks.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, replace
from typing import Any

from pydicom.dataset import Dataset

from ..errors import ConflictError, UnknownObjectError
from ..index import Index
from ..index import keys as K
from ..index.meta_records import decode_map, encode, lock_for
from .worklist_entry import (
    CANCELED,
    COMPLETED,
    DISCONTINUED,
    STATUSES,
    WorklistEntry,
    check_entry,
    parse_start,
    split_key,
)
from .worklist_match import matches, response

ENTRY, BY_DATE, BY_AE, BY_MODALITY, BY_STUDY = b"wl/e/", b"wl/d/", b"wl/a/", b"wl/m/", b"wl/u/"
MPPS = b"mpps/"
log = logging.getLogger("dicomvault.worklist")
# Told of every entry scheduled (`add`), whoever adds it: HL7 orders, `POST /api/worklist` and
# `dicomvault worklist add` each build their own WorklistStore, so listeners are kept per index
# like the locks. A listener must only queue work (it runs before the add returns).
Listener = Callable[[WorklistEntry], None]
_listeners: dict[str, list[Listener]] = {}
_listeners_guard = threading.Lock()


def on_scheduled(index: Index, listener: Listener) -> Callable[[], None]:
    """Calls `listener(entry)` after each entry added to `index`'s worklist; returns the
    function that stops it (the priors service subscribes here, priors/service.py)."""
    with _listeners_guard:
        _listeners.setdefault(index.path, []).append(listener)

    def stop() -> None:
        with _listeners_guard:
            held = _listeners.get(index.path, [])
            if listener in held:
                held.remove(listener)

    return stop


def _notify(index: Index, entry: WorklistEntry) -> None:
    with _listeners_guard:
        held = list(_listeners.get(index.path, ()))
    for listener in held:
        try:
            listener(entry)
        except Exception:  # noqa: BLE001 - the entry is durable; a listener's bug must not fail the add
            log.exception("worklist entry %s: a listener of new entries failed", entry.key)


def _lock_for(index: Index) -> threading.RLock:
    return lock_for(index.path, "worklist")


def _key_part(entry: WorklistEntry) -> bytes:
    return K.pack(entry.accession, entry.requested_procedure_id, entry.sps_id)


def _secondary(entry: WorklistEntry) -> list[bytes]:
    part = _key_part(entry)
    return [BY_DATE + K.encode(entry.start_date) + part, BY_AE + K.encode(entry.station_ae) + part,
            BY_MODALITY + K.encode(entry.modality) + part, BY_STUDY + K.encode(entry.study_uid) + part]


class WorklistStore:
    """Entries by key (Accession Number ^ Requested Procedure ID ^ Scheduled Procedure Step ID)
    and MPPS instances by SOP Instance UID. The API an order feed (HL7), the CLI, the HTTP API
    and the DIMSE services use."""

    def __init__(self, index: Index) -> None:
        self.index = index
        self._lock = _lock_for(index)

    # -- entries ---------------------------------------------------------------------------------

    def get(self, key: str) -> WorklistEntry | None:
        acc, rp, sps = split_key(key)
        raw = self.index.get_meta(ENTRY + K.pack(acc, rp, sps))
        return WorklistEntry.from_dict(decode_map(raw, f"worklist entry {key}")) if raw else None

    def require(self, key: str) -> WorklistEntry:
        entry = self.get(key)
        if entry is None:
            raise UnknownObjectError("worklist entry", key)
        return entry

    def _writes(self, old: WorklistEntry | None, new: WorklistEntry | None) -> dict[bytes, bytes | None]:
        out: dict[bytes, bytes | None] = {}
        if old is not None:
            out[ENTRY + _key_part(old)] = None
            for k in _secondary(old):
                out[k] = None
        if new is not None:
            for k in _secondary(new):
                out[k] = b"1"
            out[ENTRY + _key_part(new)] = encode(asdict(new))
        return out

    def add(self, entry: WorklistEntry, *, replace_existing: bool = False) -> WorklistEntry:
        """Schedules `entry`; an existing key is a conflict unless `replace_existing`."""
        check_entry(entry)
        with self._lock:
            old = self.get(entry.key)
            if old is not None and not replace_existing:
                raise ConflictError(f"worklist entry {entry.key} exists (status {old.status}); "
                                    f"update or remove it first")
            self.index.put_meta_many(self._writes(old, entry))
        _notify(self.index, entry)
        return entry

    def update(self, key: str, **changes: Any) -> WorklistEntry:
        """Changes fields of an entry (an order change); the key fields cannot change. `start`
        ('YYYY-MM-DD HH:MM') may stand for start_date and start_time."""
        if "start" in changes:
            changes["start_date"], changes["start_time"] = parse_start(str(changes.pop("start")))
        fixed = {"accession", "requested_procedure_id", "sps_id", "created"} & set(changes)
        if fixed:
            raise ConflictError(f"worklist entry {key}: {', '.join(sorted(fixed))} cannot change "
                                f"(remove the entry and add a new one)")
        with self._lock:
            old = self.require(key)
            new = replace(old, **changes, updated=time.time())
            check_entry(new)
            self.index.put_meta_many(self._writes(old, new))
        return new

    def set_status(self, key: str, status: str) -> WorklistEntry:
        if status not in STATUSES:
            raise ValueError(f"status {status!r} is not one of {', '.join(STATUSES)}")
        return self.update(key, status=status)

    def cancel(self, key: str) -> WorklistEntry:
        """An order canceled: the entry leaves the worklist, kept for the record."""
        return self.set_status(key, CANCELED)

    def complete(self, key: str) -> WorklistEntry:
        return self.set_status(key, COMPLETED)

    def discontinue(self, key: str) -> WorklistEntry:
        return self.set_status(key, DISCONTINUED)

    def remove(self, key: str) -> WorklistEntry:
        """Deletes the entry (the MPPS instances that referenced it stay)."""
        with self._lock:
            old = self.require(key)
            self.index.put_meta_many(self._writes(old, None))
        return old

    def _all(self) -> Iterator[WorklistEntry]:
        for k, v in self.index.meta_items(ENTRY):
            yield WorklistEntry.from_dict(decode_map(v, f"worklist entry {k!r}"))

    def _indexed(self, ns: bytes, lo: bytes, hi: bytes | None) -> Iterator[WorklistEntry]:
        """Entries named by the secondary index `ns` between the encoded values lo and hi."""
        for k, _ in self.index.meta_range(ns + lo, ns + hi if hi is not None else K.prefix_upper_bound(ns)):
            _, pos = K.decode_at(k, len(ns))  # the indexed value; the entry's key follows
            acc, rp, sps = K.unpack(k, pos)
            raw = self.index.get_meta(ENTRY + K.pack(acc, rp, sps))
            if raw:
                yield WorklistEntry.from_dict(decode_map(raw, f"worklist entry {acc}^{rp}^{sps}"))

    def _exactly(self, ns: bytes, value: str) -> Iterator[WorklistEntry]:
        return self._indexed(ns, K.encode(value), K.encode_prefix(value) + K.AFTER_TERM)

    def entries(self, *, active_only: bool = True, date: str | None = None, modality: str | None = None,
                station_ae: str | None = None, study_uid: str | None = None) -> list[WorklistEntry]:
        """Entries by exact station AE, modality, study UID, and date (YYYYMMDD or a range
        lo-hi, lo-, -hi); by default only those still on the worklist. Sorted by start."""
        candidates = self._candidates(date, modality, station_ae, study_uid)
        out = []
        for e in candidates:
            if active_only and not e.active:
                continue
            if modality and e.modality != modality or station_ae and e.station_ae != station_ae:
                continue
            if study_uid and e.study_uid != study_uid:
                continue
            if date and not _date_in(date, e.start_date):
                continue
            out.append(e)
        out.sort(key=lambda e: (e.start_date, e.start_time, e.key))
        return out

    def _candidates(self, date: str | None, modality: str | None, station_ae: str | None,
                    study_uid: str | None) -> Iterable[WorklistEntry]:
        """The narrowest secondary index the criteria allow."""
        if study_uid:
            return self._exactly(BY_STUDY, study_uid)
        if station_ae:
            return self._exactly(BY_AE, station_ae)
        if date and "-" not in date:
            return self._exactly(BY_DATE, date)
        if date:
            lo, _, hi = date.partition("-")
            return self._indexed(BY_DATE, K.encode(lo) if lo else b"",
                                 (K.encode_prefix(hi) + K.AFTER_TERM) if hi else None)
        if modality:
            return self._exactly(BY_MODALITY, modality)
        return self._all()

    def find(self, identifier: Dataset) -> Iterator[Dataset]:
        """The Modality Worklist C-FIND: a response identifier per active entry that matches."""
        sps = identifier.get("ScheduledProcedureStepSequence")
        item = sps[0] if sps is not None and len(sps) else Dataset()
        ae = _exact(item.get("ScheduledStationAETitle"))
        modality = _exact(item.get("Modality"))
        date = str(item.get("ScheduledProcedureStepStartDate", "") or "").strip()
        if "*" in date or "?" in date or "\\" in date:
            date = ""
        for entry in self._candidates(date or None, modality, ae, _exact(identifier.get("StudyInstanceUID"))):
            if not entry.active:
                continue
            ds = entry.as_dataset()
            if matches(identifier, ds):
                yield response(identifier, ds)

    # -- MPPS ------------------------------------------------------------------------------------

    def get_mpps(self, uid: str) -> dict[str, Any] | None:
        raw = self.index.get_meta(MPPS + K.encode(uid))
        return decode_map(raw, f"MPPS {uid}") if raw else None

    def put_mpps(self, record: dict[str, Any], entries: Iterable[WorklistEntry] = ()) -> None:
        """Writes an MPPS record and the entries it changed, in one durable batch. The caller
        holds `lock` across its read of both and this write."""
        writes: dict[bytes, bytes | None] = {MPPS + K.encode(str(record["uid"])): encode(record)}
        for e in entries:
            old = self.get(e.key)
            writes.update(self._writes(old, e))
        self.index.put_meta_many(writes)

    def mpps_all(self) -> list[dict[str, Any]]:
        return [decode_map(v, f"MPPS {k!r}") for k, v in self.index.meta_items(MPPS)]

    @property
    def lock(self) -> threading.RLock:
        return self._lock


def _exact(elem: Any) -> str | None:
    """A key's value if it is one exact value (no wildcard, list or range), else None."""
    if elem is None:
        return None
    value = elem.value if hasattr(elem, "value") else elem
    text = str(value or "").strip()
    if not text or any(c in text for c in "*?\\"):
        return None
    return text


def _date_in(query: str, stored: str) -> bool:
    if "-" not in query:
        return stored == query
    lo, _, hi = query.partition("-")
    return bool(stored) and (not lo or stored >= lo) and (not hi or stored <= hi)
