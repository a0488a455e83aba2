"""`POST /api/studies/{study}/measurements`: the viewer saves measurements into the archive as a
DICOM SR (TID 1500, analysis/sr.py), stored through the engine like a STOW-RS instance: indexed,
found by QIDO-RS, served by WADO-RS (metadata included) and replicated.

Body (JSON):

    {"measurements": [
      {"kind": "length" | "angle" | "ellipse" | "rectangle",
       "label": "optional text (at most 64 characters)",
       "image": {"series": uid, "instance": uid, "sop_class": uid, "frame": 1},
       "points": [[col, row], ...],
       "values": [{"name": "length" | "angle" | "area" | "mean" | "sd" | "min" | "max",
                   "value": number, "unit": "mm" | "deg" | "mm2" | "HU" | <UCUM>}]}]}

Points are image pixel coordinates (PS3.3 C.18.6.1.1: column, row; 0,0 is the top left corner
of the top left pixel, Columns,Rows the bottom right corner of the bottom right one): 2 for a
length, 3 for an angle (vertex second), 4 for an ellipse (one axis's end points, then the
other's), 4 for a rectangle (its corners in order). `frame` (from 1) defaults to 1; `sop_class`
may be left out (the index knows it). Answers 201 with {"study", "series", "instance",
"retrieve_url"}; 400 with {"error", "index"} (the measurement at fault, null when the body as a
whole is wrong); 404 when the study is unknown; 409 on a replica.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ..analysis.sr import (
    KINDS,
    MAX_MEASUREMENTS,
    SERIES_NUMBER_BASE,
    ImageRef,
    Measurement,
    MeasurementError,
    Value,
    measurement_report,
    to_part10,
)
from ..auth.roles import WRITE
from ..engine import Engine, StoreOutcome
from ..errors import UnknownObjectError
from ..index.records import InstanceRecord
from .context import WebContext
from .dicomweb.routes import PREFIX, check_uid
from .dicomweb.stow import ensure_writable
from .responses import base_url, body_json, json_response
from .security import secured

log = logging.getLogger("dicomvault.web")

MEASUREMENT_KEYS = frozenset({"kind", "label", "image", "points", "values"})
IMAGE_KEYS = frozenset({"series", "instance", "sop_class", "frame"})
VALUE_KEYS = frozenset({"name", "value", "unit"})


def _int_attr(attrs: dict[str, str], keyword: str) -> int | None:
    try:
        return int(str(attrs.get(keyword, "")).split("\\")[0])
    except ValueError:
        return None


def _uid(raw: dict[str, Any], key: str, what: str, required: bool = True) -> str | None:
    value = raw.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value or len(value) > 128:
        raise MeasurementError(f"image.{key} must be the {what} UID (a string)")
    return value


def _keys(raw: dict[str, Any], allowed: frozenset[str], where: str) -> None:
    extra = sorted(set(raw) - allowed)
    if extra:
        raise MeasurementError(f"{where} has unknown key(s) {', '.join(extra)}; "
                               f"the keys are {', '.join(sorted(allowed))}")


def image_ref(engine: Engine, study_uid: str, raw: Any) -> tuple[ImageRef, InstanceRecord]:
    """The image a measurement names, checked against the index."""
    if not isinstance(raw, dict):
        raise MeasurementError('image must be {"series", "instance", "sop_class", "frame"}')
    _keys(raw, IMAGE_KEYS, "image")
    sop = _uid(raw, "instance", "SOP instance")
    series = _uid(raw, "series", "series")
    sop_class = _uid(raw, "sop_class", "SOP class", required=False)
    frame = raw.get("frame", 1)
    if isinstance(frame, bool) or not isinstance(frame, int):
        raise MeasurementError(f"image.frame must be an integer from 1, got {frame!r}")
    rec = engine.instance(sop) if sop else None
    if rec is None or rec.study_uid != study_uid:
        raise MeasurementError(f"instance {sop} is not in study {study_uid}")
    if series != rec.series_uid:
        raise MeasurementError(f"instance {sop} is in series {rec.series_uid}, not {series}")
    if sop_class is not None and sop_class != rec.sop_class_uid:
        raise MeasurementError(f"instance {sop} is of SOP class {rec.sop_class_uid}, not {sop_class}")
    rows, columns = _int_attr(rec.attrs, "Rows"), _int_attr(rec.attrs, "Columns")
    if not rows or not columns:
        raise MeasurementError(f"instance {sop} is not an image (it has no Rows/Columns)")
    return ImageRef(
        sop_instance_uid=rec.sop_uid, sop_class_uid=rec.sop_class_uid, series_uid=rec.series_uid,
        frame=frame, number_of_frames=_int_attr(rec.attrs, "NumberOfFrames") or 1, rows=rows,
        columns=columns, modality=str(rec.attrs.get("Modality", "")),
    ), rec


def parse_measurement(engine: Engine, study_uid: str, raw: Any) -> tuple[Measurement, InstanceRecord]:
    if not isinstance(raw, dict):
        raise MeasurementError("a measurement must be a JSON object")
    _keys(raw, MEASUREMENT_KEYS, "the measurement")
    kind = raw.get("kind")
    if kind not in KINDS:
        raise MeasurementError(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    points = raw.get("points")
    if not isinstance(points, list) or not all(isinstance(p, list) and len(p) == 2 for p in points):
        raise MeasurementError("points must be a list of [column, row] pairs")
    values = raw.get("values", [])
    if not isinstance(values, list):
        raise MeasurementError("values must be a list")
    parsed = []
    for v in values:
        if not isinstance(v, dict):
            raise MeasurementError('a value must be {"name", "value", "unit"}')
        _keys(v, VALUE_KEYS, "a value")
        if not isinstance(v.get("name"), str) or not isinstance(v.get("unit"), str):
            raise MeasurementError('a value needs "name" and "unit" strings and a numeric "value"')
        parsed.append(Value(v["name"], v.get("value"), v["unit"]))  # type: ignore[arg-type]
    label = raw.get("label")
    if label is not None and not isinstance(label, str):
        raise MeasurementError("label must be a string")
    image, rec = image_ref(engine, study_uid, raw.get("image"))
    return Measurement(kind=kind, image=image, points=tuple((p[0], p[1]) for p in points),
                       values=tuple(parsed), label=label), rec


def next_series_number(engine: Engine, study_uid: str) -> int:
    """9000, or one past the highest series number at or above 9000 in the study (see
    analysis/sr.py SERIES_NUMBER_BASE): every saved report gets its own, in save order."""
    taken = [s.series_number for s in engine.index.series_of(study_uid)
             if s.series_number is not None and s.series_number >= SERIES_NUMBER_BASE]
    return max(taken) + 1 if taken else SERIES_NUMBER_BASE


def save_measurements(engine: Engine, study_uid: str, body: dict[str, Any], author: str) -> StoreOutcome:
    """Checks the body, builds the report and stores it (blocking; durable when it returns).
    Raises UnknownObjectError for an unknown study, MeasurementError for a bad body."""
    study = engine.index.get_study(study_uid)
    if study is None:
        raise UnknownObjectError("study", study_uid)
    raw = body.get("measurements")
    if not isinstance(raw, list) or not raw:
        raise MeasurementError('the body must be {"measurements": [...]} with at least one measurement')
    if len(raw) > MAX_MEASUREMENTS:
        raise MeasurementError(f"{len(raw)} measurements; at most {MAX_MEASUREMENTS} per report")
    extra = sorted(set(body) - {"measurements"})
    if extra:
        raise MeasurementError(f"unknown key(s) {', '.join(extra)} in the body")
    measurements, records = [], []
    for i, item in enumerate(raw):
        try:
            m, rec = parse_measurement(engine, study_uid, item)
        except MeasurementError as exc:
            raise MeasurementError(f"measurement {i}: {exc}", i) from None
        measurements.append(m)
        records.append(rec)
    # The study record's patient and study attributes, completed from a referenced instance.
    attrs = {**records[0].attrs, **{k: v for k, v in study.attrs.items() if v}}
    attrs["StudyInstanceUID"] = study_uid
    ds = measurement_report(attrs, measurements, author=author,
                            series_number=next_series_number(engine, study_uid))
    result = engine.store_buffers([to_part10(ds)])[0]
    if not isinstance(result, StoreOutcome):
        raise result
    return result


def routes(ctx: WebContext) -> list[Route]:
    engine = ctx.engine

    async def post(request: Request) -> Response:
        study_uid = check_uid(request.path_params["study"], "study UID")
        ensure_writable(engine)
        body = await body_json(request)
        author = request.state.principal.name
        try:
            outcome = await run_in_threadpool(save_measurements, engine, study_uid, body, author)
        except MeasurementError as exc:
            log.info("POST %s -> 400: %s", request.url.path, exc)
            return json_response({"error": str(exc), "index": exc.index}, 400)
        rec = engine.instance(outcome.sop_instance_uid)
        series = rec.series_uid if rec is not None else ""
        base = base_url(request, ctx.settings.public_base_url, ctx.settings.trust_forwarded) + PREFIX
        url = f"{base}/studies/{study_uid}/series/{series}/instances/{outcome.sop_instance_uid}"
        return json_response({"study": study_uid, "series": series, "instance": outcome.sop_instance_uid,
                              "retrieve_url": url}, 201, headers={"Location": url})

    return [Route("/api/studies/{study}/measurements", secured(ctx.security, WRITE, post), methods=["POST"])]
