"""The analysis results over HTTP, for the viewer (readers read; the results store is
analysis/results.py, written by the analysis pipeline):

    GET /api/studies/{study}/analysis          {"study_uid", "flags", "measurements", "objects"}
    GET /api/patients/{patient_id}/trends      {"patient_id", "trends": [... "points", "change"]}

404 when the index knows neither the study (the patient) nor any result of it. A share link,
bound to one study, may read that study's analysis (the path names it) but no patient's trends,
which span studies it was not given. The audit trail counts a study's analysis read with the
study's other reads (kind "analysis") and records a trends read as a query by PatientID.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..analysis import results
from ..auth.roles import READ
from ..errors import UnknownObjectError
from .context import WebContext
from .dicomweb.routes import check_uid
from .responses import json_response
from .security import secured


def routes(ctx: WebContext) -> list[Route]:
    index = ctx.engine.index

    def study_analysis(request: Request) -> Response:
        uid = check_uid(request.path_params["study"], "study UID")
        out = results.study_results(index, uid)
        if index.get_study(uid) is None and not (out["flags"] or out["measurements"] or out["objects"]):
            raise UnknownObjectError("study", uid)
        return json_response(out)

    def patient_trends(request: Request) -> Response:
        pid = request.path_params["patient_id"]
        out = results.trends(index, pid)
        if not out["trends"] and index.get_patient(pid) is None:
            raise UnknownObjectError("patient", pid)
        # A patient's measurements across studies: audited like a search by PatientID.
        ctx.security.queried(request, "patients", {"PatientID": pid}, len(out["trends"]),
                             protocol="HTTP /api/patients/trends")
        return json_response(out)

    return [
        Route("/api/studies/{study}/analysis", secured(ctx.security, READ, study_analysis, access="analysis"),
              methods=["GET"]),
        Route("/api/patients/{patient_id:path}/trends", secured(ctx.security, READ, patient_trends),
              methods=["GET"]),
    ]
