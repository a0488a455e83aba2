"""The SCU side: C-STORE files to a peer, C-FIND a peer, retrieve a study from a peer into our
archive (C-GET, or C-MOVE to a temporary storage SCP of ours).

Principles, as on the SCP side:

* bytes are not touched: a file is sent as its own dataset bytes (pynetdicom streams the file
  from the end of its file meta, no pydicom decode) in a presentation context of its own transfer
  syntax; a received dataset goes to `Engine.store_dataset` exactly as it arrived;
* a C-STORE sub-operation we receive is answered only once the engine made it durable;
* every association socket gets TCP_NODELAY (see `common.set_nodelay` for why);
* every error names the peer (AE@host:port), the UID or the path.
"""

from __future__ import annotations

import os
import re
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom import dcmread
from pydicom.datadict import dictionary_VR, keyword_for_tag, tag_for_keyword
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import (
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLossless,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)
from pynetdicom import _config, build_context, build_role, evt
from pynetdicom.ae import ApplicationEntity
from pynetdicom.association import Association
from pynetdicom.dsutils import split_dataset
from pynetdicom.presentation import PresentationContext, StoragePresentationContexts
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from ..engine import Engine
from ..errors import DicomVaultError
from ..textout import walk_paths
from .association import ArchiveAE
from .common import log, set_nodelay
from .store import handle_store

DEFAULT_CALLING_AE = "DICOMVAULT"
DEFAULT_MAX_PDU = 131072
MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are the odd numbers 1-255
SUCCESS = 0x0000
PENDING = (0xFF00, 0xFF01)

# Transfer syntaxes a retrieve proposes, one context each (see `_retrieve_contexts` for why),
# most common first so that a study with many SOP classes keeps the usual ones.
RETRIEVE_SYNTAXES: tuple[UID, ...] = (
    ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1,
    JPEGBaseline8Bit, RLELossless, JPEG2000, JPEGExtended12Bit, JPEGLossless, JPEGLSNearLossless,
    DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian,
)
LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
# Return keys asked for when the user names none at that level (what `dicomvault ls` shows).
DEFAULT_KEYS = {
    "PATIENT": ["PatientID", "PatientName", "PatientBirthDate", "PatientSex",
                "NumberOfPatientRelatedStudies"],
    "STUDY": ["StudyInstanceUID", "PatientID", "PatientName", "StudyDate", "AccessionNumber",
              "ModalitiesInStudy", "StudyDescription", "NumberOfStudyRelatedInstances"],
    "SERIES": ["SeriesInstanceUID", "StudyInstanceUID", "Modality", "SeriesNumber", "SeriesDescription",
               "NumberOfSeriesRelatedInstances"],
    "IMAGE": ["SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID", "SOPClassUID", "InstanceNumber"],
}


class ScuError(DicomVaultError):
    """A remote operation could not run (association refused, bad arguments); says which peer."""


# -- peers and associations --------------------------------------------------------------------

_PEER_RE = re.compile(r"^(?P<ae>[^@]{1,16})@(?P<host>\[[^\]]+\]|[^:@]+):(?P<port>\d{1,5})$")


@dataclass(frozen=True)
class Peer:
    ae_title: str
    host: str
    port: int

    @classmethod
    def parse(cls, text: str) -> Peer:
        """`AE@HOST:PORT` (an IPv6 host in brackets)."""
        m = _PEER_RE.match(text.strip())
        if not m or not 0 < int(m["port"]) < 65536 or not m["ae"].strip():
            raise ScuError(f"peer must be AE@HOST:PORT (AE title 1-16 characters), got {text!r}")
        return cls(m["ae"].strip(), m["host"].strip("[]"), int(m["port"]))

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def make_ae(calling_ae: str, max_pdu: int = DEFAULT_MAX_PDU, timeout: float = 60.0, *,
            tuned: bool = False) -> ArchiveAE:
    """Our SCU's AE. Its associations are ours (association.py): stock pynetdicom now and then
    drops the response to a request sent right after the previous exchange and waits out the
    whole timeout for it, which ArchiveAssociation's reactor fixes. `tuned`: the event-driven
    reactors and native reads of the server's associations too (default: pynetdicom's polling)."""
    ae = ArchiveAE(calling_ae, tuned=tuned)
    ae.maximum_pdu_size = max_pdu
    ae.acse_timeout = min(timeout, 30.0)
    ae.dimse_timeout = timeout
    ae.network_timeout = timeout
    return ae


def associate(ae: ApplicationEntity, peer: Peer, contexts: list[PresentationContext], *,
              max_pdu: int = DEFAULT_MAX_PDU, ext_neg: list[Any] | None = None,
              handlers: Sequence[tuple[Any, Callable[..., Any]]] = (),
              tls_args: tuple[ssl.SSLContext, str | None] | None = None) -> Association:
    """An established association, or ScuError saying why not. `tls_args`: DICOM TLS, as
    pynetdicom takes it (our client context, the server host name or None; dimse/tls.py)."""
    assoc = ae.associate(peer.host, peer.port, contexts=contexts, ae_title=peer.ae_title, max_pdu=max_pdu,
                         ext_neg=ext_neg, evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay), *handlers],
                         tls_args=tls_args)
    if assoc.is_established:
        return assoc
    if assoc.is_rejected:
        why = "rejected the association (unknown calling/called AE title?)"
    elif assoc.is_aborted:
        why = "aborted the association request"
    else:
        why = "is not reachable (connection refused or timed out)"
    if tls_args is not None and not assoc.is_rejected:
        why += " over DICOM TLS (or the TLS handshake failed)"
    raise ScuError(f"{peer} {why}; we called as {ae.ae_title}")


def _quiet_pynetdicom() -> None:
    """pynetdicom formats and logs every PDU at INFO/DEBUG: CPU on the transfer path for nothing."""
    _config.LOG_HANDLER_LEVEL = "none"
    _config.LOG_REQUEST_IDENTIFIERS = False
    _config.LOG_RESPONSE_IDENTIFIERS = False


def _status_name(code: int | None) -> str:
    if code is None:
        return "no response"
    if code == SUCCESS:
        return "success"
    if code in (0x0001,) or code & 0xF000 == 0xB000:
        return f"warning 0x{code:04X}"
    return f"failure 0x{code:04X}"


# -- C-STORE SCU: `dicomvault send` --------------------------------------------------------------

@dataclass(frozen=True)
class SendItem:
    path: Path
    sop_class: str
    sop_uid: str
    ts: str
    size: int


@dataclass
class SendReport:
    files: int = 0
    bytes: int = 0
    seconds: float = 0.0
    statuses: Counter[str] = field(default_factory=Counter)
    failed: list[tuple[str, str]] = field(default_factory=list)  # (path, why)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # not DICOM, found while scanning

    @property
    def ok(self) -> int:
        return sum(n for s, n in self.statuses.items() if s == "success" or s.startswith("warning"))

    def as_dict(self) -> dict[str, Any]:
        return {
            "files": self.files, "bytes": self.bytes, "seconds": round(self.seconds, 3),
            "instances_per_s": round(self.files / self.seconds, 1) if self.seconds > 0 else None,
            "mb_per_s": round(self.bytes / self.seconds / 1e6, 1) if self.seconds > 0 else None,
            "statuses": dict(self.statuses),
            "failed": [{"path": p, "reason": r} for p, r in self.failed],
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
        }


def scan(paths: Iterable[str | os.PathLike[str]]) -> tuple[list[SendItem], list[tuple[str, str]],
                                                            list[tuple[str, str]]]:
    """(sendable files, files named on the command line that cannot be sent, non-DICOM files met
    while scanning folders). Only the preamble and file meta are read."""
    items: list[SendItem] = []
    bad: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []

    def one(path: Path, explicit: bool) -> None:
        try:
            meta, _offset = split_dataset(path)
            missing = [k for k in ("MediaStorageSOPClassUID", "MediaStorageSOPInstanceUID",
                                   "TransferSyntaxUID") if not meta.get(k)]
            if missing:
                raise InvalidDicomError(f"file meta lacks {', '.join(missing)}")
            if meta.MediaStorageSOPClassUID == "1.2.840.10008.1.3.10":
                raise InvalidDicomError("a DICOMDIR is not a storage object")
        except (InvalidDicomError, OSError, ValueError, EOFError) as exc:
            (bad if explicit else skipped).append((str(path), f"not sendable: {exc}"))
            return
        items.append(SendItem(path, str(meta.MediaStorageSOPClassUID), str(meta.MediaStorageSOPInstanceUID),
                              str(meta.TransferSyntaxUID), path.stat().st_size))

    for p in paths:
        try:
            for path, named in walk_paths([p]):
                one(path, explicit=named)
        except FileNotFoundError:
            bad.append((str(p), "no such file or directory"))
    return items, bad, skipped


def _store_contexts(items: Sequence[SendItem]) -> list[PresentationContext]:
    """Each (SOP class, file's own syntax) exactly, then for uncompressed classes the two little
    endian syntaxes as a fallback in case the peer refuses the exact one."""
    exact = dict.fromkeys((i.sop_class, i.ts) for i in items)
    fallback = dict.fromkeys(i.sop_class for i in items if not UID(i.ts).is_compressed)
    cxs = [build_context(c, [ts]) for c, ts in exact]
    cxs += [build_context(c, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for c in fallback]
    return cxs


def _context_batches(items: Sequence[SendItem]) -> Iterator[list[SendItem]]:
    """Runs of files whose contexts fit in one association (128 at most), order kept."""
    batch: list[SendItem] = []
    keys: set[tuple[str, str]] = set()
    classes: set[str] = set()
    for it in items:
        k = (it.sop_class, it.ts)
        new_keys = keys | {k}
        new_classes = classes | ({it.sop_class} if not UID(it.ts).is_compressed else set())
        if batch and len(new_keys) + len(new_classes) > MAX_CONTEXTS:
            yield batch
            batch, new_keys = [], {k}
            new_classes = {it.sop_class} if not UID(it.ts).is_compressed else set()
        batch.append(it)
        keys, classes = new_keys, new_classes
    if batch:
        yield batch


def _send_one(assoc: Association, it: SendItem, msg_id: int) -> int | None:
    """The C-STORE status, None if there was no answer. Raises ValueError if no accepted context
    can carry the file."""
    cx_ts = [cx.transfer_syntax[0] for cx in assoc.accepted_contexts if cx.abstract_syntax == it.sop_class]
    if it.ts in cx_ts:
        # Streamed from the file (STORE_SEND_CHUNKED_DATASET): the dataset bytes as they are.
        rsp = assoc.send_c_store(it.path, msg_id=msg_id)
    else:
        # The peer refused the file's own syntax: decode and let pynetdicom re-encode it in an
        # accepted uncompressed one (it converts between uncompressed syntaxes of one byte order).
        ds = dcmread(it.path)
        rsp = assoc.send_c_store(ds, msg_id=msg_id)
    return int(rsp.Status) if "Status" in rsp else None


def send_files(items: Sequence[SendItem], peer: Peer, *, calling_ae: str = DEFAULT_CALLING_AE,
               associations: int = 1, max_pdu: int = DEFAULT_MAX_PDU,
               progress: Callable[[int, int], None] | None = None,
               tls_args: tuple[ssl.SSLContext, str | None] | None = None) -> SendReport:
    """C-STOREs the files over `associations` parallel associations (files split round-robin in
    contiguous chunks, so each association keeps a study's files together); over DICOM TLS
    with `tls_args` (see `associate`)."""
    _quiet_pynetdicom()
    # pynetdicom then sends a file's dataset straight from disk (no dcmread, no re-encode).
    _config.STORE_SEND_CHUNKED_DATASET = True
    report = SendReport(files=len(items), bytes=sum(i.size for i in items))
    lock = threading.Lock()
    n = max(1, min(associations, len(items) or 1))
    per = -(-len(items) // n) if items else 0
    shares = [list(items[k * per:(k + 1) * per]) for k in range(n)]

    def record(it: SendItem, status: str, why: str | None = None) -> None:
        with lock:
            report.statuses[status] += 1
            if why is not None:
                report.failed.append((str(it.path), why))
            if progress is not None:
                progress(sum(report.statuses.values()), it.size)

    def worker(share: list[SendItem]) -> None:
        ae = make_ae(calling_ae, max_pdu)
        for batch in _context_batches(share):
            todo = list(batch)
            reconnects = 0
            while todo:
                try:
                    assoc = associate(ae, peer, _store_contexts(todo), max_pdu=max_pdu, tls_args=tls_args)
                except ScuError as exc:
                    for it in todo:
                        record(it, "association failed", str(exc))
                    break
                try:
                    while todo:
                        it = todo[0]
                        try:
                            code = _send_one(assoc, it, msg_id=(len(batch) - len(todo)) % 65535 + 1)
                        except (ValueError, AttributeError, InvalidDicomError, OSError) as exc:
                            todo.pop(0)
                            record(it, "not sent", f"{it.sop_uid}: {exc}")
                            continue
                        if code is None and not assoc.is_established:
                            break  # dropped under us: reconnect once for the rest
                        todo.pop(0)
                        name = _status_name(code)
                        failed = not (name == "success" or name.startswith("warning"))
                        record(it, name, f"{peer} answered {name} for {it.sop_uid}" if failed else None)
                finally:
                    if assoc.is_established:
                        assoc.release()
                if todo:
                    reconnects += 1
                    if reconnects > 1:
                        for it in todo:
                            record(it, "association dropped", f"{peer} dropped the association")
                        todo = []
                    else:
                        log.warning("%s dropped the association; reconnecting for %d files", peer, len(todo))

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(s,), name=f"send-{k}")
               for k, s in enumerate(shares) if s]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    report.seconds = time.monotonic() - t0
    return report


# -- C-FIND SCU: `dicomvault query` --------------------------------------------------------------

def build_identifier(level: str, keys: Sequence[str], *, use_defaults: bool = True) -> Dataset:
    """An identifier from `Keyword=Value` / `Keyword` (universal) strings, plus the level's
    default return keys."""
    level = level.upper()
    if level not in LEVELS:
        raise ScuError(f"level must be one of {', '.join(LEVELS)}, got {level!r}")
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    wanted: dict[str, str] = dict.fromkeys(DEFAULT_KEYS[level], "") if use_defaults else {}
    for k in keys:
        kw, _, value = k.partition("=")
        wanted[kw.strip()] = value
    for kw, value in wanted.items():
        tag = tag_for_keyword(kw)
        if tag is None:
            raise ScuError(f"unknown DICOM keyword {kw!r} in -k {kw}={value}")
        vr = dictionary_VR(tag)
        if vr == "SQ":
            setattr(ds, kw, [])
        elif not value:
            setattr(ds, kw, None)
        elif vr in ("US", "SS", "UL", "SL", "UV", "SV"):
            setattr(ds, kw, [int(v) for v in value.split("\\")] if "\\" in value else int(value))
        elif vr in ("FL", "FD"):
            setattr(ds, kw, float(value))
        else:
            setattr(ds, kw, value)
    return ds


def _json_value(elem: Any) -> Any:
    if elem.VR == "SQ":
        return [dataset_to_dict(item) for item in elem.value]
    v = elem.value
    if v is None or v == "":
        return None
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list | tuple) or type(v).__name__ == "MultiValue":
        return [x if isinstance(x, int | float) else str(x) for x in v]
    return v if isinstance(v, int | float) else str(v)


def dataset_to_dict(ds: Dataset) -> dict[str, Any]:
    """Keyword -> JSON value (strings, numbers, lists; sequences as lists of objects)."""
    out: dict[str, Any] = {}
    for elem in ds:
        if elem.tag.group in (0x0000, 0x0002) or elem.tag.element == 0:
            continue
        kw = elem.keyword or keyword_for_tag(elem.tag) or f"{elem.tag.group:04X}{elem.tag.element:04X}"
        out[kw] = _json_value(elem)
    return out


def find(peer: Peer, identifier: Dataset, *, patient_root: bool = False, calling_ae: str = DEFAULT_CALLING_AE,
         max_pdu: int = DEFAULT_MAX_PDU, assoc: Association | None = None) -> list[Dataset]:
    """The matches of one C-FIND (on `assoc` if given, else on an association of its own)."""
    model = (PatientRootQueryRetrieveInformationModelFind if patient_root
             else StudyRootQueryRetrieveInformationModelFind)
    own = assoc is None
    if assoc is None:
        _quiet_pynetdicom()
        assoc = associate(make_ae(calling_ae, max_pdu), peer, [build_context(model)], max_pdu=max_pdu)
    try:
        results: list[Dataset] = []
        for st, ident in assoc.send_c_find(identifier, model):
            code = int(st.Status) if "Status" in st else None
            if code in PENDING:
                if ident is not None:
                    results.append(ident)
                continue
            if code != SUCCESS:
                comment = st.get("ErrorComment", "")
                raise ScuError(f"C-FIND at {peer} ended with {_status_name(code)}"
                               + (f": {comment}" if comment else ""))
        return results
    finally:
        if own and assoc.is_established:
            assoc.release()


# -- retrieve: C-GET or C-MOVE into our archive ---------------------------------------------------

@dataclass
class RetrieveReport:
    mode: str
    expected: int | None = None
    received: int = 0
    bytes: int = 0
    local: Counter[str] = field(default_factory=Counter)  # our answers to the sub-operations
    remote: dict[str, int] = field(default_factory=dict)  # the peer's final sub-operation counts
    seconds: float = 0.0
    final_status: str = ""

    @property
    def ok(self) -> bool:
        failed = self.remote.get("failed", 0) + self.remote.get("warning", 0)
        # Nothing received is a failure too: a mistyped UID must not look like a done retrieve.
        return (self.final_status == "success" and not failed and self.received > 0
                and self.local.get("success", 0) == self.received
                and (self.expected is None or self.received >= self.expected))

    def as_dict(self) -> dict[str, Any]:
        return {"mode": self.mode, "expected": self.expected, "received": self.received, "bytes": self.bytes,
                "stored": dict(self.local), "remote": self.remote, "final_status": self.final_status,
                "seconds": round(self.seconds, 3),
                "instances_per_s": round(self.received / self.seconds, 1) if self.seconds > 0 else None,
                "mb_per_s": round(self.bytes / self.seconds / 1e6, 1) if self.seconds > 0 else None}


def _retrieve_identifier(study: str, series: str | None) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "SERIES" if series else "STUDY"
    ds.StudyInstanceUID = study
    if series:
        ds.SeriesInstanceUID = series
    return ds


def _sop_classes(peer: Peer, study: str, series: str | None, calling_ae: str, max_pdu: int
                 ) -> tuple[list[str], int | None]:
    """(SOP classes, instance count) of what a retrieve will bring, from an IMAGE-level C-FIND;
    ([], None) if the peer will not answer one (then common storage classes are proposed)."""
    ident = build_identifier("IMAGE", [f"StudyInstanceUID={study}", f"SeriesInstanceUID={series or ''}",
                                       "SOPInstanceUID", "SOPClassUID"], use_defaults=False)
    try:
        rows = find(peer, ident, calling_ae=calling_ae, max_pdu=max_pdu)
    except ScuError as exc:
        log.warning("cannot list the instances of study %s at %s (%s); proposing common storage classes",
                    study, peer, exc)
        return [], None
    if not rows:
        raise ScuError(f"{peer} has no instances of study {study}" + (f" series {series}" if series else ""))
    classes = dict.fromkeys(str(r.SOPClassUID) for r in rows if r.get("SOPClassUID"))
    return list(classes), len(rows)


def _retrieve_contexts(sop_classes: Sequence[str], reserved: int
                       ) -> tuple[list[PresentationContext], list[Any]]:
    """Storage contexts (SCP role) for a C-GET: one context per (class, syntax), because the
    acceptor picks one syntax per context and the peer should find the syntax it stores the
    object in, so it sends its bytes without transcoding. As many syntaxes per class as fit."""
    if not sop_classes:
        sop_classes = [str(cx.abstract_syntax) for cx in StoragePresentationContexts[:40]]
    room = MAX_CONTEXTS - reserved
    per_class = max(1, min(len(RETRIEVE_SYNTAXES), room // len(sop_classes)))
    if len(sop_classes) > room:
        log.warning("%d SOP classes to retrieve; only %d fit in one association", len(sop_classes), room)
        sop_classes = sop_classes[:room]
    cxs = [build_context(c, [ts]) for c in sop_classes for ts in RETRIEVE_SYNTAXES[:per_class]]
    roles = [build_role(c, scp_role=True) for c in sop_classes]
    return cxs, roles


class _Receiver:
    """EVT_C_STORE handler for retrieved objects: the engine's own C-STORE path (A's
    `store.handle_store`: durable before success), counted."""

    def __init__(self, engine: Engine, report: RetrieveReport) -> None:
        self.engine, self.report = engine, report
        self.lock = threading.Lock()

    def __call__(self, event: Any) -> Any:
        size = len(event.request.DataSet.getvalue()) if event.request.DataSet is not None else 0
        result = handle_store(event, self.engine)
        code = result if isinstance(result, int) else int(result.Status)
        with self.lock:
            self.report.received += 1
            self.report.bytes += size
            self.report.local[_status_name(code)] += 1
        return result


def _final_counts(st: Dataset) -> dict[str, int]:
    out = {}
    for kw, name in (("NumberOfCompletedSuboperations", "completed"),
                     ("NumberOfFailedSuboperations", "failed"),
                     ("NumberOfWarningSuboperations", "warning"),
                     ("NumberOfRemainingSuboperations", "remaining")):
        if kw in st and st[kw].value is not None:
            out[name] = int(st[kw].value)
    return out


def _drain(responses: Iterator[tuple[Dataset, Dataset | None]], report: RetrieveReport, what: str,
           peer: Peer) -> None:
    """Consumes the pending responses; keeps the final status and sub-operation counts. A final
    failure before any sub-operation ran is a refusal: ScuError with the peer's reason."""
    for st, _ident in responses:
        code = int(st.Status) if "Status" in st else None
        if code in PENDING:
            continue
        report.remote = _final_counts(st)
        report.final_status = _status_name(code)
        if code is None:
            raise ScuError(f"{what} at {peer}: no final response (association dropped or timed out)")
        if code == 0xA801:
            raise ScuError(f"{what} at {peer}: move destination unknown (the peer must know our AE title, "
                           "host and port)")
        ran = report.received or report.remote.get("completed") or report.remote.get("failed")
        if report.final_status.startswith("failure") and not ran:
            comment = st.get("ErrorComment", "")
            raise ScuError(f"{what} at {peer} refused: {report.final_status}"
                           + (f" ({comment})" if comment else ""))


def retrieve_get(peer: Peer, engine: Engine, study: str, series: str | None = None, *,
                 calling_ae: str = DEFAULT_CALLING_AE, max_pdu: int = DEFAULT_MAX_PDU) -> RetrieveReport:
    """C-GET: the peer sends the objects back on our association, we act as storage SCP."""
    _quiet_pynetdicom()
    report = RetrieveReport("C-GET")
    t0 = time.monotonic()
    classes, report.expected = _sop_classes(peer, study, series, calling_ae, max_pdu)
    model = StudyRootQueryRetrieveInformationModelGet
    cxs, roles = _retrieve_contexts(classes, reserved=1)
    receiver = _Receiver(engine, report)
    assoc = associate(make_ae(calling_ae, max_pdu), peer, [build_context(model), *cxs], max_pdu=max_pdu,
                      ext_neg=roles, handlers=[(evt.EVT_C_STORE, receiver)])
    try:
        _drain(assoc.send_c_get(_retrieve_identifier(study, series), model), report, "C-GET", peer)
    finally:
        if assoc.is_established:
            assoc.release()
    report.seconds = time.monotonic() - t0
    return report


def retrieve_move(peer: Peer, engine: Engine, study: str, series: str | None = None, *, port: int,
                  listen_host: str = "0.0.0.0", calling_ae: str = DEFAULT_CALLING_AE,
                  max_pdu: int = DEFAULT_MAX_PDU) -> RetrieveReport:
    """C-MOVE to ourselves: a temporary storage SCP (our AE title, `port`) receives the objects;
    the peer must know our AE title with this host and port."""
    _quiet_pynetdicom()
    # Accept every storage class in the first syntax the peer proposes for it (its stored one,
    # for any sender that proposes the stored syntax first), without listing ~170 x 40 contexts.
    _config.UNRESTRICTED_STORAGE_SERVICE = True
    report = RetrieveReport("C-MOVE")
    t0 = time.monotonic()
    _classes, report.expected = _sop_classes(peer, study, series, calling_ae, max_pdu)
    scp = make_ae(calling_ae, max_pdu)
    receiver = _Receiver(engine, report)
    try:
        server = scp.start_server((listen_host, port), block=False,
                                  evt_handlers=[(evt.EVT_CONN_OPEN, set_nodelay),
                                                (evt.EVT_C_STORE, receiver)])
    except OSError as exc:
        raise ScuError(f"cannot listen on {listen_host}:{port} for the C-MOVE sub-operations: {exc}") from exc
    try:
        model = StudyRootQueryRetrieveInformationModelMove
        assoc = associate(make_ae(calling_ae, max_pdu), peer, [build_context(model)], max_pdu=max_pdu)
        try:
            _drain(assoc.send_c_move(_retrieve_identifier(study, series), calling_ae, model), report,
                   "C-MOVE", peer)
        finally:
            if assoc.is_established:
                assoc.release()
        # No wait for the sub-association to close (a peer may keep it open for reuse, Orthanc
        # for 5 s): the final C-MOVE response comes after our answer to the last sub-operation,
        # which the handler gives only after storing and counting it.
    finally:
        server.shutdown()
        for a in server.active_associations:
            a.abort()  # a sub-association the peer keeps open for reuse; everything was answered
    report.seconds = time.monotonic() - t0
    return report


def move(peer: Peer, identifier: Dataset, destination: str, *, patient_root: bool = False,
         calling_ae: str = DEFAULT_CALLING_AE, max_pdu: int = DEFAULT_MAX_PDU) -> RetrieveReport:
    """A plain C-MOVE: ask `peer` to send what `identifier` names to the AE `destination`."""
    _quiet_pynetdicom()
    model = (PatientRootQueryRetrieveInformationModelMove if patient_root
             else StudyRootQueryRetrieveInformationModelMove)
    report = RetrieveReport("C-MOVE")
    t0 = time.monotonic()
    assoc = associate(make_ae(calling_ae, max_pdu), peer, [build_context(model)], max_pdu=max_pdu)
    try:
        _drain(assoc.send_c_move(identifier, destination, model), report, "C-MOVE", peer)
    finally:
        if assoc.is_established:
            assoc.release()
    report.seconds = time.monotonic() - t0
    return report


__all__ = [
    "DEFAULT_CALLING_AE", "DEFAULT_MAX_PDU", "Peer",
    "RetrieveReport", "ScuError", "SendItem", "SendReport", "associate", "build_identifier",
    "dataset_to_dict", "find", "make_ae", "move", "retrieve_get", "retrieve_move", "scan", "send_files",
]
