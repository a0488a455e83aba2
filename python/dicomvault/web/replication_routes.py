"""The replication API (replication/feed_api.py) as HTTP routes: the change feed, blobs by hash,
the instance list and status, for replicas holding a token of the replicator role."""

from __future__ import annotations

import msgpack
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth.roles import REPLICATE
from ..replication.feed_api import FeedService, PullRequest
from .responses import float_param, int_param, read_body
from .security import Security, secured

MSGPACK = "application/msgpack"
MAX_HASHES_BODY = 32 * 100_000


def _pack(data: object) -> Response:
    return Response(msgpack.packb(data, use_bin_type=True), media_type=MSGPACK)


def routes(feed: FeedService, security: Security) -> list[Route]:
    def changes(request: Request) -> Response:
        p = request.state.principal
        who = PullRequest(
            replica_id=request.headers.get("x-replica-id") or "",
            principal=p.name,
            client=request.client.host if request.client else "",
            feed_id=request.query_params.get("feed_id"),
            error=request.headers.get("x-replica-error"),
        )
        return _pack(feed.changes(who, int_param(request, "since", 0), int_param(request, "limit", 1000),
                                  float_param(request, "wait", 0.0)))

    async def blobs(request: Request) -> Response:
        body = await read_body(request, MAX_HASHES_BODY)
        data = await run_in_threadpool(feed.blobs, body)
        return Response(data, media_type="application/octet-stream")

    return [
        Route("/replication/changes", secured(security, REPLICATE, changes), methods=["GET"]),
        Route("/replication/blobs", secured(security, REPLICATE, blobs), methods=["POST"]),
        Route("/replication/instances", secured(security, REPLICATE, lambda r: _pack(feed.instances())),
              methods=["GET"]),
        Route("/replication/status", secured(security, REPLICATE, lambda r: _pack(feed.status())),
              methods=["GET"]),
    ]
