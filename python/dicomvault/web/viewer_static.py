"""The browser viewer's files (web/viewer/: plain ES modules, no build step), served at `/` and
`/viewer/...`.

The application shell is open to everyone: it holds no data, and the login page is part of it.
Every request it makes for data goes through the same authorization as any other client.
"""

from __future__ import annotations

from pathlib import Path

from starlette.requests import Request
from starlette.responses import FileResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import Receive, Scope, Send

from .security import public

VIEWER_DIR = Path(__file__).with_name("viewer")

# The viewer loads nothing from elsewhere; a stored value that slipped into markup could run no
# script and reach no other origin. frame-ancestors: no clickjacking of a logged-in session.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self'; "
                               "script-src 'self'; connect-src 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",  # a share token in the URL fragment never leaves, but be sure
}


class _ViewerFiles(StaticFiles):
    """StaticFiles (ETag, 304, ranges) plus the security headers and no-cache: the files are
    not content-hashed, so the browser must revalidate after an upgrade (a 304 is cheap)."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def with_headers(message: dict) -> None:  # type: ignore[type-arg]
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(k.lower().encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
                headers.append((b"cache-control", b"no-cache"))
                message["headers"] = headers
            await send(message)

        await super().__call__(scope, receive, with_headers)


def index(request: Request) -> Response:
    return FileResponse(VIEWER_DIR / "index.html", media_type="text/html; charset=utf-8",
                        headers={**SECURITY_HEADERS, "Cache-Control": "no-cache"})


def routes() -> list[BaseRoute]:
    return [
        Route("/", public(index), methods=["GET", "HEAD"]),
        Mount("/viewer", app=public(_ViewerFiles(directory=VIEWER_DIR, follow_symlink=False)), name="viewer"),
    ]
