"""Storage Commitment Push Model SCP (PS3.4 Annex J).

N-ACTION (Request Storage Commitment) is acknowledged at once; a worker then checks every
referenced instance and sends the N-EVENT-REPORT. An instance is committed only if the index
knows it with the referenced SOP class and its stored bytes read back with a matching hash
(`Engine.read_dataset` verifies it); everything else goes to the Failed SOP Sequence.

The report goes on a new association to the requestor's AE when it is a configured peer (the
usual deployment, and the requestor may release its association right after the N-ACTION
response), else on the requesting association if it is still open.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom.sop_class import StorageCommitmentPushModel, StorageCommitmentPushModelInstance

from ..config import PeerConfig
from ..engine import Engine
from ..errors import DicomVaultError
from .common import calling_ae, log, set_nodelay
from .peers import Peers
from .status import (
    CLASS_INSTANCE_CONFLICT,
    INVALID_ARGUMENT,
    MISSING_ATTRIBUTE,
    NO_SUCH_ACTION,
    NO_SUCH_OBJECT_INSTANCE,
)

REQUEST_STORAGE_COMMITMENT = 1  # Action Type ID
EVENT_ALL_COMMITTED = 1  # Event Type ID: Storage Commitment Request Successful
EVENT_SOME_FAILED = 2  # Storage Commitment Request Complete - Failures Exist
SEND_ATTEMPTS = 3


class CommitmentService:
    """Handles N-ACTION and owns the report workers (joined on shutdown)."""

    def __init__(self, engine: Engine, ae: AE, peers: Peers, our_ae: str,
                 connect: Callable[[PeerConfig], dict[str, Any]] = lambda peer: {}) -> None:
        self.engine = engine
        self.ae = ae
        self.peers = peers
        self.our_ae = our_ae
        self._connect = connect  # extra AE.associate arguments for a peer (TLS)
        self._workers: set[threading.Thread] = set()
        self._lock = threading.Lock()

    # -- N-ACTION -----------------------------------------------------------------------------
    def handle_n_action(self, event: Any) -> tuple[int, Dataset | None]:
        """EVT_N_ACTION handler."""
        caller = calling_ae(event)
        if event.action_type != REQUEST_STORAGE_COMMITMENT:
            log.warning("N-ACTION from %s: unknown action type %s", caller, event.action_type)
            return NO_SUCH_ACTION, None
        info = event.action_information
        tx = str(info.get("TransactionUID", "") or "")
        refs = info.get("ReferencedSOPSequence")
        if not tx or refs is None:
            log.warning("N-ACTION from %s: TransactionUID or ReferencedSOPSequence missing", caller)
            return MISSING_ATTRIBUTE, None
        try:
            items = [(str(r.ReferencedSOPClassUID), str(r.ReferencedSOPInstanceUID)) for r in refs]
        except AttributeError as exc:
            log.warning("N-ACTION from %s, transaction %s: bad reference item: %s", caller, tx, exc)
            return INVALID_ARGUMENT, None
        log.info("storage commitment request from %s: transaction %s, %d instances", caller, tx, len(items))
        worker = threading.Thread(target=self._run, args=(event.assoc, caller, tx, items),
                                  name=f"commitment-{tx}", daemon=True)
        with self._lock:
            self._workers.add(worker)
        worker.start()
        return 0x0000, None

    # -- checking -----------------------------------------------------------------------------
    def check(self, items: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[tuple[str, str, int]]]:
        """(committed (class, uid), failed (class, uid, reason))."""
        ok: list[tuple[str, str]] = []
        failed: list[tuple[str, str, int]] = []
        for sop_class, uid in items:
            rec = self.engine.index.get_instance(uid)
            if rec is None:
                failed.append((sop_class, uid, NO_SUCH_OBJECT_INSTANCE))
                continue
            if rec.sop_class_uid and rec.sop_class_uid != sop_class:
                log.warning("storage commitment: %s is stored as %s, not %s", uid, rec.sop_class_uid,
                            sop_class)
                failed.append((sop_class, uid, CLASS_INSTANCE_CONFLICT))
                continue
            try:
                # every byte read back, BLAKE3 checked
                self.engine.read_dataset(uid, background=True, as_received=True)
            except DicomVaultError as exc:
                log.error("storage commitment: %s fails verification: %s", uid, exc)
                failed.append((sop_class, uid, NO_SUCH_OBJECT_INSTANCE))
                continue
            ok.append((sop_class, uid))
        return ok, failed

    def report(self, tx: str, ok: list[tuple[str, str]], failed: list[tuple[str, str, int]]) -> Dataset:
        ds = Dataset()
        ds.TransactionUID = tx
        ds.RetrieveAETitle = self.our_ae
        if ok:
            ds.ReferencedSOPSequence = [_ref(c, u) for c, u in ok]
        if failed:
            items = []
            for c, u, reason in failed:
                item = _ref(c, u)
                item.FailureReason = reason
                items.append(item)
            ds.FailedSOPSequence = items
        return ds

    # -- sending ------------------------------------------------------------------------------
    def _run(self, assoc: Any, caller: str, tx: str, items: list[tuple[str, str]]) -> None:
        try:
            ok, failed = self.check(items)
            ds = self.report(tx, ok, failed)
            event_type = EVENT_SOME_FAILED if failed else EVENT_ALL_COMMITTED
            log.info("storage commitment %s for %s: %d committed, %d failed", tx, caller, len(ok),
                     len(failed))
            if not self._send(assoc, caller, tx, ds, event_type):
                log.error("storage commitment report %s for %s could not be delivered", tx, caller)
        finally:
            with self._lock:
                self._workers.discard(threading.current_thread())

    def _send(self, assoc: Any, caller: str, tx: str, ds: Dataset, event_type: int) -> bool:
        peer = self.peers.get(caller)
        if peer is None:
            if not assoc.is_established:
                log.error("storage commitment %s: %s is not a configured peer and its association is "
                          "gone", tx, caller)
                return False
            # The reactor of that association pauses between messages, so this goes out after
            # our N-ACTION response.
            rsp, _ = assoc.send_n_event_report(ds, event_type, StorageCommitmentPushModel,
                                               StorageCommitmentPushModelInstance)
            return _ok(rsp, tx, caller)
        for attempt in range(1, SEND_ATTEMPTS + 1):
            # We are the Storage Commitment SCP on an association we request: propose that role.
            out = self.ae.associate(
                peer.host, peer.port, contexts=[build_context(StorageCommitmentPushModel)],
                ae_title=peer.ae_title, ext_neg=[build_role(StorageCommitmentPushModel, scp_role=True)],
                evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay)], **self._connect(peer),
            )
            if out.is_established:
                try:
                    rsp, _ = out.send_n_event_report(ds, event_type, StorageCommitmentPushModel,
                                                     StorageCommitmentPushModelInstance)
                finally:
                    out.release()
                if _ok(rsp, tx, caller):
                    return True
            else:
                log.warning("storage commitment %s: cannot associate with %s at %s:%d (attempt %d)",
                            tx, peer.ae_title, peer.host, peer.port, attempt)
            time.sleep(attempt)
        return False

    def join(self, timeout: float) -> None:
        """Waits for pending reports (shutdown), at most `timeout` seconds in all."""
        deadline = time.monotonic() + timeout
        with self._lock:
            workers = list(self._workers)
        for w in workers:
            w.join(max(0.0, deadline - time.monotonic()))
            if w.is_alive():
                log.warning("storage commitment worker %s still running at shutdown", w.name)


def _ref(sop_class: str, uid: str) -> Dataset:
    item = Dataset()
    item.ReferencedSOPClassUID = sop_class
    item.ReferencedSOPInstanceUID = uid
    return item


def _ok(rsp: Dataset, tx: str, caller: str) -> bool:
    code = getattr(rsp, "Status", None)
    if code == 0x0000:
        log.info("storage commitment report %s delivered to %s", tx, caller)
        return True
    log.warning("storage commitment report %s to %s: status %s", tx, caller,
                "none (timeout/abort)" if code is None else f"0x{code:04X}")
    return False
