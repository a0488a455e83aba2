"""A research export: objects read from the engine as they would leave it, de-identified for one
project, with a report and (by configuration) the encrypted mapping.

Used by `dicomvault export --deidentify` (files), `POST /api/studies/{uid}/export-research`
(a ZIP) and forwarding (one object at a time, `convert`). Objects flagged for burned-in
annotation are held back unless `allow_burned_in`, and listed in the report either way. The
report names objects by their new UIDs only: it travels with the data.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

from ...engine import Engine
from .deidentifier import Deidentifier, Result
from .mapping import append_mapping, mapping_path
from .profile import Options
from .settings import Project

REPORT_NAME = "deid-report.json"


class ResearchExport:
    def __init__(self, project: Project, options: Options | None, data_dir: str | os.PathLike[str], *,
                 allow_burned_in: bool = False) -> None:
        """options None: the project's default retain options."""
        self.project = project
        self.options = options if options is not None else project.retain
        self.allow_burned_in = allow_burned_in
        self.data_dir = data_dir
        self.deid = Deidentifier(project.name, project.secret, self.options)
        self.report: dict[str, Any] = {
            "project": project.name,
            "retain": sorted(self.options.retain),
            "methods": [{"code": c, "scheme": "DCM", "meaning": m} for c, m in self.options.codes()],
            "longitudinal_temporal_information": self.options.temporal(),
            "instances": 0, "exported": 0,
            "burned_in_held_back": [], "burned_in_exported": [],
            "mapping": project.keep_mapping,
        }

    def convert(self, data: bytes, where: str) -> Result | None:
        """One object de-identified; None when it is held back for burned-in annotation."""
        res = self.deid.part10(data, where=where)
        self.report["instances"] += 1
        if res.burned_in:
            entry = {"SOPInstanceUID": res.sop_uid, "SeriesInstanceUID": res.series_uid,
                     "StudyInstanceUID": res.study_uid, "SOPClassUID": res.sop_class_uid,
                     "reason": res.burned_in}
            if not self.allow_burned_in:
                self.report["burned_in_held_back"].append(entry)
                return None
            self.report["burned_in_exported"].append(entry)
        self.report["exported"] += 1
        return res

    def objects(self, engine: Engine, level: str, uid: str) -> Iterator[tuple[str, bytes]]:
        """(relative path `<study>/<series>/<sop>.dcm` in new UIDs, Part-10 bytes) of every
        object under `uid` that goes out."""
        for rec in engine.instances(level, uid):
            res = self.convert(engine.read_file(rec.sop_uid), f"instance {rec.sop_uid}")
            if res is not None:
                yield f"{res.study_uid}/{res.series_uid}/{res.sop_uid}.dcm", res.data

    def save_mapping(self, context: dict[str, Any]) -> None:
        """Appends what this export mapped to the project's encrypted mapping (keep_mapping =
        "encrypted"); forgets it either way."""
        pairs = self.deid.mapping.take()
        if self.project.keep_mapping == "encrypted" and self.project.mapping_key is not None:
            append_mapping(mapping_path(self.data_dir, self.project.name), self.project.mapping_key,
                           self.project.name, pairs, context)
