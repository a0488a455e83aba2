"""A whole STOW-RS request through stow.store_stream into a real engine (a scratch data
directory): the multipart reader, then each part identified (natively in memory, by pydicom for a
spooled part), checked against the study of the path and stored. The bodies are pydicom's test
files, so mutations reach the DICOM parsing of both.

Input: `<Content-Type>` LF `<body>`; a body whose first byte is odd is stored under
/studies/{the CT's study}. Allowed outcomes: a StowResult (any status: 200/202/409 with per-instance
failure reasons are answers), or RequestError and its subclasses (400/413/415). The data directory
is replaced every RESET inputs so it stays small."""

from __future__ import annotations

import asyncio
import atexit
import shutil
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

from dicomvault.engine import Engine
from dicomvault.errors import RequestError
from dicomvault.web.dicomweb.stow import StowResult, store_stream

from .corpus import CONTENT_TYPES, DICOM_FILES, dicom_file, multipart_body, split_request, stow_request

MAX_BODY = 1 << 20
RESET = 2000
CT_STUDY = "1.3.6.1.4.1.5962.1.2.1.20040119072730.12322"
_state: dict[str, object] = {"count": 0}


def seeds() -> Iterator[bytes]:
    small = [n for n in DICOM_FILES if n != "emri_small.dcm"]
    for ct in CONTENT_TYPES:
        yield stow_request(ct, multipart_body([("application/dicom", dicom_file(n)) for n in small[:2]]))
    for name in small:
        yield stow_request(CONTENT_TYPES[0], multipart_body([("application/dicom", dicom_file(name))]))
    yield stow_request(CONTENT_TYPES[0], multipart_body([("application/dicom", b"not dicom"),
                                                        ("image/jpeg", b"\xff\xd8\xff")]))


def _engine() -> Engine:
    eng = _state.get("engine")
    count = int(_state["count"])  # type: ignore[call-overload]
    if isinstance(eng, Engine) and count % RESET:
        _state["count"] = count + 1
        return eng
    if isinstance(eng, Engine):
        eng.close()
        shutil.rmtree(str(_state["root"]), ignore_errors=True)
    root = Path(tempfile.mkdtemp(prefix="fuzz-stow-store-"))
    eng = Engine(root / "data", min_free_bytes=0)
    _state.update(engine=eng, root=root, count=count + 1)
    if count == 0:
        atexit.register(_remove)
    return eng


def _remove() -> None:
    eng = _state.get("engine")
    if isinstance(eng, Engine):
        eng.close()
        shutil.rmtree(str(_state["root"]), ignore_errors=True)


async def _aiter(body: bytes) -> AsyncIterator[bytes]:
    step = 1 + len(body) // 3
    for i in range(0, len(body), step):
        yield body[i: i + step]


def one_input(data: bytes) -> None:
    content_type, body = split_request(data)
    eng = _engine()
    study = CT_STUDY if body[:1] and body[0] & 1 else None
    root = Path(str(_state["root"]))
    try:
        result = asyncio.run(store_stream(eng, _aiter(body), content_type, study_uid=study,
                                          base_url="http://fuzz", spool_dir=str(root),
                                          max_body=MAX_BODY, memory_part_limit=4096))
    except RequestError:
        return
    if not isinstance(result, StowResult) or result.status not in (200, 202, 409, 415):
        raise AssertionError(f"unexpected STOW result {result!r}")
    result.json_bytes()
    left = [p.name for p in root.iterdir() if p.name != "data"]
    if left:
        raise AssertionError(f"spool files left behind: {left}")
