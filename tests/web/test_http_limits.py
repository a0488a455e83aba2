"""`[http]` limits against a real `dicomvault serve` over real sockets: a body over max_body is 413
(announced or chunked) and the server keeps serving, QIDO-RS is cut at max_query_results with
Warning 299, a request rate over the token bucket is 429 with Retry-After; /metrics counts each."""

from __future__ import annotations

import io
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "dimse"))
from limits_helpers import fresh_copy, serving  # noqa: E402

from dicomvault.web.dicomweb.multipart import multipart_content_type, multipart_stream  # noqa: E402
from dicomvault.web.limits import RateLimiter  # noqa: E402


def _part10(ds: pydicom.Dataset) -> bytes:
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _stow(url: str, files: list[bytes], chunked: bool = False) -> httpx.Response:
    boundary = "limitsboundary"
    body = b"".join(multipart_stream([("application/dicom", f) for f in files], boundary))
    headers = {"Content-Type": multipart_content_type("application/dicom", boundary),
               "Accept": "application/dicom+json"}

    def pieces() -> Iterator[bytes]:
        for i in range(0, len(body), 8192):
            yield body[i:i + 8192]

    return httpx.post(f"{url}/dicom-web/studies", content=pieces() if chunked else body, headers=headers,
                      timeout=30)


def test_body_over_max_body_is_413_and_the_server_keeps_serving(tmp_path: Path) -> None:
    with serving(tmp_path, http={"max_body": 50_000}) as srv:
        big = _part10(fresh_copy("CT_small.dcm"))  # 39 KB: two are over 50,000 bytes
        small = _part10(fresh_copy("MR_small.dcm"))
        announced = _stow(srv.url, [big, big])
        assert announced.status_code == 413, announced.text
        assert "exceeds [http] max_body = 50000 bytes" in announced.text
        chunked = _stow(srv.url, [big, big], chunked=True)  # no Content-Length: counted as it streams
        assert chunked.status_code == 413, chunked.text
        # an upload route other than STOW-RS, chunked
        api = httpx.post(f"{srv.url}/api/instances", content=iter([big, big]), timeout=30)
        assert api.status_code == 413, api.text
        # the server goes on serving, and a body within the limit is stored
        ok = _stow(srv.url, [small])
        assert ok.status_code == 200, ok.text
        assert httpx.get(f"{srv.url}/healthz", timeout=10).text == "ok"
        assert srv.refused("http", "max_body") == 3
        assert "refused (413): request body of" in srv.log_text()


def test_announced_oversize_body_is_refused_before_it_is_sent(tmp_path: Path) -> None:
    """The 413 comes back while the client has sent only its headers: nothing of the body is read."""
    with serving(tmp_path, http={"max_body": 1000}) as srv, \
            socket.create_connection(("127.0.0.1", srv.http_port), timeout=10) as s:
        s.sendall(b"POST /dicom-web/studies HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000000\r\n"
                  b"Content-Type: multipart/related; type=\"application/dicom\"; boundary=b\r\n\r\n")
        head = s.recv(4096)
        assert head.startswith(b"HTTP/1.1 413"), head


def test_qido_cut_at_max_query_results_with_warning(tmp_path: Path) -> None:
    with serving(tmp_path, http={"max_query_results": 2}) as srv:
        for _ in range(3):
            assert _stow(srv.url, [_part10(fresh_copy("MR_small.dcm"))]).status_code == 200
        r = httpx.get(f"{srv.url}/dicom-web/studies", timeout=10)
        assert r.status_code == 200
        assert len(r.json()) == 2
        assert r.headers["Warning"].startswith("299 ")
        # "additional results can be requested": the next page holds the third, and is not cut
        rest = httpx.get(f"{srv.url}/dicom-web/studies", params={"offset": 2}, timeout=10)
        assert len(rest.json()) == 1 and "Warning" not in rest.headers
        uids = {s["0020000D"]["Value"][0] for s in r.json() + rest.json()}
        assert len(uids) == 3
        assert srv.refused("query", "qido_max_results") == 1  # the first page only


def test_rate_limit_is_429_with_retry_after(tmp_path: Path) -> None:
    with serving(tmp_path, http={"rate_limit_per_address": 1, "rate_burst": 5}) as srv:
        # The refused response is taken from the run itself: a request sent after it, on a
        # loaded machine, can come after a token refilled (1 a second) and pass (seen in CI).
        responses = [httpx.get(f"{srv.url}/healthz", timeout=10) for _ in range(8)]
        codes = [r.status_code for r in responses]
        assert codes[:5] == [200] * 5 and 429 in codes[5:], codes
        refused = responses[codes.index(429)]
        assert int(refused.headers["Retry-After"]) >= 1
        assert "rate_limit_per_address" in refused.text
        time.sleep(int(refused.headers["Retry-After"]) + 0.1)  # the /metrics request needs a token too
        assert srv.refused("http", "rate_limit_address") == codes.count(429)


def test_token_bucket_refills_at_its_rate() -> None:
    bucket = RateLimiter(rate=2.0, burst=3)
    assert [bucket.take(b"k", now=100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(b"k", now=100.0) == 0.5  # one token comes back in half a second
    assert bucket.take(b"k", now=100.5) == 0.0
    assert bucket.take(b"other", now=100.5) == 0.0  # keys have their own buckets
