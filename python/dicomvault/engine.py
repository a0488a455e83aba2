"""The one facade the rest of Python calls: store, read, export, delete, verify.

Data path of a store: native core (parse, hash, compress, durable append; GIL released) →
index commit (one atomic batch, group-synced WAL) → acknowledge. The blob is durable before the
index names it, so a crash between the two leaves at most an unreferenced blob, never an index
entry without bytes.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import _native, coercion  # type: ignore[attr-defined]
from .attributes import index_attrs
from .audit.log import DATA_DELETION, INSTANCES_REJECTED, SUCCESS, AuditLog
from .errors import (
    DicomVaultError,
    RejectedError,
    ReplicaWriteError,
    UIDMismatchError,
    UnavailableError,
    UnknownObjectError,
)
from .filemeta import file_meta_prefix
from .index import REJECTION_TITLES, BlobRecord, Change, Index, InstanceRecord, Placement, Rejection
from .index import role as site_role
from .locks import ReadWriteLock
from .readahead import decode_bound
from .rejection_notes import KOS_SOP_CLASS, parse_rejection
from .storage.cold import ColdPlacement, ColdTier
from .storage.coldcache import ColdReadCache
from .storage.layout import resolve as resolve_layout
from .storage.read_check import DEFAULT as READ_CHECK_DEFAULT
from .storage.reserve import Reserve
from .storage.settings import TierSpec

DEFAULT_DATA_DIR = Path("./dicomvault-data")
LEVELS = ("study", "series", "instance")
# Blob records written before tiers existed name this tier; it is the one in volumes/.
LEGACY_TIER = "hot"
# After an object store failed to answer, reads of it fail at once for this many seconds.
REMOTE_RETRY_AFTER = 5.0


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
    # blobs checked in object-store tiers (by streaming their packs), per tier
    remote_checked: dict[str, int] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        return not self.damaged and not self.missing


def cold_placement(blob: BlobRecord) -> ColdPlacement:
    """Where a blob of an object-store tier is, from its index record."""
    return ColdPlacement(
        hash=blob.hash,
        pack_key=blob.pack_key,
        offset=blob.pack_offset,
        length=blob.stored_len,
        digest=blob.pack_digest,
        codec=blob.codec,
        logical_len=blob.logical_len,
    )


_FILE_NAME = re.compile(r"[0-9A-Za-z._-]{1,128}")


def file_name(uid: str) -> str:
    """A UID as a file or folder name: itself when it is a safe one, else `uid-` and a digest of
    it. The core refuses UIDs with path separators or control characters on the way in; this
    keeps an export inside its folder whatever an index holds (data stored before that check)."""
    if _FILE_NAME.fullmatch(uid) and uid not in (".", ".."):
        return uid
    return "uid-" + hashlib.sha256(uid.encode("utf-8", "surrogateescape")).hexdigest()[:32]


class Engine:
    """An open data directory: `<data>/blobs` (native blob store: the local tiers) +
    `<data>/index` (RocksDB, which names the tier of every blob) + object-store tiers.

    A writable engine holds the directory's lock (taken by the blob store); a read-only one takes
    no lock and can run beside a writer (CLI `ls`, `stats`, `export`, `verify`).

    Tiers (`tiers`, else the layout stored in `<data>/tiers.json`, else landing + warm): new
    objects go to the first, with its codec (raw: the background compactor compresses them
    later); reads find a blob in whichever local tier holds it, else in the object-store tier
    its index record names.
    """

    def __init__(
        self,
        data_dir: str | os.PathLike[str] = DEFAULT_DATA_DIR,
        *,
        read_only: bool = False,
        sync: bool = True,
        level: int = 1,
        volume_size: int = 1 << 30,
        min_free_bytes: int | None = None,
        tiers: Sequence[TierSpec] | None = None,
        reserve: Reserve | None = None,
        delete_on_retention_expired: bool = False,
        verify_reads: str = READ_CHECK_DEFAULT,
    ) -> None:
        """`verify_reads` ([storage] in the config, storage/read_check.py): how each read checks
        the bytes it decoded.
        `reserve`: the free space every write leaves on each filesystem holding a local tier
        (storage/reserve.py; default: 2 % of it, at least 16 MiB, at most 4 GiB);
        `min_free_bytes` instead: a fixed reserve (0: none).
        `delete_on_retention_expired`: IOCM policy ([iocm] in the config): a rejection note titled
        113039 (Data Retention Policy Expired) deletes what it references instead of hiding it."""
        self.data_dir = Path(data_dir)
        self.reserve = Reserve.fixed(min_free_bytes) if min_free_bytes is not None else (reserve or Reserve())
        self.read_only = read_only
        self.verify_reads = verify_reads
        if read_only:
            if not (self.data_dir / "index").exists():
                raise DicomVaultError(f"no dicomvault data directory at {self.data_dir}")
        else:
            self.data_dir.mkdir(parents=True, exist_ok=True)
        self.tiers: tuple[TierSpec, ...] = resolve_layout(self.data_dir, tiers, write=not read_only)
        self.local_tiers = [t for t in self.tiers if t.is_local]
        self.remote_tiers = {t.name: t for t in self.tiers if not t.is_local}
        self._remote: dict[str, ColdTier] = {}
        # One connection per tier: a first read while `serve` connects at start (client setup
        # and bucket check, 0.1-0.6 s) waits for that one instead of making a second (leaked).
        self._remote_lock = threading.Lock()
        self._remote_down: dict[str, tuple[float, UnavailableError]] = {}
        self._cold_cache = ColdReadCache()
        self.landing_tier = self.tiers[0].name
        # Studies read since the tiering service last looked: last access (idle policies) and
        # the ones read from an object store (promotion).
        self.accessed: dict[str, float] = {}
        self.cold_reads: set[str] = set()
        # monotonic time of the last ingest commit (the compactor yields while it is recent)
        self.last_ingest = 0.0
        self.last_read = 0.0  # monotonic time of the last foreground read (the compactor yields)
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
            min_free_bytes=0 if read_only else self.reserve.floor,
            reserve_fraction=0.0 if read_only else self.reserve.fraction,
            reserve_max_bytes=0 if read_only else self.reserve.ceiling,
            tiers=[(t.name, t.path) for t in self.local_tiers],
            # Ingest never runs the cold codec inline: a cold landing tier stores hot.
            ingest_codec=min(self.tiers[0].codec_id, 1),
            verify_reads=verify_reads,
        )
        try:
            self.index = Index.open(str(self.data_dir / "index"), read_only=read_only)
        except BaseException:
            self.vault.close()
            raise
        self.index.delete_on_retention_expired = delete_on_retention_expired
        self._lock = ReadWriteLock()

    # -- lifecycle -------------------------------------------------------------------------------
    def close(self) -> None:
        self._cold_cache.close()
        self.index.close()
        self.vault.close()
        for r in self._remote.values():
            r.close()
        self._remote.clear()

    # -- tiers -----------------------------------------------------------------------------------
    def local_index(self, tier: str) -> int:
        """Position of a local tier in the native store (its `copy_between`/`delete_in` index)."""
        for i, t in enumerate(self.local_tiers):
            if t.name == tier:
                return i
        raise DicomVaultError(f"no local tier named {tier!r} (tiers: {[t.name for t in self.tiers]})")

    def remote(self, tier: str) -> ColdTier:
        """The object-store tier `tier`, connected on first use (a command that never reads a
        cold blob never needs the store to be up)."""
        r = self._remote.get(tier)
        if r is not None:
            return r
        with self._remote_lock:
            r = self._remote.get(tier)
            if r is None:
                spec = self.remote_tiers.get(tier)
                if spec is None:
                    raise DicomVaultError(f"no object-store tier named {tier!r}")
                r = ColdTier.from_spec(
                    spec.name, spec.endpoint, spec.bucket or "", region=spec.region,
                    access_key=spec.access_key, secret_key=spec.secret_key, prefix=spec.prefix,
                    sse=spec.sse, pack_size=spec.pack_size, codec=spec.codec_id,
                    # A store that accepts connections and then says nothing must fail a read in
                    # seconds (a viewer is waiting), not after three 5 s timeouts.
                    read_timeout=2.0, retries=1,
                )
                self._remote[tier] = r
            return r

    def connected_remotes(self) -> set[str]:
        """The object-store tiers connected so far (by `remote`)."""
        return set(self._remote)

    def placed_tier(self, blob: BlobRecord) -> str:
        """The tier a blob record names (records from before tiers say `hot`: the volumes/ tier)."""
        if blob.tier == LEGACY_TIER and LEGACY_TIER not in {t.name for t in self.tiers}:
            for t in self.local_tiers:
                if t.path == "volumes":
                    return t.name
        return blob.tier

    def _remote_blob(self, blob_hash: bytes) -> BlobRecord | None:
        """The index record of a blob no local tier has, if an object-store tier holds it."""
        blob = self.index.blob(blob_hash)
        if self.read_only and (blob is None or blob.tier not in self.remote_tiers):
            # A read-only view older than the writer's move of the blob to an object store.
            self.index.refresh()
            blob = self.index.blob(blob_hash)
        return blob if blob is not None and blob.tier in self.remote_tiers else None

    def _read_remote(self, blob_hash: bytes, study_uid: str | None) -> tuple[str, _native.DecodedObject]:
        """(transfer syntax, data set in a native buffer) of an object-store blob, hash-checked."""
        blob = self._remote_blob(blob_hash)
        if blob is None:
            raise _native.NotFoundError(f"blob {blob_hash.hex()} is in no tier")
        down = self._recently_down(blob.tier)
        if down is not None:
            raise UnavailableError(f"{down} (not retried for {REMOTE_RETRY_AFTER:.0f} s)") from down
        try:
            tier, p = self.remote(blob.tier), cold_placement(blob)
            if p.codec == _native.CODEC_COLD:
                decode_bound()  # the dense codec's decode paces a retrieve: its read-ahead widens
            hit = self._cold_stored(blob, study_uid, fetch=True)
            ts, dataset = (
                tier.decoded_of(p, *hit, self.verify_reads) if hit is not None
                else tier.read_decoded(p, self.verify_reads)
            )
        except UnavailableError as exc:
            self._remote_down[blob.tier] = (time.monotonic(), exc)
            raise
        self._remote_down.pop(blob.tier, None)
        if study_uid:
            self.cold_reads.add(study_uid)
        return ts, dataset

    def _recently_down(self, tier: str) -> UnavailableError | None:
        """Why `tier`'s store failed, if that was less than REMOTE_RETRY_AFTER ago: a study of
        500 cold instances while the store is down costs one timeout, not 500."""
        down = self._remote_down.get(tier)
        return down[1] if down is not None and time.monotonic() - down[0] < REMOTE_RETRY_AFTER else None

    def _cold_stored(self, blob: BlobRecord, study_uid: str | None, *, fetch: bool
                     ) -> tuple[int, bytes] | None:
        """(codec, stored bytes) of an object-store blob from the read cache; else, with `fetch`
        and its study, fetched with the study's next read-ahead window; else None."""
        hit = self._cold_cache.get(blob.hash)
        if hit is None and fetch and study_uid:
            p = cold_placement(blob)
            hit = self._cold_cache.read_ahead(
                self.remote(blob.tier), p, f"{p.pack_key}/{study_uid}",
                lambda: [cold_placement(b) for b in self.study_blobs(study_uid) if b.tier == blob.tier],
            )
        return hit

    def read_stored(self, blob_hash: bytes) -> tuple[int, int, bytes]:
        """(codec, logical length, stored bytes) of a blob from whichever tier holds it, not
        decoded (replication and backup ship blobs as stored; the receiver verifies them)."""
        try:
            return self.vault.read_stored(blob_hash)
        except _native.NotFoundError:
            blob = self._remote_blob(blob_hash)
            if blob is None:
                raise
            codec, stored = self.remote(blob.tier).read(cold_placement(blob))
            return codec, blob.logical_len, stored

    def study_blobs(self, study_uid: str) -> list[BlobRecord]:
        """The distinct blob records of a study's instances (UnknownObjectError if none)."""
        seen: dict[bytes, BlobRecord] = {}
        for rec in self.instances("study", study_uid):
            if rec.hash not in seen and (b := self.index.blob(rec.hash)) is not None:
                seen[rec.hash] = b
        return list(seen.values())

    def read_remote_many(self, blobs: Sequence[BlobRecord]) -> list[tuple[int, bytes] | Exception]:
        """(codec, stored bytes) of object-store blobs, digest-checked, one result per blob:
        what a recent read already fetched (the read cache), the rest with coalesced GETs."""
        out: list[tuple[int, bytes] | Exception | None] = [self._cold_cache.get(b.hash) for b in blobs]
        missing: dict[str, list[int]] = {}
        for i, b in enumerate(blobs):
            if out[i] is None:
                missing.setdefault(b.tier, []).append(i)
        for tier, idx in missing.items():
            got = self.remote(tier).read_many([cold_placement(blobs[i]) for i in idx])
            for i, r in zip(idx, got, strict=True):
                out[i] = r
        return [r for r in out if r is not None]

    def _read(self, blob_hash: bytes, study_uid: str | None) -> tuple[str, bytes]:
        """(transfer syntax, dataset) of a blob from whichever tier holds it, hash-verified."""
        if study_uid:  # a foreground read (retrieve, viewer), not a background one
            self.accessed[study_uid] = time.time()
            self.last_read = time.monotonic()
        try:
            return self.vault.read(blob_hash)
        except _native.NotFoundError:
            if not self.remote_tiers:
                raise
            ts, dataset = self._read_remote(blob_hash, study_uid)
            return ts, dataset.bytes()

    def read_for_sending(self, sop_instance_uid: str
                         ) -> tuple[InstanceRecord, str, bytes | _native.DecodedObject]:
        """read_instance for a sender that only writes the data set out (a DIMSE retrieve): the
        data set of a local blob stays in the native buffer it was decoded into, which
        `_native.send_message` sends as it is (copying 0.5 MB per CT slice into bytes cost ~4% of
        a C-GET's server CPU); from an object-store tier too. Bytes where a patient correction
        rewrites it. `.bytes()` of the native buffer copies it out."""
        rec = self.index.get_instance(sop_instance_uid)
        if rec is None:
            raise UnknownObjectError("instance", sop_instance_uid)
        if self.index.coercion_of(rec.study_uid):
            ts, dataset = self.read_record(rec)
            return rec, ts, dataset
        self.accessed[rec.study_uid] = time.time()
        self.last_read = time.monotonic()
        try:
            ts, decoded = self.vault.read_decoded(rec.hash)
        except _native.NotFoundError:
            if not self.remote_tiers:
                raise
            ts, decoded = self._read_remote(rec.hash, rec.study_uid)
        return rec, ts, decoded

    def stored_for_sending(self, sop_uids: list[str]) -> list[tuple[int, bytes, int]]:
        """(codec, stored bytes, logical length) of the leading objects of `sop_uids` that an
        object-store tier holds, for a native sender that decodes them itself
        (_native.retrieve_batch's `stored`): the first one (with the read-ahead window of its
        study, fetched now if need be), then those after it that the read-ahead has already
        fetched, so that the first object leaves while the next window is on its way. [] when
        the first one is not in an object store, or cannot be read now (the store down, a
        damaged copy): read_for_sending then reads it, and says why if it cannot."""
        out: list[tuple[int, bytes, int]] = []
        # the first alone first: when it cannot be sent so (the store down, a local blob gone),
        # the caller asks again for the next object, and must not pay for the others' records
        for chunk in (sop_uids[:1], sop_uids[1:]):
            fields = self.index.sending_fields(chunk)
            blobs = self.index.blobs_of([f[0] if f is not None else b"" for f in fields])
            for f, blob in zip(fields, blobs, strict=True):
                stored = self._stored_to_send(f, blob, first=not out)
                if stored is None:
                    return out
                out.append(stored)
        return out

    def _stored_to_send(self, fields: tuple[bytes, str, str, str] | None, blob: BlobRecord | None, *,
                        first: bool) -> tuple[int, bytes, int] | None:
        """stored_for_sending of one object: its (codec, stored bytes, logical length), or None
        where the run stops (not remote, its store down; not fetched yet unless `first`)."""
        if fields is None or blob is None or blob.tier not in self.remote_tiers:
            return None
        if self._recently_down(blob.tier):
            return None
        study_uid = fields[3]
        try:
            # after the first, only what the read-ahead has in: the next window is fetched in
            # the background, or by the next call
            hit = self._cold_stored(blob, study_uid, fetch=first)
        except UnavailableError as exc:
            self._remote_down[blob.tier] = (time.monotonic(), exc)
            return None
        except Exception:  # noqa: BLE001 - read_for_sending reads it alone and reports why
            return None
        if hit is None:
            return None
        self._remote_down.pop(blob.tier, None)
        self.cold_reads.add(study_uid)
        codec, stored = hit
        return codec, stored, blob.logical_len

    def prefetch(self, blob_hashes: list[bytes]) -> None:
        """Starts reading these local blobs from the disk in the background (a study about to be
        read in its own order, which is not the volumes'); returns at once."""
        self.vault.prefetch(blob_hashes)

    def blobs_for_sending(self, sop_uids: list[str]) -> list[tuple[bytes, str, str] | None]:
        """(blob hash, stored transfer syntax, SOP Class UID) of each object whose data set
        read_for_sending would send as its local blob holds it, for a native reader
        (_native.retrieve_batch); None for one read_for_sending must read itself (not indexed, or
        of a patient-corrected study). A blob no longer local (an object-store tier) is found out
        by that reader, which then hands it back. One index multi-get for the lot."""
        out: list[tuple[bytes, str, str] | None] = []
        coerced: dict[str, bool] = {}
        now = time.time()
        for f in self.index.sending_fields(sop_uids):
            if f is None:
                out.append(None)
                continue
            blob_hash, ts, sop_class, study_uid = f
            if study_uid not in coerced:
                coerced[study_uid] = bool(self.index.coercion_of(study_uid))
                self.accessed[study_uid] = now
            out.append(None if coerced[study_uid] else (blob_hash, ts, sop_class))
        self.last_read = time.monotonic()
        return out

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
        attrs = index_attrs(native)
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
            "tier": self.landing_tier,
            "received_at": time.time(),
        }

    def _rejection_of(self, sop_class_uid: str, sop_uid: str, blob_hash: bytes) -> Rejection | None:
        """The IOCM rejection a just-stored object expresses (only KOS objects are read)."""
        if sop_class_uid.rstrip("\0 ") != KOS_SOP_CLASS:
            return None
        ts, dataset = self._read(blob_hash, None)
        return parse_rejection(dataset, ts, sop_uid)

    def _audit_rejection(self, rejection: Rejection, client: str | None, patient: str | None) -> None:
        """One audit record per applied note (see docs/integration.md, IOCM, for the choice)."""
        deleted = rejection.deletes and self.index.delete_on_retention_expired
        AuditLog(self.data_dir).record(
            DATA_DELETION if deleted else INSTANCES_REJECTED, SUCCESS, user=None, client=client,
            patient=patient, study=rejection.refs[0].study_uid,
            detail={"note": rejection.note_uid, "code": f"DCM {rejection.code}",
                    "title": REJECTION_TITLES[rejection.code], "action": "deleted" if deleted else "hidden",
                    "instances": [r.sop_uid for r in rejection.refs]})

    def _commit(self, records: list[dict[str, Any]], client: str | None = None) -> list[StoreOutcome]:
        self.last_ingest = time.monotonic()
        for rec in records:
            # The note's blob is durable already; the hiding goes into the note's own index batch,
            # so no crash leaves the note stored and its references visible.
            rejection = self._rejection_of(rec["attrs"].get("SOPClassUID", ""),
                                           rec["attrs"]["SOPInstanceUID"], rec["hash"])
            if rejection is not None:
                rec["rejection"] = rejection
        results = self.index.add_instances(records)
        released: list[bytes] = []
        outcomes = []
        for rec, res in zip(records, results, strict=True):
            released.extend(res.released_blobs)
            if "rejection" in rec and not res.duplicate:
                self._audit_rejection(rec["rejection"], client, rec["attrs"].get("PatientID"))
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

    def ensure_writable(self) -> None:
        """Raises ReplicaWriteError on a replica: every local write path (DIMSE, DICOMweb, the
        CLI, the API) goes through the engine, so this is the one place that refuses them. Only
        replication's own paths (apply_replicated, put_stored, heal) write to a replica."""
        if site_role.role(self.index) == site_role.REPLICA:
            raise ReplicaWriteError(
                f"{self.data_dir} is a replica: it takes changes only from its upstream "
                "(`dicomvault dr promote` makes it writable)"
            )

    def store_files(self, paths: Sequence[str | os.PathLike[str]]) -> list[StoreOutcome | Exception]:
        """Stores files (Part-10 or bare datasets); one result per path, in order.

        A rejected file yields its exception in its slot and stores nothing; the others go on.
        Raises ReplicaWriteError on a replica.
        """
        self.ensure_writable()
        return self._store_batch(lambda: self.vault.ingest_files([os.fspath(p) for p in paths]))

    def store_buffers(self, buffers: Sequence[bytes]) -> list[StoreOutcome | Exception]:
        """Like store_files, for Part-10 files already in memory (STOW-RS bodies, generators)."""
        self.ensure_writable()
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
        Raises ReplicaWriteError on a replica.
        """
        self.ensure_writable()
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
            return self._commit([record], calling_ae)[0]

    def apply_replicated(
        self, items: Sequence[tuple[Change, Mapping[str, Any] | None]], meta: Mapping[bytes, bytes]
    ) -> None:
        """Applies a page of an upstream's change feed (whose blobs are already stored) and the
        replication cursor in one index batch, then frees blobs nothing references any more.

        Under the shared lock: a delete or compaction never runs between the blob puts of the
        page and the index commit that names them."""
        with self._lock.shared():
            page: list[tuple[Change, Mapping[str, Any] | None]] = []
            notes: list[tuple[Rejection, str | None]] = []
            for ch, inst in items:
                rejection = None if inst is None else self._rejection_of(
                    str(inst.get("sop_class_uid") or ""), ch.sop_uid, bytes(inst["hash"]))
                if rejection is not None and inst is not None:
                    # Derived here from the note itself: the replica hides what its primary hid.
                    inst = {**inst, "rejection": rejection}
                    notes.append((rejection, str(inst.get("patient_id") or "") or None))
                page.append((ch, inst))
            released = self.index.apply_replicated(page, meta)
            if released:
                self.vault.delete(released)
        for rejection, patient in notes:
            self._audit_rejection(rejection, "replication", patient)

    def replace_blob(self, blob_hash: bytes, codec: int, logical_len: int, stored: bytes) -> bool | Exception:
        """Swaps a damaged or missing blob for a good copy (heal). The copy is decoded and its
        BLAKE3 checked before it is written; returns True or the exception that refused it.
        A blob placed in an object store is healed into the landing tier and placed there (the
        damaged remote copy stops being named; the policies move it out again later).

        Exclusive: nobody reads or dedups against the blob while the damaged record is dropped."""
        with self._lock.exclusive():
            # The damaged record still counts as present: drop it first so the good copy is written.
            if self.vault.contains(blob_hash):
                self.vault.delete([blob_hash])
            res = self.vault.put_stored([(blob_hash, codec, logical_len, stored)])[0]
            if isinstance(res, Exception):
                return res
            blob = self.index.blob(blob_hash)
            if blob is not None and blob.tier in self.remote_tiers:
                self.index.set_placements(
                    [Placement(blob_hash, blob.tier, self.landing_tier, codec, len(stored))]
                )
        self.free_packs()
        return True

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

    def read_dataset(self, sop_instance_uid: str, *, background: bool = False,
                     as_received: bool = False) -> tuple[str, bytes]:
        """(transfer syntax UID, dataset bytes as they leave the archive), hash-verified.
        `background`: as for read_record (storage commitment, forwarding: not a user's access)."""
        _, ts, dataset = self.read_instance(sop_instance_uid, background=background, as_received=as_received)
        return ts, dataset

    def read_record(self, rec: InstanceRecord, *, background: bool = False,
                    as_received: bool = False) -> tuple[str, bytes]:
        """(transfer syntax UID, dataset bytes) of an index record the caller already holds
        (a retrieve that listed a study), hash-verified, without looking the record up again.
        `background`: the archive's own work (a cache warmer), which is not a user's access:
        it neither counts as the study's last access nor promotes it from an object store.
        The bytes are those received, with the patient corrections of the study applied
        (coercion.py) unless `as_received`."""
        ts, dataset = self._read(rec.hash, None if background else rec.study_uid)
        return ts, dataset if as_received else self.outgoing(rec.study_uid, ts, dataset)

    def coercion_of(self, study_uid: str) -> dict[str, str]:
        """The patient attributes a correction changed for this study's objects ({}: none)."""
        return self.index.coercion_of(study_uid)

    def outgoing(self, study_uid: str, ts: str, dataset: bytes) -> bytes:
        """A stored data set as it leaves the archive: the study's patient corrections applied."""
        values = self.index.coercion_of(study_uid)
        return coercion.apply(ts, dataset, values) if values else dataset

    def is_remote(self, blob_hash: bytes) -> bool:
        """Whether the blob is placed in an object-store tier (reading it costs a GET)."""
        if not self.remote_tiers:
            return False
        blob = self.index.blob(blob_hash)
        return blob is not None and blob.tier in self.remote_tiers

    @staticmethod
    def dataset_length(rec: InstanceRecord) -> int:
        """Length of the dataset bytes `read_record(rec)` returns, known before reading: the
        record's logical length counts the canonical form, `transfer syntax UID + NUL + dataset`
        (core/src/object.rs), so a retrieve can announce its Content-Length up front."""
        return rec.logical_len - len(rec.transfer_syntax.encode("ascii")) - 1

    def read_instance(self, sop_instance_uid: str, *, background: bool = False, as_received: bool = False
                      ) -> tuple[InstanceRecord, str, bytes]:
        """(index record, transfer syntax UID, dataset bytes as they leave the archive: see
        read_record), hash-verified."""
        rec = self.index.get_instance(sop_instance_uid)
        if rec is None:
            raise UnknownObjectError("instance", sop_instance_uid)
        ts, dataset = self.read_record(rec, background=background, as_received=as_received)
        return rec, ts, dataset

    def read_file(self, sop_instance_uid: str, *, background: bool = False,
                  as_received: bool = False) -> bytes:
        """The object as a Part-10 file: byte-identical to the ingested file if it came as one and
        no patient correction applies (or `as_received`)."""
        rec, _, dataset = self.read_instance(sop_instance_uid, background=background, as_received=as_received)
        return rec.prefix + dataset

    def export(self, level: str, uid: str, out_dir: str | os.PathLike[str], *,
               as_received: bool = False) -> list[Path]:
        """Writes `<out>/<StudyUID>/<SeriesUID>/<SOPInstanceUID>.dcm` for every instance under uid,
        with the patient corrections applied unless `as_received` (then byte-identical to what
        was received)."""
        out = Path(out_dir)
        items, paths, recs = [], [], self.instances(level, uid)
        corrected: set[str] = set()
        if not as_received:
            corrected = {s for s in {r.study_uid for r in recs} if self.index.coercion_of(s)}
        slow: list[tuple[InstanceRecord, Path]] = []
        for rec in recs:
            folder = out / file_name(rec.study_uid) / file_name(rec.series_uid)
            path = folder / f"{file_name(rec.sop_uid)}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            paths.append(path)
            self.accessed[rec.study_uid] = time.time()
            if rec.study_uid in corrected:
                slow.append((rec, path))
            else:
                items.append((rec, path))
        native = self.vault.export_files([(r.hash, r.prefix, str(p)) for r, p in items]) if items else []
        for (rec, path), err in zip(items, native, strict=True):
            if err is None:
                continue
            if not (isinstance(err, _native.NotFoundError) and self.remote_tiers):
                raise err
            slow.append((rec, path))
        for rec, path in slow:
            ts, dataset = self.read_record(rec, as_received=as_received)
            part = path.with_suffix(".dcm.part")
            part.write_bytes(rec.prefix + dataset)
            os.replace(part, path)
        return paths

    # -- delete / maintenance --------------------------------------------------------------------
    def delete(self, level: str, uid: str, *, compact_threshold: float = 0.25,
               converging: bool = False) -> int:
        """Deletes everything under uid; frees blobs no other instance references and compacts
        volumes whose garbage passed the threshold. Returns the number of instances deleted.

        On a replica only with `converging` (failback dropping what its upstream does not hold);
        otherwise ReplicaWriteError."""
        if not converging:
            self.ensure_writable()
        if level not in LEVELS:
            raise ValueError(f"level must be one of {LEVELS}, got {level!r}")
        with self._lock.exclusive():
            res = self.index.delete(level, uid)
            if res.released_blobs:
                self.vault.delete(list(res.released_blobs))
            self.vault.compact(compact_threshold)
        self.free_packs()
        return len(res.deleted)

    def free_packs(self) -> list[str]:
        """Deletes the object-store packs whose last live blob left (deleted, moved back).
        Best effort: a store that is down keeps them, and the orphan sweep of `tier run` finds
        them later. Returns the keys deleted."""
        done = []
        for key in self.index.drain_emptied_packs():
            for name in self.remote_tiers:
                try:
                    self.remote(name).delete_pack(key)
                    done.append(key)
                    break
                except DicomVaultError:
                    continue
        return done

    def compact(self, threshold: float = 0.25) -> dict[str, Any]:
        with self._lock.exclusive():
            return self.vault.compact(threshold)

    def verify(self, *, remote: bool = True, rate_limit: int | None = None) -> VerifyReport:
        """Re-reads every blob of every tier, checks its hash, and checks the index names no
        missing blob. Object-store tiers are read by streaming each pack once (at most
        `rate_limit` bytes/s); `remote=False` skips them (their blobs are then not counted)."""
        native = self.vault.verify()
        report = VerifyReport(
            checked=native["checked"],
            ok=native["ok"],
            bytes=native["bytes"],
            damaged=[(h.hex(), msg) for h, msg in native["damaged"]],
        )
        present = set(self.vault.hashes())
        referenced = 0
        by_tier: dict[str, list[ColdPlacement]] = {}
        for h, blob in self.index.blobs():
            if blob.tier in self.remote_tiers:
                # Checked in its object store even when a promoted copy is local too.
                by_tier.setdefault(blob.tier, []).append(cold_placement(blob))
                referenced += h in present
                continue
            referenced += 1
            if h not in present:
                report.missing.append(h.hex())
        report.unreferenced = max(0, len(present) - (referenced - len(report.missing)))
        for name, placements in by_tier.items():
            if not remote:
                break
            res = self.remote(name).verify(placements, rate_limit=rate_limit)
            report.remote_checked[name] = res.blobs
            report.checked += res.blobs
            report.ok += res.blobs - len(res.damaged) - len(res.missing)
            report.bytes += res.bytes
            report.damaged.extend(res.damaged)
            report.missing.extend(h for h, _ in res.missing)
        return report

    def stats(self) -> dict[str, Any]:
        idx = dict(self.index.stats())
        idx["tiers"] = self.tier_stats()
        logical = sum(t["logical_bytes"] for t in idx["tiers"].values())
        stored = sum(t["stored_bytes"] for t in idx["tiers"].values())
        # What the blobs take now, wherever they are (the index's own counter is per instance
        # as received, before compaction or tier moves).
        idx["stored_bytes"] = stored
        idx["compression_ratio"] = round(logical / stored, 3) if stored else None
        return idx

    def tier_stats(self) -> dict[str, dict[str, Any]]:
        """Per tier, in order: what the index places there (blobs, stored and logical bytes,
        their ratio), its backend, codec and capacity; local tiers add their volume files."""
        counts = dict(self.index.tier_counts())
        if LEGACY_TIER in counts and LEGACY_TIER not in {t.name for t in self.tiers}:
            legacy = counts.pop(LEGACY_TIER)
            name = self.placed_tier(BlobRecord(tier=LEGACY_TIER))
            have = counts.get(name, (0, 0, 0))
            counts[name] = (have[0] + legacy[0], have[1] + legacy[1], have[2] + legacy[2])
        native = dict(self.vault.tier_stats())
        out: dict[str, dict[str, Any]] = {}
        for t in self.tiers:
            blobs, stored, logical = counts.get(t.name, (0, 0, 0))
            row: dict[str, Any] = {
                "backend": t.backend, "codec": t.codec, "capacity": t.capacity,
                "objects": blobs, "stored_bytes": stored, "logical_bytes": logical,
                "ratio": round(logical / stored, 3) if stored else None,
            }
            if t.is_local:
                v = native.get(t.name, {})
                row.update(
                    copies=v.get("objects", 0), disk_bytes=v.get("disk_bytes", 0),
                    garbage_bytes=v.get("garbage_bytes", 0), volumes=v.get("volumes", 0),
                    path=str(self.data_dir / "blobs" / (t.path or "")),
                )
                used = v.get("disk_bytes", 0)
            else:
                row.update(endpoint=t.endpoint, bucket=t.bucket, prefix=t.prefix)
                used = stored
            row["used_bytes"] = used
            row["free_bytes"] = max(0, t.capacity - used) if t.capacity else None
            out[t.name] = row
        return out

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
