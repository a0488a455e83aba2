"""`/api/patients`: patient corrections by hand (the HIS sends them over HL7 ADT), for admins.

    GET    /api/patients/{id}              the patient's current values and studies
    PUT    /api/patients/{id}              {"PatientName": "Doe^Jane", "PatientBirthDate": "", ...}
                                           -> the studies whose outgoing objects change
    POST   /api/patients/{id}/merge        {"into": SURVIVOR_ID, "values": {...}} -> the merge
    GET    /api/patient-merges             every merge in force
    DELETE /api/patient-merges/{prior id}  undoes a merge -> what was undone

Every change is audited as a Patient Record event (integration/patients.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..auth.roles import ADMIN, READ, Principal
from ..errors import RequestError
from ..integration.patients import PatientUpdates, merge_view, patient_summary
from .context import WebContext
from .dicomweb.stow import ensure_writable
from .responses import body_json, json_response
from .security import client_of, secured


def _strings(body: object, where: str) -> dict[str, str]:
    if not isinstance(body, Mapping) or not all(isinstance(k, str) and isinstance(v, str)
                                                for k, v in body.items()):
        raise RequestError(f"{where} must be a JSON object of keyword -> string")
    return dict(body)


def routes(ctx: WebContext) -> list[Route]:
    sec, engine = ctx.security, ctx.engine
    updates = PatientUpdates(engine.index, str(engine.data_dir))

    def show(request: Request) -> Response:
        return json_response(patient_summary(engine.index, request.path_params["patient"]))

    def _who(request: Request) -> dict[str, Any]:
        p: Principal = request.state.principal
        return {"user": p.name, "client": client_of(request), "source": "api"}

    async def update(request: Request) -> Response:
        ensure_writable(engine)
        values = _strings(await body_json(request), "PUT /api/patients/{id}")
        studies = await run_in_threadpool(updates.update, request.path_params["patient"], values,
                                          **_who(request))
        return json_response({"patient_id": request.path_params["patient"], "studies": studies})

    async def merge(request: Request) -> Response:
        ensure_writable(engine)
        body = await body_json(request)
        into = body.get("into") if isinstance(body, Mapping) else None
        if not isinstance(into, str) or not into:
            raise RequestError('POST /api/patients/{id}/merge needs {"into": SURVIVOR_PATIENT_ID}')
        values = _strings(body.get("values") or {}, "values")
        record = await run_in_threadpool(updates.merge, request.path_params["patient"], into, values,
                                         **_who(request))
        if record is None:
            return json_response({"merged": False, "reason": "already merged"})
        return json_response({"merged": True, **merge_view(record)}, 201)

    def merges(request: Request) -> Response:
        return json_response([merge_view(m) for m in engine.index.merges()])

    def unmerge(request: Request) -> Response:
        ensure_writable(engine)
        record = updates.unmerge(request.path_params["prior"], **_who(request))
        return json_response(merge_view(record))

    return [
        Route("/api/patients/{patient}", secured(sec, READ, show), methods=["GET"]),
        Route("/api/patients/{patient}", secured(sec, ADMIN, update), methods=["PUT"]),
        Route("/api/patients/{patient}/merge", secured(sec, ADMIN, merge), methods=["POST"]),
        Route("/api/patient-merges", secured(sec, ADMIN, merges), methods=["GET"]),
        Route("/api/patient-merges/{prior}", secured(sec, ADMIN, unmerge), methods=["DELETE"]),
    ]
