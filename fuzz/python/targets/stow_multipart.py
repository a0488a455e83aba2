"""The STOW-RS multipart/related reader (web/dicomweb/multipart.py): a Content-Type header and a
body, handed over in chunks whose sizes come from the input itself (a delimiter may be split at
any byte), with a small in-memory limit so parts are also spooled to files.

Input: `<Content-Type>` LF `<body>`. Allowed outcomes: the parts, or RequestError (and its
UnsupportedMediaTypeError, PayloadTooLargeError: 400/415/413). Also checked: every spool file is
removed once the parts are discarded or the read fails."""

from __future__ import annotations

import asyncio
import atexit
import os
import shutil
import tempfile
import zlib
from collections.abc import AsyncIterator, Iterator

from dicomvault.errors import RequestError
from dicomvault.web.dicomweb.multipart import read_parts

from .corpus import CONTENT_TYPES, DICOM_FILES, dicom_file, multipart_body, split_request, stow_request

MAX_BODY = 1 << 20
_spool = tempfile.mkdtemp(prefix="fuzz-stow-multipart-")
atexit.register(shutil.rmtree, _spool, ignore_errors=True)


def seeds() -> Iterator[bytes]:
    files = [dicom_file(n, 4000) for n in DICOM_FILES[:4]]
    yield stow_request(CONTENT_TYPES[0], multipart_body([("application/dicom", files[0])]))
    yield stow_request(CONTENT_TYPES[1], multipart_body([("application/dicom", f) for f in files]))
    yield stow_request(CONTENT_TYPES[2], multipart_body([("application/dicom", files[2]),
                                                        ("application/dicom+json", b"[{}]")]))
    # preamble, transport padding, a part without Content-Type, an epilogue, obsolete folding
    yield stow_request(CONTENT_TYPES[0], b"preamble\r\n--fuzz-b0undary  \r\n\r\nDICM\r\n--fuzz-b0undary\r\n"
                       b"Content-Type: application/dicom;\r\n transfer-syntax=1.2.840.10008.1.2.1\r\n\r\nx"
                       b"\r\n--fuzz-b0undary--\r\nepilogue")


def _chunks(data: bytes) -> Iterator[bytes]:
    # Sizes derived from the input so a finding replays exactly.
    state = zlib.crc32(data) | 1
    i = 0
    while i < len(data):
        state = (state * 1103515245 + 12345) & 0x7FFFFFFF
        n = 1 + state % max(1, len(data) // 3)
        yield data[i: i + n]
        i += n


async def _aiter(data: bytes) -> AsyncIterator[bytes]:
    for chunk in _chunks(data):
        yield chunk


async def _read(content_type: str | None, body: bytes) -> None:
    limit = 64 if zlib.adler32(body) & 1 else MAX_BODY
    async for part in read_parts(_aiter(body), content_type, spool_dir=_spool, max_body=MAX_BODY,
                                 memory_part_limit=limit):
        if part.size != len(part.read()):
            raise AssertionError(f"part {part.index}: size {part.size} but {len(part.read())} bytes read")
        part.discard()


def one_input(data: bytes) -> None:
    content_type, body = split_request(data)
    try:
        asyncio.run(_read(content_type, body))
    except RequestError:
        pass
    left = os.listdir(_spool)
    if left:
        for name in left:
            os.unlink(os.path.join(_spool, name))
        raise AssertionError(f"spool files left behind: {left}")
