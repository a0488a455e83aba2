"""The archive's one HTTP application (Starlette on uvicorn): DICOMweb, WADO-URI, /api, the
replication feed, /metrics and /healthz.

Modules: ``app`` (the application: every router mounted in one place), ``server`` (uvicorn in a
thread of the serve process, TLS), ``context`` (what the routes share), ``security`` (the one
authentication and authorization check), ``errors`` (the one error -> HTTP status mapping),
``responses`` (JSON, parameters, base URLs), ``api``/``admin`` (/api), ``replication_routes``,
``metrics``, ``wado_uri``, and the ``dicomweb`` package.
"""
