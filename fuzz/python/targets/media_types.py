"""Accept and Content-Type headers (web/dicomweb/media.py): parsing, negotiation against every
offer list a DICOMweb resource makes, and what the negotiated offer means for stored objects
(the transfer syntax of an instance retrieve, the media type and syntax of frames); plus the
checks of a STOW-RS request type and its multipart boundary.

Input: `<Accept>` LF `<Content-Type>`. Allowed outcomes: a result, or RequestError (400) and its
NotAcceptableError (406) and UnsupportedMediaTypeError (415)."""

from __future__ import annotations

from collections.abc import Iterator

from dicomvault.errors import RequestError
from dicomvault.web.dicomweb import media
from dicomvault.web.dicomweb.multipart import multipart_boundary
from dicomvault.web.dicomweb.stow import check_request_type

from .corpus import CONTENT_TYPES

# Stored syntaxes: explicit/implicit LE, big endian, deflated, RLE, JPEG baseline, JPEG-LS, J2K.
STORED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2", "1.2.840.10008.1.2.2", "1.2.840.10008.1.2.1.99",
          "1.2.840.10008.1.2.5", "1.2.840.10008.1.2.4.50", "1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90")
OFFERS = (media.instance_offers(), media.bulk_offers(), media.json_offers(),
          [media.Offer("image/jpeg"), media.Offer("image/png")])
# What dicomweb-client, OHIF, Weasis and curl send (tests/web/test_media.py, test_dicomweb_e2e.py).
ACCEPTS = (
    "", "*/*", "*", "application/dicom+json, multipart/related; type=application/dicom",
    'multipart/related; type="application/dicom"; transfer-syntax=*',
    "multipart/related; type=application/octet-stream; transfer-syntax=*",
    'multipart/related; type="image/jls"; transfer-syntax=1.2.840.10008.1.2.4.80, '
    'multipart/related; type="application/octet-stream"; q=0.5',
    "image/jpeg;q=0.9, image/png, */*;q=0.1", "application/json; charset=utf-8",
    'multipart/related; type="image/x-dicom-rle"; transfer-syntax=1.2.840.10008.1.2.5; q=1; ext="a;b"',
    "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8",
)


def seeds() -> Iterator[bytes]:
    for i, accept in enumerate(ACCEPTS):
        ctype = CONTENT_TYPES[i % len(CONTENT_TYPES)]
        yield f"{accept}\n{ctype}".encode("latin-1")
    yield (b'application/dicom; transfer-syntax=1.2.840.10008.1.2\n'
           b'multipart/related; type="application/dicom+xml"')


def _negotiate(accept: str) -> None:
    for offers in OFFERS:
        try:
            offer = media.negotiate(accept, offers)
        except RequestError:
            continue
        if offer.type not in {o.type for o in offers}:
            raise AssertionError(f"negotiate({accept!r}) chose {offer!r}, not one of the offers")
        offer.header()
        for stored in STORED:
            try:
                if offers is OFFERS[0]:
                    media.instance_transfer_syntax(offer, stored)
                else:
                    media.frame_representation(offer, stored)
            except RequestError:
                pass


def one_input(data: bytes) -> None:
    accept, _, ctype = data.decode("latin-1").partition("\n")
    try:
        media.parse_accept(accept)
    except RequestError:
        pass
    _negotiate(accept)
    for check in (media.parse_content_type, check_request_type, multipart_boundary):
        try:
            check(ctype)
        except RequestError:
            pass
