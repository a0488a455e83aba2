"""The one mapping from the archive's error tree (errors.py) to HTTP responses.

A response carries the error's message (it names the UID, path or parameter) and never a Python
class name; anything outside the tree is a bug: 500 with a generic text, the traceback in the log.
"""

from __future__ import annotations

import logging

import orjson
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from ..errors import (
    AuthenticationError,
    CodecError,
    ConflictError,
    CorruptError,
    DicomVaultError,
    IntegrityError,
    InvalidTokenError,
    LockedError,
    MalformedError,
    NotAcceptableError,
    NotDicomError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RejectedError,
    RequestError,
    StorageFullError,
    UnavailableError,
    UnsupportedError,
    UnsupportedMediaTypeError,
)
from ..integration.fhir.mapping import operation_outcome

log = logging.getLogger("dicomvault.web")

# Most specific first: the first class an error is an instance of decides.
_STATUS: tuple[tuple[type[BaseException], int], ...] = (
    (AuthenticationError, 401),
    (PermissionDeniedError, 403),
    (NotAcceptableError, 406),
    (UnsupportedMediaTypeError, 415),
    (PayloadTooLargeError, 413),
    (RequestError, 400),
    (NotFoundError, 404),
    (ConflictError, 409),
    (StorageFullError, 507),
    (RejectedError, 400),
    (NotDicomError, 400),
    (MalformedError, 400),
    (UnsupportedError, 415),
    (UnavailableError, 503),
    (LockedError, 503),
    # Stored bytes that fail their hash or codec: the archive's fault, not the client's.
    (IntegrityError, 500),
    (CodecError, 500),
    (CorruptError, 500),
)


_INPUT_ERRORS = (RejectedError, NotDicomError, MalformedError)
# FHIR routes answer errors as OperationOutcome (R4 http.html); the issue code by status.
FHIR_PREFIX = "/fhir/"
_FHIR_ISSUE = {400: "invalid", 401: "login", 403: "forbidden", 404: "not-found", 406: "not-supported",
               413: "too-costly", 415: "not-supported", 503: "transient"}


def http_status(exc: BaseException) -> int:
    for cls, code in _STATUS:
        if isinstance(exc, cls):
            return code
    return 500


def _quotable(text: str) -> str:
    return "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "?" for c in text)


def error_response(request: Request, exc: Exception) -> Response:
    """Starlette exception handler for every DicomVaultError (and, as 500, anything else)."""
    if not isinstance(exc, DicomVaultError):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return _body(request, "internal error (see the server log)", 500, {})
    code = http_status(exc)
    if code == 400 and request.method in ("GET", "HEAD") and isinstance(exc, _INPUT_ERRORS):
        # A read sends no object: a parse failure here is a stored object we cannot read.
        code = 500
    headers = {}
    if isinstance(exc, InvalidTokenError):
        # RFC 6750 3.1: a token was presented and does not hold; the client should get a new one
        # (the description is printable ASCII without quotes: auth/oidc.py makes it so).
        headers["WWW-Authenticate"] = (f'Bearer realm="dicomvault", error="invalid_token", '
                                       f'error_description="{_quotable(exc.description)}"')
    elif code == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="dicomvault", Basic realm="dicomvault"'
    if code >= 500:
        log.error("%s %s: %s", request.method, request.url.path, exc)
    else:
        log.info("%s %s -> %d: %s", request.method, request.url.path, code, exc)
    return _body(request, str(exc) or f"error {code}", code, headers)


def _body(request: Request, text: str, code: int, headers: dict[str, str]) -> Response:
    if request.url.path.startswith(FHIR_PREFIX):
        body = orjson.dumps(operation_outcome(_FHIR_ISSUE.get(code, "exception"), text))
        return Response(body, code, headers=headers, media_type="application/fhir+json")
    return PlainTextResponse(text, code, headers=headers)
