"""`/api/shares`: read-only links to one study for people without an account (auth/shares.py).

  POST   /api/shares       {"study", "expires_in"?: seconds, "note"?} -> 201
                           {"id", "token", "url", "study", "expires"}; 404 for an unknown study
  GET    /api/shares       -> [{"id", "study", "created_by", "created", "expires", "revoked",
                           "status", "note"}]: an admin's lists every share, anyone else's their own
  DELETE /api/shares/{id}  revoke (its creator or an admin) -> 204

All need the `share` action (writer, admin). The token appears once, in the POST response.
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..audit.log import SHARE_CREATED, SHARE_REVOKED, SUCCESS
from ..auth.roles import ADMIN, SHARE, Principal
from ..auth.shares import DEFAULT_EXPIRES_IN, check_expires_in, check_note, check_study_uid
from ..errors import PermissionDeniedError, UnknownObjectError
from .context import WebContext
from .responses import base_url, body_json, json_response
from .security import secured


def routes(ctx: WebContext) -> list[Route]:
    sec, engine, settings = ctx.security, ctx.engine, ctx.settings

    async def create(request: Request) -> Response:
        body = await body_json(request)
        study = check_study_uid(body.get("study"))
        expires_in = check_expires_in(body.get("expires_in", DEFAULT_EXPIRES_IN))
        note = check_note(body.get("note"))
        return await run_in_threadpool(finish_create, request, study, expires_in, note)

    def finish_create(request: Request, study: str, expires_in: int, note: str | None) -> Response:
        p: Principal = request.state.principal
        # A link to nothing would look like a broken viewer to whoever receives it.
        if engine.index.get_study(study) is None:
            raise UnknownObjectError("study", study)
        info, token = sec.shares.create(study, p.name, expires_in, note)
        sec.record(request, SHARE_CREATED, SUCCESS, user=p.name, study=study,
                   detail={"share": info.id, "expires": info.expires})
        # The token after '#': browsers never send a fragment, so it stays out of proxy and
        # server access logs; the viewer reads it and sends it as a Bearer token.
        url = f"{base_url(request, settings.public_base_url, settings.trust_forwarded)}/#/share/{token}"
        return json_response({"id": info.id, "token": token, "url": url, "study": info.study,
                              "expires": info.expires}, 201)

    def list_shares(request: Request) -> Response:
        p: Principal = request.state.principal
        shares = sec.shares.list(None if p.can(ADMIN) else p.name)
        now = sec.shares.clock()
        return json_response([s.as_dict(now) for s in shares])

    def revoke(request: Request) -> Response:
        p: Principal = request.state.principal
        share_id = request.path_params["id"]
        info = sec.shares.get(share_id)
        if not (p.can(ADMIN) or info.created_by == p.name):
            raise PermissionDeniedError(f"user {p.name!r} may not revoke share {info.id} of "
                                        f"{info.created_by!r}: only its creator or an admin may")
        _, changed = sec.shares.revoke(share_id, p.name)
        if changed:
            sec.record(request, SHARE_REVOKED, SUCCESS, user=p.name, study=info.study,
                       detail={"share": info.id})
        return Response(status_code=204)

    return [
        Route("/api/shares", secured(sec, SHARE, create), methods=["POST"]),
        Route("/api/shares", secured(sec, SHARE, list_shares), methods=["GET"]),
        Route("/api/shares/{id}", secured(sec, SHARE, revoke), methods=["DELETE"]),
    ]
