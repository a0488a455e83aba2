"""`/api/rejected`: the IOCM rejected set over HTTP (admin), as `dicomvault rejected` does it.

  GET  /api/rejected[?study=UID]  -> [{"SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID",
                                   "note", "code", "title", "rejected_at", "state"}]
  POST /api/rejected/restore      {"instance": UID} | {"note": UID} -> {"restored": [UIDs]};
                                   404 when nothing matches; audited (instances-restored)
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..audit.log import SUCCESS
from ..auth.roles import ADMIN, Principal
from ..errors import RequestError
from ..integration.iocm import list_rejected, restore, restore_audit
from .context import WebContext
from .responses import body_json, json_response
from .security import secured


def routes(ctx: WebContext) -> list[Route]:
    sec, engine = ctx.security, ctx.engine

    def list_(request: Request) -> Response:
        return json_response(list_rejected(engine, request.query_params.get("study") or None))

    async def restore_(request: Request) -> Response:
        body = await body_json(request)
        instance, note = body.get("instance"), body.get("note")
        if not all(v is None or isinstance(v, str) for v in (instance, note)):
            raise RequestError('POST /api/rejected/restore needs {"instance": UID} or {"note": UID}')
        return await run_in_threadpool(finish, request, instance, note)

    def finish(request: Request, instance: str | None, note: str | None) -> Response:
        p: Principal = request.state.principal
        entries = restore(engine, instance=instance, note=note)
        event, study, detail = restore_audit(entries)
        sec.record(request, event, SUCCESS, user=p.name, study=study, detail=detail)
        return json_response({"restored": [e.sop_uid for e in entries]})

    return [
        Route("/api/rejected", secured(sec, ADMIN, list_), methods=["GET"]),
        Route("/api/rejected/restore", secured(sec, ADMIN, restore_), methods=["POST"]),
    ]
