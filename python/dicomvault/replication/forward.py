"""Forwarding to DICOM peers by C-STORE, driven by the change feed.

Each destination has a durable cursor (index meta `fwd:<name>`): the queue is the feed after the
cursor, so nothing is lost across restarts and nothing needs copying into a separate queue. A page
of changes is sent on one association; the cursor advances past what the peer acknowledged; on a
failure the destination backs off (1 s doubling to 5 min) and retries from the cursor.

Objects go out as stored (streamed from a temporary file, not decoded) in a presentation context
of their own transfer syntax; an uncompressed object the peer takes only in the other little-endian
syntax is converted by pydicom; a compressed one it cannot take fails (and is retried: peers get
reconfigured; `forward status` shows the error).

A rule with `deidentify` sends each object de-identified for its project (integration/deid:
PS3.15 Annex E, UIDs remapped as every export of that project remaps them); objects flagged for
burned-in annotation are skipped (counted in `skipped`) unless the rule allows them.

Audit trail: a page that reaches an association writes Begin Transferring, then one Instances
Transferred per study of the page (completed, and the object that failed), naming the
destination; a page that never reached the peer (refused, unreachable) is logged and retried,
not audited: nothing was transferred.
"""

from __future__ import annotations

import io
import logging
import os
import ssl
import tempfile
import threading
import time
from collections.abc import Callable
from typing import Any

from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE, _config, build_context
from pynetdicom.ae import ApplicationEntity

from ..audit.log import BEGIN_TRANSFERRING, SUCCESS, AuditLog
from ..audit.transfers import per_study
from ..engine import Engine
from ..errors import DicomVaultError
from ..index.records import DELETED, InstanceRecord
from ..integration.deid.export import ResearchExport
from . import state
from .settings import ForwardRule, SettingsError

log = logging.getLogger("dicomvault.forward")
UNCOMPRESSED_LE = (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
PAGE = 64
MAX_BACKOFF = 300.0


def _key(name: str) -> bytes:
    return b"fwd:" + name.encode()


def _calling_ae(rec: InstanceRecord) -> str:
    """Source AE title from the file meta we stored (0002,0016), '' if absent."""
    if not rec.prefix:
        return ""
    try:
        ds = dcmread(io.BytesIO(rec.prefix), force=True)
    except Exception:  # noqa: BLE001 - an odd prefix just means "no calling AE known"
        return ""
    return str(ds.file_meta.get("SourceApplicationEntityTitle", "") or "").strip()


def _first_of_each_study(recs: list[InstanceRecord]) -> list[tuple[InstanceRecord, int]]:
    """(first object, number of objects) of each study in a page."""
    out: dict[str, list[Any]] = {}
    for r in recs:
        out.setdefault(r.study_uid, [r, 0])[1] += 1
    return [(r, n) for r, n in out.values()]


class SendError(DicomVaultError):
    def __init__(self, sop_uid: str, reason: str) -> None:
        super().__init__(f"instance {sop_uid}: {reason}")
        self.sop_uid = sop_uid
        self.reason = reason


# Makes the AE a forwarder associates from, given our AE title. Whoever runs the forwarders
# passes dimse.association.requestor_ae (site.py, the CLI): our associations live in the network
# layer above this one, so they are handed in, not imported.
MakeAE = Callable[[str], ApplicationEntity]


def stock_ae(title: str) -> ApplicationEntity:
    return AE(ae_title=title)


class Forwarder:
    def __init__(self, engine: Engine, rule: ForwardRule, tls_context: ssl.SSLContext | None = None,
                 make_ae: MakeAE = stock_ae) -> None:
        """`tls_context`: our client side of DICOM TLS (dimse/tls.client_context), required by
        a rule with tls = true. `make_ae`: see MakeAE."""
        if rule.tls and tls_context is None:
            raise SettingsError(f"forward {rule.name}: tls = true needs the [dimse] TLS settings")
        self.engine = engine
        self.rule = rule
        self.tls_args = (tls_context, None) if rule.tls else None
        self.make_ae = make_ae
        self.key = _key(rule.name)
        st = state.load_map(engine.index, self.key)
        self.status: dict[str, Any] = {
            "seq": 0, "sent": 0, "failed": 0, "skipped": 0, "last_error": None, "last_ok_at": None,
            "retry_at": None, **st,
            "name": rule.name, "ae_title": rule.ae_title, "host": rule.host, "port": rule.port,
        }
        self.backoff = 1.0
        self.dest = f"{rule.ae_title}@{rule.host}:{rule.port}"
        self.audit = AuditLog(engine.data_dir)
        self.deid = None if rule.deidentify is None else ResearchExport(
            rule.deidentify, rule.deidentify_retain, engine.data_dir, allow_burned_in=rule.allow_burned_in)

    def _save(self) -> None:
        self.engine.index.put_meta(self.key, state.dump_map(self.status))

    def _pending(self) -> tuple[list[InstanceRecord], int]:
        """Instances to send from the next page of the feed, and the seq the page ends at."""
        index = self.engine.index
        changes = index.changes(int(self.status["seq"]), PAGE)
        recs: list[InstanceRecord] = []
        for ch in changes:
            if ch.kind == DELETED or ch.hash is None:
                continue
            rec = index.get_instance(ch.sop_uid)
            if rec is None or rec.hash != ch.hash:
                continue  # superseded by a later change in the feed
            modality = rec.attrs.get("Modality", "")
            if not self.rule.matches(modality, _calling_ae(rec) if self.rule.calling_aes else ""):
                continue
            recs.append(rec)
        return recs, (changes[-1].seq if changes else int(self.status["seq"]))

    def step(self) -> int:
        """Sends one page; returns the number of feed entries consumed (0 = idle or failed)."""
        recs, end = self._pending()
        start = int(self.status["seq"])
        if end == start:
            return 0
        try:
            if recs:
                self._send(recs)
        except SendError as exc:
            self.status["last_error"] = str(exc)
            self.status["failed"] += 1
            self.status["retry_at"] = time.time() + self.backoff
            self._save()
            log.warning("forward to %s: %s (retry in %.0f s)", self.dest, exc, self.backoff)
            self.backoff = min(MAX_BACKOFF, self.backoff * 2)
            return 0
        self.backoff = 1.0
        self.status.update(seq=end, last_error=None, retry_at=None, last_ok_at=time.time())
        self.status["sent"] += len(recs)
        self._save()
        return end - start

    def _send(self, recs: list[InstanceRecord]) -> None:
        _config.STORE_SEND_CHUNKED_DATASET = True  # send file bytes as they are, no decode
        ae = self.make_ae(self.rule.our_ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        wanted: dict[str, set[str]] = {}
        for r in recs:
            syntaxes = wanted.setdefault(r.sop_class_uid, set())
            syntaxes.add(r.transfer_syntax)
            if r.transfer_syntax in UNCOMPRESSED_LE:
                syntaxes.update(UNCOMPRESSED_LE)
        contexts = [build_context(uid, sorted(ts)) for uid, ts in wanted.items()][:128]
        assoc = ae.associate(self.rule.host, self.rule.port, contexts=contexts, ae_title=self.rule.ae_title,
                             tls_args=self.tls_args)
        if not assoc.is_established:
            why = "TLS handshake, rejected or unreachable" if self.tls_args else "rejected or unreachable"
            raise SendError(recs[0].sop_uid, f"association with {self.dest} failed ({why})")
        user = f"dicomvault:{self.rule.our_ae_title}"
        detail = {"direction": "sent", "protocol": "DIMSE C-STORE (forward)", "destination": self.dest,
                  "rule": self.rule.name}
        self.audit.write([r for r in (self.audit.event(
            BEGIN_TRANSFERRING, SUCCESS, user=user, client=self.dest, study=rec.study_uid,
            patient=rec.patient_id or None, detail={**detail, "instances": n})
            for rec, n in _first_of_each_study(recs)) if r is not None])
        done = 0
        try:
            accepted = {(cx.abstract_syntax, cx.transfer_syntax[0]) for cx in assoc.accepted_contexts}
            with tempfile.TemporaryDirectory(prefix="dv-forward-") as tmp:
                for r in recs:
                    self._send_one(assoc, accepted, r, tmp)
                    done += 1
        finally:
            if assoc.is_established:
                assoc.release()
            # what went (and the one that failed; the rest of the page is retried later)
            tried = recs[: done + 1]
            self.audit.write(per_study(self.audit, ((r.study_uid, r.patient_id, i < done)
                                                    for i, r in enumerate(tried)),
                                       user=user, client=self.dest, detail=detail))

    def _send_one(self, assoc: Any, accepted: set[tuple[str, str]], rec: InstanceRecord, tmp: str) -> None:
        data = self.engine.read_file(rec.sop_uid, background=True)  # the compactor need not wait
        if self.deid is not None:
            try:
                res = self.deid.convert(data, f"instance {rec.sop_uid}")
            except DicomVaultError as exc:
                raise SendError(rec.sop_uid, f"de-identification failed: {exc}") from exc
            self.deid.save_mapping({"forward": self.rule.name, "destination": self.dest})
            if res is None:
                log.warning("forward to %s: instance %s held back (burned-in annotation)", self.dest,
                            rec.sop_uid)
                self.status["skipped"] += 1
                return
            data = res.data
        if (rec.sop_class_uid, rec.transfer_syntax) in accepted:
            path = os.path.join(tmp, "obj.dcm")
            with open(path, "wb") as f:
                f.write(data)
            status = assoc.send_c_store(path)
        elif rec.transfer_syntax in UNCOMPRESSED_LE and any(
                (rec.sop_class_uid, ts) in accepted for ts in UNCOMPRESSED_LE):
            ds = dcmread(io.BytesIO(data))
            status = assoc.send_c_store(ds)  # pynetdicom encodes it in the accepted syntax
        else:
            raise SendError(rec.sop_uid, f"{self.dest} accepted no context for SOP class "
                                         f"{rec.sop_class_uid} in {rec.transfer_syntax}")
        code = getattr(status, "Status", None)
        if code is None:
            raise SendError(rec.sop_uid, f"no C-STORE response from {self.dest}")
        if code != 0 and not 0xB000 <= code <= 0xBFFF:
            raise SendError(rec.sop_uid, f"{self.dest} answered C-STORE status 0x{code:04X}")

    def run(self, stop: threading.Event, poll: float = 0.5) -> None:
        while not stop.is_set():
            retry_at = self.status.get("retry_at")
            if retry_at and time.time() < retry_at:
                stop.wait(min(poll, retry_at - time.time()))
                continue
            try:
                if self.step() == 0:
                    stop.wait(poll)
            except Exception:  # keep the destination's thread alive; the error is logged and shown
                log.exception("forward to %s failed", self.dest)
                stop.wait(self.backoff)


def forward_status(data_dir: str | os.PathLike[str]) -> list[dict[str, Any]]:
    with Engine(data_dir, read_only=True) as eng:
        index = eng.index
        last = index.last_seq()
        rows = []
        for k, v in index.meta_items(b"fwd:"):
            st = state._load(v)
            seq = int(st.get("seq", 0))
            st.update(name=k[4:].decode(), last_seq=last, pending=max(0, last - seq))
            rows.append(st)
        return rows


def run_forwarders(data_dir: str | os.PathLike[str], rules: tuple[ForwardRule, ...], *, once: bool,
                   tls_context: ssl.SSLContext | None = None, make_ae: MakeAE = stock_ae) -> int:
    with Engine(data_dir) as eng:
        fwds = [Forwarder(eng, r, tls_context, make_ae) for r in rules]
        if once:
            for f in fwds:
                while f.step():
                    pass
            return 1 if any(f.status["last_error"] for f in fwds) else 0
        stop = threading.Event()
        threads = [threading.Thread(target=f.run, args=(stop,), daemon=True) for f in fwds]
        for t in threads:
            t.start()
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            stop.set()
        for t in threads:
            t.join(10)
    return 0
