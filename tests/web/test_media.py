"""Content-Type / Accept parsing and negotiation against what real DICOMweb clients send
(dicomweb-client, OHIF, Cornerstone, curl), with the stdlib `email` header parser as the
independent reference for parameter parsing."""

from __future__ import annotations

from email.message import Message

import pytest

from dicomvault.errors import NotAcceptableError, RequestError
from dicomvault.web.dicomweb.media import (
    DICOM_JSON,
    EXPLICIT_VR_LE,
    MULTIPART_RELATED,
    Offer,
    bulk_offers,
    effective_accept,
    format_media_type,
    frame_representation,
    instance_offers,
    instance_transfer_syntax,
    json_offers,
    negotiate,
    parse_accept,
    parse_content_type,
)

JLS = "1.2.840.10008.1.2.4.80"
J2K = "1.2.840.10008.1.2.4.90"
JPEG_LOSSLESS = "1.2.840.10008.1.2.4.70"

CONTENT_TYPES = [
    'multipart/related; type="application/dicom"; boundary=abc123',
    "multipart/related; type=application/dicom; boundary=abc123",
    'Multipart/Related; Type="application/dicom"; Boundary="a b:c"',
    'multipart/related;type="application/dicom";transfer-syntax=*;boundary="----=_Part_0_1"',
    'multipart/related; boundary="quoted;semi,comma"; type="application/dicom"',
    'application/dicom; transfer-syntax="1.2.840.10008.1.2.4.50"',
    "application/dicom+json; charset=utf-8",
    'multipart/related; type="application/dicom"; boundary="with \\"escaped\\" quote"',
]


@pytest.mark.parametrize("value", CONTENT_TYPES)
def test_content_type_matches_email_parser(value: str) -> None:
    msg = Message()
    msg["Content-Type"] = value
    ours = parse_content_type(value)
    assert ours.type == msg.get_content_type()
    theirs = {k.lower(): v for k, v in msg.get_params()[1:]}  # type: ignore[index]
    if "type" in theirs:
        theirs["type"] = theirs["type"].lower()
    assert ours.params == theirs


def test_content_type_errors() -> None:
    with pytest.raises(RequestError, match="missing Content-Type"):
        parse_content_type(None)
    with pytest.raises(RequestError, match="missing Content-Type"):
        parse_content_type("   ")
    with pytest.raises(RequestError, match="invalid media type 'dicom'"):
        parse_content_type("dicom; boundary=x")
    with pytest.raises(RequestError, match="invalid media type parameter 'boundary'"):
        parse_content_type("multipart/related; boundary")


def test_accept_real_clients() -> None:
    # dicomweb-client, retrieve_instance
    (r,) = parse_accept('multipart/related; type="application/dicom"; transfer-syntax=*')
    assert (r.type, r.params, r.q) == (
        MULTIPART_RELATED,
        {"type": "application/dicom", "transfer-syntax": "*"},
        1.0,
    )
    # OHIF / Cornerstone frames, unquoted `type`
    (r,) = parse_accept("multipart/related; type=application/octet-stream; transfer-syntax=*")
    assert r.params == {"type": "application/octet-stream", "transfer-syntax": "*"}
    # a list mixing JSON and multipart with q-values; comma inside a quoted value is not a separator
    ranges = parse_accept(
        'application/dicom+json, multipart/related; type="application/dicom"; q=0.5, '
        'multipart/related; type="image/jls,x"; q=0.2, */*;q=0.1'
    )
    assert [(r.type, r.q) for r in ranges] == [
        (DICOM_JSON, 1.0),
        (MULTIPART_RELATED, 0.5),
        (MULTIPART_RELATED, 0.2),
        ("*/*", 0.1),
    ]
    assert ranges[2].params == {"type": "image/jls,x"}
    # case, spacing, bare "*", parameters after q are accept-extensions
    ranges = parse_accept("APPLICATION/DICOM+JSON ;Q=0.8 ; level=1 , *")
    assert [(r.type, r.q, r.params) for r in ranges] == [(DICOM_JSON, 0.8, {}), ("*/*", 1.0, {})]
    assert [r.type for r in parse_accept(None)] == ["*/*"]
    assert [r.type for r in parse_accept("")] == ["*/*"]
    # an unparseable element is skipped, the rest still counts
    assert [r.type for r in parse_accept("garbage, application/json")] == ["application/json"]
    with pytest.raises(NotAcceptableError, match="garbage"):
        parse_accept("garbage")


def test_negotiate_metadata_answers_json_for_mixed_lists() -> None:
    mixed = 'multipart/related; type="application/dicom"; transfer-syntax=*, application/dicom+json'
    assert negotiate(mixed, json_offers()).type == DICOM_JSON
    assert negotiate("application/json", json_offers()).type == "application/json"
    assert negotiate(None, json_offers()).type == DICOM_JSON
    assert negotiate("*/*", json_offers()).type == DICOM_JSON
    assert negotiate("application/*", json_offers()).type == DICOM_JSON
    with pytest.raises(NotAcceptableError) as err:
        negotiate('multipart/related; type="application/dicom"', json_offers())
    assert 'multipart/related; type="application/dicom"' in str(err.value)
    assert "application/dicom+json" in str(err.value)  # what is available


def test_negotiate_q_order_and_specificity() -> None:
    offers = [Offer("application/dicom+json"), Offer("application/json")]
    # the higher q wins whatever the order
    assert negotiate("application/dicom+json;q=0.4, application/json", offers).type == "application/json"
    # equal q: the range listed first wins
    assert negotiate("application/json, application/dicom+json", offers).type == "application/json"
    # the most specific range decides the q of an offer (RFC 9110 12.5.1)
    assert negotiate("*/*;q=0.9, application/json;q=0.1", offers).type == "application/dicom+json"
    # q=0 refuses
    with pytest.raises(NotAcceptableError):
        negotiate("application/dicom+json;q=0, application/json;q=0, */*;q=0", offers)
    assert negotiate("application/dicom+json;q=0, */*", offers).type == "application/json"


def test_negotiate_instances_transfer_syntax() -> None:
    stored = JLS
    got = negotiate('multipart/related; type="application/dicom"; transfer-syntax=*', instance_offers())
    assert instance_transfer_syntax(got, stored) == stored
    got = negotiate('multipart/related; type="application/dicom"', instance_offers())
    assert "transfer-syntax" not in got.params
    assert instance_transfer_syntax(got, stored) == EXPLICIT_VR_LE  # PS3.18 Table 8.7.3-2 default
    assert instance_transfer_syntax(got, stored, absent_means_stored=True) == stored
    got = negotiate(f"multipart/related; type=application/dicom; transfer-syntax={J2K}", instance_offers())
    assert instance_transfer_syntax(got, stored) == J2K
    assert got.header() == f'multipart/related; type="application/dicom"; transfer-syntax={J2K}'
    # a bare multipart/related or */* gets the default
    assert (
        instance_transfer_syntax(negotiate("multipart/related", instance_offers()), stored) == EXPLICIT_VR_LE
    )
    assert instance_transfer_syntax(negotiate(None, instance_offers()), stored) == EXPLICIT_VR_LE
    with pytest.raises(NotAcceptableError):
        negotiate('multipart/related; type="application/octet-stream"', instance_offers())
    got = negotiate(
        "multipart/related; type=application/dicom; transfer-syntax=1.2.840.10008.1.2", instance_offers()
    )
    with pytest.raises(NotAcceptableError, match="1.2.840.10008.1.2 is not allowed"):
        instance_transfer_syntax(got, stored)


def test_frames_representation() -> None:
    offers = bulk_offers()
    # OHIF: octet-stream + transfer-syntax=* on a JPEG-LS object answers image/jls as stored
    got = negotiate("multipart/related; type=application/octet-stream; transfer-syntax=*", offers)
    assert frame_representation(got, JLS) == ("image/jls", JLS)
    # as stored, native: implicit VR is announced as explicit VR LE (PS3.18 8.7.3)
    assert frame_representation(got, "1.2.840.10008.1.2") == ("application/octet-stream", EXPLICIT_VR_LE)
    # no transfer-syntax: the media type's default
    got = negotiate('multipart/related; type="application/octet-stream"', offers)
    assert frame_representation(got, JLS) == ("application/octet-stream", EXPLICIT_VR_LE)
    got = negotiate('multipart/related; type="image/jls"', offers)
    assert frame_representation(got, J2K) == ("image/jls", JLS)
    got = negotiate('multipart/related; type="image/jpeg"', offers)
    assert frame_representation(got, J2K) == ("image/jpeg", JPEG_LOSSLESS)
    got = negotiate(f'multipart/related; type="image/jp2"; transfer-syntax={J2K}', offers)
    assert frame_representation(got, JLS) == ("image/jp2", J2K)
    # old media type name still understood
    got = negotiate('multipart/related; type="image/x-dicom-rle"', offers)
    assert frame_representation(got, JLS) == ("image/dicom-rle", "1.2.840.10008.1.2.5")
    # contradiction: a JPEG-LS media type with a JPEG 2000 syntax
    got = negotiate(f'multipart/related; type="image/jls"; transfer-syntax={J2K}', offers)
    with pytest.raises(NotAcceptableError, match="not a image/jls syntax"):
        frame_representation(got, JLS)
    # anything: uncompressed first (the server's preference)
    assert negotiate(None, offers).params["type"] == "application/octet-stream"


def test_format_and_effective_accept() -> None:
    assert (
        format_media_type(MULTIPART_RELATED, {"type": "application/dicom", "boundary": "a b"})
        == 'multipart/related; type="application/dicom"; boundary="a b"'
    )
    assert parse_content_type(format_media_type("a/b", {"x": 'q"uote'})).params == {"x": 'q"uote'}
    assert effective_accept("application/json", ["application/dicom+json"]) == "application/dicom+json"
    assert effective_accept("application/json", []) == "application/json"
    assert effective_accept(None, ["a/b", "c/d"]) == "a/b, c/d"
