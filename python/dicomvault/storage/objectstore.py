"""An S3-compatible object store (AWS S3, Ceph RGW, MinIO, SeaweedFS) for the cold tier.

A thin layer over boto3 with the archive's rules on top:

- **Fail fast.** A short connect timeout, a short read timeout for reads (a healthy store
  starts answering a GET in milliseconds), a longer one for writes (a store answers a PUT only
  once it has stored the body, which under load takes seconds), and a bounded retry loop of
  our own (botocore's retries are off: its backoff sleeps up to seconds per attempt, so "down"
  would take long to say). A store that refuses connections, times out or answers 5xx after
  `retries` extra tries raises `ObjectStoreUnavailableError` (HTTP 503 through
  web/errors.py) naming the endpoint, bucket and key.
- **Errors say what they concern.** A missing key or bucket is `ObjectNotFoundError` (the
  `NotFoundError` family); a refusal that retrying cannot fix (credentials, permissions, a range
  past the end) is `ObjectStoreError` with the store's error code.
- **Credentials** from the arguments, else boto3's default chain: AWS_ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, the shared config files, instance roles. The region
  from the argument, AWS_REGION or AWS_DEFAULT_REGION (us-east-1 when none: SigV4 needs one); the
  endpoint from the argument, AWS_ENDPOINT_URL_S3 or AWS_ENDPOINT_URL (AWS itself when none).
  With no credentials anywhere, requests go unsigned (a local store without identities).
  Secrets are never logged and are not in `repr()`.
- **Large objects** go up as multipart uploads above `multipart_threshold`, `max_concurrency`
  parts in flight, each part retried on its own; a failed upload is aborted so no parts linger
  (a crash mid-upload can leave some: a bucket lifecycle rule AbortIncompleteMultipartUpload
  reclaims them).

Checksums: boto3 >= 1.36 adds CRC trailers to every upload by default, which several
S3-compatible stores reject; they are sent only when an operation requires them. Integrity is
the caller's: packs carry BLAKE3 per blob and are read back and verified before anything local
is freed (DESIGN section 4).
"""

from __future__ import annotations

import io
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime
from typing import Any, BinaryIO, Literal, TypeVar

from botocore import UNSIGNED
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError

from ..errors import ObjectNotFoundError, ObjectStoreError, ObjectStoreUnavailableError

log = logging.getLogger("dicomvault.storage.objectstore")

T = TypeVar("T")
E = TypeVar("E", ObjectStoreError, ObjectStoreUnavailableError, ObjectNotFoundError)
SSE = Literal["AES256", "aws:kms"]
MiB = 1 << 20
BACKOFF_FIRST = 0.05
BACKOFF_MAX = 0.5
# Error codes a store sends when it is overloaded or briefly unwell: worth another try.
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "ServiceUnavailable",
        "SlowDown",
        "RequestTimeout",
        "Throttling",
        "ThrottlingException",
        "RequestLimitExceeded",
    }
)
_MISSING_CODES = frozenset({"NoSuchKey", "NoSuchBucket", "NotFound", "404"})
# Connection-level failures: the store is not answering (or stopped answering mid-body).
_UNREACHABLE = (
    BotoConnectionError,
    HTTPClientError,
    ReadTimeoutError,
    ResponseStreamingError,
    IncompleteReadError,
)


@dataclass(frozen=True)
class ObjectInfo:
    key: str
    size: int
    etag: str
    last_modified: datetime | None = None
    sse: str | None = None


def _env(*names: str) -> str | None:
    for n in names:
        v = os.environ.get(n)
        if v:
            return v
    return None


def _read_full(src: BinaryIO, n: int) -> bytes:
    """Up to n bytes: raw files and sockets may return short reads before the end."""
    chunks: list[bytes] = []
    got = 0
    while got < n:
        b = src.read(n - got)
        if not b:
            break
        chunks.append(b)
        got += len(b)
    return b"".join(chunks)


def _remaining_size(src: BinaryIO) -> int | None:
    try:
        pos = src.tell()
        end = src.seek(0, io.SEEK_END)
        src.seek(pos)
        return end - pos
    except (AttributeError, OSError, ValueError):
        return None


class _Prefixed(io.RawIOBase):
    """`head` then the rest of `src`: a pipe whose first bytes were already read."""

    def __init__(self, head: bytes, src: BinaryIO) -> None:
        self._head = memoryview(head)
        self._src = src

    def read(self, n: int = -1) -> bytes:  # type: ignore[override]
        if self._head:
            take = len(self._head) if n < 0 else min(n, len(self._head))
            out = bytes(self._head[:take])
            self._head = self._head[take:]
            return out
        return self._src.read(n)


class ObjectStore:
    def __init__(
        self,
        endpoint: str | None,
        bucket: str,
        *,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        sse: SSE | None = None,
        kms_key_id: str | None = None,
        timeout: float = 2.0,
        read_timeout: float = 5.0,
        write_timeout: float = 60.0,
        retries: int = 2,
        multipart_threshold: int = 16 * MiB,
        part_size: int = 8 * MiB,
        max_concurrency: int = 4,
        addressing_style: Literal["path", "virtual", "auto"] | None = None,
    ) -> None:
        if sse not in (None, "AES256", "aws:kms"):
            raise ObjectStoreError(
                f"sse must be AES256, aws:kms or none, got {sse!r}", endpoint or "", bucket
            )
        if (access_key is None) != (secret_key is None):
            raise ObjectStoreError(
                "give both access_key and secret_key, or neither (then the AWS environment is used)",
                endpoint or "",
                bucket,
            )
        if part_size < 5 * MiB:
            raise ObjectStoreError(
                f"part_size {part_size} is under S3's 5 MiB minimum", endpoint or "", bucket
            )
        self.bucket = bucket
        self.sse = sse
        self.timeout = timeout
        self.retries = max(0, retries)
        self.multipart_threshold = max(multipart_threshold, part_size)
        self.part_size = part_size
        self.max_concurrency = max(1, max_concurrency)
        endpoint = endpoint or _env("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")
        # Imported here, not with the module: boto3 and botocore.config take ~140 ms to import, which
        # every CLI command and every `serve` paid, though only an object-store tier needs them.
        import boto3
        from botocore.config import Config

        session = boto3.session.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=session_token,
            region_name=region or _env("AWS_REGION", "AWS_DEFAULT_REGION"),
        )
        self.region = session.region_name or "us-east-1"
        self.anonymous = session.get_credentials() is None

        def client(socket_timeout: float) -> Any:
            config = Config(
                connect_timeout=timeout,
                read_timeout=socket_timeout,
                retries={"total_max_attempts": 1},
                max_pool_connections=max(10, 2 * self.max_concurrency),
                # Custom endpoints rarely resolve bucket.host names; AWS prefers virtual hosts.
                s3={"addressing_style": addressing_style or ("path" if endpoint else "auto")},
                request_checksum_calculation="when_required",
                response_checksum_validation="when_required",
                signature_version=UNSIGNED if self.anonymous else "s3v4",
            )
            return session.client("s3", endpoint_url=endpoint, region_name=self.region, config=config)

        self._s3 = client(read_timeout)  # reads, listings, deletes
        self._s3w = client(write_timeout)  # uploads
        self.endpoint: str = endpoint or self._s3.meta.endpoint_url
        self._sse_args: dict[str, str] = {}
        if sse:
            self._sse_args["ServerSideEncryption"] = sse
            if sse == "aws:kms" and kms_key_id:
                self._sse_args["SSEKMSKeyId"] = kms_key_id
        if self.anonymous:
            log.info("object store %s: no credentials found, requests are unsigned", self.endpoint)

    def __repr__(self) -> str:
        return f"ObjectStore({self.endpoint!r}, {self.bucket!r})"

    def close(self) -> None:
        self._s3.close()
        self._s3w.close()

    def __enter__(self) -> ObjectStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the one retry loop and error funnel ------------------------------------------------

    def _error(self, cls: type[E], message: str, key: str | None = None) -> E:
        return cls(message, self.endpoint, self.bucket, key)

    def _where(self, key: str | None) -> str:
        return f"{self.bucket}/{key}" if key is not None else f"bucket {self.bucket}"

    def _translate(self, op: str, key: str | None, exc: Exception, attempts: int) -> Exception:
        where = self._where(key)
        if isinstance(exc, ClientError):
            err = exc.response.get("Error", {})
            code = str(err.get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if code in _MISSING_CODES or status == 404:
                what = f"bucket {self.bucket}" if code == "NoSuchBucket" or key is None else f"object {where}"
                return self._error(ObjectNotFoundError, f"{what} not found at {self.endpoint}", key)
            if code in _TRANSIENT_CODES or (status or 0) >= 500:
                return self._error(
                    ObjectStoreUnavailableError,
                    f"object store {self.endpoint} failing: {op} {where} got {status} {code} "
                    f"after {attempts} attempt(s)",
                    key,
                )
            hint = " (check the access key and secret)" if status == 403 else ""
            return self._error(
                ObjectStoreError,
                f"object store {self.endpoint} refused {op} {where}: {status} {code} "
                f"{err.get('Message', '')}{hint}".rstrip(),
                key,
            )
        if isinstance(exc, NoCredentialsError):
            return self._error(
                ObjectStoreError, f"object store {self.endpoint}: no credentials for {op} {where}", key
            )
        if isinstance(exc, _UNREACHABLE):
            return self._error(
                ObjectStoreUnavailableError,
                f"object store {self.endpoint} not reachable: {op} {where} failed after {attempts} "
                f"attempt(s) ({type(exc).__name__})",
                key,
            )
        return self._error(ObjectStoreError, f"object store {self.endpoint}: {op} {where} failed: {exc}", key)

    def _retryable(self, exc: Exception) -> bool:
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0
            return code in _TRANSIENT_CODES or status >= 500
        return isinstance(exc, _UNREACHABLE)

    def _call(self, op: str, key: str | None, fn: Callable[[], T]) -> T:
        delay = BACKOFF_FIRST
        for attempt in range(1, self.retries + 2):
            try:
                return fn()
            except (BotoCoreError, ClientError) as exc:
                if not self._retryable(exc) or attempt > self.retries:
                    raise self._translate(op, key, exc, attempt) from exc
                log.warning(
                    "object store %s: %s %s failed (%s), retry %d of %d",
                    self.endpoint,
                    op,
                    self._where(key),
                    type(exc).__name__,
                    attempt,
                    self.retries,
                )
                time.sleep(random.uniform(delay / 2, delay))
                delay = min(delay * 2, BACKOFF_MAX)
        raise AssertionError("unreachable")

    # -- bucket ----------------------------------------------------------------------------

    def ensure_bucket(self) -> bool:
        """Creates the bucket if it is missing; True if it was created."""
        try:
            self._call("head bucket", None, lambda: self._s3.head_bucket(Bucket=self.bucket))
            return False
        except ObjectNotFoundError:
            pass
        args: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            args["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        try:
            self._call("create bucket", None, lambda: self._s3.create_bucket(**args))
        except ObjectStoreError as exc:
            # Another process created it between our HEAD and CREATE.
            if "BucketAlreadyOwnedByYou" in str(exc):
                return False
            raise
        log.info("object store %s: created bucket %s", self.endpoint, self.bucket)
        return True

    # -- objects ---------------------------------------------------------------------------

    def put(self, key: str, data: bytes | bytearray | memoryview | BinaryIO, size: int | None = None) -> str:
        """Stores data under key (replacing it); returns the ETag. A file-like is read from its
        current position: `size` bytes, or to its end. Objects over the multipart threshold go
        up in parts; either way the object appears whole or not at all."""
        if isinstance(data, bytes | bytearray | memoryview):
            body = bytes(data)
            if len(body) <= self.multipart_threshold:
                return self._put_single(key, body)
            return self._put_multipart(key, io.BytesIO(body), len(body))
        if size is None:
            size = _remaining_size(data)
        if size is None:  # a pipe: read enough to know which way it goes
            head = _read_full(data, self.multipart_threshold + 1)
            if len(head) <= self.multipart_threshold:
                return self._put_single(key, head)
            return self._put_multipart(key, _Prefixed(head, data), None)
        if size <= self.multipart_threshold:
            body = _read_full(data, size)
            if len(body) != size:
                raise self._error(
                    ObjectStoreError,
                    f"put {self._where(key)}: source ended after {len(body)} of {size} bytes",
                    key,
                )
            return self._put_single(key, body)
        return self._put_multipart(key, data, size)

    def _put_single(self, key: str, body: bytes) -> str:
        r = self._call(
            "put",
            key,
            lambda: self._s3w.put_object(Bucket=self.bucket, Key=key, Body=body, **self._sse_args),
        )
        return str(r.get("ETag", "")).strip('"')

    def _put_multipart(self, key: str, src: BinaryIO, size: int | None) -> str:
        created = self._call(
            "create multipart upload",
            key,
            lambda: self._s3w.create_multipart_upload(Bucket=self.bucket, Key=key, **self._sse_args),
        )
        upload_id = created["UploadId"]

        def part(n: int, chunk: bytes) -> dict[str, Any]:
            r = self._call(
                f"upload part {n}",
                key,
                lambda: self._s3w.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=n, Body=chunk
                ),
            )
            return {"PartNumber": n, "ETag": r["ETag"]}

        sent = 0
        try:
            parts: list[dict[str, Any]] = []
            with ThreadPoolExecutor(self.max_concurrency, thread_name_prefix="s3-part") as pool:
                # Bounded in flight: a 256 MiB pack never sits in memory twice over.
                pending: deque[Future[dict[str, Any]]] = deque()
                n = 1
                while size is None or sent < size:
                    want = self.part_size if size is None else min(self.part_size, size - sent)
                    chunk = _read_full(src, want)
                    if not chunk:
                        break
                    if len(pending) >= self.max_concurrency:
                        parts.append(pending.popleft().result())
                    pending.append(pool.submit(part, n, chunk))
                    sent += len(chunk)
                    n += 1
                    if len(chunk) < want:
                        break
                while pending:
                    parts.append(pending.popleft().result())
            if size is not None and sent != size:
                raise self._error(
                    ObjectStoreError,
                    f"put {self._where(key)}: source ended after {sent} of {size} bytes",
                    key,
                )
            r = self._call(
                "complete multipart upload",
                key,
                lambda: self._s3w.complete_multipart_upload(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, MultipartUpload={"Parts": parts}
                ),
            )
        except BaseException:
            try:
                self._s3w.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except (BotoCoreError, ClientError) as exc:
                log.warning(
                    "object store %s: abort of upload %s of %s failed (%s); a lifecycle rule reclaims it",
                    self.endpoint,
                    upload_id,
                    self._where(key),
                    type(exc).__name__,
                )
            raise
        return str(r.get("ETag", "")).strip('"')

    def get(self, key: str) -> bytes:
        def fetch() -> bytes:
            return self._s3.get_object(Bucket=self.bucket, Key=key)["Body"].read()

        return self._call("get", key, fetch)

    def get_range(self, key: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of the object, in one ranged GET; exactly end - start of them."""
        if not 0 <= start < end:
            raise self._error(
                ObjectStoreError,
                f"get_range {self._where(key)}: empty or negative range [{start}, {end})",
                key,
            )
        data = self._ranged(key, f"bytes={start}-{end - 1}")
        if len(data) != end - start:
            raise self._error(
                ObjectStoreError,
                f"get_range {self._where(key)} [{start}, {end}): got {len(data)} bytes (object too short)",
                key,
            )
        return data

    def get_tail(self, key: str, n: int) -> tuple[bytes, int]:
        """The last n bytes (fewer if the object is shorter) in one suffix-ranged GET, and the
        object's total size (from Content-Range: no HEAD needed)."""

        def fetch() -> tuple[bytes, int]:
            r = self._s3.get_object(Bucket=self.bucket, Key=key, Range=f"bytes=-{n}")
            data = r["Body"].read()
            total = str(r.get("ContentRange", "")).rpartition("/")[2]
            return data, int(total) if total.isdigit() else len(data)

        return self._call(f"get last {n} bytes", key, fetch)

    def _ranged(self, key: str, rng: str) -> bytes:
        def fetch() -> bytes:
            return self._s3.get_object(Bucket=self.bucket, Key=key, Range=rng)["Body"].read()

        return self._call(f"get {rng}", key, fetch)

    def stream(
        self, key: str, chunk_size: int = MiB, start: int = 0, first_chunk: int = 0
    ) -> Iterator[bytes]:
        """The object from `start` in chunks, without holding it in memory (the first chunk is
        `first_chunk` bytes when given: a first-byte probe). A connection lost mid-body resumes
        with a ranged GET from the last byte received (within the retries)."""
        pos = start
        resumes = 0
        want = first_chunk or chunk_size

        def open_body() -> Any:
            extra = {"Range": f"bytes={pos}-"} if pos else {}
            return self._s3.get_object(Bucket=self.bucket, Key=key, **extra)["Body"]

        while True:
            body = self._call(f"get from byte {pos}", key, open_body)
            try:
                while chunk := body.read(want):
                    pos += len(chunk)
                    want = chunk_size
                    yield chunk
                return
            except _UNREACHABLE as exc:
                resumes += 1
                if resumes > self.retries:
                    raise self._translate(f"get from byte {pos}", key, exc, resumes) from exc
                log.warning(
                    "object store %s: stream of %s broke at byte %d (%s), resuming",
                    self.endpoint,
                    self._where(key),
                    pos,
                    type(exc).__name__,
                )
            finally:
                body.close()

    def head(self, key: str) -> ObjectInfo:
        r = self._call("head", key, lambda: self._s3.head_object(Bucket=self.bucket, Key=key))
        return ObjectInfo(
            key=key,
            size=int(r["ContentLength"]),
            etag=str(r.get("ETag", "")).strip('"'),
            last_modified=r.get("LastModified"),
            sse=r.get("ServerSideEncryption"),
        )

    def delete(self, key: str) -> None:
        """Removes key; deleting a key that is not there is not an error (S3 semantics)."""
        self._call("delete", key, lambda: self._s3.delete_object(Bucket=self.bucket, Key=key))

    def delete_many(self, keys: Iterable[str]) -> int:
        """Removes keys, up to 1,000 per request (S3's DeleteObjects); returns how many."""
        batch: list[str] = []
        n = 0

        def flush() -> None:
            objs = {"Objects": [{"Key": k} for k in batch], "Quiet": True}
            r = self._call(
                f"delete {len(batch)} keys",
                batch[0],
                lambda: self._s3.delete_objects(Bucket=self.bucket, Delete=objs),
            )
            if r.get("Errors"):
                e = r["Errors"][0]
                raise self._error(
                    ObjectStoreError,
                    f"object store {self.endpoint} refused to delete {self._where(e.get('Key'))}: "
                    f"{e.get('Code')} {e.get('Message', '')} ({len(r['Errors'])} key(s) failed)",
                    e.get("Key"),
                )
            batch.clear()

        for k in keys:
            batch.append(k)
            n += 1
            if len(batch) == 1000:
                flush()
        if batch:
            flush()
        return n

    def list(self, prefix: str = "", page_size: int = 1000) -> Iterator[ObjectInfo]:
        """Every object whose key starts with prefix, in key order, one request per page."""
        token: str | None = None
        while True:
            args: dict[str, Any] = {"Bucket": self.bucket, "Prefix": prefix, "MaxKeys": page_size}
            if token:
                args["ContinuationToken"] = token
            page = self._call(f"list {prefix!r}", None, lambda args=args: self._s3.list_objects_v2(**args))
            for o in page.get("Contents", ()):
                yield ObjectInfo(
                    key=o["Key"],
                    size=int(o["Size"]),
                    etag=str(o.get("ETag", "")).strip('"'),
                    last_modified=o.get("LastModified"),
                )
            if not page.get("IsTruncated"):
                return
            token = page.get("NextContinuationToken")
