"""Export for research: a study de-identified for a `[deidentify]` project, as a ZIP download.

  GET  /api/research-projects               -> [{"name", "retain", "mapping"}] (no secrets)
  POST /api/studies/{uid}/export-research   {"project", "retain"?: [names], "allow_burned_in"?: bool}
                                            -> 200 application/zip, streamed: `<study>/<series>/<sop>.dcm`
                                            in the project's UIDs, then `deid-report.json`
                                            (integration/deid/export.py); 404 unknown study,
                                            400 unknown project or option

Both need the `share` action (writer, admin): like a share link, a research export hands a study
to people outside the archive's users, which is more than reading it. A share link's principal
cannot use them (the path names no `study`: web/security.py). Each export is audited as an
Export event (DCM 110106) once the ZIP is complete, or as a failure when the download stopped.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from ..audit.log import EXPORT, FAILURE, SUCCESS
from ..auth.roles import SHARE, Principal
from ..errors import RequestError, UnknownObjectError
from ..integration.deid.export import REPORT_NAME, ResearchExport
from ..integration.deid.profile import Options
from ..integration.deid.pseudonyms import Pseudonymizer
from ..integration.deid.settings import DeidSettings
from .context import WebContext
from .responses import body_json, json_response
from .security import client_of, secured
from .zipstream import ZipStream


def routes(ctx: WebContext) -> list[Route]:
    sec, engine = ctx.security, ctx.engine

    def settings() -> DeidSettings:
        if ctx.deidentify is None or not ctx.deidentify.projects:
            raise RequestError("no research projects are configured ([deidentify.projects.NAME])")
        return ctx.deidentify

    def projects(request: Request) -> Response:
        configured = ctx.deidentify.projects if ctx.deidentify is not None else ()
        return json_response([{"name": p.name, "retain": sorted(p.retain.retain), "mapping": p.keep_mapping}
                              for p in configured])

    async def export(request: Request) -> Response:
        body = await body_json(request)
        name, retain, allow = body.get("project"), body.get("retain"), body.get("allow_burned_in", False)
        if not isinstance(name, str) or not isinstance(allow, bool) or not (
                retain is None or isinstance(retain, list) and all(isinstance(r, str) for r in retain)):
            raise RequestError('export-research needs {"project": NAME, "retain"?: [options], '
                               '"allow_burned_in"?: true|false}')
        return await run_in_threadpool(start, request, name, retain, allow)

    def start(request: Request, name: str, retain: list[str] | None, allow: bool) -> Response:
        uid = request.path_params["uid"]
        project = settings().project(name)
        options = Options.parse(retain, "retain") if retain is not None else None
        found = engine.instances("study", uid)
        if not found:
            raise UnknownObjectError("study", uid)
        p: Principal = request.state.principal
        job = ResearchExport(project, options, engine.data_dir, allow_burned_in=allow)
        filename = f"{project.name}-{Pseudonymizer(project.name, project.secret).uid(uid)}.zip"
        audit = {"user": p.name, "client": client_of(request), "patient": found[0].patient_id or None,
                 "study": uid}
        return StreamingResponse(stream(job, uid, audit), media_type="application/zip",
                                 headers={"Content-Disposition": f'attachment; filename="{filename}"'})

    def stream(job: ResearchExport, uid: str, audit: dict[str, Any]) -> Iterator[bytes]:
        done = False
        try:
            zs = ZipStream()
            for rel, data in job.objects(engine, "study", uid):
                yield from zs.add(rel, data)
            yield from zs.add(REPORT_NAME, json.dumps(job.report, indent=2).encode())
            yield from zs.close()
            done = True
        finally:
            job.save_mapping({"export": "http", "user": audit["user"]})
            report = job.report
            if sec.audit is not None:
                sec.audit.record(EXPORT, SUCCESS if done else FAILURE, **audit, detail={
                    "protocol": "HTTP export-research", "deidentified": job.project.name,
                    "retain": report["retain"], "files": report["exported"],
                    "burned_in_held_back": len(report["burned_in_held_back"]),
                    "burned_in_exported": len(report["burned_in_exported"])})

    return [
        Route("/api/research-projects", secured(sec, SHARE, projects), methods=["GET"]),
        Route("/api/studies/{uid}/export-research", secured(sec, SHARE, export), methods=["POST"]),
    ]
