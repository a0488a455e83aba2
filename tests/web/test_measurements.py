"""POST /api/studies/{study}/measurements through the real app: the report is stored like a STOW
instance (QIDO finds its series, WADO-RS serves its metadata and the file), bad bodies are 400
with the index of the measurement at fault, an unknown study 404, a reader 403."""

from __future__ import annotations

from io import BytesIO
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.data import get_testdata_file

from dicomvault.site import Site
from dv_http import store_via_api

CT = Path(get_testdata_file("CT_small.dcm"))  # 128 x 128, study 1.3.6.1.4.1.5962.1.2.1.20040119072730.12322
MR = Path(get_testdata_file("MR_small.dcm"))  # another study




def _body(img: dict[str, str]) -> dict[str, Any]:
    image = {"series": img["series"], "instance": img["instance"], "sop_class": img["sop_class"], "frame": 1}
    return {"measurements": [
        {"kind": "length", "label": "Lesion A", "image": image, "points": [[10.5, 10.5], [50.25, 60.0]],
         "values": [{"name": "length", "value": 31.4159, "unit": "mm"}]},
        {"kind": "ellipse", "label": "Liver", "image": image,
         "points": [[20.0, 40.0], [60.0, 40.0], [40.0, 30.0], [40.0, 50.0]],
         "values": [{"name": "area", "value": 98.17, "unit": "mm2"},
                    {"name": "mean", "value": 35.25, "unit": "HU"},
                    {"name": "sd", "value": 12.5, "unit": "HU"}]},
    ]}


def _post(http: httpx.Client, study: str, body: Any, **kw: Any) -> httpx.Response:
    return http.post(f"/api/studies/{study}/measurements", json=body, **kw)


def _tag(obj: dict[str, Any], tag: str) -> Any:
    return obj[tag]["Value"][0]


def test_post_stores_an_sr_that_qido_and_wado_find(site: Site, http: httpx.Client) -> None:
    img = store_via_api(http, CT)
    r = _post(http, img["study"], _body(img))
    assert r.status_code == 201, r.text
    out = r.json()
    assert set(out) == {"study", "series", "instance", "retrieve_url"}
    assert out["study"] == img["study"] and out["series"] != img["series"]
    assert out["retrieve_url"] == (f"{site.url}/dicom-web/studies/{img['study']}/series/{out['series']}"
                                   f"/instances/{out['instance']}")
    assert r.headers["location"] == out["retrieve_url"]

    # QIDO-RS: the SR series is in the study, numbered 9000, described
    r = http.get(f"/dicom-web/studies/{img['study']}/series", params={"Modality": "SR"})
    assert r.status_code == 200, r.text
    (series,) = r.json()
    assert _tag(series, "0020000E") == out["series"]
    assert _tag(series, "00200011") == 9000
    assert _tag(series, "0008103E") == "dicomvault measurements"
    r = http.get("/dicom-web/instances", params={"SOPInstanceUID": out["instance"]})
    assert [_tag(x, "00080016") for x in r.json()] == ["1.2.840.10008.5.1.4.1.1.88.33"]

    # WADO-RS metadata: the content tree, the observer (anonymous here), the evidence
    r = http.get(out["retrieve_url"] + "/metadata")
    assert r.status_code == 200, r.text
    (meta,) = r.json()
    assert _tag(meta, "00080060") == "SR"
    assert _tag(meta, "0040A504")["0040DB00"]["Value"] == ["1500"]
    root = meta["0040A730"]["Value"]
    observer = next(x for x in root if x["0040A040"]["Value"] == ["PNAME"])
    assert observer["0040A123"]["Value"] == [{"Alphabetic": "anonymous"}]
    measurements = next(x for x in root if _tag(x, "0040A043")["00080100"]["Value"] == ["126010"])
    groups = measurements["0040A730"]["Value"]
    assert len(groups) == 2
    labels = [_tag(next(c for c in g["0040A730"]["Value"] if c["0040A040"]["Value"] == ["TEXT"]), "0040A160")
              for g in groups]
    assert labels == ["Lesion A", "Liver"]
    evidence = _tag(meta, "0040A375")
    assert _tag(evidence, "0020000D") == img["study"]
    assert _tag(_tag(_tag(evidence, "00081115"), "00081199"), "00081155") == img["instance"]

    # the stored object is the SR, patient and study copied from the image
    r = http.get(out["retrieve_url"], headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                         "transfer-syntax=*"})
    assert r.status_code == 200
    body = r.content
    start = body.index(b"DICM") - 128
    ds = pydicom.dcmread(BytesIO(body[start:]))
    assert ds.PatientName == "CompressedSamples^CT1" and ds.StudyInstanceUID == img["study"]
    assert ds.SeriesNumber == 9000

    # a second save: its own series, numbered after the first
    r = _post(http, img["study"], _body(img))
    assert r.status_code == 201, r.text
    numbers = sorted(_tag(s, "00200011") for s in
                     http.get(f"/dicom-web/studies/{img['study']}/series", params={"Modality": "SR"}).json())
    assert numbers == [9000, 9001]


def _error(r: httpx.Response) -> dict[str, Any]:
    assert r.status_code == 400, r.text
    err = r.json()
    assert set(err) == {"error", "index"}
    return err


def test_bad_bodies_are_400_with_the_index(http: httpx.Client) -> None:
    img = store_via_api(http, CT)
    other = store_via_api(http, MR)
    study = img["study"]

    def with_second(change: dict[str, Any]) -> dict[str, Any]:
        body = _body(img)
        body["measurements"][1].update(change)
        return body

    err = _error(_post(http, study, with_second({"kind": "polygon"})))
    assert err["index"] == 1 and "polygon" in err["error"]
    err = _error(_post(http, study, with_second({"points": [[1, 1], [2, 2], [3, 3]]})))
    assert err["index"] == 1 and "4 points" in err["error"]
    err = _error(_post(http, study, with_second({"points": [[20.0, 40.0], [600.0, 40.0], [40.0, 30.0],
                                                            [40.0, 50.0]]})))
    assert err["index"] == 1 and "outside the image" in err["error"]
    err = _error(_post(http, study, with_second({"values": [{"name": "area", "value": 1, "unit": "cm2"}]})))
    assert err["index"] == 1 and "mm2" in err["error"]
    err = _error(_post(http, study, with_second({"values": [{"name": "area", "value": "big",
                                                              "unit": "mm2"}]})))
    assert err["index"] == 1 and "number" in err["error"]
    err = _error(_post(http, study, with_second({"colour": "red"})))
    assert err["index"] == 1 and "colour" in err["error"]
    # an instance of another study, a wrong series, a wrong SOP class, an unknown instance
    foreign = {"series": other["series"], "instance": other["instance"], "sop_class": other["sop_class"]}
    err = _error(_post(http, study, with_second({"image": foreign})))
    assert err["index"] == 1 and "not in study" in err["error"]
    err = _error(_post(http, study, with_second({"image": {**_body(img)["measurements"][0]["image"],
                                                           "series": other["series"]}})))
    assert err["index"] == 1 and "series" in err["error"]
    err = _error(_post(http, study, with_second({"image": {**_body(img)["measurements"][0]["image"],
                                                           "sop_class": "1.2.3"}})))
    assert err["index"] == 1 and "SOP class" in err["error"]
    err = _error(_post(http, study, with_second({"image": {**_body(img)["measurements"][0]["image"],
                                                           "frame": 2}})))
    assert err["index"] == 1 and "frame" in err["error"]
    err = _error(_post(http, study, with_second({"image": {**_body(img)["measurements"][0]["image"],
                                                           "instance": "1.2.3.4"}})))
    assert err["index"] == 1
    # the body as a whole
    for body in ({}, {"measurements": []}, {"measurements": {}}, {"measurements": [1], "extra": 1}):
        err = _error(_post(http, study, body))
        assert err["index"] is None, body
    err = _error(_post(http, study, {"measurements": [1]}))
    assert err["index"] == 0
    r = http.post(f"/api/studies/{study}/measurements", content=b"{not json")
    assert r.status_code == 400 and "JSON" in r.text
    # nothing was stored by any of these
    assert http.get(f"/dicom-web/studies/{study}/series", params={"Modality": "SR"}).json() == []


def test_unknown_study_is_404(http: httpx.Client) -> None:
    img = store_via_api(http, CT)
    r = _post(http, "1.2.3.4.5", _body(img))
    assert r.status_code == 404 and "1.2.3.4.5" in r.text
    assert _post(http, "../etc", _body(img)).status_code in (400, 404)


def test_roles_reader_403_writer_is_the_observer(site: Site, http: httpx.Client) -> None:
    img = store_via_api(http, CT)
    site.users.add("rita", "reader")
    site.users.add("dr.wu", "writer")
    reader = {"Authorization": f"Bearer {site.users.issue_token('rita')}"}
    writer = {"Authorization": f"Bearer {site.users.issue_token('dr.wu')}"}
    assert _post(http, img["study"], _body(img)).status_code == 401
    r = _post(http, img["study"], _body(img), headers=reader)
    assert r.status_code == 403 and "rita" in r.text
    r = _post(http, img["study"], _body(img), headers=writer)
    assert r.status_code == 201, r.text
    (meta,) = http.get(r.json()["retrieve_url"] + "/metadata", headers=reader).json()
    observer = next(x for x in meta["0040A730"]["Value"] if x["0040A040"]["Value"] == ["PNAME"])
    assert observer["0040A123"]["Value"] == [{"Alphabetic": "dr.wu"}]


@pytest.mark.parametrize("frame", [1, 4])
def test_multiframe_image_frame_reference(http: httpx.Client, frame: int) -> None:
    img = store_via_api(http, Path(get_testdata_file("emri_small.dcm")))
    body = {"measurements": [{"kind": "angle", "image": {"series": img["series"], "instance": img["instance"],
                                                          "frame": frame},
                              "points": [[5, 5], [32, 32], [60, 5]],
                              "values": [{"name": "angle", "value": 88.5, "unit": "deg"}]}]}
    r = _post(http, img["study"], body)
    assert r.status_code == 201, r.text
    (meta,) = http.get(r.json()["retrieve_url"] + "/metadata").json()
    text = str(meta)
    assert f"'00081160': {{'vr': 'IS', 'Value': [{frame}]}}" in text


def test_a_replica_refuses_with_409(site: Site, http: httpx.Client) -> None:
    from dicomvault.replication import state

    img = store_via_api(http, CT)
    state.set_role(site.engine.index, state.REPLICA)
    r = _post(http, img["study"], _body(img))
    assert r.status_code == 409 and "replica" in r.text
    state.set_role(site.engine.index, state.PRIMARY)
    assert _post(http, img["study"], _body(img)).status_code == 201
