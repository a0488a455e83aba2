"""The FHIR R4 read API under /fhir/r4 (integration/fhir/ does the work, no HTTP there):

  GET /fhir/r4/metadata                 CapabilityStatement
  GET /fhir/r4/ImagingStudy[?...]       searchset Bundle      GET /fhir/r4/ImagingStudy/{id}
  GET /fhir/r4/Patient[?...]            searchset Bundle      GET /fhir/r4/Patient/{id}
  GET /fhir/r4/Endpoint/{id}            the archive's DICOMweb endpoint

Every route needs the read role through `secured`, the metadata too (it names no patient, but
an EHR integration holds credentials anyway, and an open route here would be the only one).
Responses are application/fhir+json; errors become OperationOutcome in web/errors.py.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Mount, Route

from .. import __version__
from ..auth.roles import READ
from ..errors import NotFoundError
from ..integration.fhir import capability, mapping, params, search
from ..integration.fhir.bundle import searchset
from .context import WebContext
from .dicomweb.routes import PREFIX as DICOMWEB_PREFIX
from .responses import base_url, json_response
from .security import secured

PREFIX = "/fhir/r4"
FHIR_JSON = "application/fhir+json"


def _fhir(data: dict[str, Any], status: int = 200) -> Response:
    return json_response(data, status, media_type=FHIR_JSON)


def routes(ctx: WebContext) -> list[BaseRoute]:
    sec = ctx.security
    started = dt.date.today().isoformat()

    def root(request: Request) -> str:
        return base_url(request, ctx.settings.public_base_url, ctx.settings.trust_forwarded)

    def metadata(request: Request) -> Response:
        return _fhir(capability.capability_statement(root(request) + PREFIX, __version__, started))

    def searcher(resource: str, allowed: frozenset[str], run: Any) -> Any:
        def handler(request: Request) -> Response:
            pairs = list(request.query_params.multi_items())
            groups = params.group(pairs, allowed, resource)
            count, offset = params.paging(groups)
            page = run(ctx.engine.index, groups)
            return _fhir(searchset(root(request) + PREFIX, resource, pairs, page.resources, page.total,
                                   count, offset, page.more))
        handler.__name__ = f"search_{resource}"
        return handler

    def reader(resource: str, read: Any) -> Any:
        def handler(request: Request) -> Response:
            return _fhir(read(ctx.engine.index, request.path_params["id"]))
        handler.__name__ = f"read_{resource}"
        return handler

    def endpoint(request: Request) -> Response:
        fid = request.path_params["id"]
        if fid != mapping.ENDPOINT_ID:
            raise NotFoundError(f"Endpoint/{fid}: unknown endpoint (this archive has "
                                f"{mapping.ENDPOINT_ID!r})")
        return _fhir(mapping.endpoint(root(request) + DICOMWEB_PREFIX))

    def unknown(request: Request) -> Response:
        raise NotFoundError(f"{request.url.path}: not a resource or interaction of this FHIR server "
                            "(see /fhir/r4/metadata)")

    def get(path: str, handler: Any) -> Route:
        return Route(path, secured(sec, READ, handler), methods=["GET"])

    return [Mount(PREFIX, routes=[
        get("/metadata", metadata),
        get("/ImagingStudy", searcher("ImagingStudy", search.IMAGING_STUDY_PARAMS,
                                      search.search_imaging_studies)),
        get("/ImagingStudy/{id}", reader("ImagingStudy", search.read_imaging_study)),
        get("/Patient", searcher("Patient", search.PATIENT_PARAMS, search.search_patients)),
        get("/Patient/{id}", reader("Patient", search.read_patient)),
        get("/Endpoint/{id}", endpoint),
        get("/{rest:path}", unknown),
    ])]
