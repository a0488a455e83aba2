"""`/api/tiers`: tier status, a tier pass and study moves over HTTP, for a running server (the
CLI's `tier` commands open the data directory themselves, so they need the server stopped).

GET  /api/tiers                      per tier objects, bytes, capacity, free, ratio, pending moves;
                                     the current job; the last pass
GET  /api/tiers/plan[?policy=NAME]   the moves the policies would make now (dry run)
POST /api/tiers/run {"policy"?, "now"?}          one tier pass now (admin)
POST /api/tiers/move {"study": UID, "to": TIER}  move one study (admin)
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth.roles import ADMIN
from ..errors import RequestError
from ..tiering import jobs
from ..tiering.service import TieringService
from .context import WebContext
from .responses import body_json, json_response
from .security import secured


def routes(ctx: WebContext, service: TieringService | None) -> list[Route]:
    engine = ctx.engine
    if service is None:
        return []
    settings = service.settings

    def status(request: Request) -> Response:
        out = jobs.status(engine, settings)
        out["last_pass"] = service.last_pass
        return json_response(out)

    def plan(request: Request) -> Response:
        moves = jobs.plan(engine, settings, request.query_params.get("policy"))
        return json_response(jobs.moves_summary(moves))

    async def run(request: Request) -> Response:
        body: dict[str, Any] = await body_json(request) if await request.body() else {}
        policy = body.get("policy")
        if policy is not None and not isinstance(policy, str):
            raise RequestError('POST /api/tiers/run takes {"policy"?: NAME, "now"?: true}')
        out = await run_in_threadpool(service.run_pass, policy=policy, ignore_window=bool(body.get("now")))
        return json_response(out)

    async def move(request: Request) -> Response:
        body = await body_json(request)
        study, to = body.get("study"), body.get("to")
        if not isinstance(study, str) or not isinstance(to, str):
            raise RequestError('POST /api/tiers/move needs {"study": UID, "to": TIER}')
        r = await run_in_threadpool(jobs.move_study, engine, study, to)
        return json_response({"study": study, "to": to, "blobs": r.blobs, "skipped": r.skipped,
                              "stored_bytes": r.stored_bytes, "failed": r.failed[:20]},
                             200 if not r.failed else 500)

    sec = ctx.security
    return [
        Route("/api/tiers", secured(sec, ADMIN, status), methods=["GET"]),
        Route("/api/tiers/plan", secured(sec, ADMIN, plan), methods=["GET"]),
        Route("/api/tiers/run", secured(sec, ADMIN, run), methods=["POST"]),
        Route("/api/tiers/move", secured(sec, ADMIN, move), methods=["POST"]),
    ]
