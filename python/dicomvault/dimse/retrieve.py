"""C-MOVE and C-GET SCP through pynetdicom (Patient Root and Study Root; patient/study/series/image
level): the path of `fast_path = false` and of GET/MOVE contexts in other than little-endian
syntaxes; the usual path is dimse/fastretrieve.py, which shares `resolve` and `move_contexts`.

The C-STORE sub-operations send the stored dataset bytes as they are (hash-verified by
`Engine.read_dataset`) when the negotiated transfer syntax is the stored one: no pydicom decode,
no re-encode, so what arrived is what leaves, bit for bit. pynetdicom's Q/R service only takes
pydicom Datasets from a handler and always re-encodes them, so:

* a handler yields a `StoredInstance`: a Dataset carrying only the two UIDs pynetdicom needs to
  pick a presentation context, plus the stored bytes;
* our associations (association.ArchiveAssociation.send_c_store) send a StoredInstance as what its
  `encoded()` gives for the context pynetdicom picks: the stored bytes when the stored encoding
  matches the context's. Any other Dataset goes through pynetdicom's own encoder unchanged.

When the peer accepted only another uncompressed transfer syntax (pynetdicom converts between
uncompressed syntaxes of the same byte order, never from or to a compressed one), the stored bytes
are decoded with pydicom and re-encoded: a conversion the peer asked for, not our default path.
"""

from __future__ import annotations

import re
import struct
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from io import BytesIO
from typing import Any, NamedTuple

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filereader import read_dataset
from pydicom.uid import UID, ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import build_context, evt
from pynetdicom.dsutils import encode
from pynetdicom.presentation import PresentationContext

from ..audit.dimse import DimseAudit
from ..config import PeerConfig
from ..engine import Engine
from ..errors import DicomVaultError
from ..index import QueryError
from ..readahead import read_ahead
from .common import calling_ae, enable_quickack, log, requestor_host, set_nodelay_quickack, status
from .encoded import PreEncodedDataset
from .find import levels_for, match_string
from .peers import Peers
from .status import CANCEL, IDENTIFIER_DOES_NOT_MATCH, PENDING

MAX_CONTEXTS = 128  # PS3.8: presentation context IDs are odd numbers 1-255
UNIQUE_KEY = {"PATIENT": "PatientID", "STUDY": "StudyInstanceUID", "SERIES": "SeriesInstanceUID",
              "IMAGE": "SOPInstanceUID"}


class StoredInstance(PreEncodedDataset):
    """A stored object on its way out: the UIDs pynetdicom looks at, and the stored bytes.

    `raw` None means it could not be read (`error` says why): encoding it fails, so pynetdicom
    counts a failed sub-operation and lists its SOP Instance UID in the failed list.
    """

    def __init__(self, sop_class: str, sop_uid: str, ts: str, raw: bytes | None, error: str = "") -> None:
        super().__init__()
        self.SOPClassUID = sop_class
        self.SOPInstanceUID = sop_uid
        self.file_meta = FileMetaDataset()
        self.file_meta.TransferSyntaxUID = ts
        # Plain attributes, set past pydicom's keyword-aware __setattr__.
        object.__setattr__(self, "dv_raw", raw)
        object.__setattr__(self, "dv_ts", UID(ts))
        object.__setattr__(self, "dv_error", error)

    def encoded(self, implicit: bool, little: bool, deflated: bool) -> bytes | None:
        raw: bytes | None = self.dv_raw
        ts: UID = self.dv_ts
        if raw is None:
            log.error("cannot send %s: %s", self.SOPInstanceUID, self.dv_error)
            return None
        # pynetdicom only picks a context whose syntax equals the stored one, or, both being
        # uncompressed, one of the same byte order; so equal flags mean the same encoding.
        if (implicit, little, deflated) == (ts.is_implicit_VR, ts.is_little_endian, ts.is_deflated):
            return raw
        log.info("converting %s from %s for the peer", self.SOPInstanceUID, ts.name)
        data = zlib.decompress(raw, -zlib.MAX_WBITS) if ts.is_deflated else raw
        ds = read_dataset(BytesIO(data), ts.is_implicit_VR, ts.is_little_endian)
        return encode(ds, implicit, little, deflated)  # pynetdicom's encoder, as for any Dataset


class Match(NamedTuple):
    """One matched object. A tuple, not a frozen dataclass: a C-GET makes one per object of the
    study as it lists it (~1 us less each, 0.3 ms of a 300-slice study)."""

    sop_uid: str
    sop_class: str = ""  # "" (with transfer_syntax ""): read from the index record when loaded
    transfer_syntax: str = ""


class RetrieveError(DicomVaultError):
    def __init__(self, code: int, why: str) -> None:
        super().__init__(why)
        self.code = code


def resolve(engine: Engine, identifier: Dataset, model: str, *, syntaxes: bool = True) -> list[Match]:
    """The stored instances a retrieve identifier names (PS3.4 C.4.2.2.1: unique keys only)."""
    return list(resolve_iter(engine, identifier, model, syntaxes=syntaxes))


def resolve_iter(engine: Engine, identifier: Dataset, model: str, *, syntaxes: bool = True
                 ) -> Iterator[Match]:
    """resolve(), as the index is read: the identifier is checked now (RetrieveError), the
    matches come as they are listed, so a C-GET can send its first object before the rest of the
    study is listed (dimse/fastretrieve.py)."""
    level, query = unique_keys(identifier, model)
    return resolve_keys(engine, level, query, syntaxes=syntaxes)


def resolve_keys(engine: Engine, level: str, query: dict[str, str], *, syntaxes: bool = True
                 ) -> Iterator[Match]:
    """resolve_iter() of an identifier's (level, unique keys) (unique_keys, retrieve_keys).

    `syntaxes=False` (C-GET, whose contexts are the requestor's): a one-key retrieve lists only
    the SOP Instance UIDs, from the hierarchy index, and each record is read when its object is
    (~35 us per instance less before the first image: ~10 ms for a 300-slice study)."""
    query = dict(query)
    if len(query) == 1 and "\\" not in query[UNIQUE_KEY[level]]:
        # The usual retrieve: one study / series / instance (or patient) by its key. The index's
        # hierarchy walk is ~2x faster than a query (every ms here delays the first image) and
        # gives the objects in series, then instance number order, as viewers want them.
        key = query[UNIQUE_KEY[level]]
        if not syntaxes:
            return map(Match, engine.index.iter_sop_uids_of(level, key))
        return iter([Match(*t) for t in engine.index.syntaxes_of(level, key)])
    query.setdefault("SOPInstanceUID", "")
    query.update({"SOPClassUID": "", "AvailableTransferSyntaxUID": ""})
    try:
        rows = list(engine.index.find("IMAGE", query))
    except QueryError as exc:
        raise RetrieveError(IDENTIFIER_DOES_NOT_MATCH, str(exc)) from exc
    return iter([Match(r["SOPInstanceUID"], r["SOPClassUID"], r["AvailableTransferSyntaxUID"]) for r in rows])


def unique_keys(identifier: Dataset, model: str) -> tuple[str, dict[str, str]]:
    """(QueryRetrieveLevel, {unique key keyword: value}) of a retrieve identifier; RetrieveError
    if it is not a valid one (PS3.4 C.4.2.2.1)."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "")
    return _checked_keys(level, lambda kw: match_string(identifier[kw]) if kw in identifier else "", model)


def _checked_keys(level: str, value_of: Callable[[str], str], model: str) -> tuple[str, dict[str, str]]:
    """unique_keys of a level (as sent) and the match strings of the unique keys."""
    level = level.strip().upper()
    levels = levels_for(model)
    if level not in levels:
        raise RetrieveError(IDENTIFIER_DOES_NOT_MATCH,
                            f"QueryRetrieveLevel {level or '(missing)'!r} not valid for {model}")
    query: dict[str, str] = {}
    for lv in levels[: levels.index(level) + 1]:
        kw = UNIQUE_KEY[lv]
        value = value_of(kw)
        if "*" in value or "?" in value:
            raise RetrieveError(IDENTIFIER_DOES_NOT_MATCH, f"wildcard in unique key {kw}: {value!r}")
        if value:
            query[kw] = value
    if UNIQUE_KEY[level] not in query:
        raise RetrieveError(IDENTIFIER_DOES_NOT_MATCH, f"{UNIQUE_KEY[level]} missing for a {level} retrieve")
    return level, query


# -- retrieve_keys: the usual identifier read without pydicom ------------------------------------------

QR_LEVEL, PATIENT_ID = 0x00080052, 0x00100020
# What retrieve_keys reads: tag -> the VR an explicit-VR identifier must give it
_READ = {QR_LEVEL: b"CS", PATIENT_ID: b"LO", 0x0020000D: b"UI", 0x0020000E: b"UI", 0x00080018: b"UI"}
_KEYWORD = {PATIENT_ID: "PatientID", 0x0020000D: "StudyInstanceUID", 0x0020000E: "SeriesInstanceUID",
            0x00080018: "SOPInstanceUID"}
_LONG_VRS = frozenset((b"OB", b"OD", b"OF", b"OL", b"OV", b"OW", b"SQ", b"UC", b"UN", b"UR", b"UT"))
_PLAIN = re.compile(rb"[\x20-\x5b\x5d-\x7e]*\x00*")  # printable ASCII but the backslash, then NUL padding


def _read_elements(raw: bytes, implicit: bool) -> dict[int, bytes] | None:
    """The values of the elements retrieve_keys reads, by tag, from a little-endian encoded
    identifier; None if it holds what this reading could get wrong: an undefined length, a
    truncated element, one of those elements twice or with another VR."""
    out: dict[int, bytes] = {}
    at, end = 0, len(raw)
    while at < end:
        if at + 8 > end:
            return None
        group, elem = struct.unpack_from("<HH", raw, at)
        tag = group << 16 | elem
        if implicit:
            (length,) = struct.unpack_from("<I", raw, at + 4)
            vr, at = None, at + 8
        else:
            vr = raw[at + 4:at + 6]
            if vr in _LONG_VRS:
                if at + 12 > end:
                    return None
                (length,) = struct.unpack_from("<I", raw, at + 8)
                at += 12
            else:
                (length,) = struct.unpack_from("<H", raw, at + 6)
                at += 8
        if at + length > end:  # an undefined length (0xFFFFFFFF) too
            return None
        if tag in _READ:
            if tag in out or (vr is not None and vr != _READ[tag]):
                return None
            out[tag] = raw[at:at + length]
        at += length
    return out


def retrieve_keys(raw: bytes, implicit: bool, model: str) -> tuple[str, dict[str, str]] | None:
    """unique_keys of an encoded identifier read without pydicom, for the usual one (level and
    UIDs in plain ASCII, no Patient ID among the keys); None when pydicom has to read it. Why: a
    C-GET's identifier decoded by pydicom and checked cost 0.3-0.45 ms of its first image, this
    ~0.05 ms. RetrieveError as unique_keys raises it."""
    found = _read_elements(raw, implicit)
    if found is None:
        return None
    wanted = {UNIQUE_KEY[lv] for lv in levels_for(model)}
    if "PatientID" in wanted and found.get(PATIENT_ID, b"").strip(b" \x00"):
        return None  # an LO in the identifier's character set: pydicom's to read
    text: dict[int, str] = {}
    for tag, value in found.items():
        if tag != QR_LEVEL and _KEYWORD[tag] not in wanted:
            continue
        if _PLAIN.fullmatch(value) is None:
            return None  # a backslash (several values), a control or non-ASCII character
        # as pydicom reads them: a UI stripped of spaces and NUL padding, a CS of trailing ones
        value_text = value.decode("ascii")
        text[tag] = value_text.strip(" \x00") if _READ[tag] == b"UI" else value_text.rstrip(" \x00")
    by_keyword = {_KEYWORD[t]: v for t, v in text.items() if t != QR_LEVEL}
    return _checked_keys(text.get(QR_LEVEL, ""), lambda kw: by_keyword.get(kw, ""), model)


@dataclass
class MovePlan:
    """A C-MOVE whose sub-association can be proposed before its matches are listed."""

    contexts: list[PresentationContext]  # what the sub-association proposes (move_contexts)
    matches: Iterator[Match]  # as the index lists them, SOP Instance UIDs only


def move_plan(engine: Engine, identifier: Dataset, model: str) -> MovePlan | None:
    """The usual C-MOVE, one study by its UID: the sub-association's contexts from the study's
    (SOP class, transfer syntax) pairs, which the index keeps at ingest (StudyRecord.syntaxes),
    and the matches as resolve_iter(syntaxes=False) lists them, so the sub-association can be
    negotiated while the first object is read, before the study is listed. None (resolve() lists
    every instance's class and syntax first, as before) for any other identifier, an unknown
    study, or a study whose pairs the index does not know for all its instances (indexed before
    it kept them). RetrieveError for an identifier that is not a valid one."""
    level, query = unique_keys(identifier, model)
    if level != "STUDY" or len(query) != 1 or "\\" in query["StudyInstanceUID"]:
        return None
    study = engine.index.get_study(query["StudyInstanceUID"])
    pairs = study.syntax_pairs() if study is not None else None
    if not pairs:
        return None
    return MovePlan(move_contexts([Match("", c, ts) for c, ts in pairs]),
                    resolve_iter(engine, identifier, model, syntaxes=False))


def _load(engine: Engine, m: Match) -> StoredInstance:
    try:
        rec, ts, raw = engine.read_instance(m.sop_uid)
    except DicomVaultError as exc:
        # A missing or damaged blob fails this sub-operation only; the others go on.
        log.error("retrieve: cannot read %s: %s", m.sop_uid, exc)
        if not m.sop_class and (rec := engine.instance(m.sop_uid)) is not None:
            m = Match(m.sop_uid, rec.sop_class_uid, rec.transfer_syntax)
        return StoredInstance(m.sop_class, m.sop_uid, m.transfer_syntax, None, str(exc))
    return StoredInstance(m.sop_class or rec.sop_class_uid, m.sop_uid, ts, raw)


def _sub_operations(event: Any, engine: Engine, matches: list[Match], what: str,
                    audit: DimseAudit | None = None, destination: str | None = None
                    ) -> Iterator[tuple[int, Dataset | None]]:
    loads = read_ahead(lambda m: _load(engine, m), matches)
    key = None
    if audit is not None:
        ident = event.identifier
        key = audit.retrieve_started(id(event.assoc), calling_ae(event),
                                     requestor_host(event.assoc), what,
                                     str(ident.get("StudyInstanceUID", "") or "") or None,
                                     str(ident.get("PatientID", "") or "") or None, matches[0].sop_uid,
                                     len(matches), destination)
    # pynetdicom keeps the sub-operations' statuses to itself: the audit counts what was handed
    # to it as completed and what could not be read as failed.
    handed = unreadable = 0
    cancelled = True  # until the loop ends by itself (an abort closes the generator)
    try:
        for i, (_, fut) in enumerate(loads):
            if event.is_cancelled:
                log.info("%s from %s cancelled after %d of %d", what, calling_ae(event), i, len(matches))
                yield CANCEL, None
                return
            inst = fut.result()
            if inst.dv_raw is None:
                unreadable += 1
            else:
                handed += 1
            yield PENDING, inst
        cancelled = False
    finally:
        loads.close()  # cancelled or aborted: what was not started is not read
        if audit is not None and key is not None:
            audit.retrieve_ended(key, handed, unreadable, 0, cancelled)


def _matches_or_status(event: Any, engine: Engine, what: str, *, syntaxes: bool = True
                       ) -> list[Match] | Dataset:
    try:
        return resolve(engine, event.identifier, str(event.request.AffectedSOPClassUID), syntaxes=syntaxes)
    except RetrieveError as exc:
        log.warning("%s from %s refused (0x%04X): %s", what, calling_ae(event), exc.code, exc)
        return status(exc.code, str(exc))


def handle_get(event: Any, engine: Engine, audit: DimseAudit | None = None) -> Iterator[Any]:
    """EVT_C_GET handler: sub-operations go back on the requestor's association (it proposed
    the storage contexts with the SCP role)."""
    found = _matches_or_status(event, engine, "C-GET", syntaxes=False)
    if isinstance(found, Dataset):
        # pynetdicom wants a count >= 1 first (0 means "Success, nothing to do"); the failure
        # status then ends the operation (its final response counts that one as failed).
        yield 1
        yield found, None
        return
    log.info("C-GET from %s: %d instances", calling_ae(event), len(found))
    enable_quickack(event.assoc)  # this association now carries our data
    yield len(found)
    if found:
        yield from _sub_operations(event, engine, found, "C-GET", audit)


def move_contexts(matches: list[Match]) -> list[PresentationContext]:
    """Contexts for the sub-association: each (SOP class, stored syntax) exactly, so the stored
    bytes can go out as they are; then, per SOP class, the two basic little-endian syntaxes as
    a fallback the peer may prefer (a compressed object is decompressed to one of them on the
    native path, dimse/fastretrieve.py). At most 128 (PS3.8)."""
    exact: dict[tuple[str, str], None] = {}
    fallback: dict[str, None] = {}
    for m in matches:
        exact[(m.sop_class, m.transfer_syntax)] = None
        fallback[m.sop_class] = None
    contexts = [build_context(c, [ts]) for c, ts in exact]
    contexts += [build_context(c, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for c in fallback]
    if len(contexts) > MAX_CONTEXTS:
        log.warning("C-MOVE needs %d presentation contexts, proposing the first %d", len(contexts),
                    MAX_CONTEXTS)
    return contexts[:MAX_CONTEXTS]


def handle_move(event: Any, engine: Engine, peers: Peers, max_pdu: int,
                connect: Callable[[PeerConfig], dict[str, Any]] = lambda peer: {},
                audit: DimseAudit | None = None) -> Iterator[Any]:
    """EVT_C_MOVE handler: sub-operations go to a configured peer on a new association."""
    dest = event.move_destination
    dest_title = (dest.decode("ascii", "replace") if isinstance(dest, bytes) else str(dest or "")).strip()
    peer = peers.get(dest_title)
    if peer is None:
        log.warning("C-MOVE from %s refused: unknown move destination %r", calling_ae(event), dest_title)
        yield None, None  # pynetdicom answers 0xA801 (move destination unknown)
        return
    if not peers.may_move_to(calling_ae(event), dest_title):
        log.warning("C-MOVE from %s refused: move destination %r not allowed for it (peers add --move-to)",
                    calling_ae(event), dest_title)
        yield None, None  # 0xA801 too: to this caller the destination does not exist
        return
    found = _matches_or_status(event, engine, "C-MOVE")
    if isinstance(found, Dataset):
        # As for C-GET; pynetdicom also associates with the destination before it reads this
        # status, so an error here costs one empty association to the peer.
        yield peer.host, peer.port
        yield 1
        yield found, None
        return
    log.info("C-MOVE from %s: %d instances to %s (%s:%d)", calling_ae(event), len(found), peer.ae_title,
             peer.host, peer.port)
    yield peer.host, peer.port, {
        "contexts": move_contexts(found),  # unused when nothing matched: no sub-association
        "max_pdu": max_pdu,
        "evt_handlers": [(evt.EVT_CONN_OPEN, set_nodelay_quickack)],
        **connect(peer),  # TLS to a peer configured so
    }
    yield len(found)
    if found:
        yield from _sub_operations(event, engine, found, "C-MOVE", audit,
                                   f"{peer.ae_title}@{peer.host}:{peer.port}")
