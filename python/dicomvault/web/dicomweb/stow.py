"""STOW-RS semantics (PS3.18 10.5), independent of the HTTP framework.

The route hands over the parts of a `multipart/related; type="application/dicom"` body (see
multipart.read_parts); this module stores them through the engine in batches, one durable group
commit per batch, so every acknowledged instance is durable before the response is written, and
builds the Store Instances Response Module (PS3.18 Annex I) as DICOM JSON.

Decisions taken from the standard:
* Status (Table 10.5.3-1): 200 every instance stored; 202 some stored but failures or warnings
  for others; 409 none stored (the request was well formed: SOP class / study mismatch, full
  disk, unreadable data, or a mixture). 400 is only for bad syntax, which the multipart reader
  reports before any instance is considered; 415 when the request or every part is of a media
  type other than application/dicom.
* Only PS3.10 instances are taken (`application/dicom`); the metadata + bulk data form
  (`application/dicom+json` / `+xml` root) is refused with 415 and listed as not supported in
  the conformance statement. In an application/dicom request, a part of another media type is
  one failure (0xC000, cannot understand) and the other parts are still stored; if no part at
  all is application/dicom the whole request is 415.
* Failure reasons (Table I.2-2): 0xA700 out of resources (a full disk: never a 400),
  0xA900 data set does not match the SOP class (missing UIDs, UIDs the archive refuses),
  0xC000 cannot understand (not DICOM, malformed), 0x0110 any other processing failure.
  A part of another study than the one in `/studies/{study}` is refused before it is stored,
  with 0xC122 as issue 10 asks. Note: PS3.18 2024 Table I.2-2 gives 0xC122 the meaning
  "Referenced Transfer Syntax not supported"; the standard has no dedicated study-mismatch code
  (Azure's DICOM service uses 0xA901 for it), so the value is one constant, `STUDY_MISMATCH`.
* A re-sent identical instance is a success (PS3.18 10.5 lets a store add to existing studies);
  no warnings are produced today (nothing is coerced: bytes are stored as received).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import orjson
import pydicom
from pydicom.errors import BytesLengthException, InvalidDicomError

from ... import _native  # type: ignore[attr-defined]
from ...attributes import index_attrs
from ...engine import Engine, StoreOutcome
from ...errors import (
    DicomVaultError,
    PayloadTooLargeError,
    RequestError,
    UnsupportedMediaTypeError,
)
from ...failures import CANNOT_UNDERSTAND, DOES_NOT_MATCH_SOP_CLASS, OUT_OF_RESOURCES, store_failure
from .media import DICOM, MULTIPART_RELATED, parse_content_type
from .multipart import Part, read_parts

SOP_CLASS_MISMATCH = DOES_NOT_MATCH_SOP_CLASS
STUDY_MISMATCH = 0xC122
PROCESSING_FAILURE = 0x0110

# Tags of the Store Instances Response Module (PS3.18 Table I.1-1).
RETRIEVE_URL = "00081190"
FAILED_SOP_SEQUENCE = "00081198"
REFERENCED_SOP_SEQUENCE = "00081199"
REFERENCED_SOP_CLASS_UID = "00081150"
REFERENCED_SOP_INSTANCE_UID = "00081155"
FAILURE_REASON = "00081197"
WARNING_REASON = "00081196"

DEFAULT_BATCH_PARTS = 64
# Bounds what one request holds in memory: about two batches (one storing, one filling).
DEFAULT_BATCH_BYTES = 64 << 20

_IDENTITY_TAGS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID")


@dataclass(frozen=True)
class StowResult:
    """HTTP status and the DICOM JSON response dataset (to be sent as application/dicom+json)."""

    status: int
    body: dict[str, Any]
    # Why each failed part failed (with its UID or part number), for the server log: the
    # response itself carries only the Failure Reason codes.
    failures: tuple[str, ...] = ()

    def json_bytes(self) -> bytes:
        """The body as sent, application/dicom+json."""
        return orjson.dumps(self.body)


@dataclass
class _Failure:
    sop_class: str
    sop_instance: str
    reason: int
    message: str


@dataclass
class _Identity:
    study: str = ""
    series: str = ""
    sop: str = ""
    sop_class: str = ""


# -- request checks ------------------------------------------------------------------------------


def check_request_type(content_type: str | None) -> None:
    """415 unless the request is multipart/related of PS3.10 instances. A missing `type`
    parameter is tolerated (some clients omit it; the parts' own Content-Type decides)."""
    if content_type is None or not content_type.strip():
        raise UnsupportedMediaTypeError(
            'STOW-RS needs Content-Type multipart/related; type="application/dicom"'
        )
    mt = parse_content_type(content_type)
    if mt.type != MULTIPART_RELATED:
        raise UnsupportedMediaTypeError(
            f'STOW-RS takes multipart/related; type="application/dicom", not {mt.type}'
        )
    root = mt.params.get("type")
    if root is not None and root != DICOM:
        raise UnsupportedMediaTypeError(
            f'STOW-RS here takes PS3.10 instances (type="application/dicom"), not type="{root}"'
        )


def ensure_writable(engine: Engine) -> None:
    """A replica takes its data from its upstream only: a STOW there is a conflict (409),
    answered before the body is read."""
    engine.ensure_writable()


# -- identity and failure mapping ----------------------------------------------------------------


def _identify(part: Part) -> _Identity | None:
    """The part's UIDs without storing it, or None if they cannot be read."""
    try:
        if part.data is not None:
            attrs = index_attrs(_native.parse(part.data))
            return _Identity(*(str(attrs.get(k, "") or "") for k in _IDENTITY_TAGS))
        if part.path is not None:
            return _identify_file(part.path)
    except (DicomVaultError, ValueError):
        return None
    return None


def _identify_file(path: str) -> _Identity | None:
    """A spooled part's UIDs: pydicom reads the header only (it stops before the pixel data), so
    a multi-gigabyte part costs a few kilobytes of reading."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True, force=True, specific_tags=list(_IDENTITY_TAGS))
        # Values are converted when read, here: a bad VR fails now, not in dcmread.
        return _Identity(*(str(ds.get(k, "") or "") for k in _IDENTITY_TAGS))
    except (
        InvalidDicomError,
        OSError,
        ValueError,
        EOFError,
        KeyError,
        TypeError,
        AttributeError,
        IndexError,
        # "Unknown Value Representation", values of a length their VR cannot have (found by
        # fuzz/python/targets/stow_store.py)
        NotImplementedError,
        BytesLengthException,
    ):
        # Garbage makes pydicom fail in many ways; the engine names the real problem later.
        return None


def failure_reason(exc: BaseException) -> int:
    """The Failure Reason (0008,1197) of an engine error (PS3.18 Table I.2-2): the C-STORE
    status of failures.py, its C0xx sub-codes folded into 0xC000."""
    found = store_failure(exc)
    if found is None:
        return PROCESSING_FAILURE
    code = found[0]
    return CANNOT_UNDERSTAND if code & 0xF000 == 0xC000 else code


def _part_label(part: Part) -> str:
    return f"part {part.index + 1}"


# -- the store -----------------------------------------------------------------------------------


@dataclass
class StowSession:
    """Stores the parts of one STOW-RS request in batches and builds its response.

    `add(part)` checks a part and queues it; `flush()` stores the queue (one engine call for the
    in-memory parts, one for the spooled ones: each is one durable group commit) and discards
    the parts' bodies. `result()` flushes and returns the response. Not thread-safe: one request.
    """

    engine: Engine
    study_uid: str | None
    base_url: str
    batch_parts: int = DEFAULT_BATCH_PARTS
    batch_bytes: int = DEFAULT_BATCH_BYTES
    stored: list[StoreOutcome] = field(default_factory=list)
    failed: list[_Failure] = field(default_factory=list)
    dicom_parts: int = 0
    other_parts: list[str] = field(default_factory=list)
    _queue: list[Part] = field(default_factory=list)
    _queued_bytes: int = 0

    def __post_init__(self) -> None:
        self.base_url = self.base_url.rstrip("/")
        ensure_writable(self.engine)

    @property
    def batch_full(self) -> bool:
        return len(self._queue) >= self.batch_parts or self._queued_bytes >= self.batch_bytes

    def add(self, part: Part) -> None:
        """Checks one part and queues it for the next batch (or records its failure)."""
        mt = _media_type_of(part)
        if mt != DICOM:
            self.other_parts.append(mt)
            self.failed.append(
                _Failure("", "", CANNOT_UNDERSTAND, f"{_part_label(part)} is {mt}, not {DICOM}")
            )
            part.discard()
            return
        self.dicom_parts += 1
        if self.study_uid is not None:
            ident = _identify(part)
            # Unreadable parts go on to the engine, which names what is wrong with them.
            if ident is not None and ident.study and ident.study != self.study_uid:
                self.failed.append(
                    _Failure(
                        ident.sop_class,
                        ident.sop,
                        STUDY_MISMATCH,
                        f"instance {ident.sop} is of study {ident.study}, not {self.study_uid}",
                    )
                )
                part.discard()
                return
        self._queue.append(part)
        self._queued_bytes += part.size

    def take_batch(self) -> list[Part]:
        """The queued parts, leaving the queue empty (for a batch stored in another thread)."""
        queue, self._queue, self._queued_bytes = self._queue, [], 0
        return queue

    def flush(self) -> None:
        """Stores the queued parts; each instance is durable when this returns."""
        self.store_batch(self.take_batch())

    def store_batch(self, queue: list[Part]) -> None:
        """Stores parts taken with `take_batch` (blocking) and discards their bodies. The
        response lists them in request order whichever engine call stored them."""
        try:
            in_memory = [p for p in queue if p.data is not None]
            spooled = [p for p in queue if p.data is None and p.path is not None]
            results: dict[int, StoreOutcome | Exception] = {}
            if in_memory:
                buffers = [p.data for p in in_memory if p.data is not None]
                results.update(self._store(in_memory, lambda: self.engine.store_buffers(buffers)))
            if spooled:
                paths = [p.path for p in spooled if p.path is not None]
                results.update(self._store(spooled, lambda: self.engine.store_files(paths)))
            for part in queue:
                res = results.get(id(part))
                if isinstance(res, StoreOutcome):
                    self.stored.append(res)
                elif res is not None:
                    ident = _identify(part) or _Identity()
                    self.failed.append(_Failure(ident.sop_class, ident.sop, failure_reason(res), str(res)))
        finally:
            for part in queue:
                part.discard()

    @staticmethod
    def _store(
        parts: list[Part], call: Callable[[], list[StoreOutcome | Exception]]
    ) -> dict[int, StoreOutcome | Exception]:
        try:
            results = call()
        except DicomVaultError as exc:
            # The whole batch was refused (a full disk before any record, an I/O error): every
            # part of it fails with the reason, nothing of it was acknowledged.
            results = [exc] * len(parts)
        return {id(part): res for part, res in zip(parts, results, strict=True)}

    def result(self) -> StowResult:
        """Stores what is queued and returns the response (raises 415 if no part was DICOM)."""
        self.flush()
        if self.dicom_parts == 0:
            if self.other_parts:
                raise UnsupportedMediaTypeError(
                    f"no part is {DICOM}: got {', '.join(sorted(set(self.other_parts)))}"
                )
            raise RequestError("the STOW-RS request holds no instance")
        return StowResult(self._status(), self._body(), tuple(self.failure_messages()))

    def _status(self) -> int:
        if not self.failed:
            return 200
        if self.stored:
            return 202
        if all(f.reason == OUT_OF_RESOURCES for f in self.failed):
            # Nothing stored because the archive is full: 507, which a client retries later, where
            # 409 would tell it the instances themselves are wrong (the body still says 0xA700).
            return 507
        return 409

    def _instance_url(self, outcome: StoreOutcome) -> str:
        rec = self.engine.instance(outcome.sop_instance_uid)
        series = rec.series_uid if rec is not None else ""
        return (
            f"{self.base_url}/studies/{outcome.study_instance_uid}/series/{series}"
            f"/instances/{outcome.sop_instance_uid}"
        )

    def _body(self) -> dict[str, Any]:
        body: dict[str, Any] = {}
        studies = {o.study_instance_uid for o in self.stored}
        study = self.study_uid or (next(iter(studies)) if len(studies) == 1 else None)
        # Type 2: present even when the request spans several studies (no single study URL).
        body[RETRIEVE_URL] = _value("UR", f"{self.base_url}/studies/{study}" if study else None)
        if self.failed:
            body[FAILED_SOP_SEQUENCE] = {
                "vr": "SQ",
                "Value": [
                    {
                        REFERENCED_SOP_CLASS_UID: _value("UI", f.sop_class or None),
                        REFERENCED_SOP_INSTANCE_UID: _value("UI", f.sop_instance or None),
                        FAILURE_REASON: _value("US", f.reason),
                    }
                    for f in self.failed
                ],
            }
        if self.stored:
            body[REFERENCED_SOP_SEQUENCE] = {
                "vr": "SQ",
                "Value": [
                    {
                        REFERENCED_SOP_CLASS_UID: _value("UI", o.sop_class_uid or None),
                        REFERENCED_SOP_INSTANCE_UID: _value("UI", o.sop_instance_uid),
                        RETRIEVE_URL: _value("UR", self._instance_url(o)),
                    }
                    for o in self.stored
                ],
            }
        return body

    def failure_messages(self) -> list[str]:
        """Why each failed part failed, for the server log (the response carries codes only)."""
        return [f.message for f in self.failed]


def _value(vr: str, value: str | int | None) -> dict[str, Any]:
    """A DICOM JSON attribute (PS3.18 F.2): an empty one has no "Value"."""
    return {"vr": vr} if value is None else {"vr": vr, "Value": [value]}


def _media_type_of(part: Part) -> str:
    try:
        return parse_content_type(part.content_type).type
    except RequestError:
        return part.content_type.strip().lower() or "(none)"


def store_parts(
    engine: Engine,
    parts: Iterable[Part],
    study_uid: str | None,
    *,
    base_url: str,
    batch_parts: int = DEFAULT_BATCH_PARTS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> StowResult:
    """Stores already-received parts (blocking: call it in a worker thread from async code).

    Every part is discarded (spool files removed) by the time this returns or raises.
    Raises ConflictError on a replica, UnsupportedMediaTypeError if no part is application/dicom,
    RequestError if there are no parts.
    """
    parts = list(parts)
    try:
        session = StowSession(engine, study_uid, base_url, batch_parts=batch_parts, batch_bytes=batch_bytes)
        for part in parts:
            session.add(part)
            if session.batch_full:
                session.flush()
        return session.result()
    finally:
        for part in parts:
            part.discard()


async def store_stream(
    engine: Engine,
    chunks: AsyncIterator[bytes],
    content_type: str | None,
    *,
    study_uid: str | None,
    base_url: str,
    spool_dir: str,
    max_body: int,
    memory_part_limit: int = 8 << 20,
    batch_parts: int = DEFAULT_BATCH_PARTS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> StowResult:
    """A whole STOW-RS request, from the body chunks (Starlette's `request.stream()`) to the
    response: 415 unless multipart/related of application/dicom, 409 on a replica, then the
    body is parsed as it arrives (parts over `memory_part_limit` spooled to `spool_dir`) and
    stored in batches by `store_part_stream`. Framing errors are 400, a body over `max_body` 413.
    """
    check_request_type(content_type)
    ensure_writable(engine)
    parts = read_parts(
        chunks, content_type, spool_dir=spool_dir, max_body=max_body, memory_part_limit=memory_part_limit
    )
    async with contextlib.aclosing(parts):
        return await store_part_stream(
            engine, parts, study_uid, base_url=base_url, batch_parts=batch_parts, batch_bytes=batch_bytes
        )


def check_length(declared: int | str | None, max_body: int) -> None:
    """413 before reading a body whose Content-Length already says it is over the cap; 400 for
    a Content-Length that is not a number. None/0 (chunked upload): the reader counts instead."""
    if declared is None or declared == "":
        return
    try:
        length = int(declared)
    except ValueError:
        raise RequestError(f"Content-Length {str(declared)[:40]!r} is not a number") from None
    if length < 0:
        raise RequestError(f"Content-Length {length} is negative")
    if length > max_body:
        raise PayloadTooLargeError(f"request body of {length} bytes exceeds the limit of {max_body} bytes")


async def store_part_stream(
    engine: Engine,
    parts: AsyncIterator[Part],
    study_uid: str | None,
    *,
    base_url: str,
    batch_parts: int = DEFAULT_BATCH_PARTS,
    batch_bytes: int = DEFAULT_BATCH_BYTES,
) -> StowResult:
    """Stores parts as they arrive (from multipart.read_parts): a batch is stored in a worker
    thread while the next parts are still being received, so a request never holds more than
    about two batches, whatever its size. Same result and errors as `store_parts`; a framing
    error in the body (RequestError/PayloadTooLargeError from the reader) propagates, and what
    was already stored stays stored (it was durable and is a valid instance)."""
    session = StowSession(engine, study_uid, base_url, batch_parts=batch_parts, batch_bytes=batch_bytes)
    storing: asyncio.Future[None] | None = None
    try:
        async for part in parts:
            # Identification may read a spooled file's header: small, but not on the event loop.
            if part.path is not None and study_uid is not None:
                await asyncio.to_thread(session.add, part)
            else:
                session.add(part)
            if session.batch_full:
                if storing is not None:
                    await storing
                # The batch is stored in a thread while this loop receives the next parts.
                storing = asyncio.ensure_future(asyncio.to_thread(session.store_batch, session.take_batch()))
        if storing is not None:
            await storing
            storing = None
        return await asyncio.to_thread(session.result)
    finally:
        if storing is not None:
            try:
                await storing
            except DicomVaultError:
                pass
        for part in session._queue:
            part.discard()


def response_json(result: StowResult) -> bytes:
    """The response body bytes (same as `result.json_bytes()`)."""
    return result.json_bytes()
