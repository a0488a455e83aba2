"""Priors ready before the exam: when an order is scheduled, the patient's relevant prior studies
are brought back from the object-store tier and, if configured, pushed to the reading
workstation, so the radiologist's comparison opens at once.

Every way an entry is scheduled (HL7 ORM/OMI, `POST /api/worklist`, `dicomvault worklist add`
through a running server) ends in `WorklistStore.add`, which tells its listeners; the service's
listener only queues the entry's key, so the add (and the HL7 ACK) never waits. A thread of its
own then, per entry:

1. selects the relevant priors (select.py: the [priors] relevance rule, count, age);
2. promotes each from the object store to the first compressing local tier (tiering/jobs.promote,
   what a read of a cold study does), kept there at least until the exam's day;
3. pushes each by C-STORE to `push_to` (push.py), audited as Instances Transferred;
4. records what it did on the entry (`priors`: state, studies, reasons), which `GET
   /api/worklist` and `dicomvault worklist list` show.

A failure (the object store down, the workstation unreachable) never touches the order: it is
logged, recorded on the entry (state `failed`, with the reason and `next_try`) and tried again
after `retry_after` seconds, doubling, `max_attempts` times in all; what already succeeded is not
redone. The state is kept on the entry, so an entry scheduled while no server ran (the CLI
alone) or not finished when the server stopped is taken up at the next start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from ..audit.log import AuditLog
from ..auth.peer_settings import PeerConfig
from ..engine import Engine
from ..errors import DicomVaultError, UnavailableError, UnknownObjectError
from ..integration.priors_settings import PriorsConfig
from ..integration.worklist_entry import WorklistEntry
from ..integration.worklist_store import WorklistStore, on_scheduled
from ..storage.settings import DAY
from ..tiering import jobs
from .push import PushError, TlsContext, push_study
from .select import select_priors

log = logging.getLogger("dicomvault.priors")

DONE, FAILED = "done", "failed"  # an entry's priors state
PROMOTED, LOCAL, PUSHED = "promoted", "local", "pushed"  # a prior's state (or FAILED)
MAX_BACKOFF = 3600.0
RESCAN = 5.0  # seconds between looks for entries due a retry

PeerOf = Callable[[str], PeerConfig | None]


def _start_time(entry: WorklistEntry) -> float | None:
    """The scheduled start as a Unix time (local time), None when the entry has no date."""
    if len(entry.start_date) != 8:
        return None
    stamp = entry.start_date + (entry.start_time[:4] or "0000").ljust(4, "0")
    try:
        return time.mktime(time.strptime(stamp, "%Y%m%d%H%M"))
    except ValueError:
        return None


class PriorsService:
    def __init__(self, engine: Engine, settings: PriorsConfig, *, peer_of: PeerOf, calling_ae: str,
                 promote_days: float, tls: TlsContext | None = None) -> None:
        """`peer_of(ae)`: a known peer by AE title, looked up at each push; `tls()`: our DICOM TLS
        client context, for a push_to peer marked `tls = true`."""
        self.engine = engine
        self.tls = tls
        self.settings = settings
        self.peer_of = peer_of
        self.calling_ae = calling_ae
        self.promote_days = promote_days
        self.store = WorklistStore(engine.index)
        self.audit = AuditLog(engine.data_dir)
        self._queue: dict[str, None] = {}  # keys in arrival order, each once
        self._guard = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._unsubscribe: Callable[[], None] | None = None

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> None:
        self._unsubscribe = on_scheduled(self.engine.index, self.scheduled)
        self._thread = threading.Thread(target=self._run, name="dicomvault-priors", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(60)

    def scheduled(self, entry: WorklistEntry) -> None:
        """The worklist listener: queues the entry (called before the add returns)."""
        with self._guard:
            self._queue[entry.key] = None
        self._wake.set()

    # -- the thread --------------------------------------------------------------------------------

    def _run(self) -> None:
        next_scan = 0.0  # the first look, at start, takes up what earlier runs left
        while not self._stop.is_set():
            if time.monotonic() >= next_scan:
                next_scan = time.monotonic() + min(RESCAN, self.settings.retry_after)
                try:
                    self._queue_due()
                except DicomVaultError as exc:
                    log.warning("priors: looking for entries to retry failed: %s", exc)
            with self._guard:
                key = next(iter(self._queue), None)
                if key is not None:
                    del self._queue[key]
            if key is None:
                self._wake.wait(max(0.05, next_scan - time.monotonic()))
                self._wake.clear()
                continue
            try:
                self.process(key)
            except Exception as exc:  # noqa: BLE001 - the thread serves every order; this one is retried
                log.exception("priors of worklist entry %s failed", key)
                self._record_crash(key, exc)

    def _queue_due(self) -> None:
        """Active entries never handled, or failed and due a retry."""
        now = time.time()
        due = []
        for e in self.store.entries(active_only=True):
            p = e.priors
            if not p or p.get("state") == FAILED and p.get("next_try") and p["next_try"] <= now:
                due.append(e.key)
        if due:
            with self._guard:
                for k in due:
                    self._queue.setdefault(k, None)

    def _record_crash(self, key: str, exc: Exception) -> None:
        """An unexpected error: recorded as a failure with a retry time, so the entry is not
        taken up again at every rescan (and its log line repeated every few seconds)."""
        try:
            entry = self.store.get(key)
            if entry is None:
                return
            attempts = int((entry.priors or {}).get("attempts", 0)) + 1
            retry = attempts < self.settings.max_attempts
            backoff = min(MAX_BACKOFF, self.settings.retry_after * 2 ** (attempts - 1))
            self.store.update(key, priors={**(entry.priors or {}), "state": FAILED, "attempts": attempts,
                                           "error": f"internal error: {exc!r}", "updated": time.time(),
                                           "next_try": time.time() + backoff if retry else None})
        except DicomVaultError as again:
            log.error("priors of worklist entry %s: recording the failure failed too: %s", key, again)

    # -- one entry ---------------------------------------------------------------------------------

    def process(self, key: str) -> dict[str, Any] | None:
        """Makes the priors of one entry ready; returns what it recorded on the entry (None:
        nothing to do: the entry is gone, no longer on the worklist, or this is a replica)."""
        entry = self.store.get(key)
        if entry is None or not entry.active or self.engine.read_only:
            return None
        try:
            self.engine.ensure_writable()
        except DicomVaultError:
            return None  # a replica: its primary makes the priors ready
        prev = entry.priors or {}
        # attempts count the tries since the last success (a resent order after a success starts again)
        attempts = int(prev.get("attempts", 0)) + 1 if prev.get("state") == FAILED else 1
        now = time.time()
        record: dict[str, Any] = {"attempts": attempts, "updated": now, "push_to": self.settings.push_to}
        try:
            chosen, order_parts = select_priors(self.engine.index, entry, self.settings)
        except (DicomVaultError, ValueError) as exc:
            chosen, order_parts = [], frozenset()
            record["error"] = f"selecting the priors of patient {entry.patient_id} failed: {exc}"
        record["order_body_parts"] = sorted(order_parts)
        done_before = {s["study_uid"]: s for s in prev.get("studies", []) if s.get("state") in self._final()}
        studies = []
        for prior, met in chosen:
            if prior.study_uid in done_before:
                studies.append(done_before[prior.study_uid])  # succeeded on an earlier attempt
                continue
            row: dict[str, Any] = {**prior.summary(), "matched": met}
            studies.append(row)
            self._ready(entry, row)
        record["studies"] = studies
        failed = [s for s in studies if s["state"] == FAILED]
        if failed and "error" not in record:
            record["error"] = f"{len(failed)} of {len(studies)} priors failed: {failed[0]['reason']}"
        record["state"] = FAILED if "error" in record else DONE
        retry = record["state"] == FAILED and attempts < self.settings.max_attempts
        backoff = min(MAX_BACKOFF, self.settings.retry_after * 2 ** (attempts - 1))
        record["next_try"] = now + backoff if retry else None
        try:
            self.store.update(key, priors=record)
        except UnknownObjectError:
            return None  # removed while we worked
        if record["state"] == FAILED:
            log.warning("priors of worklist entry %s (patient %s), attempt %d: %s%s", key, entry.patient_id,
                        attempts, record["error"], f"; retry in {backoff:.0f} s" if retry else "; giving up")
        else:
            log.info("priors of worklist entry %s (patient %s): %s", key, entry.patient_id,
                     ", ".join(f"{s['study_uid']} {s['state']}" for s in studies) or "none relevant")
        return record

    def _final(self) -> set[str]:
        """The states a prior needs no more work in."""
        return {PUSHED} if self.settings.push_to else {PROMOTED, LOCAL, PUSHED}

    def _ready(self, entry: WorklistEntry, row: dict[str, Any]) -> None:
        """Promotes then pushes one prior; its state and reason go in `row`."""
        uid = row["study_uid"]
        try:
            row["blobs_promoted"] = self._promote(uid, entry)
            row["state"] = PROMOTED if row["blobs_promoted"] is not None else LOCAL
        except (DicomVaultError, OSError) as exc:
            row["state"], row["reason"] = FAILED, f"promotion of study {uid} failed: {exc}"
            return
        if not self.settings.push_to:
            return
        peer = self.peer_of(self.settings.push_to)
        if peer is None:
            row["state"], row["reason"] = FAILED, (
                f"push_to {self.settings.push_to} is not a known peer (`dicomvault peers add "
                f"{self.settings.push_to} HOST:PORT` or [[peers]])")
            return
        try:
            result = push_study(self.engine, uid, peer, self.calling_ae, self.audit, order=entry.key,
                                tls=self.tls)
        except (DicomVaultError, OSError) as exc:
            row["state"], row["reason"] = FAILED, str(exc) if isinstance(exc, PushError) else (
                f"push of study {uid} to {peer.ae_title}: {exc}")
            return
        row["pushed"] = result.sent
        if result.failed:
            row["state"] = FAILED
            row["reason"] = (f"push of study {uid} to {peer.ae_title}: {result.failed} of "
                             f"{result.sent + result.failed} objects failed: {result.first_error}")
        else:
            row["state"] = PUSHED

    def _promote(self, study_uid: str, entry: WorklistEntry) -> int | None:
        """Copies the study's object-store blobs to the local tier; how many were copied, None
        when none of it is in an object store. Kept local at least until a day after the exam."""
        engine = self.engine
        remote = [b for b in engine.study_blobs(study_uid) if b.tier in engine.remote_tiers]
        if not remote:
            return None
        days = self.promote_days
        start = _start_time(entry)
        if start is not None:
            days = max(days, (start - time.time()) / DAY + 1)
        copied = jobs.promote(engine, study_uid, days)
        missing = [b for b in remote if not engine.vault.holders(b.hash)]
        if missing:
            raise UnavailableError(f"{len(missing)} of {len(remote)} objects could not be fetched from tier "
                                   f"{missing[0].tier}")
        return copied


def start_priors(engine: Engine, settings: PriorsConfig, *, peer_of: PeerOf, calling_ae: str,
                 promote_days: float, tls: TlsContext | None = None) -> PriorsService | None:
    """The priors service of `serve`, started; None when [priors] enabled is false."""
    if not settings.enabled:
        return None
    service = PriorsService(engine, settings, peer_of=peer_of, calling_ae=calling_ae,
                            promote_days=promote_days, tls=tls)
    service.start()
    return service
