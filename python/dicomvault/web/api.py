"""`/api`: JSON for the CLI, the viewer and administrators — archive statistics, study lists,
a raw Part-10 upload, users and their tokens (background jobs: jobs_routes.py)."""

from __future__ import annotations

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth.roles import ADMIN, READ, WRITE
from ..engine import StoreOutcome
from ..errors import RequestError, UnknownObjectError
from ..integration.reports import ReportStore
from ..integration.worklist_store import WorklistStore
from .context import WebContext
from .dicomweb.stow import ensure_writable
from .responses import body_json, int_param, json_response, read_body
from .security import secured

STUDY_COLUMNS = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                 "AccessionNumber", "StudyDescription", "ModalitiesInStudy", "ReferringPhysicianName",
                 "NumberOfStudyRelatedSeries", "NumberOfStudyRelatedInstances")
SERIES_COLUMNS = ("Modality", "SeriesNumber", "SeriesDescription", "BodyPartExamined",
                  "NumberOfSeriesRelatedInstances")
# A raw upload is one object; bigger ones go through STOW-RS, which streams.
MAX_RAW_UPLOAD = 1 << 30


def routes(ctx: WebContext) -> list[Route]:
    engine = ctx.engine
    users = ctx.security.users
    worklist = WorklistStore(engine.index)
    reports = ReportStore(engine.index)

    def stats(request: Request) -> Response:
        return json_response(engine.stats())

    def studies(request: Request) -> Response:
        """Study rows for lists: every STUDY_COLUMNS key, filtered by any of them given as a
        query parameter (C-FIND matching: wildcards, date ranges)."""
        limit = int_param(request, "limit", 100, 1, 10_000)
        offset = int_param(request, "offset", 0, 0, 100_000)
        query: dict[str, str] = dict.fromkeys(STUDY_COLUMNS, "")
        for k, v in request.query_params.items():
            if k in ("limit", "offset"):
                continue
            if k not in STUDY_COLUMNS and k != "StudyInstanceUID":
                raise RequestError(f"unknown study filter {k!r}; use one of {', '.join(STUDY_COLUMNS)}")
            query[k] = v
        rows = list(engine.index.find("STUDY", query, limit=offset + limit))
        sec.queried(request, "studies", query, len(rows[offset:]), protocol="HTTP /api/studies")
        return json_response(rows[offset:])

    def study(request: Request) -> Response:
        uid = request.path_params["study"]
        rows = list(engine.index.find("STUDY", {"StudyInstanceUID": uid, **dict.fromkeys(STUDY_COLUMNS, "")}))
        if not rows:
            raise UnknownObjectError("study", uid)
        series = list(engine.index.find("SERIES", {"StudyInstanceUID": uid,
                                                   **dict.fromkeys(SERIES_COLUMNS, "")}))
        # the order(s) this study was scheduled for, and how far the modality got (MPPS)
        steps = [{"key": e.key, "status": e.status, "procedure": e.procedure, "mpps": e.mpps,
                  "performed_series": e.performed_series}
                 for e in worklist.entries(active_only=False, study_uid=uid)]
        # report texts received over HL7 (ORU^R01), by study UID or by the study's accession number
        texts = [{k: r.get(k) for k in ("text", "status", "observed", "procedure", "author", "accession",
                                        "control_id", "sender")}
                 for r in reports.for_study(uid, str(rows[0].get("AccessionNumber") or ""))]
        return json_response({**rows[0], "series": series, "procedure_steps": steps, "reports": texts})

    async def upload(request: Request) -> Response:
        ensure_writable(engine)
        body = await read_body(request, MAX_RAW_UPLOAD)
        if not body:
            raise RequestError("POST /api/instances needs a DICOM Part-10 body")
        res = (await run_in_threadpool(engine.store_buffers, [body]))[0]
        if not isinstance(res, StoreOutcome):
            raise res
        return json_response({"SOPInstanceUID": res.sop_instance_uid,
                              "StudyInstanceUID": res.study_instance_uid, "hash": res.hash.hex(),
                              "duplicate": res.duplicate, "replaced": res.replaced})

    def list_users(request: Request) -> Response:
        return json_response([u.as_dict() for u in users.list()])

    async def add_user(request: Request) -> Response:
        body = await body_json(request)
        name, role = body.get("name"), body.get("role")
        if not isinstance(name, str) or not isinstance(role, str):
            raise RequestError('POST /api/users needs {"name": ..., "role": ..., "password"?: ...}')
        password = body.get("password")
        await run_in_threadpool(users.add, name, role, password if isinstance(password, str) else None)
        await run_in_threadpool(sec.config_changed, request, "users", "add", name,
                                {"role": role, "password": isinstance(password, str)})
        return json_response({"name": name, "role": role}, 201)

    def remove_user(request: Request) -> Response:
        users.remove(request.path_params["name"])
        sec.config_changed(request, "users", "remove", request.path_params["name"])
        return Response(status_code=204)

    def new_token(request: Request) -> Response:
        token = users.issue_token(request.path_params["name"])
        sec.config_changed(request, "users", "token", request.path_params["name"])
        return json_response({"name": request.path_params["name"], "token": token}, 201)

    sec = ctx.security
    return [
        Route("/api/stats", secured(sec, READ, stats), methods=["GET"]),
        Route("/api/studies", secured(sec, READ, studies), methods=["GET"]),
        Route("/api/studies/{study}", secured(sec, READ, study, access="study-summary"), methods=["GET"]),
        Route("/api/instances", secured(sec, WRITE, upload), methods=["POST"]),
        Route("/api/users", secured(sec, ADMIN, list_users), methods=["GET"]),
        Route("/api/users", secured(sec, ADMIN, add_user), methods=["POST"]),
        Route("/api/users/{name}", secured(sec, ADMIN, remove_user), methods=["DELETE"]),
        Route("/api/users/{name}/tokens", secured(sec, ADMIN, new_token), methods=["POST"]),
    ]
