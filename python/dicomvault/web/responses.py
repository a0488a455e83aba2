"""Response helpers shared by the routers: JSON through orjson, query-parameter parsing with
errors that name the parameter, and the public base URL of a request."""

from __future__ import annotations

from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response

from ..errors import PayloadTooLargeError, RequestError

DICOM_JSON = "application/dicom+json"


def json_response(data: Any, status: int = 200, media_type: str = "application/json",
                  headers: dict[str, str] | None = None) -> Response:
    body = orjson.dumps(data, default=str, option=orjson.OPT_NON_STR_KEYS)
    return Response(body, status, headers=headers, media_type=media_type)


def int_param(request: Request, name: str, default: int, lo: int | None = None, hi: int | None = None) -> int:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise RequestError(f"query parameter {name}={raw!r} is not an integer") from None
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise RequestError(f"query parameter {name}={value} is out of range [{lo}, {hi}]")
    return value


def float_param(request: Request, name: str, default: float) -> float:
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    try:
        return float(raw)
    except ValueError:
        raise RequestError(f"query parameter {name}={raw!r} is not a number") from None


def base_url(request: Request, configured: str | None, trust_forwarded: bool) -> str:
    """The archive's URL as the client sees it: the configured public URL, else what a reverse
    proxy says in X-Forwarded-Proto/-Host/-Prefix (or Forwarded), else the request's own."""
    if configured:
        return configured.rstrip("/")
    h = request.headers
    if trust_forwarded:
        proto = h.get("x-forwarded-proto")
        host = h.get("x-forwarded-host")
        prefix = h.get("x-forwarded-prefix", "")
        fwd = h.get("forwarded")
        if fwd and not (proto or host):
            for part in fwd.split(",")[0].split(";"):
                k, _, v = part.strip().partition("=")
                v = v.strip('"')
                if k.lower() == "proto":
                    proto = v
                elif k.lower() == "host":
                    host = v
        if proto or host:
            scheme = (proto or request.url.scheme).split(",")[0].strip()
            netloc = (host or h.get("host") or request.url.netloc).split(",")[0].strip()
            return f"{scheme}://{netloc}{prefix.rstrip('/')}"
    host = h.get("host") or request.url.netloc
    server = request.scope.get("server")
    if server and ":" not in host.rsplit("]", 1)[-1] and host.strip("[]") == str(server[0]):
        # A client that names our own address without the port (dicomweb-client sets `Host`
        # that way) reached us directly: the port it connected to is ours.
        host = f"[{host.strip('[]')}]:{server[1]}" if ":" in str(server[0]) else f"{host}:{server[1]}"
    return f"{request.url.scheme}://{host}"


async def read_body(request: Request, cap: int) -> bytes:
    """The request body, refused with 413 as soon as it passes `cap` bytes (a declared
    Content-Length over it is refused before reading; a chunked body is counted as it comes)."""
    declared = request.headers.get("content-length")
    if declared:
        try:
            size = int(declared)
        except ValueError:
            raise RequestError(f"Content-Length {declared[:40]!r} is not a number") from None
        if size > cap:
            raise PayloadTooLargeError(f"request body of {size} bytes exceeds the limit of {cap} bytes")
    chunks, total = [], 0
    async for chunk in request.stream():
        total += len(chunk)
        if total > cap:
            raise PayloadTooLargeError(f"request body exceeds the limit of {cap} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


async def body_json(request: Request) -> dict[str, Any]:
    raw = await read_body(request, 1 << 20)
    try:
        data = orjson.loads(raw or b"{}")
    except orjson.JSONDecodeError as exc:
        raise RequestError(f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise RequestError("body must be a JSON object")
    return data
