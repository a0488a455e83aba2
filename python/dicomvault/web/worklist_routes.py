"""`/api/worklist`: the modality worklist over HTTP (readers read, writers and admins write).

    GET    /api/worklist[?date=YYYYMMDD|lo-hi&modality=&station_ae=&all=1]  entries (active only
                                                                          unless all=1)
    GET    /api/worklist/{key}     one entry (any status) with its MPPS and performed series
    POST   /api/worklist           JSON fields of integration/worklist_entry.FIELDS -> 201 entry
    DELETE /api/worklist/{key}     removes it (?cancel=1: marks it CANCELED, kept) -> the entry

{key} is ACCESSION^REQUESTED_PROCEDURE_ID^STEP_ID (percent-encoded in the path as needed).
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth.roles import READ, WRITE
from ..errors import RequestError
from ..integration.worklist_entry import entry_from_fields
from ..integration.worklist_store import WorklistStore
from .context import WebContext
from .dicomweb.stow import ensure_writable
from .responses import body_json, json_response
from .security import secured

_FILTERS = ("date", "modality", "station_ae", "study_uid", "all")


def routes(ctx: WebContext) -> list[Route]:
    engine = ctx.engine
    store = WorklistStore(engine.index)

    def list_entries(request: Request) -> Response:
        q = request.query_params
        unknown = sorted(set(q) - set(_FILTERS))
        if unknown:
            raise RequestError(f"unknown worklist filter(s) {', '.join(unknown)}; use {', '.join(_FILTERS)}")
        rows = store.entries(active_only=q.get("all", "") not in ("1", "true", "yes"),
                             date=q.get("date") or None, modality=q.get("modality") or None,
                             station_ae=q.get("station_ae") or None, study_uid=q.get("study_uid") or None)
        return json_response([e.as_dict() for e in rows])

    def show(request: Request) -> Response:
        entry = store.require(request.path_params["key"])
        steps = [s for s in (store.get_mpps(uid) for uid in entry.mpps) if s is not None]
        return json_response({**entry.as_dict(), "mpps_steps": [
            {"uid": s["uid"], "status": s["status"], "caller": s.get("caller"),
             "performed_series": s.get("performed_series", [])} for s in steps]})

    async def add(request: Request) -> Response:
        ensure_writable(engine)
        body = await body_json(request)
        replace_existing = bool(body.pop("replace", False))
        entry = entry_from_fields(body)
        await run_in_threadpool(store.add, entry, replace_existing=replace_existing)
        return json_response(entry.as_dict(), 201)

    def remove(request: Request) -> Response:
        ensure_writable(engine)
        key = request.path_params["key"]
        if request.query_params.get("cancel", "") in ("1", "true", "yes"):
            return json_response(store.cancel(key).as_dict())
        return json_response(store.remove(key).as_dict())

    return [
        Route("/api/worklist", secured(ctx.security, READ, list_entries), methods=["GET"]),
        Route("/api/worklist", secured(ctx.security, WRITE, add), methods=["POST"]),
        Route("/api/worklist/{key:path}", secured(ctx.security, READ, show), methods=["GET"]),
        Route("/api/worklist/{key:path}", secured(ctx.security, WRITE, remove), methods=["DELETE"]),
    ]
