"""DICOMweb end to end, as real clients call it: dicomweb-client (STOW, QIDO, WADO, metadata,
frames, bulk data, rendered) and raw HTTP for what clients send that the library does not (OHIF's
hex-tag queries, quoted Accept parameters, Range, X-Forwarded-*), and every kind of bad input
answered with its status code while the server keeps serving."""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pydicom
import pytest
from dicomweb_client.api import DICOMwebClient
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.encaps import generate_frames

from dicomvault.engine import Engine
from dicomvault.site import Site, SiteOptions

FILES = ["CT_small.dcm", "MR_small.dcm", "emri_small.dcm", "JPEG2000.dcm", "SC_rgb_rle_2frame.dcm",
         "US1_J2KR.dcm", "rtplan.dcm", "chrH31.dcm"]
BOUNDARY = "dicomvault-test-boundary"


def _path(name: str) -> Path:
    if name.startswith("chr"):
        import pydicom.data

        return Path(pydicom.data.__file__).parent / "charset_files" / name
    return Path(get_testdata_file(name))


def _multipart(bodies: list[bytes], ctype: str = "application/dicom") -> bytes:
    out = b""
    for b in bodies:
        out += f"--{BOUNDARY}\r\nContent-Type: {ctype}\r\n\r\n".encode() + b + b"\r\n"
    return out + f"--{BOUNDARY}--\r\n".encode()


STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Site, DICOMwebClient]]:
    data = tmp_path_factory.mktemp("dw") / "data"
    with Engine(data, min_free_bytes=0) as eng:
        site = Site(eng, SiteOptions(port=0))
        site.start()
        try:
            client = DICOMwebClient(url=site.url + "/dicom-web")
            sops = [pydicom.dcmread(_path(f), stop_before_pixels=True).SOPInstanceUID for f in FILES]
            assert len(set(sops)) == len(FILES), "two test files share a SOP Instance UID"
            # Raw Part-10 bytes through STOW-RS (dicomweb-client would re-encode them).
            body = _multipart([_path(f).read_bytes() for f in FILES])
            r = httpx.post(site.url + "/dicom-web/studies", content=body,
                           headers={"Content-Type": STOW_TYPE}, timeout=60)
            assert r.status_code == 200, r.text
            yield site, client
        finally:
            site.stop()


def test_stow_response_and_bit_exact_retrieve(loaded: tuple[Site, DICOMwebClient]) -> None:
    site, client = loaded
    for name in FILES:
        ds = pydicom.dcmread(_path(name), stop_before_pixels=True)
        r = httpx.get(f"{site.url}/dicom-web/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}"
                      f"/instances/{ds.SOPInstanceUID}",
                      headers={"Accept": 'multipart/related; type="application/dicom"; transfer-syntax=*'})
        assert r.status_code == 200, (name, r.text)
        parts = _split(r)
        assert len(parts) == 1
        ctype, body = parts[0]
        assert f"transfer-syntax={ds.file_meta.TransferSyntaxUID}" in ctype
        assert body == _path(name).read_bytes(), f"{name} did not come back byte-identical"


def _split(r: httpx.Response) -> list[tuple[str, bytes]]:
    import email.parser
    import email.policy

    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + r.headers["content-type"].encode() + b"\r\n\r\n" + r.content)
    # (media type, its transfer-syntax parameter, body) of each part
    return [(p.get_content_type() + "; transfer-syntax=" + str(p.get_param("transfer-syntax")),
             p.get_payload(decode=True)) for p in msg.iter_parts()]


def test_dicomweb_client_store_query_retrieve(loaded: tuple[Site, DICOMwebClient]) -> None:
    site, client = loaded
    ct = pydicom.dcmread(_path("CT_small.dcm"))
    studies = client.search_for_studies(search_filters={"PatientID": ct.PatientID})
    assert [s["0020000D"]["Value"][0] for s in studies] == [ct.StudyInstanceUID]
    # the same study by name (wildcard, fuzzy) and by a date range
    name = str(ct.PatientName).split("^")[0]
    assert any(s["0020000D"]["Value"][0] == ct.StudyInstanceUID
               for s in client.search_for_studies(search_filters={"PatientName": name[:3] + "*"}))
    fuzzy = client.search_for_studies(fuzzymatching=True, search_filters={"PatientName": name[:3].lower()})
    assert ct.StudyInstanceUID in [s["0020000D"]["Value"][0] for s in fuzzy]
    d = ct.StudyDate
    ranged = client.search_for_studies(search_filters={"StudyDate": f"{d}-{d}"})
    assert ct.StudyInstanceUID in [s["0020000D"]["Value"][0] for s in ranged]
    # a dataset a client stored itself comes back through WADO-RS
    ds = client.retrieve_instance(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID,
                                  media_types=(("application/dicom", "*"),))
    assert ds.SOPInstanceUID == ct.SOPInstanceUID and ds.pixel_array.shape == ct.pixel_array.shape
    assert (ds.pixel_array == ct.pixel_array).all()
    # computed attributes
    found = client.search_for_studies(search_filters={"StudyInstanceUID": ct.StudyInstanceUID},
                                      fields=["ModalitiesInStudy", "NumberOfStudyRelatedInstances"])
    assert len(found) == 1, found
    study = found[0]
    same_study = [f for f in FILES if pydicom.dcmread(_path(f), stop_before_pixels=True).StudyInstanceUID
                  == ct.StudyInstanceUID]
    assert study["00201208"]["Value"] == [len(same_study)]
    assert "CT" in study["00080061"]["Value"]


def test_metadata_matches_pydicom(loaded: tuple[Site, DICOMwebClient]) -> None:
    site, client = loaded
    for name in ("CT_small.dcm", "chrH31.dcm", "rtplan.dcm"):
        ds = pydicom.dcmread(_path(name))
        meta = client.retrieve_instance_metadata(ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.SOPInstanceUID)
        ref = ds.to_json_dict(bulk_data_threshold=1024, bulk_data_element_handler=lambda e: "bulk")
        for tag, value in ref.items():
            if "BulkDataURI" in value or "InlineBinary" in value:
                continue
            # PS3.18 F.2.5: an empty value inside a multi-valued element is null (pydicom writes "")
            want = [None if v == "" else v for v in value.get("Value", [])] or None
            assert meta[tag].get("Value") == want, (name, tag)
        if "PixelData" in ds:
            uri = meta["7FE00010"]["BulkDataURI"]
            assert uri.startswith(site.url + "/dicom-web/studies/")
            (bulk,) = client.retrieve_bulkdata(uri, media_types=(("application/octet-stream", "*"),))
            assert bulk == ds.PixelData


def test_frames_of_multiframe_objects(loaded: tuple[Site, DICOMwebClient]) -> None:
    site, client = loaded
    native = pydicom.dcmread(_path("emri_small.dcm"))
    n = int(native.NumberOfFrames)
    size = native.Rows * native.Columns * native.BitsAllocated // 8
    frames = client.retrieve_instance_frames(native.StudyInstanceUID, native.SeriesInstanceUID,
                                             native.SOPInstanceUID, [1, n],
                                             media_types=(("application/octet-stream", "*"),))
    assert frames == [native.PixelData[:size], native.PixelData[(n - 1) * size:]]
    rle = pydicom.dcmread(_path("SC_rgb_rle_2frame.dcm"))
    expected = list(generate_frames(rle.PixelData, number_of_frames=2))
    r = httpx.get(f"{site.url}/dicom-web/studies/{rle.StudyInstanceUID}/series/{rle.SeriesInstanceUID}"
                  f"/instances/{rle.SOPInstanceUID}/frames/2",
                  headers={"Accept": "multipart/related; type=application/octet-stream; transfer-syntax=*"})
    ((ctype, body),) = _split(r)
    assert "transfer-syntax=1.2.840.10008.1.2.5" in ctype and body == expected[1]
    # the same frame decoded for a client that takes native pixels only
    r = httpx.get(r.request.url, headers={"Accept": 'multipart/related; type="application/octet-stream"'})
    ((ctype, body),) = _split(r)
    assert "1.2.840.10008.1.2.1" in ctype
    assert body == rle.pixel_array[1].tobytes()
    # A few frames (what a viewer asks, hundreds of times per series) come with a Content-Length,
    # which costs a browser less than a chunked stream.
    assert r.headers["content-length"] == str(len(r.content)) and "transfer-encoding" not in r.headers


def test_rendered_and_thumbnail(loaded: tuple[Site, DICOMwebClient]) -> None:
    site, client = loaded
    ct = pydicom.dcmread(_path("CT_small.dcm"))
    jpeg = client.retrieve_instance_rendered(ct.StudyInstanceUID, ct.SeriesInstanceUID, ct.SOPInstanceUID,
                                             params={"window": "40,400,LINEAR", "viewport": "64,64"})
    img = Image.open(io.BytesIO(jpeg))
    assert img.format == "JPEG" and img.size == (64, 64)
    url = f"{site.url}/dicom-web/studies/{ct.StudyInstanceUID}/thumbnail"
    r = httpx.get(url, headers={"Accept": "image/png"})
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).format == "PNG"
    wado = {"requestType": "WADO", "studyUID": ct.StudyInstanceUID, "seriesUID": ct.SeriesInstanceUID,
            "objectUID": ct.SOPInstanceUID}
    r = httpx.get(f"{site.url}/wado", params={**wado, "contentType": "application/dicom"})
    assert r.content == _path("CT_small.dcm").read_bytes()
    params = {**wado, "rows": "32", "windowCenter": "40", "windowWidth": "400"}
    r = httpx.get(f"{site.url}/wado", params=params)
    assert r.headers["content-type"] == "image/jpeg" and Image.open(io.BytesIO(r.content)).size[1] == 32


def test_ohif_style_requests(loaded: tuple[Site, DICOMwebClient]) -> None:
    site, _ = loaded
    ct = pydicom.dcmread(_path("CT_small.dcm"), stop_before_pixels=True)
    mr = pydicom.dcmread(_path("MR_small.dcm"), stop_before_pixels=True)
    base = site.url + "/dicom-web"
    # hex tags, a backslash UID list, fuzzymatching always present, includefield lists
    r = httpx.get(base + "/studies", params={"0020000D": f"{ct.StudyInstanceUID}\\{mr.StudyInstanceUID}",
                                             "fuzzymatching": "false", "includefield": "00081030,00080060",
                                             "limit": "101", "offset": "0"},
                  headers={"Accept": "application/dicom+json, multipart/related; type=application/dicom"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/dicom+json")
    assert {s["0020000D"]["Value"][0] for s in r.json()} == {ct.StudyInstanceUID, mr.StudyInstanceUID}
    # limit cut: the Warning header says there is more
    r = httpx.get(base + "/instances", params={"limit": "2"})
    assert len(r.json()) == 2
    # metadata behind a reverse proxy: BulkDataURIs use the forwarded scheme, host and prefix.
    # Proxied requests are never anonymous (the proxy connects from loopback for everyone).
    proxied = {"X-Forwarded-Proto": "https", "X-Forwarded-Host": "pacs.example.org",
               "X-Forwarded-Prefix": "/archive"}
    assert httpx.get(f"{base}/studies/{ct.StudyInstanceUID}/metadata", headers=proxied).status_code == 401
    r = httpx.get(f"{base}/studies/{ct.StudyInstanceUID}/metadata",
                  headers={**proxied, "Authorization": f"Bearer {site.admin_token}"})
    (meta,) = r.json()
    assert meta["7FE00010"]["BulkDataURI"].startswith("https://pacs.example.org/archive/dicom-web/studies/")
    # Range on bulk data
    uri = f"{base}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/" \
          f"{ct.SOPInstanceUID}/bulkdata/7FE00010"
    full = pydicom.dcmread(_path("CT_small.dcm")).PixelData
    r = httpx.get(uri, headers={"Accept": "application/octet-stream", "Range": "bytes=10-19"})
    assert r.status_code == 206 and r.content == full[10:20]
    assert r.headers["content-range"] == f"bytes 10-19/{len(full)}"


def test_bad_input_gets_the_right_status(loaded: tuple[Site, DICOMwebClient]) -> None:
    site, _ = loaded
    base = site.url + "/dicom-web"
    ct = pydicom.dcmread(_path("CT_small.dcm"), stop_before_pixels=True)
    cases = [
        # malformed multipart
        (httpx.post(base + "/studies", content=b"--nope\r\n garbage",
                    headers={"Content-Type": STOW_TYPE}), 400),
        # wrong media type
        (httpx.post(base + "/studies", content=b"{}", headers={"Content-Type": "application/json"}), 415),
        # unknown UID
        (httpx.get(base + "/studies/1.2.3.999/metadata"), 404),
        # bad query parameter
        (httpx.get(base + "/studies", params={"limit": "-1"}), 400),
        (httpx.get(base + "/studies", params={"NoSuchAttribute": "1"}), 400),
        (httpx.get(base + "/studies", params={"StudyDate": "2020-13-45"}), 400),
        # path traversal and non-UID segments
        (httpx.get(base + "/studies/..%2F..%2Fetc%2Fpasswd/metadata"), 404),
        (httpx.get(base + "/studies/1.2.3;rm/metadata"), 400),
        (httpx.get(f"{base}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/"
                   f"{ct.SOPInstanceUID}/frames/0"), 400),
        (httpx.get(f"{base}/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/instances/"
                   f"{ct.SOPInstanceUID}/frames/2"), 400),
        # Accept nobody can satisfy
        (httpx.get(f"{base}/studies/{ct.StudyInstanceUID}/metadata",
                   headers={"Accept": "multipart/related; type=application/dicom+xml"}), 406),
        # a series that is not of the study the path names
        (httpx.get(f"{base}/studies/1.2.3/series/{ct.SeriesInstanceUID}"), 404),
        # a WADO-URI transferSyntax that is not a UID: it was encoded as ASCII into the file meta,
        # a 500 (found by fuzz/python/targets/http_read.py; the exact input is in its regressions)
        (httpx.get(f"{site.url}/wado?requestType=WADO&studyUID={ct.StudyInstanceUID}&seriesUID="
                   f"{ct.SeriesInstanceUID}&objectUID={ct.SOPInstanceUID}&contentType=application/dicom"
                   "&transferSyntax=1.2.840.10008.1.2.%FF"), 400),
    ]
    for resp, code in cases:
        assert resp.status_code == code, (resp.request.url, resp.status_code, resp.text)
        assert "Traceback" not in resp.text and "Error:" not in resp.text
    # a part of another study than the path names: 409, and nothing stored
    mr = _path("MR_small.dcm").read_bytes()
    r = httpx.post(f"{base}/studies/1.2.3.4", content=_multipart([mr]), headers={"Content-Type": STOW_TYPE})
    assert r.status_code == 409
    failed = r.json()["00081198"]["Value"][0]
    assert failed["00081197"]["Value"] == [0xC122]
    assert httpx.get(base + "/studies").status_code == 200  # still serving


def test_body_over_the_cap_is_413_and_roles_apply(tmp_path: Path) -> None:
    with Engine(tmp_path / "d") as eng:
        site = Site(eng, SiteOptions(port=0, max_body=64 << 10))
        site.start()
        try:
            base = site.url + "/dicom-web"
            big = _multipart([_path("MR_small.dcm").read_bytes()] * 8)
            r = httpx.post(base + "/studies", content=big, headers={"Content-Type": STOW_TYPE})
            assert r.status_code == 413
            site.users.add("reader", "reader")
            tok = site.users.issue_token("reader")
            assert httpx.get(base + "/studies").status_code == 401
            auth = {"Authorization": f"Bearer {tok}"}
            assert httpx.get(base + "/studies", headers=auth).status_code == 200
            r = httpx.post(base + "/studies", content=_multipart([_path("CT_small.dcm").read_bytes()]),
                           headers={**auth, "Content-Type": STOW_TYPE})
            assert r.status_code == 403
            assert eng.stats()["objects"] == 0
        finally:
            site.stop()


def test_full_disk_is_a700_and_507_never_400(small_fs: Callable[[int], Path]) -> None:
    from dicomvault.bench.synth import SeriesSpec, ct_series

    mnt = small_fs(24)
    files = list(ct_series(SeriesSpec(slices=60, rows=256, columns=256, seed=3)))
    # The reserve keeps room for the index to commit what the blob store took; the index's own
    # ENOSPC is a storage-full error too (index/errors.py IndexFullError).
    with Engine(mnt / "data", min_free_bytes=2 << 20, volume_size=4 << 20) as eng:
        site = Site(eng, SiteOptions(port=0))
        site.start()
        try:
            base = site.url
            assert httpx.post(base + "/dicom-web/studies", content=_multipart(files[:1]),
                              headers={"Content-Type": STOW_TYPE}).status_code == 200
            st = os.statvfs(mnt)
            (mnt / "filler").write_bytes(b"\0" * (st.f_bavail * st.f_frsize - (3 << 20)))
            acked, refused = 1, None
            for f in files[1:-1]:
                r = httpx.post(base + "/dicom-web/studies", content=_multipart([f]),
                               headers={"Content-Type": STOW_TYPE})
                if r.status_code != 200:
                    refused = r
                    break
                acked += 1
            assert refused is not None, "the disk never filled: the test proved nothing"
            assert refused.status_code == 507, refused.text
            reasons = {f["00081197"]["Value"][0] for f in refused.json()["00081198"]["Value"]}
            assert reasons == {0xA700}
            r = httpx.post(base + "/api/instances", content=files[-1])
            assert r.status_code == 507, r.text
            # what was acknowledged is still there and the server still answers
            assert len(httpx.get(base + "/dicom-web/instances").json()) == acked
            assert eng.verify().clean
        finally:
            site.stop()


def test_study_retrieve_that_leaves_instances_out_is_206(tmp_path: Path) -> None:
    """A study whose compressed object cannot become RLE losslessly: the native one comes back
    as RLE, the other is left out, and the response says so (206 + Warning), not a silent 200."""
    ct = pydicom.dcmread(_path("CT_small.dcm"))
    j2k = pydicom.dcmread(_path("JPEG2000.dcm"))
    j2k.StudyInstanceUID = ct.StudyInstanceUID
    buf = io.BytesIO()
    j2k.save_as(buf, enforce_file_format=True)
    with Engine(tmp_path / "d") as eng:
        eng.store_buffers([_path("CT_small.dcm").read_bytes(), buf.getvalue()])
        site = Site(eng, SiteOptions(port=0))
        site.start()
        try:
            r = httpx.get(f"{site.url}/dicom-web/studies/{ct.StudyInstanceUID}",
                          headers={"Accept": 'multipart/related; type="application/dicom"; '
                                             "transfer-syntax=1.2.840.10008.1.2.5"})
            assert r.status_code == 206, r.text
            assert "left out" in r.headers["warning"]
            ((ctype, body),) = _split(r)
            assert "1.2.840.10008.1.2.5" in ctype
            got = pydicom.dcmread(io.BytesIO(body))
            assert got.SOPInstanceUID == ct.SOPInstanceUID
            assert (got.pixel_array == ct.pixel_array).all()
        finally:
            site.stop()
