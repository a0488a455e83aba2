"""`/api/session`: log in, ask who you are, log out: what a browser viewer needs instead of
holding a user token or sending a password with every request (auth/sessions.py).

  POST   /api/session  {"name", "password"} -> {"token", "expires", "name", "role"}; 401 if wrong
  GET    /api/session  -> {"name", "role", "method", "study", "actions", "expires"}; 401 when
                          nobody is authenticated and anonymous access is off
  DELETE /api/session  ends the bearer session -> 204
"""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..audit.log import FAILURE, LOGIN, LOGOUT, SUCCESS
from ..auth.roles import ACTIONS, READ, Principal
from ..auth.sessions import iso_utc
from ..auth.users import validate_name
from ..errors import AuthenticationError, RequestError
from .context import WebContext
from .responses import body_json, json_response
from .security import bearer_token, secured


def principal_json(p: Principal, expires: float | None) -> dict[str, object]:
    return {"name": p.name, "role": p.role, "method": p.method, "study": p.study,
            "actions": sorted(a for a in ACTIONS if p.can(a)),
            "expires": iso_utc(expires) if expires is not None else None}


def _loggable_name(name: str) -> str | None:
    # A "name" that is no valid user name may be a password typed in the wrong field: not logged.
    try:
        return validate_name(name)
    except RequestError:
        return None


def routes(ctx: WebContext) -> list[Route]:
    sec = ctx.security

    async def login(request: Request) -> Response:
        body = await body_json(request)
        name, password = body.get("name"), body.get("password")
        if not isinstance(name, str) or not isinstance(password, str):
            raise RequestError('POST /api/session needs {"name": ..., "password": ...}')
        return await run_in_threadpool(finish_login, request, name, password)

    def finish_login(request: Request, name: str, password: str) -> Response:
        try:
            session = sec.login(name, password)
        except AuthenticationError as exc:
            sec.record(request, LOGIN, FAILURE, user=_loggable_name(name), detail={"reason": str(exc)})
            raise
        sec.record(request, LOGIN, SUCCESS, user=session.name, detail={"role": session.role})
        return json_response(session.as_dict())

    def whoami(request: Request) -> Response:
        return json_response(principal_json(request.state.principal, sec.expires(request)))

    def logout(request: Request) -> Response:
        p: Principal = request.state.principal
        token = bearer_token(request.headers.get("authorization"))
        if p.method != "session" or token is None:
            raise RequestError(f"{p.name!r} is not logged in with a session (credentials: {p.method}); "
                               "nothing to log out")
        sec.sessions.logout(token)
        sec.record(request, LOGOUT, SUCCESS, user=p.name)
        return Response(status_code=204)

    return [
        # Open: it is the way in. Its password check takes the same bounded slots as Basic.
        Route("/api/session", secured(sec, None, login), methods=["POST"]),
        # READ, which every role has: what it really needs is to be somebody. any_study, since a
        # share link's viewer asks it first and it tells nothing about any study.
        Route("/api/session", secured(sec, READ, whoami, any_study=True), methods=["GET"]),
        Route("/api/session", secured(sec, READ, logout), methods=["DELETE"]),
    ]
