"""The machine's ceiling for the STOW-RS benchmark: an endpoint on the same HTTP stack (Starlette
on uvicorn, uvloop, httptools) that reads each request body and answers 200, storing nothing.
The benchmark's clients against this server measure what the clients and the HTTP layer alone
cost on this machine; a real archive can only be slower.

    python -m uvicorn --app-dir bench noop_stow:app --port N --loop uvloop --http httptools
"""

from __future__ import annotations

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

_EMPTY_RESPONSE = b'{"00081199":{"vr":"SQ"}}'


async def stow(request: Request) -> Response:
    async for _ in request.stream():
        pass
    return Response(_EMPTY_RESPONSE, 200, media_type="application/dicom+json")


app = Starlette(routes=[Route("/dicom-web/studies", stow, methods=["POST"])])
