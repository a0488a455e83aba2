"""HTTP service: a small router on the stdlib ThreadingHTTPServer (TLS via ssl), shared by the
replication feed, management endpoints and, later, DICOMweb.

Modules: ``router`` (requests, responses, routes, bearer tokens), ``server`` (the listening
service and its lifecycle), ``site`` (a standalone site process: engine + HTTP + replication).
"""

from .router import HttpError, Request, Response, Router
from .server import HttpService

__all__ = ["HttpError", "HttpService", "Request", "Response", "Router"]
