"""A prior study pushed by C-STORE to the reading workstation, and its audit records.

The study is exported as Part-10 files to a temporary directory (the stored bytes, from the
local copy the promotion just made) and sent by the `dicomvault send` code (dimse/scu.py): each
file in a context of its own transfer syntax, streamed without a decode, on one association,
over DICOM TLS to a peer marked `tls = true`.
Audited like a forward: Begin Transferring and one Instances Transferred (DCM 110104, action R)
naming the destination, with the objects completed and failed, both written once the send ended
(one fsync); a push that never reached the peer (refused, unreachable) transferred nothing and
is not audited, only recorded on the order and retried.
"""

from __future__ import annotations

import ssl
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from ..audit.log import BEGIN_TRANSFERRING, SUCCESS, AuditLog
from ..audit.transfers import per_study
from ..auth.peer_settings import PeerConfig
from ..dimse.scu import Peer, scan, send_files
from ..engine import Engine
from ..errors import DicomVaultError


class PushError(DicomVaultError):
    """A prior that could not be pushed (reason names the study and the destination)."""


@dataclass(frozen=True)
class PushResult:
    sent: int
    failed: int
    first_error: str | None


TlsContext = Callable[[], ssl.SSLContext]


def push_study(engine: Engine, study_uid: str, peer: PeerConfig, calling_ae: str, audit: AuditLog, *,
               order: str, tls: TlsContext | None = None) -> PushResult:
    """C-STOREs every instance of the study to `peer`, over DICOM TLS when the peer says `tls`
    (`tls()`: our client context, dimse/tls.client_context); raises PushError when nothing was
    transferred (no port, no TLS context for a TLS peer, unreachable, an unreadable study).
    Partial failures come back in the result."""
    dest = f"{peer.ae_title}@{peer.host}:{peer.port}"
    if not peer.port:
        raise PushError(f"study {study_uid}: peer {peer.ae_title} has no port to send to "
                        f"(`dicomvault peers add {peer.ae_title} HOST:PORT --replace ...`)")
    if peer.tls and tls is None:
        raise PushError(f"study {study_uid}: peer {dest} wants DICOM TLS and no TLS context was given")
    tls_args = (tls(), peer.host) if peer.tls and tls is not None else None
    recs = engine.instances("study", study_uid)
    patient = next((r.patient_id for r in recs if r.patient_id), None)
    user = f"dicomvault:{calling_ae}"
    detail = {"direction": "sent", "protocol": "DIMSE C-STORE (priors)", "destination": dest, "order": order,
              "tls": bool(tls_args)}
    with tempfile.TemporaryDirectory(prefix="dv-priors-") as tmp:
        try:
            engine.export("study", study_uid, tmp)
        except (DicomVaultError, OSError) as exc:
            raise PushError(f"study {study_uid}: export for {dest} failed: {exc}") from exc
        items, bad, _ = scan([tmp])
        if bad:
            raise PushError(f"study {study_uid}: exported file not sendable: {bad[0][0]}: {bad[0][1]}")
        report = send_files(items, Peer(peer.ae_title, peer.host, peer.port), calling_ae=calling_ae,
                            tls_args=tls_args)
    unreached = report.statuses.get("association failed", 0)
    if items and unreached == len(items):
        # nothing reached the peer: nothing to audit (as a forward that never connected)
        why = report.failed[0][1] if report.failed else f"{dest} unreachable"
        raise PushError(f"study {study_uid}: {why}")
    ok, failed = report.ok, report.files - report.ok
    audit.write([r for r in (
        audit.event(BEGIN_TRANSFERRING, SUCCESS, user=user, client=dest, study=study_uid, patient=patient,
                    detail={**detail, "instances": len(items)}),
        *per_study(audit, [(study_uid, patient, True)] * ok + [(study_uid, patient, False)] * failed,
                   user=user, client=dest, detail=detail)) if r is not None])
    return PushResult(ok, failed, report.failed[0][1] if report.failed else None)
