"""`/api/jobs`: the site's background jobs, analysis jobs included (admins only: jobs name
studies and the state of replication).

    GET  /api/jobs[?kind=analysis|replication|forward&state=S&analyzer=A&study=UID&limit=N]
         one JSON array: the replication puller and forwarding destinations ({"kind", ...}), then
         analysis jobs newest first ({"kind": "analysis", "id", "state", "analyzer", ...};
         at most `limit`, default 100)
    POST /api/jobs               {"study_uid", "analyzers"?: [instance...]}: analyses a study
                                 already archived (its series as if just complete) -> 201, the
                                 jobs queued; 409 where analysis is off
    GET  /api/jobs/{id}          one analysis job, with its measurements, flags and objects
    POST /api/jobs/{id}/retry    queues it again now, its attempts counted from zero
    GET  /api/analysis/status    whether analysis runs here, its analyzers, counts per state

Analysis jobs are read from the index (analysis/jobs.py), so they are listed even where the
pipeline is off.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..analysis.jobs import STATES, JobStore, view
from ..analysis.service import AnalysisService
from ..auth.roles import ADMIN
from ..errors import ConflictError, RequestError
from .context import WebContext
from .dicomweb.stow import ensure_writable
from .responses import body_json, int_param, json_response
from .security import secured

_FILTERS = ("kind", "state", "analyzer", "study", "limit")
KINDS = ("analysis", "replication", "forward")


def routes(ctx: WebContext, site_jobs: Callable[[], list[dict[str, Any]]] | None = None,
           analysis: AnalysisService | None = None) -> list[Route]:
    engine = ctx.engine
    store = analysis.store if analysis is not None else JobStore(engine.index)

    def list_jobs(request: Request) -> Response:
        q = request.query_params
        unknown = sorted(set(q) - set(_FILTERS))
        if unknown:
            raise RequestError(f"unknown job filter(s) {', '.join(unknown)}; use {', '.join(_FILTERS)}")
        kind, state = q.get("kind") or None, q.get("state") or None
        if kind is not None and kind not in KINDS:
            raise RequestError(f"kind must be one of {', '.join(KINDS)}, got {kind!r}")
        if state is not None and state not in STATES:
            raise RequestError(f"state must be one of {', '.join(STATES)}, got {state!r}")
        limit = int_param(request, "limit", 100, 1, 100_000)
        out: list[dict[str, Any]] = []
        if site_jobs is not None and state is None and kind != "analysis":
            out += [j for j in site_jobs() if kind is None or j.get("kind") == kind]
        if kind in (None, "analysis"):
            out += [view(j) for j in store.jobs(state=state, analyzer=q.get("analyzer") or None,
                                                     study_uid=q.get("study") or None, limit=limit)]
        return json_response(out)

    def job_id(request: Request) -> int:
        text = request.path_params["id"]
        if not text.isdigit():
            raise RequestError(f"job id must be a number, got {text!r}")
        return int(text)

    def show(request: Request) -> Response:
        return json_response(view(store.require(job_id(request)), full=True))

    def retry(request: Request) -> Response:
        ensure_writable(engine)
        job = store.retry(job_id(request))
        if analysis is not None:
            analysis.wake()
        return json_response(view(job))

    async def add(request: Request) -> Response:
        ensure_writable(engine)
        if analysis is None:
            raise ConflictError("analysis is off here ([analysis] enabled = false, no analyzer enabled, "
                                "or a replica)")
        body = await body_json(request)
        study, names = body.get("study_uid"), body.get("analyzers", [])
        if not isinstance(study, str) or not study or not isinstance(names, list) \
                or not all(isinstance(n, str) for n in names):
            raise RequestError('POST /api/jobs needs {"study_uid": "...", "analyzers"?: ["name", ...]}')
        jobs = await run_in_threadpool(analysis.reader.analyse_study, study, names)
        analysis.wake()
        return json_response([view(j) for j in jobs], 201)

    def status(request: Request) -> Response:
        if analysis is None:
            return json_response({"enabled": False, "counts": store.counts()})
        return json_response(analysis.status())

    sec = ctx.security
    return [
        Route("/api/jobs", secured(sec, ADMIN, list_jobs), methods=["GET"]),
        Route("/api/jobs", secured(sec, ADMIN, add), methods=["POST"]),
        Route("/api/jobs/{id}", secured(sec, ADMIN, show), methods=["GET"]),
        Route("/api/jobs/{id}/retry", secured(sec, ADMIN, retry), methods=["POST"]),
        Route("/api/analysis/status", secured(sec, ADMIN, status), methods=["GET"]),
    ]
