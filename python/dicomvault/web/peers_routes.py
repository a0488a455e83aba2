"""`/api/peers`: the DICOM nodes that may call the archive, as `dicomvault peers` edits them.

  GET    /api/peers        -> [{"ae_title", "host", "port", "allow", "move_to"?, "from_hosts"?,
                           "cert"?, "tls"?}]: the peers of peers.json (the configuration file's
                           [[peers]] change only with that file: `dicomvault peers list --config`)
  POST   /api/peers        {"ae_title", "host", "port"?, "allow"?, "move_to"?, "from_hosts"?,
                           "cert"?, "tls"?, "replace"?} -> 201 (200 when it replaced one);
                           409 if it exists and "replace" is not true; 400 for a bad field
  DELETE /api/peers/{ae}   -> 204; 404 for a title peers.json does not hold

All need the `admin` action; every change is an audit Security Alert (a configuration change).
A running DIMSE server applies a change from its next association (dimse/peers.py).
"""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..audit.log import SECURITY_ALERT, SUCCESS
from ..auth.peer_settings import PeerConfig, parse_peer
from ..auth.peer_store import PeerStore
from ..auth.roles import ADMIN, Principal
from ..config_values import ConfigError
from ..errors import RequestError
from .context import WebContext
from .responses import body_json, json_response
from .security import secured


def peer_from_json(body: dict[str, Any]) -> tuple[PeerConfig, bool]:
    """(the peer a POST body describes, whether it may replace one)."""
    replace = body.get("replace", False)
    if not isinstance(replace, bool):
        raise RequestError("replace: must be true or false")
    item = {k: v for k, v in body.items() if k != "replace"}
    try:
        return parse_peer(item, "peer"), replace
    except ConfigError as exc:
        raise RequestError(str(exc)) from exc


def routes(ctx: WebContext) -> list[Route]:
    sec = ctx.security
    store = PeerStore(ctx.engine.data_dir)

    def listing(request: Request) -> Response:
        return json_response([p.as_dict() for p in store.current().values()])

    async def add(request: Request) -> Response:
        peer, replace = peer_from_json(await body_json(request))
        return await run_in_threadpool(finish_add, request, peer, replace)

    def finish_add(request: Request, peer: PeerConfig, replace: bool) -> Response:
        replaced = store.add(peer, replace=replace)
        p: Principal = request.state.principal
        sec.record(request, SECURITY_ALERT, SUCCESS, user=p.name,
                   detail={"change": "peer-replaced" if replaced else "peer-added", **peer.as_dict()})
        return json_response(peer.as_dict(), 200 if replaced else 201)

    def remove(request: Request) -> Response:
        title = request.path_params["ae"]
        store.remove(title)
        p: Principal = request.state.principal
        sec.record(request, SECURITY_ALERT, SUCCESS, user=p.name,
                   detail={"change": "peer-removed", "ae_title": title.strip()})
        return Response(status_code=204)

    return [
        Route("/api/peers", secured(sec, ADMIN, listing), methods=["GET"]),
        Route("/api/peers", secured(sec, ADMIN, add), methods=["POST"]),
        Route("/api/peers/{ae}", secured(sec, ADMIN, remove), methods=["DELETE"]),
    ]
