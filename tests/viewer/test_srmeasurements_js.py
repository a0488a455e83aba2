"""The viewer's SR reader (web/viewer/js/data/srmeasurements.js) run by node on real output:
measurements POSTed to /api/studies/{study}/measurements, the SR's DICOM JSON fetched from
WADO-RS metadata, `measurementsFromSR` gives back what was posted (float32 coordinates aside).
Node only runs these tests; without it they are skipped."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file
from pydicom.dataset import Dataset

import dicomvault
from dicomvault.analysis.sr import ImageRef, Measurement, Value, measurement_report
from dicomvault.engine import Engine
from dicomvault.site import Site, SiteOptions
from dv_http import store_via_api

MODULE = Path(dicomvault.__file__).parent / "web" / "viewer" / "js" / "data" / "srmeasurements.js"
NODE = shutil.which("node")
pytestmark = pytest.mark.skipif(NODE is None, reason="node is not installed: the JS reader cannot be run")

CT = Path(get_testdata_file("CT_small.dcm"))
EMRI = Path(get_testdata_file("emri_small.dcm"))  # MR, 10 frames

_SCRIPT = """
import { readFileSync } from "node:fs";
const mod = await import(%s);
const inputs = JSON.parse(readFileSync(0, "utf8"));
const out = inputs.map((m) => ({
  report: mod.isMeasurementReport(m), measurements: mod.measurementsFromSR(m) }));
process.stdout.write(JSON.stringify(out));
"""


def run_reader(metadatas: list[Any]) -> list[dict[str, Any]]:
    """[{report: isMeasurementReport(m), measurements: measurementsFromSR(m)}] for each input."""
    assert NODE is not None
    script = _SCRIPT % json.dumps(MODULE.as_uri())
    proc = subprocess.run([NODE, "--input-type=module", "-e", script], input=json.dumps(metadatas),
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture
def http(tmp_path: Path) -> Iterator[httpx.Client]:
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        site = Site(eng, SiteOptions(port=0))
        site.start()
        try:
            with httpx.Client(base_url=site.url, timeout=30) as client:
                yield client
        finally:
            site.stop()




def _image(img: dict[str, str], frame: int = 1) -> dict[str, Any]:
    return {"series": img["series"], "instance": img["instance"], "sop_class": img["sop_class"],
            "frame": frame}


def _save_and_read(http: httpx.Client, study: str, body: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    r = http.post(f"/api/studies/{study}/measurements", json=body)
    assert r.status_code == 201, r.text
    meta = http.get(r.json()["retrieve_url"] + "/metadata")
    assert meta.status_code == 200, meta.text
    return meta.json(), r.json()


def assert_same(got: list[dict[str, Any]], posted: list[dict[str, Any]]) -> None:
    assert len(got) == len(posted)
    for i, (g, p) in enumerate(zip(got, posted, strict=True)):
        assert set(g) == set(p), (i, g)
        assert (g["kind"], g.get("label"), g["image"]) == (p["kind"], p.get("label"), p["image"]), i
        assert len(g["points"]) == len(p["points"]), i
        for gp, pp in zip(g["points"], p["points"], strict=True):
            # SCOORD Graphic Data is FL (float32): ~1e-7 relative
            close = [math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-4) for a, b in zip(gp, pp, strict=True)]
            assert all(close), (i, gp, pp)
        names = [(v["name"], v["unit"]) for v in g["values"]]
        assert names == [(v["name"], v["unit"]) for v in p["values"]], i
        assert all(math.isclose(a["value"], b["value"], rel_tol=1e-12)
                   for a, b in zip(g["values"], p["values"], strict=True)), i


def test_round_trip_ct_all_kinds(http: httpx.Client) -> None:
    img = store_via_api(http, CT)
    image = _image(img)
    posted = [
        {"kind": "length", "label": "Lesion A", "image": image,
         "points": [[10.5, 10.5], [50.123456, 60.987654]],
         "values": [{"name": "length", "value": 31.41592653589793, "unit": "mm"}]},
        {"kind": "angle", "label": "Cobb", "image": image,
         "points": [[10.0, 10.0], [20.25, 20.5], [30.0, 10.0]],
         "values": [{"name": "angle", "value": 87.123456789, "unit": "deg"}]},
        {"kind": "ellipse", "label": "Liver — segment 7", "image": image,
         "points": [[20.0, 40.0], [60.0, 40.0], [40.0, 30.0], [40.0, 50.0]],
         "values": [{"name": "area", "value": 98.1748, "unit": "mm2"},
                    {"name": "mean", "value": 35.25, "unit": "HU"},
                    {"name": "sd", "value": 12.000001, "unit": "HU"},
                    {"name": "min", "value": -1024.0, "unit": "HU"},
                    {"name": "max", "value": 80.5, "unit": "HU"}]},
        {"kind": "rectangle", "label": "Aorta", "image": image,
         "points": [[20.5, 20.5], [40.5, 20.5], [40.5, 30.5], [20.5, 30.5]],
         "values": [{"name": "area", "value": 200.0, "unit": "mm2"},
                    {"name": "mean", "value": 1.5e-3, "unit": "HU"}]},
        # a rotated rectangle, no values
        {"kind": "rectangle", "label": "tilted", "image": image,
         "points": [[50.0, 50.0], [60.0, 60.0], [50.0, 70.0], [40.0, 60.0]], "values": []},
    ]
    meta, _ = _save_and_read(http, img["study"], {"measurements": posted})
    image_meta = http.get(f"/dicom-web/studies/{img['study']}/series/{img['series']}/instances/"
                          f"{img['instance']}/metadata").json()
    sr, ct = run_reader([meta, image_meta])
    assert sr["report"] is True
    assert_same(sr["measurements"], posted)
    assert ct == {"report": False, "measurements": []}


def test_round_trip_multiframe_mr_and_default_labels(http: httpx.Client) -> None:
    img = store_via_api(http, EMRI)
    posted = [
        {"kind": "angle", "image": _image(img, 3), "points": [[5.0, 5.0], [32.0, 32.0], [60.0, 5.0]],
         "values": [{"name": "angle", "value": 88.5, "unit": "deg"}]},
        {"kind": "ellipse", "image": _image(img, 10),
         "points": [[30.0, 10.0], [30.0, 50.0], [20.0, 30.0], [40.0, 30.0]],
         "values": [{"name": "mean", "value": 412.5, "unit": "1"},
                    {"name": "max", "value": 900.0, "unit": "1"}]},
    ]
    meta, _ = _save_and_read(http, img["study"], {"measurements": posted})
    (sr,) = run_reader([meta])
    # no label posted: the SR holds the default one (the Tracking Identifier is mandatory)
    expected = [{**posted[0], "label": "Angle 1"}, {**posted[1], "label": "Ellipse 2"}]
    assert_same(sr["measurements"], expected)


def test_minor_axis_first_comes_back_major_axis_first(http: httpx.Client) -> None:
    img = store_via_api(http, CT)
    posted = {"kind": "ellipse", "label": "tall", "image": _image(img),
              "points": [[30.0, 40.0], [50.0, 40.0], [40.0, 10.0], [40.0, 70.0]], "values": []}
    meta, _ = _save_and_read(http, img["study"], {"measurements": [posted]})
    (sr,) = run_reader([meta])
    assert_same(sr["measurements"], [{**posted, "points": [[40.0, 10.0], [40.0, 70.0], [30.0, 40.0],
                                                           [50.0, 40.0]]}])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    c = Dataset()
    c.CodeValue, c.CodingSchemeDesignator, c.CodeMeaning = value, scheme, meaning
    return c


def test_reads_the_dcmjs_variant_by_reference_and_statistics_as_concepts() -> None:
    """OHIF/dcmjs: the ellipse under the Area NUM, the other NUMs INFERRED FROM it by reference,
    Mean/Max as the NUMs' own concepts, SRT codes."""
    ct = pydicom.dcmread(CT, stop_before_pixels=True)
    img = ImageRef(ct.SOPInstanceUID, ct.SOPClassUID, ct.SeriesInstanceUID, rows=128, columns=128,
                   modality="CT")
    ds = measurement_report(ct, [Measurement("length", img, ((1.0, 2.0), (3.0, 4.0)),
                                             (Value("length", 2.8, "mm"),), "x")], author="a")
    group = ds.ContentSequence[5].ContentSequence[0]
    tracking = list(group.ContentSequence[:2])
    area = group.ContentSequence[2]
    area.ConceptNameCodeSequence = [_code("G-D7FE", "SRT", "AREA")]
    area.MeasuredValueSequence[0].MeasurementUnitsCodeSequence = [_code("mm2", "UCUM", "mm2")]
    del area.MeasuredValueSequence[0].FloatingPointValue
    area.MeasuredValueSequence[0].NumericValue = "12.5"
    scoord = area.ContentSequence[0]
    scoord.GraphicType = "ELLIPSE"
    scoord.GraphicData = [10.0, 20.0, 30.0, 20.0, 20.0, 15.0, 20.0, 25.0]
    stats = []
    for value, code, meaning, n in (("373098007", "SCT", "Mean", 40.0), ("G-A437", "SRT", "Maximum", 90.0)):
        num = Dataset()
        num.RelationshipType, num.ValueType = "CONTAINS", "NUM"
        num.ConceptNameCodeSequence = [_code(value, code, meaning)]
        mv = Dataset()
        mv.MeasurementUnitsCodeSequence = [_code("[hnsf'U]", "UCUM", "Hounsfield unit")]
        mv.NumericValue = str(n)
        num.MeasuredValueSequence = [mv]
        ref = Dataset()
        ref.RelationshipType = "INFERRED FROM"
        ref.ReferencedContentItemIdentifier = [1, 6, 1, 3, 1]  # root > measurements > group > area > scoord
        num.ContentSequence = [ref]
        stats.append(num)
    group.ContentSequence = [*tracking, area, *stats]
    del group.ContentTemplateSequence
    (sr,) = run_reader([ds.to_json_dict()])
    assert sr["report"] is True
    (m,) = sr["measurements"]
    assert m["kind"] == "ellipse" and m["label"] == "x"
    assert m["points"] == [[10.0, 20.0], [30.0, 20.0], [20.0, 15.0], [20.0, 25.0]]
    assert m["image"] == {"series": ct.SeriesInstanceUID, "instance": ct.SOPInstanceUID,
                          "sop_class": ct.SOPClassUID, "frame": 1}
    assert m["values"] == [{"name": "area", "value": 12.5, "unit": "mm2"},
                           {"name": "mean", "value": 40.0, "unit": "HU"},
                           {"name": "max", "value": 90.0, "unit": "HU"}]


def test_other_instances_are_not_reports() -> None:
    ct = pydicom.dcmread(CT, stop_before_pixels=True)
    img = ImageRef(ct.SOPInstanceUID, ct.SOPClassUID, ct.SeriesInstanceUID, rows=128, columns=128,
                   modality="CT")
    report = measurement_report(ct, [Measurement("length", img, ((1.0, 2.0), (3.0, 4.0)),
                                                 (Value("length", 2.8, "mm"),))], author="a")
    other_title = report.to_json_dict()
    other_title["0040A504"]["Value"][0]["0040DB00"]["Value"] = ["2000"]
    other_title["0040A043"]["Value"][0]["00080100"]["Value"] = ["11528-7"]
    results = run_reader([[ct.to_json_dict()], {}, [], other_title, [report.to_json_dict()]])
    assert [r["report"] for r in results] == [False, False, False, False, True]
    assert [len(r["measurements"]) for r in results] == [0, 0, 0, 0, 1]
