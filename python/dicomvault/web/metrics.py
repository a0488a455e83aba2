"""`/metrics` in the Prometheus text format (0.0.4): archive size from the index, HTTP request
counts and latency by route and status (counted by `MetricsMiddleware`), replication cursor,
refusals by a limit (refusals.py)."""

from __future__ import annotations

import threading
import time
from collections import defaultdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..refusals import render_metrics as refusal_lines

# Latency buckets in seconds: a QIDO answers in milliseconds, a study retrieve in seconds.
BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)


class HttpStats:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.count: dict[tuple[str, str, int], int] = defaultdict(int)
        self.hist: dict[tuple[str, str], list[float]] = {}

    def observe(self, method: str, route: str, status: int, seconds: float) -> None:
        with self._lock:
            self.count[(method, route, status)] += 1
            h = self.hist.get((method, route))
            if h is None:
                h = self.hist[(method, route)] = [0.0] * (len(BUCKETS) + 2)  # buckets, +Inf, sum
            for i, b in enumerate(BUCKETS):
                if seconds <= b:
                    h[i] += 1
            h[len(BUCKETS)] += 1
            h[len(BUCKETS) + 1] += seconds


def _route_of(scope: Scope) -> str:
    route = scope.get("route")
    path = getattr(route, "path", None)
    if path:
        # inside a Mount the route's path is relative to it
        return str(scope.get("root_path", "")) + str(path)
    # No route matched (a 404): one label for all, so requests cannot grow the label set.
    return "<unmatched>"


class MetricsMiddleware:
    """Pure ASGI (no BaseHTTPMiddleware): it must not buffer streamed retrieves."""

    def __init__(self, app: ASGIApp, stats: HttpStats) -> None:
        self.app = app
        self.stats = stats

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        t0 = time.perf_counter()
        status = 500

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            self.stats.observe(scope["method"], _route_of(scope), status, time.perf_counter() - t0)


def _esc(v: str) -> str:
    return v.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def render(stats: HttpStats, engine: Any) -> str:
    out: list[str] = []
    idx = engine.index.stats()
    for key, help_ in (("objects", "instances stored"), ("studies", "studies stored"),
                       ("series", "series stored"), ("patients", "patients stored"),
                       ("logical_bytes", "bytes of the objects as received"),
                       ("stored_bytes", "bytes the objects take in the blob store")):
        if key in idx:
            out += [f"# HELP dicomvault_{key} {help_}", f"# TYPE dicomvault_{key} gauge",
                    f"dicomvault_{key} {int(idx[key])}"]
    tiers = engine.tier_stats()
    for key, help_ in (("objects", "blobs placed in the tier"), ("stored_bytes", "stored bytes in the tier"),
                       ("logical_bytes", "bytes as received of the blobs in the tier"),
                       ("used_bytes", "bytes the tier takes (volume files, or packs)"),
                       ("capacity", "configured capacity of the tier")):
        out += [f"# HELP dicomvault_tier_{key} {help_}", f"# TYPE dicomvault_tier_{key} gauge"]
        for name, row in tiers.items():
            if row.get(key) is not None:
                out.append(f'dicomvault_tier_{key}{{tier="{_esc(name)}"}} {int(row[key])}')
    out += ["# HELP dicomvault_feed_last_seq last change feed sequence number",
            "# TYPE dicomvault_feed_last_seq counter", f"dicomvault_feed_last_seq {engine.index.last_seq()}"]
    out += refusal_lines()
    with stats._lock:
        counts = dict(stats.count)
        hists = {k: list(v) for k, v in stats.hist.items()}
    out += ["# HELP dicomvault_http_requests_total HTTP requests by route and status",
            "# TYPE dicomvault_http_requests_total counter"]
    for (method, route, status), n in sorted(counts.items()):
        out.append(f'dicomvault_http_requests_total{{method="{method}",route="{_esc(route)}",'
                   f'status="{status}"}} {n}')
    out += ["# HELP dicomvault_http_request_seconds HTTP request latency",
            "# TYPE dicomvault_http_request_seconds histogram"]
    for (method, route), h in sorted(hists.items()):
        labels = f'method="{method}",route="{_esc(route)}"'
        for b, n in zip(BUCKETS, h, strict=False):
            out.append(f'dicomvault_http_request_seconds_bucket{{{labels},le="{b}"}} {int(n)}')
        out.append(f'dicomvault_http_request_seconds_bucket{{{labels},le="+Inf"}} {int(h[len(BUCKETS)])}')
        out.append(f"dicomvault_http_request_seconds_sum{{{labels}}} {h[len(BUCKETS) + 1]:.6f}")
        out.append(f"dicomvault_http_request_seconds_count{{{labels}}} {int(h[len(BUCKETS)])}")
    return "\n".join(out) + "\n"


def metrics_endpoint(stats: HttpStats, engine: Any) -> Any:
    def metrics(request: Request) -> Response:
        return Response(render(stats, engine), media_type="text/plain; version=0.0.4; charset=utf-8")

    return metrics
