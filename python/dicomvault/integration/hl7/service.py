"""The HL7 service: each framed message kept, parsed, applied and acknowledged.

Every message is written to `<data>/hl7/received/` (synced) before it is applied, so an ACK of
any kind means the archive holds it; a message refused is also copied to `<data>/hl7/rejected/`
with the reason beside it."""

from __future__ import annotations

import ipaddress
import logging

from ...audit.dimse import RefusalAudit
from ...audit.log import AuditLog
from ...errors import DicomVaultError
from ...index import Index
from ...tls_policy import CertificateReloader, server_context
from ..patients import PatientUpdates
from ..reports import ReportStore
from ..worklist_store import WorklistStore
from .ack import ACCEPT, ERROR, REJECT, build_ack
from .auditing import audited
from .message import Hl7Error, Message, parse
from .mllp import MllpServer
from .orders import apply_order
from .patients import MERGES, UPDATES, apply_patient
from .results import apply_result
from .settings import Hl7Config
from .spool import Spool

log = logging.getLogger("dicomvault.hl7")
ORDERS = {("ORM", "O01"), ("OMI", "O23")}
RESULTS = {("ORU", "R01")}
PATIENT_EVENTS = UPDATES | MERGES


class Hl7Service:
    def __init__(self, index: Index, data_dir: str, stations: dict[str, str] | None = None) -> None:
        self.worklist = WorklistStore(index)
        self.reports = ReportStore(index)
        self.patients = PatientUpdates(index, data_dir)
        self.spool = Spool(data_dir)
        self.stations = {k.upper(): v for k, v in (stations or {}).items()}

    def handle(self, raw: bytes, peer: str) -> bytes:
        msg: Message | None = None
        try:
            msg = parse(raw)
        except Hl7Error as exc:
            return self._refuse(raw, None, peer, REJECT, str(exc), exc.code)
        # kept before anything is applied: the ACK, whatever its code, means the message is held
        self.spool.received(raw, msg.control_id)
        kind = msg.type
        try:
            if kind in ORDERS:
                summary = apply_order(msg, self.worklist, self.stations)
            elif kind in RESULTS:
                summary = apply_result(msg, self.reports)
            elif kind[0] == "ADT" and kind[1] in PATIENT_EVENTS:
                summary = apply_patient(msg, self.patients, peer)
            else:
                raise Hl7Error(f"message type {'^'.join(kind)} is not supported (ORM^O01, OMI^O23, "
                               "ORU^R01, ADT^A01/A04/A08/A31/A40/A47)", "200", reject=True)
        except Hl7Error as exc:
            return self._refuse(raw, msg, peer, REJECT if exc.reject else ERROR, str(exc), exc.code)
        except (DicomVaultError, ValueError, OSError) as exc:
            return self._refuse(raw, msg, peer, ERROR, str(exc), "207")
        log.info("HL7 %s from %s: %s", msg.control_id, peer, summary)
        return build_ack(msg, ACCEPT, summary)

    def _refuse(self, raw: bytes, msg: Message | None, peer: str, code: str, reason: str, err: str) -> bytes:
        control = msg.control_id if msg else ""
        path = self.spool.rejected(raw, control, f"{code} {err} from {peer}: {reason}\n")
        log.warning("HL7 %s from %s refused (%s): %s; kept as %s", control or "(unreadable)", peer, code,
                    reason, path)
        return build_ack(msg, code, reason, err)


def _loopback(host: str) -> bool:
    # site.is_loopback would be a higher layer; an HL7 host is a literal address or localhost
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def start_hl7(index: Index, data_dir: str, config: Hl7Config) -> MllpServer | None:
    """The MLLP listener for `config`, started; None when the port is 0 (off)."""
    if not config.port:
        return None
    if not config.allow and not _loopback(config.host):
        raise DicomVaultError(
            f"refusing to listen for HL7 on {config.host} with no [hl7] allow: anyone on the network "
            f"could schedule and cancel exams. List the RIS/HIS addresses in [hl7] allow")
    service = Hl7Service(index, data_dir, config.stations)
    audit = AuditLog(data_dir)
    tls = None
    if config.tls_cert is not None:
        cert, key, ca = config.tls_cert, config.tls_key, config.tls_ca
        try:
            tls = CertificateReloader(lambda: server_context(cert, key, ca), cert, key).context
        except OSError as exc:  # ssl.SSLError too: a key that does not match, a file that is no PEM
            raise DicomVaultError(f"[hl7] tls_cert {cert} / tls_key {key} / tls_ca {ca}: {exc}") from exc
    server = MllpServer(config.host, config.port, audited(service.handle, audit),
                        max_message=config.max_message, idle_timeout=config.idle_timeout,
                        max_connections=config.max_connections,
                        allow=config.allow, tls=tls, tls_refused=RefusalAudit(audit).tls_refused)
    server.start()
    log.info("HL7 MLLP%s listener at %s:%d", "/TLS" if tls else "", *server.address)
    return server
