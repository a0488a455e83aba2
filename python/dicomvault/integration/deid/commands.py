"""`dicomvault export --deidentify PROJECT`: the CLI side of a research export."""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

from ...audit.log import EXPORT, SUCCESS, AuditLog, cli_user
from ...engine import Engine
from .export import REPORT_NAME, ResearchExport
from .profile import Options
from .settings import DeidSettings


def export_deidentified(args: argparse.Namespace, level: str, uid: str, settings: DeidSettings) -> int:
    """Writes `<out>/<study>/<series>/<sop>.dcm` in the new UIDs and `<out>/deid-report.json`;
    prints the report's counts and every object held back or flagged. `settings`: the
    configuration's [deidentify] table (the CLI read it)."""
    project = settings.project(args.deidentify)
    options = Options.parse(args.retain) if args.retain is not None else None
    export = ResearchExport(project, options, args.data, allow_burned_in=args.allow_burned_in)
    out = Path(args.output)
    try:
        with Engine(args.data, read_only=True) as engine:
            found = engine.instances(level, uid)
            patient, study = (found[0].patient_id or None, found[0].study_uid) if found else (None, None)
            for rel, data in export.objects(engine, level, uid):
                path = out / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                part = path.with_suffix(".dcm.part")
                part.write_bytes(data)
                os.replace(part, path)
    finally:
        # what was written before a failure has left too: its pseudonyms are kept all the same
        export.save_mapping({"export": "cli", "level": level, "to": str(out)})
    report = export.report
    out.mkdir(parents=True, exist_ok=True)
    (out / REPORT_NAME).write_text(json.dumps(report, indent=2) + "\n")
    AuditLog(args.data).record(EXPORT, SUCCESS, user=cli_user(), client="local", patient=patient, study=study,
                               detail={"level": level, "uid": uid, "files": report["exported"],
                                       "to": str(out),
                                       "deidentified": project.name, "retain": report["retain"],
                                       "burned_in_held_back": len(report["burned_in_held_back"]),
                                       "burned_in_exported": len(report["burned_in_exported"])})
    print(f"exported {report['exported']} of {report['instances']} files de-identified for {project.name} "
          f"to {out} (report: {out / REPORT_NAME})")
    for entry in report["burned_in_held_back"]:
        print(f"held back (burned-in annotation; --allow-burned-in exports it): {entry['SOPInstanceUID']}: "
              f"{entry['reason']}")
    for entry in report["burned_in_exported"]:
        print(f"exported with possible burned-in annotation: {entry['SOPInstanceUID']}: {entry['reason']}")
    return 0
