"""The exceptions every layer raises: one tree under `DicomVaultError`.

The native ones are created in rust/src/errors.rs (one funnel maps each core error to one class);
they are re-exported here so Python code imports errors from a single module.

Each class names a kind of failure, not a protocol: the HTTP side maps them to status codes in
one place (web/errors.py), the DIMSE side to statuses in one place (dimse/status.py). Messages
name the UID, path or parameter concerned and never need the class name to be understood, so
either mapping can show them to a client as they are.
"""

from __future__ import annotations

from ._native import (  # type: ignore[attr-defined]
    CodecError,
    CorruptError,
    DicomVaultError,
    IntegrityError,
    LockedError,
    MalformedError,
    MissingAttributeError,
    NotDicomError,
    NotFoundError,
    StorageFullError,
    UnsupportedError,
)


class UnknownObjectError(NotFoundError):
    """A UID the index does not know (the one "not found" of the index and the engine; the
    native `NotFoundError`, its base, is a blob hash the store does not hold)."""

    def __init__(self, level: str, uid: str) -> None:
        super().__init__(f"no {level} with UID {uid}")
        self.level = level
        self.uid = uid


class RejectedError(DicomVaultError):
    """An object was refused before the index named it (missing UIDs, not DICOM, malformed)."""


class UIDMismatchError(RejectedError):
    """The dataset's SOP Instance/Class UID is not the one its C-STORE request announced."""


class RequestError(DicomVaultError):
    """A request the archive cannot act on as asked: a bad parameter, query or body."""


class NotAcceptableError(RequestError):
    """None of the representations the client accepts can be produced (e.g. a transfer syntax
    that would need lossy transcoding)."""


class UnsupportedMediaTypeError(RequestError):
    """A request body of a media type the resource does not take."""


class PayloadTooLargeError(RequestError):
    """A request body over the configured cap."""


class ConflictError(DicomVaultError):
    """The request contradicts the archive's state (a write to a replica, an instance that is
    not of the study the request names)."""


class ReplicaWriteError(ConflictError):
    """A local write to a replica, which takes its data only from its upstream's change feed
    (anything else would make it diverge). DIMSE answers it as out of resources, so a sender
    retries later (after `dicomvault dr promote`); HTTP as 409."""


class AuthenticationError(DicomVaultError):
    """No credentials, or credentials nobody holds."""


class InvalidTokenError(AuthenticationError):
    """A bearer token that was presented and does not hold: bad signature, expired, another
    issuer or audience, an unknown key. `description` is what the client is told (RFC 6750's
    error_description); the message may say more for the log. `kind` is the description
    without what the token itself put in it (a key id), for counting refusals by reason."""

    def __init__(self, message: str, description: str | None = None, kind: str | None = None) -> None:
        super().__init__(message)
        self.description = description or message
        self.kind = kind or self.description


class PermissionDeniedError(DicomVaultError):
    """Known credentials without the role the action needs."""


class UnavailableError(DicomVaultError):
    """The service is shutting down or a dependency is not reachable now; try again later."""


class ObjectStoreUnavailableError(UnavailableError):
    """An S3-compatible store did not answer (refused, timed out, 5xx) after the bounded retries.
    `endpoint`, `bucket` and `key` (None for bucket-level calls) say which request."""

    def __init__(self, message: str, endpoint: str, bucket: str, key: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.bucket = bucket
        self.key = key


class ObjectStoreError(DicomVaultError):
    """An S3-compatible store answered but refused the request (credentials, permissions, a
    range past the end): retrying will not help; the message carries the store's error code."""

    def __init__(self, message: str, endpoint: str, bucket: str, key: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.bucket = bucket
        self.key = key


class ObjectNotFoundError(NotFoundError):
    """A key (or the bucket itself) the object store does not hold."""

    def __init__(self, message: str, endpoint: str, bucket: str, key: str | None = None) -> None:
        super().__init__(message)
        self.endpoint = endpoint
        self.bucket = bucket
        self.key = key


__all__ = [
    "AuthenticationError",
    "CodecError",
    "ConflictError",
    "CorruptError",
    "DicomVaultError",
    "IntegrityError",
    "InvalidTokenError",
    "LockedError",
    "MalformedError",
    "MissingAttributeError",
    "NotAcceptableError",
    "NotDicomError",
    "NotFoundError",
    "ObjectNotFoundError",
    "ObjectStoreError",
    "ObjectStoreUnavailableError",
    "PayloadTooLargeError",
    "PermissionDeniedError",
    "RejectedError",
    "ReplicaWriteError",
    "RequestError",
    "StorageFullError",
    "UIDMismatchError",
    "UnavailableError",
    "UnknownObjectError",
    "UnsupportedError",
    "UnsupportedMediaTypeError",
]
