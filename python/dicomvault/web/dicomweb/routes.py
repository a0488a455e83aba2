"""The DICOMweb routes (PS3.18) under /dicom-web: QIDO-RS searches, WADO-RS retrieves (instances,
metadata, frames, bulk data, rendered, thumbnails) and STOW-RS stores.

Each route parses and negotiates here, then hands the work to a module with no HTTP in it
(qido, metadata, pixels, render, transcode, stow). Retrieves stream: a study leaves the archive
one instance at a time, read from the native store in the thread pool.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import BaseRoute, Mount, Route

from ...auth.roles import READ, WRITE
from ...engine import Engine
from ...errors import NotAcceptableError, NotFoundError, RequestError, UnknownObjectError
from ...filemeta import file_meta_prefix
from ...index.records import InstanceRecord
from ...readahead import read_ahead
from ...refusals import REFUSALS
from ...transfer import transcode
from ..context import WebContext
from ..responses import base_url, int_param
from ..security import secured
from . import media, multipart, qido, render, stow
from .json_model import bulk_value
from .metadata import MetadataCache, MetadataService, metadata_cache_path
from .pixels import FrameSource, native_frame_bytes

PREFIX = "/dicom-web"
log = logging.getLogger("dicomvault.web")
# PS3.5 9.1 UIDs are digits and dots, at most 64 characters, but archives hold objects from
# modalities that broke the rule (hex strings, letters): what STOW or C-STORE accepted must be
# retrievable. So a path segment naming a UID may hold letters, digits, ".", "-" and "_", never
# a path separator, a percent escape or a lone "." / ".."; the UID is only ever an index key.
_UID = re.compile(r"^[0-9A-Za-z._-]{1,128}$")
_FRAMES = re.compile(r"^[0-9]+(,[0-9]+)*$")
MAX_FRAMES_PER_REQUEST = 10_000


def check_uid(value: str, what: str) -> str:
    if not _UID.match(value) or value in (".", ".."):
        raise RequestError(f"{what} {value[:80]!r} is not a DICOM UID")
    return value


def _uids(request: Request) -> tuple[str | None, str | None, str | None]:
    p = request.path_params
    study = check_uid(p["study"], "study UID") if "study" in p else None
    series = check_uid(p["series"], "series UID") if "series" in p else None
    sop = check_uid(p["instance"], "SOP instance UID") if "instance" in p else None
    return study, series, sop


def frame_numbers(raw: str) -> list[int]:
    if not _FRAMES.match(raw):
        raise RequestError(f"frame list {raw[:80]!r} is not a comma-separated list of frame numbers")
    frames = [int(x) for x in raw.split(",")]
    if len(frames) > MAX_FRAMES_PER_REQUEST:
        raise RequestError(f"at most {MAX_FRAMES_PER_REQUEST} frames per request")
    if any(f < 1 for f in frames):
        raise RequestError(f"frame numbers start at 1: {raw!r}")
    return frames


def records_of(engine: Engine, study: str, series: str | None = None, sop: str | None = None
               ) -> list[InstanceRecord]:
    """The instances a WADO-RS path names, in series then instance-number order; 404 when the
    path names nothing (also when a series or instance is not of the study the path says)."""
    if sop is not None:
        rec = engine.instance(sop)
        if rec is None or rec.study_uid != study or (series is not None and rec.series_uid != series):
            raise UnknownObjectError("instance", sop)
        return [rec]
    if series is not None:
        recs = [r for r in engine.index.instances_of("series", series) if r.study_uid == study]
        if not recs:
            raise UnknownObjectError("series", series)
        return recs
    recs = engine.index.instances_of("study", study)
    if not recs:
        raise UnknownObjectError("study", study)
    return recs


def _accept(request: Request) -> str | None:
    return media.effective_accept(request.headers.get("accept"), request.query_params.getlist("accept"))


class DicomWeb:
    """The route handlers, sharing the engine, the metadata cache and the frame index."""

    def __init__(self, ctx: WebContext) -> None:
        self.ctx = ctx
        self.engine = ctx.engine
        cache_dir = str(metadata_cache_path(ctx.engine.data_dir))
        cache = None if ctx.engine.read_only else MetadataCache(cache_dir)
        self.metadata = MetadataService(ctx.engine, cache)
        ctx.extras["metadata"] = self.metadata

    def base(self, request: Request) -> str:
        s = self.ctx.settings
        return base_url(request, s.public_base_url, s.trust_forwarded) + PREFIX

    # -- QIDO-RS -------------------------------------------------------------------------------
    def search(self, resource: str) -> Any:
        def handler(request: Request) -> Response:
            media.negotiate(_accept(request), media.json_offers())
            study, series, _ = _uids(request)
            params = [(k, v) for k, v in request.query_params.multi_items() if k != "accept"]
            q = qido.parse_qido(resource, params, study_uid=study, series_uid=series)
            result = qido.search(self.engine.index, q, max_results=self.ctx.settings.max_results,
                                 base_url=self.base(request))
            self.ctx.security.queried(request, resource, dict(params), len(result.items))
            headers = {}
            if result.truncated:
                headers["Warning"] = qido.warning_header(request.url.hostname or "dicomvault")
                if not q.limit or q.limit > self.ctx.settings.max_results:
                    REFUSALS.count("query", "qido_max_results")  # cut by our limit, not the client's
            return Response(orjson.dumps(result.items), 200, headers=headers, media_type=media.DICOM_JSON)

        return handler

    # -- WADO-RS: instances --------------------------------------------------------------------
    def retrieve(self, request: Request) -> Response:
        offer = media.negotiate(_accept(request), media.instance_offers())
        recs = records_of(self.engine, *_uids(request))
        plan, skipped = [], []
        for rec in recs:
            ts = media.instance_transfer_syntax(offer, rec.transfer_syntax)
            if ts != rec.transfer_syntax and not transcode.can_transcode(rec.transfer_syntax, ts):
                skipped.append(rec)  # a study retrieve leaves out what it cannot convert, and says so
                continue
            plan.append((rec, ts))
        if not plan:
            rec = recs[0]
            want = media.instance_transfer_syntax(offer, rec.transfer_syntax)
            raise NotAcceptableError(f"{rec.sop_uid} is stored as {rec.transfer_syntax} and cannot be "
                                     f"converted losslessly to {want}; ask for transfer-syntax=* to get "
                                     "it as stored")
        boundary = multipart.new_boundary()
        asked_any = offer.params.get("transfer-syntax") == media.ANY_TRANSFER_SYNTAX

        part_types = [f"{media.DICOM}; transfer-syntax={ts}" for _, ts in plan]
        headers, status = {}, 200
        if skipped:
            # PS3.18 10.4.3: some of what was asked for is not in the response -> 206 + Warning
            status = 206
            headers["Warning"] = (f'299 {request.url.hostname or "dicomvault"}: "{len(skipped)} instance(s) '
                                  f'cannot be converted losslessly to the requested transfer syntax and are '
                                  f'left out; ask for transfer-syntax=* to get them as stored"')
        if all(ts == rec.transfer_syntax for rec, ts in plan):
            # As stored, every size is known: Content-Length, not chunked framing (clients read
            # it faster, and know a study's size before it arrives).
            sizes = [len(rec.prefix) + self.engine.dataset_length(rec) for rec, _ in plan]
            length = multipart.stream_length(boundary, zip(part_types, sizes, strict=True))
            headers["Content-Length"] = str(length)

        # The first part is read before the response starts, so a store that cannot give it (an
        # object-store tier that is down, a damaged blob) is an HTTP status, not a cut stream.
        self.engine.prefetch([rec.hash for rec, _ in plan])
        first = self._instance_file(*plan[0])

        async def parts() -> AsyncIterator[tuple[str, tuple[bytes, bytes]]]:
            yield (part_types[0], first)
            loads = read_ahead(lambda item: self._instance_file(*item), plan[1:])
            for part_type, (_, fut) in zip(part_types[1:], loads, strict=True):
                try:
                    data = await asyncio.wrap_future(fut)
                except NotFoundError:
                    if "Content-Length" in headers:
                        raise  # deleted while the response streamed: the length is a promise
                    continue  # deleted while the response streamed: the others still go
                yield (part_type, data)
        ctype = multipart.multipart_content_type(media.DICOM, boundary,
                                                 **({"transfer-syntax": "*"} if asked_any else {}))
        return StreamingResponse(multipart.multipart_stream_async(parts(), boundary), status_code=status,
                                 media_type=ctype, headers=headers)

    def _instance_file(self, rec: InstanceRecord, ts: str) -> tuple[bytes, bytes]:
        """(file meta, dataset) of the Part-10 object in `ts`: two chunks, so 500 KB are not
        copied again just to join them."""
        stored_ts, dataset = self.engine.read_record(rec)
        if ts == stored_ts:
            return rec.prefix, dataset
        meta = file_meta_prefix(rec.sop_class_uid, rec.sop_uid, ts)
        return meta, transcode.transcode(stored_ts, dataset, ts)

    # -- WADO-RS: metadata ---------------------------------------------------------------------
    def metadata_route(self, request: Request) -> Response:
        media.negotiate(_accept(request), media.json_offers())
        recs = records_of(self.engine, *_uids(request))
        body = self.metadata.instances_json(recs, self.base(request))
        return Response(body, media_type=media.DICOM_JSON)

    # -- WADO-RS: frames and bulk data ---------------------------------------------------------
    def frames_route(self, request: Request) -> Response:
        study, series, sop = _uids(request)
        frames = frame_numbers(request.path_params["frames"])
        rec = records_of(self.engine, study, series, sop)[0]
        offer = media.negotiate(_accept(request), media.bulk_offers())
        mtype, ts = media.frame_representation(offer, rec.transfer_syntax)
        ts_stored, dataset = self.engine.read_record(rec, as_received=True)
        src = FrameSource.from_dataset(ts_stored, dataset, key=rec.hash)
        for n in frames:
            if n > src.number_of_frames:
                src.frame(n)  # raises the range error before anything streams
        if ts == src.frame_transfer_syntax:
            get = src.frame
        elif ts == media.EXPLICIT_VR_LE and mtype == media.OCTET_STREAM:

            def get(n: int) -> bytes:
                return native_frame_bytes(ts_stored, dataset, n, key=rec.hash)
        else:
            raise NotAcceptableError(f"frames of {rec.sop_uid} are stored as {src.frame_transfer_syntax}; "
                                     f"they can be served as stored or as {media.OCTET_STREAM} "
                                     f"({media.EXPLICIT_VR_LE}), not as {mtype} {ts}")
        boundary = multipart.new_boundary()
        part_type = f"{mtype}; transfer-syntax={ts}"
        base = self.base(request)
        loc = f"{base}/studies/{rec.study_uid}/series/{rec.series_uid}/instances/{rec.sop_uid}/frames/"

        def parts() -> Iterator[tuple[str, bytes, dict[str, str]]]:
            for n in frames:
                yield part_type, get(n), {"Content-Location": f"{loc}{n}"}

        ctype = multipart.multipart_content_type(mtype, boundary, **{"transfer-syntax": ts})
        frame_bytes = src.rows * src.columns * src.samples_per_pixel * max(1, src.bits_allocated // 8)
        if len(frames) * frame_bytes <= BUFFERED_FRAMES_MAX:
            # A viewer asks one frame (or a few) per request, hundreds per series: a body with a
            # Content-Length costs the browser measurably less than a chunked stream.
            return Response(b"".join(multipart.multipart_stream(parts(), boundary)), media_type=ctype)
        return StreamingResponse(multipart.multipart_stream(parts(), boundary), media_type=ctype)

    def bulk_route(self, request: Request) -> Response:
        study, series, sop = _uids(request)
        path = request.path_params["path"]
        rec = records_of(self.engine, study, series, sop)[0]
        ts, dataset = self.engine.read_record(rec, as_received=True)
        value = bulk_value(ts, dataset, path)
        vts = media.web_transfer_syntax(ts)
        mtype = media.OCTET_STREAM if path.upper() != "7FE00010" else media.bulk_media_type(vts)
        rng = _byte_range(request.headers.get("range"), len(value))
        accept = _accept(request)
        single = accept is not None and "multipart/related" not in accept.lower()
        status, headers = 200, {}
        if rng is not None:
            lo, hi = rng
            headers["Content-Range"] = f"bytes {lo}-{hi - 1}/{len(value)}"
            value, status = value[lo:hi], 206
        if single:
            headers["Accept-Ranges"] = "bytes"
            return Response(value, status, headers=headers, media_type=mtype)
        boundary = multipart.new_boundary()
        ctype = multipart.multipart_content_type(mtype, boundary)
        body = b"".join(multipart.multipart_stream([(f"{mtype}; transfer-syntax={vts}", value)], boundary))
        return Response(body, status, headers=headers, media_type=ctype)

    # -- WADO-RS: rendered and thumbnails ------------------------------------------------------
    def rendered(self, thumbnail: bool) -> Any:
        def handler(request: Request) -> Response:
            study, series, sop = _uids(request)
            recs = records_of(self.engine, study, series, sop)
            frames = frame_numbers(request.path_params["frames"]) if "frames" in request.path_params else None
            opts = render_options(request)
            if thumbnail:
                # The representative image: the middle instance of the first series.
                first = [r for r in recs if r.series_uid == recs[0].series_uid]
                rec = first[len(first) // 2]
                ts, dataset = self.engine.read_record(rec, as_received=True)
                img = render.thumbnail(ts, dataset, media_type=opts.media_type, viewport=opts.viewport,
                                       quality=opts.quality, key=rec.hash)
                return Response(img, media_type=opts.media_type)
            if sop is not None and (frames is None or len(frames) == 1):
                ts, dataset = self.engine.read_record(recs[0], as_received=True)
                img = render.render(ts, dataset, frames[0] if frames else None, media_type=opts.media_type,
                                    window=opts.window, viewport=opts.viewport, quality=opts.quality,
                                    key=recs[0].hash)
                return Response(img, media_type=opts.media_type)
            # Several images: one part each (study/series: the first frame of each instance).
            boundary = multipart.new_boundary()
            targets = [(recs[0], f) for f in frames] if frames else [(r, None) for r in recs]

            def parts() -> Iterator[tuple[str, bytes]]:
                for rec, frame in targets:
                    ts, dataset = self.engine.read_record(rec, as_received=True)
                    try:
                        yield opts.media_type, render.render(
                            ts, dataset, frame, media_type=opts.media_type, window=opts.window,
                            viewport=opts.viewport, quality=opts.quality, key=rec.hash)
                    except NotFoundError:
                        continue  # no pixel data (an SR in the study): nothing to render
            ctype = multipart.multipart_content_type(opts.media_type, boundary)
            return StreamingResponse(multipart.multipart_stream(parts(), boundary), media_type=ctype)

        return handler

    # -- STOW-RS -------------------------------------------------------------------------------
    async def store(self, request: Request) -> Response:
        study = request.path_params.get("study")
        if study is not None:
            check_uid(study, "study UID")
        stow.check_length(request.headers.get("content-length"), self.ctx.settings.max_body)
        result = await stow.store_stream(
            self.engine, request.stream(), request.headers.get("content-type"),
            study_uid=study, base_url=self.base(request), spool_dir=str(self.ctx.spool_dir),
            max_body=self.ctx.settings.max_body)
        for why in result.failures:
            log.warning("STOW-RS from %s: %s", request.client.host if request.client else "?", why)
        return Response(result.json_bytes(), result.status, media_type=media.DICOM_JSON)


@dataclass(frozen=True)
class RenderOptions:
    media_type: str
    window: tuple[float, float, str] | None
    viewport: tuple[int, int] | None
    quality: int | None


RENDERED_TYPES = ("image/jpeg", "image/png")


def render_options(request: Request) -> RenderOptions:
    """PS3.18 8.3.5 parameters of /rendered and /thumbnail; the image type from Accept (JPEG
    unless the client prefers PNG)."""
    q = request.query_params
    offer = media.negotiate(_accept(request), [media.Offer(t) for t in RENDERED_TYPES])
    return RenderOptions(
        media_type=offer.type,
        window=render.parse_window(q["window"]) if q.get("window") else None,
        viewport=render.parse_viewport(q["viewport"]) if q.get("viewport") else None,
        quality=render.parse_quality(q["quality"]) if q.get("quality") else None,
    )


def _byte_range(header: str | None, size: int) -> tuple[int, int] | None:
    """(start, end exclusive) of a single `bytes=` range (RFC 9110 14.1.2), None for none."""
    if not header:
        return None
    unit, _, spec = header.partition("=")
    if unit.strip().lower() != "bytes" or "," in spec:
        raise RequestError(f"only a single bytes range is supported, got Range: {header[:80]!r}")
    first, _, last = spec.strip().partition("-")
    try:
        if first == "":
            n = int(last)
            lo, hi = max(0, size - n), size
        else:
            lo = int(first)
            hi = min(size, int(last) + 1) if last else size
    except ValueError:
        raise RequestError(f"malformed Range: {header[:80]!r}") from None
    if lo >= size or lo >= hi:
        raise RequestError(f"Range {header[:80]!r} is outside the {size} bytes of the value")
    return lo, hi


# Frames up to this many bytes in all are answered as one buffered body rather than streamed.
BUFFERED_FRAMES_MAX = 32 << 20


def routes(ctx: WebContext) -> list[BaseRoute]:
    dw = DicomWeb(ctx)
    sec = ctx.security
    s, se, i = "/studies/{study}", "/series/{series}", "/instances/{instance}"

    def get(path: str, handler: Any, access: str | None = None) -> Route:
        # access: the kind of read of a study's objects the audit trail counts (None: a search)
        return Route(path, secured(sec, READ, handler, access=access), methods=["GET"])

    # STOW first: a modality gateway's POSTs are the most frequent requests, and each route is
    # a regex tried in order (~5 us each).
    out: list[BaseRoute] = [Route(path, secured(sec, WRITE, dw.store), methods=["POST"])
                            for path in ("/studies", s)]
    out += [
        get("/studies", dw.search("studies")),
        get(s + "/series", dw.search("series")),
        get("/series", dw.search("series")),
        get(s + se + "/instances", dw.search("instances")),
        get(s + "/instances", dw.search("instances")),
        get("/instances", dw.search("instances")),
        get(s, dw.retrieve, "instances"),
        get(s + se, dw.retrieve, "instances"),
        get(s + se + i, dw.retrieve, "instances"),
        get(s + "/metadata", dw.metadata_route, "metadata"),
        get(s + se + "/metadata", dw.metadata_route, "metadata"),
        get(s + se + i + "/metadata", dw.metadata_route, "metadata"),
        get(s + se + i + "/frames/{frames}", dw.frames_route, "frames"),
        get(s + se + i + "/bulkdata/{path:path}", dw.bulk_route, "bulkdata"),
    ]
    for suffix, thumb in (("/rendered", False), ("/thumbnail", True)):
        for base in (s, s + se, s + se + i, s + se + i + "/frames/{frames}"):
            out.append(get(base + suffix, dw.rendered(thumb), suffix[1:]))
    # One mount: requests outside /dicom-web skip every DICOMweb route at once.
    return [Mount(PREFIX, routes=out)]


__all__ = ["DicomWeb", "check_uid", "frame_numbers", "int_param", "records_of", "routes"]
