"""`/api/admin/*`: the operations the local CLI runs through a server that holds the data
directory (backup, heal, status), for the admin role (the per-start token in http.json)."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth.roles import ADMIN
from ..dr.backup import backup
from ..dr.heal import heal
from ..errors import RequestError
from ..replication import state
from ..replication.client import SiteClient
from .context import WebContext
from .responses import body_json, json_response
from .security import secured


def routes(ctx: WebContext, status_extra: Any = None) -> list[Route]:
    engine = ctx.engine

    def status(request: Request) -> Response:
        index = engine.index
        up = state.upstream(index)
        doc: dict[str, Any] = {
            "role": state.role(index),
            "feed_id": ctx.feed.feed_id if ctx.feed else None,
            "last_seq": index.last_seq(),
            "objects": index.stats()["objects"],
            "upstream": None if up is None else up.__dict__,
            "replicas": ctx.tracker.snapshot() if ctx.tracker else {},
        }
        if status_extra is not None:
            doc.update(status_extra())
        return json_response(doc)

    async def do_backup(request: Request) -> Response:
        body = await body_json(request)
        if not body.get("dir"):
            raise RequestError('backup needs {"dir": path}')
        report = await run_in_threadpool(backup, engine, body["dir"], verify=bool(body.get("verify")))
        return json_response(report.as_dict())

    async def do_heal(request: Request) -> Response:
        body = await body_json(request)
        if not body.get("from") or not body.get("token"):
            raise RequestError('heal needs {"from": url, "token": token}')
        client = SiteClient(body["from"], body["token"], cafile=body.get("cafile"),
                            insecure=bool(body.get("insecure")))
        try:
            report = await run_in_threadpool(heal, engine, client)
        finally:
            client.close()
        return json_response(report.as_dict())

    sec = ctx.security
    return [
        Route("/api/admin/status", secured(sec, ADMIN, status), methods=["GET"]),
        Route("/api/admin/backup", secured(sec, ADMIN, do_backup), methods=["POST"]),
        Route("/api/admin/heal", secured(sec, ADMIN, do_heal), methods=["POST"]),
    ]
