"""C-FIND SCP (Patient Root and Study Root): the identifier becomes an index query.

Every key of the request identifier is a return key and, unless universal, a matching key; the
matching itself (PS3.4 C.2.2.2: single value, wildcard, range, UID list, universal, empty) is the
index's (`index/query.py`). The (small) identifier is decoded with pydicom, which also applies
its Specific Character Set, so query values reach the index as Unicode text.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from io import BytesIO
from itertools import islice, repeat
from typing import Any

from pydicom.datadict import dictionary_VR, tag_for_keyword
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset
from pydicom.filereader import read_dataset
from pydicom.multival import MultiValue
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom.pdu_primitives import P_DATA
from pynetdicom.sop_class import (
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelGet,
    PatientRootQueryRetrieveInformationModelMove,
)

from .. import _native  # type: ignore[attr-defined]
from ..audit.dimse import DimseAudit
from ..engine import Engine
from ..index import QueryError
from ..refusals import REFUSALS
from . import command_set as cs
from .command_set import C_FIND_RSP
from .common import calling_ae, log, status
from .status import CANCEL, IDENTIFIER_DOES_NOT_MATCH, OUT_OF_RESOURCES, PENDING, SUCCESS

PATIENT_ROOT_LEVELS = ("PATIENT", "STUDY", "SERIES", "IMAGE")
STUDY_ROOT_LEVELS = ("STUDY", "SERIES", "IMAGE")
_BINARY_VRS = {"OB", "OW", "OF", "OD", "OL", "OV", "UN", "AT"}
_PATIENT_ROOT_MODELS = {
    PatientRootQueryRetrieveInformationModelFind,
    PatientRootQueryRetrieveInformationModelMove,
    PatientRootQueryRetrieveInformationModelGet,
}
# Not query keys: they qualify the query itself.
_SKIP_TAGS = {0x00080005, 0x00080052}


def levels_for(model_uid: str) -> tuple[str, ...]:
    """Query/Retrieve levels an information model allows (Patient Root also has PATIENT)."""
    return PATIENT_ROOT_LEVELS if model_uid in _PATIENT_ROOT_MODELS else STUDY_ROOT_LEVELS


def match_string(elem: DataElement) -> str:
    """An identifier element's value as a C.2.2.2 match string ('' = universal)."""
    value = elem.value
    if value is None or value == "" or elem.VR in _BINARY_VRS:
        return ""
    if isinstance(value, MultiValue | list | tuple):
        return "\\".join(str(v) for v in value)
    return str(value)


def parse_identifier(identifier: Dataset) -> tuple[str, dict[str, str], list[int]]:
    """(level, query dict keyword -> match string, sequence tags to return empty)."""
    level = str(identifier.get("QueryRetrieveLevel", "") or "").strip().upper()
    query: dict[str, str] = {}
    sequences: list[int] = []
    for elem in identifier:
        tag = int(elem.tag)
        if tag in _SKIP_TAGS or elem.tag.is_private or elem.tag.element == 0:
            continue
        kw = elem.keyword
        if not kw:
            continue
        if elem.VR == "SQ":
            # Sequence matching is optional (C.2.2.2.6); we return the key empty.
            sequences.append(tag)
            continue
        query[kw] = match_string(elem)
    return level, query, sequences



# -- response identifiers ------------------------------------------------------------------------
#
# Why not pydicom here: a response identifier built as a pydicom Dataset and encoded by
# pynetdicom cost ~0.4 ms per match, and pynetdicom's C-FIND-RSP message (its command set is a
# Dataset encoded three times) another ~0.6 ms, against ~0.03 ms per match for the index itself
# (measured at 100k instances, bench/find_dv.py). A response identifier is a handful of short
# elements whose tags and VRs are fixed for the whole query, so the encoder below resolves them
# once per query and writes each match's values straight into bytes.

_CHARSET_TAG = 0x00080005
_LEVEL_TAG = 0x00080052
# VRs whose explicit-VR header has a 4-byte length (PS3.5 7.1.2)
_LONG_VRS = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"}
_PACK = {"US": "<H", "SS": "<h", "UL": "<I", "SL": "<i", "UV": "<Q", "SV": "<q", "FL": "<f", "FD": "<d"}
_MAX_SHORT = 0xFFFE  # largest even value a 2-byte length holds


@lru_cache(maxsize=4096)
def tag_vr(keyword: str) -> tuple[int, str] | None:
    """(tag, VR) of a dictionary keyword (the first VR of 'US or SS'); None if unknown."""
    tag = tag_for_keyword(keyword)
    if tag is None:
        return None
    return tag, dictionary_VR(tag).split(" ")[0]


def _header(tag: int, vr: str, implicit: bool) -> tuple[bytes, str]:
    """Tag (+ VR) bytes of an element and the struct format of its length field."""
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF)
    if implicit:
        return head, "<I"
    if vr in _LONG_VRS:
        return head + vr.encode() + b"\0\0", "<I"
    return head + vr.encode(), "<H"


def _text_bytes(vr: str, text: str, encoding: str) -> bytes:
    raw = text.encode(encoding)
    if len(raw) % 2:
        raw += b"\0" if vr == "UI" else b" "
    return raw


def _binary_bytes(vr: str, text: str) -> bytes:
    """US/SS/UL/SL/UV/SV/FL/FD from the index's text form; a value that does not parse is left
    out (the key is returned empty rather than failing the whole query)."""
    conv = float if vr in ("FL", "FD") else int
    out = []
    for v in text.split("\\"):
        v = v.strip()
        if not v:
            continue
        try:
            out.append(struct.pack(_PACK[vr], conv(v)))
        except (ValueError, struct.error, OverflowError):
            log.debug("C-FIND: stored %s value %r is not a %s; returned empty", vr, v, vr)
    return b"".join(out)


@dataclass(frozen=True, slots=True)
class _Key:
    keyword: str
    tag: int
    vr: str
    head: bytes
    length_format: str
    default: str  # returned when the index has no value


class IdentifierEncoder:
    """Encodes the response identifiers of one C-FIND: every requested key (the index's value or
    empty), the Query/Retrieve Level, requested sequences empty, and Specific Character Set.

    Values are written in the request's character set if they are ASCII (every DICOM character
    set encodes ASCII as ASCII), else as UTF-8 with Specific Character Set ISO_IR 192, which
    carries whatever the index holds.
    """

    def __init__(self, level: str, query: dict[str, str], sequences: list[int], request_charset: Any,
                 our_ae: str, *, implicit: bool) -> None:
        self.implicit = implicit
        if isinstance(request_charset, MultiValue | list | tuple):
            request_charset = "\\".join(str(c) for c in request_charset)
        self.request_charset = str(request_charset or "")
        defaults = {"RetrieveAETitle": our_ae, "InstanceAvailability": "ONLINE"}
        keys: list[_Key] = []
        for kw in query:
            tv = tag_vr(kw)
            if tv is None or tv[0] in (_CHARSET_TAG, _LEVEL_TAG):
                continue
            tag, vr = tv
            head, fmt = _header(tag, vr, implicit)
            keys.append(_Key(kw, tag, vr, head, fmt, defaults.get(kw, "")))
        for tag in sequences:
            head, fmt = _header(tag, "SQ", implicit)
            keys.append(_Key("", tag, "SQ", head, fmt, ""))
        head, fmt = _header(_LEVEL_TAG, "CS", implicit)
        keys.append(_Key("QueryRetrieveLevel", _LEVEL_TAG, "CS", head, fmt, level))
        keys.sort(key=lambda k: k.tag)  # a dataset's elements are in ascending tag order
        self._charset_head = _header(_CHARSET_TAG, "CS", implicit)
        # The elements are written natively (_native.IdentifierPlan): this runs once per match,
        # and 120-match answers spent more time here than in the index.
        self._keys = [(k.head, k.length_format == "<I", 0 if k.vr == "UI" else 0x20) for k in keys]
        self._plan = _native.IdentifierPlan(self._keys)
        self._values = [(k.keyword, k.default, k.vr in _BINARY_VRS or k.vr == "SQ", k.vr in _PACK, k.vr)
                        for k in keys]
        self._prefixes: dict[str, bytes] = {}
        self._special = any(empty or number for _, _, empty, number, _ in self._values)  # not plain text
        # The keys the index answers (tag order) and where each goes among all the keys; the
        # others (level, sequences) are the same in every identifier.
        self.columns = [k.keyword for k in keys if k.keyword in query]
        # what encode_values does to a row of them: the defaults of empty values (by position in
        # the row), then the constant elements inserted (positions in the whole identifier)
        self._defaults = [(i, k.default) for i, k in enumerate(k for k in keys if k.keyword in query)
                          if k.default]
        self._inserts = [(i, "" if not k.keyword else k.default) for i, k in enumerate(keys)
                         if k.keyword not in query]

    def _element(self, head: bytes, fmt: str, value: bytes) -> bytes:
        if fmt == "<H" and len(value) > _MAX_SHORT:
            value = value[:_MAX_SHORT]  # cannot happen for valid values (LT: 10240 chars at most)
        return head + struct.pack(fmt, len(value)) + value

    def _prefix(self, charset: str) -> bytes:
        """The Specific Character Set element (b"" for none), made once per character set."""
        prefix = self._prefixes.get(charset)
        if prefix is None:
            element = _text_bytes("CS", charset, "ascii")
            prefix = self._element(*self._charset_head, element) if charset else b""
            self._prefixes[charset] = prefix
        return prefix

    def encode(self, row: Mapping[str, str]) -> bytes:
        """One match (an index row: keyword -> text) as an encoded identifier."""
        return self.encode_values([row.get(kw) or "" for kw in self.columns])

    def encode_values(self, values: list[str]) -> bytes:
        """One match as an encoded identifier, from the texts of :attr:`columns` in order (what
        ``Index.find_values`` gives)."""
        if len(values) != len(self.columns):
            raise ValueError(f"{len(values)} values for {len(self.columns)} columns")
        texts: list[str | bytes] = list(values)
        for i, default in self._defaults:
            if not texts[i]:
                texts[i] = default
        for i, constant in self._inserts:
            texts.insert(i, constant)
        # every DICOM character set writes ASCII as ASCII; anything else goes out as UTF-8
        charset = self.request_charset if "".join(texts).isascii() else "ISO_IR 192"  # type: ignore[arg-type]
        if self._special:
            for i, (_, _, empty, number, vr) in enumerate(self._values):
                if empty:
                    texts[i] = ""  # a sequence without items; binary keys are never matched
                elif number and texts[i]:
                    texts[i] = _binary_bytes(vr, str(texts[i]))
        return bytes(self._plan.encode(self._prefix(charset), texts))

    def pending_frames(self, context_id: int, command: bytes, max_pdu: int) -> _native.PendingFrames | None:
        """The native writer of whole chunks of this query's pending responses: the bytes of
        :meth:`encode_values` framed by ``_native.frame_message``, per row. None for a query with
        a numeric binary key (US, FL, ...), whose text-to-binary conversion stays here."""
        if any(number for _, _, _, number, _ in self._values):
            return None
        try:
            ascii_prefix: bytes | None = self._prefix(self.request_charset)
        except UnicodeError:
            # encode_values raises for an all-ASCII match; so do the native rows that need it,
            # which the caller then redoes here
            ascii_prefix = None
        column = {kw: i for i, kw in enumerate(self.columns)}
        inserted = {i: constant for i, constant in self._inserts}
        elements = []
        for i, ((head, long_length, pad), (keyword, default, empty, _, _)) in enumerate(
                zip(self._keys, self._values, strict=True)):
            at = None if i in inserted else column[keyword]
            elements.append((head, long_length, pad, at, inserted.get(i, default), empty))
        return _native.PendingFrames(elements, len(self.columns), ascii_prefix, self._prefix("ISO_IR 192"),
                                     context_id, command, max_pdu)


def decode_identifier(raw: bytes, implicit: bool) -> Dataset:
    """An encoded identifier as a pydicom Dataset (tests, and the rare transfer syntaxes that
    pynetdicom has to encode for us)."""
    return read_dataset(BytesIO(raw), implicit, True)


# -- sending pending responses -------------------------------------------------------------------

DATASET_PRESENT = 0x0001  # pynetdicom's value; anything but 0x0101 means "a dataset follows"


def command_set(sop_class: str, msg_id: int, status_code: int) -> bytes:
    """A C-FIND-RSP command set with a dataset (Implicit VR Little Endian, PS3.7 9.3.2.2), the
    same bytes pynetdicom encodes for it."""
    return cs.pack([(0x0002, cs.ui(sop_class)), (0x0100, cs.us(C_FIND_RSP)), (0x0120, cs.us(msg_id)),
                    (0x0800, cs.us(DATASET_PRESENT)), (0x0900, cs.us(status_code))])


def pdata_primitives(context_id: int, command: bytes, dataset: bytes, max_pdu: int) -> list[P_DATA]:
    """One DIMSE message as P-DATA primitives: command and dataset PDVs in a single P-DATA-TF when
    it fits the peer's maximum PDU length (0 = unlimited), else one fragment per PDU as
    pynetdicom does. A PDV item is 4 (length) + 1 (context) + 1 (control header) + data bytes."""
    if not max_pdu or 12 + len(command) + len(dataset) <= max_pdu:
        p = P_DATA()
        # appended, not assigned: the property's setter insists on lists where pynetdicom itself
        # appends tuples
        p.presentation_data_value_list.append((context_id, b"\x03" + command))
        p.presentation_data_value_list.append((context_id, b"\x02" + dataset))
        return [p]
    out = []
    step = max_pdu - 6
    for data, more, last in ((command, 0x01, 0x03), (dataset, 0x00, 0x02)):
        for i in range(0, len(data), step):
            p = P_DATA()
            header = last if i + step >= len(data) else more
            p.presentation_data_value_list.append((context_id, bytes((header,)) + data[i:i + step]))
            out.append(p)
    return out


class RawResponder:
    """Sends C-FIND pending responses as pre-encoded P-DATA on the association, bypassing
    pynetdicom's per-message Dataset work; the final (or cancel/failure) response still goes
    through pynetdicom, after these, from the same thread, so the order on the wire holds.

    Only for the uncompressed little-endian syntaxes (what C-FIND peers propose in practice); for
    any other accepted syntax `for_event` returns None and the handler yields Datasets for
    pynetdicom to encode. Pending responses sent this way fire no EVT_DIMSE_SENT: nothing of ours
    listens to it (pynetdicom's own logging handlers are off in the server, see server.py).
    """

    def __init__(self, dul: Any, context_id: int, command: bytes, max_pdu: int) -> None:
        self._dul = dul
        self._context_id = context_id
        self._command = command
        self._max_pdu = max_pdu

    @classmethod
    def for_event(cls, event: Any) -> tuple[RawResponder, bool] | None:
        """(responder, implicit VR) for this C-FIND's association, or None if not applicable."""
        context = event.context
        ts = str(context.transfer_syntax)
        if ts not in (ImplicitVRLittleEndian, ExplicitVRLittleEndian):
            return None
        assoc = event.assoc
        dul = getattr(assoc, "dul", None)
        if dul is None or not hasattr(dul, "send_pdu"):
            return None
        req = event.request
        command = command_set(str(req.AffectedSOPClassUID), int(req.MessageID), PENDING)
        return (cls(dul, int(context.context_id), command, int(assoc.dimse.maximum_pdu_size or 0)),
                ts == ImplicitVRLittleEndian)

    def send(self, identifier: bytes) -> None:
        for p in pdata_primitives(self._context_id, self._command, identifier, self._max_pdu):
            self._dul.send_pdu(p)
        self._wait_sent()

    def _wait_sent(self, limit: float = 0.05) -> None:
        """Waits (bounded) until the DUL has sent what we queued. Why: the DUL reads the socket
        only between sends, so a handler that queues every match at once keeps a C-CANCEL
        unread until the last match is out, and the cancel never takes effect. Waiting also
        bounds the memory a large result set holds in the queue."""
        queue = getattr(self._dul, "to_provider_queue", None)
        if queue is None:
            return
        deadline = time.monotonic() + limit
        while not queue.empty() and time.monotonic() < deadline:
            time.sleep(0.0001)


Responses = Iterator[tuple[int, bytes | None, str | None]]


class FindAnswer:
    """One C-FIND's answer: planned on creation (the identifier's level, the response encoder,
    the index query), then its matches in batches (:meth:`batches`), then :attr:`final`.

    Shared by :func:`find_responses` (one match per batch: the pynetdicom handler) and the native
    path (dimse/fastpath.py: a chunk of matches per batch, framed by :class:`PendingResponses`)."""

    def __init__(self, engine: Engine, model: str, identifier: Dataset, our_ae: str, *, implicit: bool,
                 caller: str, audit: DimseAudit | None = None, max_results: int = 0) -> None:
        self.model = model
        self.caller = caller
        self.audit = audit
        self.max_results = max_results
        self.encoder: IdentifierEncoder | None = None  # None: refused before any match
        # (status, error comment): set when refused, or once batches() has run out
        self.final: tuple[int, str | None] | None = None
        self._rows: Iterator[list[str]] = iter(())
        self.level, self.query, sequences = parse_identifier(identifier)
        if self.level not in levels_for(model):
            why = f"QueryRetrieveLevel {self.level or '(missing)'!r} not valid for {model}"
            log.warning("C-FIND from %s refused: %s", caller, why)
            self.final = IDENTIFIER_DOES_NOT_MATCH, why
            return
        encoder = IdentifierEncoder(self.level, self.query, sequences, identifier.get("SpecificCharacterSet"),
                                    our_ae, implicit=implicit)
        try:
            self._rows = iter(engine.index.find_values(self.level, self.query, encoder.columns))
        except QueryError as exc:
            log.warning("C-FIND from %s refused: %s", caller, exc)
            self.final = IDENTIFIER_DOES_NOT_MATCH, str(exc)
            return
        self.encoder = encoder

    def batches(self, cancelled: Callable[[], bool], sizes: Iterator[int]) -> Iterator[list[list[str]]]:
        """The matches (index rows in :attr:`encoder`'s columns), in batches of the sizes `sizes`
        (endless) gives; then :attr:`final`. `cancelled()` is asked before each batch that has a
        match to give (C-CANCEL). More than `max_results` matches (0: no limit): that many, then
        Refused: Out of Resources (0xA700) saying so. Not Success, which PS3.4 C.4.1.3 reserves
        for "a response has been sent for any match known to the SCP"; not Cancel (0xFE00, what
        Orthanc answers), which answers a C-CANCEL the caller never sent. SCUs show the matches
        they got and the failure's Error Comment. An answered query is an ATNA Query record.

        A failing index gives the matches before the failure as a last batch, then raises."""
        rows, max_results, n = self._rows, self.max_results, 0
        while True:
            size = next(sizes)
            first = next(rows, None)
            if first is None:
                log.info("C-FIND from %s at %s level: %d matches", self.caller, self.level, n)
                self._audit(n, model=self.model)
                self.final = SUCCESS, None
                return
            if max_results and n >= max_results:
                REFUSALS.count("query", "max_query_results")
                why = f"more than {max_results} matches ([dimse] max_query_results): narrow the query"
                log.warning("C-FIND from %s at %s level cut after %d matches: %s", self.caller, self.level, n,
                            why)
                self._audit(n)
                self.final = OUT_OF_RESOURCES, why
                return
            if cancelled():
                log.info("C-FIND from %s cancelled after %d matches", self.caller, n)
                self._audit(n, model=self.model)
                self.final = CANCEL, None
                return
            batch = [first]
            more = size - 1 if not max_results else min(size, max_results - n) - 1
            try:
                for row in islice(rows, more):
                    batch.append(row)
            except Exception:
                yield batch  # what the index gave before failing still goes out, then the failure
                raise
            n += len(batch)
            yield batch

    def _audit(self, n: int, **model: str) -> None:
        if self.audit is not None:
            self.audit.queried(self.caller, self.level, self.query, n, **model)


class PendingResponses:
    """The pending responses of one C-FIND answered on the native path, framed a batch of matches
    at a time (_native.PendingFrames): the bytes the per-match path writes, without its Python
    per match."""

    def __init__(self, encoder: IdentifierEncoder, context_id: int, command: bytes, max_pdu: int) -> None:
        self.encoder = encoder
        self.context_id = context_id
        self.command = command
        self.max_pdu = max_pdu
        self.frames = encoder.pending_frames(context_id, command, max_pdu)

    def frame_into(self, out: bytearray, rows: list[list[str]]) -> None:
        """Appends the pending responses of `rows` to `out`. A row that cannot be encoded raises
        what encode_values raises for it, with the responses of the rows before it in `out`."""
        if self.frames is not None:
            try:
                out += self.frames.frame(rows)
                return
            except (ValueError, TypeError) as exc:
                # redone below one row at a time, which stops at the same row with its own error
                log.debug("C-FIND batch of %d rows framed per row: %s", len(rows), exc)
        encode = self.encoder.encode_values
        for row in rows:
            out += _native.frame_message(self.context_id, self.command, encode(row), self.max_pdu)


def find_responses(engine: Engine, model: str, identifier: Dataset, our_ae: str, *, implicit: bool,
                   caller: str, cancelled: Callable[[], bool],
                   audit: DimseAudit | None = None, max_results: int = 0) -> Responses:
    """The responses to one C-FIND: (Pending, encoded identifier, None) per match, then one final
    (status, None, error comment or None). `cancelled()` is asked before each match (C-CANCEL).
    The rest as :meth:`FindAnswer.batches`."""
    answer = FindAnswer(engine, model, identifier, our_ae, implicit=implicit, caller=caller, audit=audit,
                        max_results=max_results)
    if answer.encoder is not None:
        encode = answer.encoder.encode_values
        for (row,) in answer.batches(cancelled, repeat(1)):
            yield PENDING, encode(row), None
    assert answer.final is not None  # refused, or set when the batches ran out
    code, comment = answer.final
    yield code, None, comment


def handle_find(event: Any, engine: Engine, our_ae: str, audit: DimseAudit | None = None,
                max_results: int = 0) -> Iterator[tuple[int | Dataset, Dataset | None]]:
    """EVT_C_FIND handler: sends (Pending, match) per match, then yields the final status."""
    raw = RawResponder.for_event(event)
    implicit = raw[1] if raw is not None else False
    assoc = event.assoc
    for code, encoded, comment in find_responses(
            engine, str(event.request.AffectedSOPClassUID), event.identifier, our_ae, implicit=implicit,
            caller=calling_ae(event), cancelled=lambda: bool(event.is_cancelled), audit=audit,
            max_results=max_results):
        if code != PENDING:
            yield (status(code, comment) if comment else code), None
        elif raw is None:
            yield PENDING, decode_identifier(encoded or b"", implicit)
        elif assoc.is_established:
            raw[0].send(encoded or b"")
        else:
            return  # released or aborted under us: nobody to answer


# (association, context, model, identifier, implicit VR) -> the answer (dimse/fastpath.py)
FindHandler = Callable[[Any, Any, str, Dataset, bool], FindAnswer]


def fast_find(engine: Engine, our_ae: str, audit: DimseAudit | None = None,
              max_results: int = 0) -> FindHandler:
    """The C-FIND handler of dimse/fastpath.py: (association, context, model, identifier,
    implicit VR) -> FindAnswer."""

    def find(assoc: Any, context: Any, model: str, identifier: Dataset, implicit: bool) -> FindAnswer:
        return FindAnswer(engine, model, identifier, our_ae, implicit=implicit,
                          caller=str(assoc.requestor.ae_title).strip(), audit=audit, max_results=max_results)

    return find
