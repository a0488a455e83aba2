"""HTTP(S) client of another site's replication API: one keep-alive connection, reopened after
any failure (the caller retries; every request is idempotent)."""

from __future__ import annotations

import http.client
import ssl
from typing import Any
from urllib.parse import urlencode, urlsplit

import msgpack

from .. import tls_policy
from ..errors import DicomVaultError
from .wire import MISSING, OK, read_frames


class ReplicationError(DicomVaultError):
    """The upstream site refused, failed or sent something wrong (the message names the URL)."""


class SiteClient:
    def __init__(self, url: str, token: str, *, replica_id: str = "", cafile: str | None = None,
                 insecure: bool = False, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"replication URL must be http(s)://host[:port], got {url!r}")
        self.url = url.rstrip("/")
        self.token = token
        self.replica_id = replica_id
        self.timeout = timeout
        self._host = parts.hostname
        self._port = parts.port or (443 if parts.scheme == "https" else 80)
        self._base = parts.path.rstrip("/")
        self._ctx: ssl.SSLContext | None = None
        if parts.scheme == "https":
            ctx = tls_policy.client_context(cafile)
            if insecure:
                ctx.check_hostname = False
                ctx.verify_mode = ssl.CERT_NONE
            self._ctx = ctx
        self._conn: http.client.HTTPConnection | None = None
        self.last_error: str | None = None

    def clone(self) -> SiteClient:
        """Same site and credentials, its own connection (one per thread)."""
        other = SiteClient(self.url, self.token, replica_id=self.replica_id, timeout=self.timeout)
        other._ctx = self._ctx
        return other

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._ctx is not None:
                self._conn = http.client.HTTPSConnection(self._host, self._port, timeout=timeout,
                                                         context=self._ctx)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port, timeout=timeout)
        self._conn.timeout = timeout
        if self._conn.sock is not None:
            self._conn.sock.settimeout(timeout)
        return self._conn

    def request(self, method: str, path: str, body: bytes | None = None, *,
                query: dict[str, Any] | None = None, timeout: float | None = None) -> bytes:
        target = self._base + path + ("?" + urlencode(query) if query else "")
        headers = {"Authorization": f"Bearer {self.token}"}
        if self.replica_id:
            headers["X-Replica-Id"] = self.replica_id
        if self.last_error:
            headers["X-Replica-Error"] = self.last_error[:300].encode("ascii", "replace").decode()
        where = f"{method} {self.url}{path}"
        try:
            conn = self._connection(timeout or self.timeout)
            conn.request(method, target, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        except (OSError, http.client.HTTPException) as exc:
            self.close()
            raise ReplicationError(f"{where}: {type(exc).__name__}: {exc}") from exc
        if resp.status != 200:
            if resp.getheader("Connection", "").lower() == "close":
                self.close()
            raise ReplicationError(f"{where}: HTTP {resp.status}: {data[:300].decode(errors='replace')}")
        return data

    def _msgpack(self, path: str, **kw: Any) -> dict[str, Any]:
        data = self.request("GET", path, **kw)
        try:
            out = msgpack.unpackb(data, raw=False)
        except (ValueError, msgpack.UnpackException) as exc:
            raise ReplicationError(f"GET {self.url}{path}: bad msgpack body: {exc}") from exc
        if not isinstance(out, dict):
            raise ReplicationError(f"GET {self.url}{path}: expected a map")
        return out

    def changes(self, since: int, limit: int, feed_id: str = "", wait: float = 0.0) -> dict[str, Any]:
        return self._msgpack("/replication/changes",
                             query={"since": since, "limit": limit, "feed_id": feed_id, "wait": wait},
                             timeout=self.timeout + wait)

    def status(self) -> dict[str, Any]:
        return self._msgpack("/replication/status")

    def instances(self) -> dict[str, Any]:
        return self._msgpack("/replication/instances", timeout=max(self.timeout, 300))

    def blobs(self, hashes: list[bytes]) -> dict[bytes, tuple[int, int, bytes]]:
        """{hash: (codec, logical_len, stored bytes)}; raises if the upstream lacks one."""
        data = self.request("POST", "/replication/blobs", b"".join(hashes))
        out: dict[bytes, tuple[int, int, bytes]] = {}
        try:
            for h, status, codec, logical_len, payload in read_frames(data):
                if status == OK:
                    out[h] = (codec, logical_len, payload)
                elif status == MISSING:
                    raise ReplicationError(f"{self.url} has no blob {h.hex()}")
                else:
                    raise ReplicationError(f"{self.url}: {payload.decode(errors='replace')}")
        except ValueError as exc:
            raise ReplicationError(f"POST {self.url}/replication/blobs: {exc}") from exc
        missing = [h.hex() for h in hashes if h not in out]
        if missing:
            raise ReplicationError(f"{self.url} sent no frame for blob(s) {', '.join(missing[:3])}")
        return out
