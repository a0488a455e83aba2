"""The archive's one HTTP application (Starlette): every router mounted in one place.

  /dicom-web   DICOMweb: QIDO-RS, WADO-RS, STOW-RS (dicomweb/routes.py)
  /wado        WADO-URI (wado_uri.py)
  /fhir/r4     FHIR R4 read API for EHRs (fhir_routes.py)
  /api         JSON for the CLI, the viewer and admins (api.py, admin.py; worklist_routes.py,
               analysis_routes.py, jobs_routes.py (background and analysis jobs), patients_routes.py;
               research_routes.py: de-identified export for research)
  /replication the change feed and blobs for replicas (replication_routes.py)
  /metrics     Prometheus text (metrics.py)
  /healthz     liveness, open to all
  /, /viewer   the browser viewer's files (viewer_static.py)

Errors from every route are turned into responses by web/errors.py alone; body size and request
rate limits apply to every route (web/limits.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route

from ..analysis.service import AnalysisService
from ..errors import DicomVaultError
from ..tiering.service import TieringService
from . import (
    admin,
    analysis_routes,
    api,
    fhir_routes,
    iocm_routes,
    jobs_routes,
    measurements,
    patients_routes,
    peers_routes,
    replication_routes,
    research_routes,
    session_routes,
    shares_routes,
    tier_routes,
    viewer_static,
    wado_uri,
    worklist_routes,
)
from .context import WebContext
from .dicomweb import routes as dicomweb_routes
from .errors import error_response
from .limits import LimitsMiddleware
from .metrics import HttpStats, MetricsMiddleware, metrics_endpoint
from .security import secured


def build_app(ctx: WebContext, *, jobs: Callable[[], list[dict[str, Any]]] | None = None,
              status_extra: Callable[[], dict[str, Any]] | None = None,
              tiering: TieringService | None = None, analysis: AnalysisService | None = None) -> Starlette:
    stats = HttpStats()
    sec = ctx.security

    def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    routes: list[BaseRoute] = [
        Route("/healthz", secured(sec, None, healthz), methods=["GET", "HEAD"]),
        Route("/metrics", secured(sec, "read", metrics_endpoint(stats, ctx.engine)), methods=["GET"]),
        *api.routes(ctx),
        *jobs_routes.routes(ctx, jobs, analysis),
        *tier_routes.routes(ctx, tiering),
        *measurements.routes(ctx),
        *analysis_routes.routes(ctx),
        *worklist_routes.routes(ctx),
        *session_routes.routes(ctx),
        *shares_routes.routes(ctx),
        *peers_routes.routes(ctx),
        *iocm_routes.routes(ctx),
        *patients_routes.routes(ctx),
        *research_routes.routes(ctx),
        *admin.routes(ctx, status_extra),
        *wado_uri.routes(ctx),
        *dicomweb_routes.routes(ctx),
        *fhir_routes.routes(ctx),
        *viewer_static.routes(),
    ]
    if ctx.feed is not None:
        routes += replication_routes.routes(ctx.feed, sec)
    s = ctx.settings
    # Limits inside the metrics: a 413 or 429 is counted as a request like any other.
    middleware = [Middleware(MetricsMiddleware, stats=stats),
                  Middleware(LimitsMiddleware, max_body=s.max_body, rate_limit=s.rate_limit,
                             rate_limit_per_address=s.rate_limit_per_address, rate_burst=s.rate_burst)]
    if ctx.settings.cors_origins:
        middleware.append(Middleware(
            CORSMiddleware, allow_origins=list(ctx.settings.cors_origins), allow_credentials=True,
            allow_methods=["GET", "POST", "DELETE", "OPTIONS", "HEAD"],
            allow_headers=["Authorization", "Content-Type", "Accept", "Range"],
            expose_headers=["Warning", "Content-Range", "Content-Length", "Content-Location"]))
    app = Starlette(routes=routes, middleware=middleware,
                    exception_handlers={DicomVaultError: error_response, Exception: error_response})
    app.state.ctx = ctx
    app.state.http_stats = stats
    return app
