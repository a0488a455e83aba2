"""Every read an HTTP client can make of the archive's one ASGI app (web/app.py), driven through
the ASGI interface in this process: DICOMweb QIDO-RS, WADO-RS (instances, metadata, frames, bulk
data, rendered, thumbnails), WADO-URI, the JSON API, with the request's Accept, Range and
Authorization headers. So the path and query parsing of each route (UIDs, frame lists, bulk data
paths, window/viewport/quality parameters, WADO-URI's parameters) and the header parsing
(media negotiation, byte ranges, Basic/Bearer credentials) all see the same hostile input.

Input: the request target (`/path?query`, ASCII as HTTP/1.1 carries it) on the first line, then
`Name: value` header lines. Allowed outcomes: any response below 500 (400, 401, 404, 406...
carry the archive's typed errors); a 500 or an exception out of the app (a streamed body that
fails half way) is a finding."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any
from urllib.parse import unquote

import pydicom

from dicomvault.site import Site
from dicomvault.site_args import SiteOptions

from .archive import archive
from .corpus import dicom_file

_app: dict[str, Any] = {}
MAX_HEADERS = 16


def _uids(name: str) -> tuple[str, str, str]:
    ds = pydicom.dcmread(pydicom.filebase.DicomBytesIO(dicom_file(name)), stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), str(ds.SOPInstanceUID)


def seeds() -> Iterator[bytes]:
    ct, rle, mr = _uids("CT_small.dcm"), _uids("SC_rgb_rle_2frame.dcm"), _uids("emri_small.dcm")
    dw = "/dicom-web"
    requests = [
        (f"{dw}/studies?PatientID=*&limit=2&includefield=all", "Accept: application/dicom+json"),
        (f"{dw}/studies/{ct[0]}/series?Modality=CT", ""),
        (f"{dw}/instances?limit=2&offset=1&accept=application/json", ""),
        (f"{dw}/studies/{ct[0]}", 'Accept: multipart/related; type="application/dicom"; transfer-syntax=*'),
        (f"{dw}/studies/{ct[0]}/series/{ct[1]}/instances/{ct[2]}", "Accept: multipart/related; "
         "type=application/dicom; transfer-syntax=1.2.840.10008.1.2.4.80"),
        (f"{dw}/studies/{ct[0]}/metadata", ""),
        (f"{dw}/studies/{ct[0]}/series/{ct[1]}/instances/{ct[2]}/metadata", "Accept: application/json"),
        (f"{dw}/studies/{rle[0]}/series/{rle[1]}/instances/{rle[2]}/frames/2",
         "Accept: multipart/related; type=application/octet-stream; transfer-syntax=*"),
        (f"{dw}/studies/{mr[0]}/series/{mr[1]}/instances/{mr[2]}/frames/1,3,10",
         'Accept: multipart/related; type="application/octet-stream"'),
        (f"{dw}/studies/{ct[0]}/series/{ct[1]}/instances/{ct[2]}/bulkdata/7FE00010", "Range: bytes=0-99"),
        (f"{dw}/studies/{ct[0]}/series/{ct[1]}/instances/{ct[2]}/bulkdata/00082112/0/00081150", ""),
        (f"{dw}/studies/{ct[0]}/series/{ct[1]}/instances/{ct[2]}/rendered?window=40,400,LINEAR&viewport=64,64",
         "Accept: image/png"),
        (f"{dw}/studies/{mr[0]}/series/{mr[1]}/instances/{mr[2]}/frames/2/rendered?quality=50", ""),
        (f"{dw}/studies/{ct[0]}/thumbnail", "Accept: image/png"),
        (f"/wado?requestType=WADO&studyUID={ct[0]}&seriesUID={ct[1]}&objectUID={ct[2]}"
         "&contentType=application/dicom", ""),
        (f"/wado?requestType=WADO&studyUID={ct[0]}&seriesUID={ct[1]}&objectUID={ct[2]}"
         "&rows=32&windowCenter=40&windowWidth=400&imageQuality=80&frameNumber=1", ""),
        (f"/wado?requestType=WADO&studyUID={mr[0]}&seriesUID={mr[1]}&objectUID={mr[2]}"
         "&contentType=image/png,application/dicom&transferSyntax=1.2.840.10008.1.2.5", ""),
        (f"/api/studies/{ct[0]}", "Authorization: Basic YWRtaW46c2VjcmV0"),
        ("/api/studies?limit=5", "Authorization: Bearer not-a-token"),
        ("/api/stats", ""),
    ]
    for target, header in requests:
        yield f"{target}\n{header}".encode("latin-1")


def _app_of() -> Any:
    if "app" not in _app:
        site = Site(archive(), SiteOptions(port=0))
        _app.update(site=site, app=site.app, loop=asyncio.new_event_loop())
    return _app["app"]


def _scope(data: bytes) -> dict[str, Any] | None:
    lines = data.split(b"\n")
    target = lines[0].strip()
    if not target.startswith(b"/") or any(b < 0x21 or b > 0x7E for b in target):
        return None  # not a request target an HTTP/1.1 server would hand to the app
    raw_path, _, query = target.partition(b"?")
    headers = [(b"host", b"127.0.0.1:8080")]  # a direct local caller: anonymous reads allowed
    for line in lines[1: 1 + MAX_HEADERS]:
        name, colon, value = line.rstrip(b"\r").partition(b":")
        value = value.strip(b" \t")
        if not colon or not name or any(b <= 0x20 or b >= 0x7F or b == 0x3A for b in name):
            continue  # h11 refuses such lines before the app sees them
        if any((b < 0x20 and b != 0x09) or b == 0x7F for b in value):
            continue
        headers.append((name.lower(), value))
    return {
        "type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
        "method": "GET", "scheme": "http", "path": unquote(raw_path.decode("ascii")), "raw_path": raw_path,
        "query_string": query, "root_path": "", "headers": headers,
        "client": ("127.0.0.1", 40000), "server": ("127.0.0.1", 8080),
    }


async def _call(app: Any, scope: dict[str, Any]) -> tuple[int, int]:
    status: list[int] = []
    size = 0
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await asyncio.sleep(3600)  # the client stays connected until the response is done
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        nonlocal size
        if message["type"] == "http.response.start":
            status.append(message["status"])
        elif message["type"] == "http.response.body":
            size += len(message.get("body", b""))

    await app(scope, receive, send)
    if not status:
        raise AssertionError("the app returned without a response")
    return status[0], size


def one_input(data: bytes) -> None:
    app = _app_of()
    scope = _scope(data)
    if scope is None:
        return
    status, _ = _app["loop"].run_until_complete(_call(app, scope))
    if status >= 500:
        raise AssertionError(f"GET {scope['raw_path']!r}?{scope['query_string']!r} answered {status}")
