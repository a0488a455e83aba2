"""Remote reading over HTTPS: the archive serves the viewer with its own certificate (serve
--tls-cert/--tls-key, TLS 1.2+), a user logs in from a browser and reads a study; plain HTTP to
the same port is refused."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import httpx
import pydicom
import pytest

from .conftest import WAIT_IMAGE, add_user, browser_missing, ingest, real_file, start_server


@pytest.fixture(scope="module")
def https_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    if (why := browser_missing()) is not None:
        pytest.skip(why)
    if shutil.which("openssl") is None:
        pytest.fail("openssl is needed to make the test certificate (Debian package openssl)")
    root = tmp_path_factory.mktemp("viewer-https")
    key, crt = root / "key.pem", root / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
                    "-out", str(crt), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True)
    ct = real_file("CT_small.dcm")
    data = root / "data"
    ingest(data, [ct])
    add_user(data, "reader1", "reader", "a long enough password")
    server = start_server(data, root / "serve.log", "--anonymous", "none", tls=(crt, key))
    try:
        yield server.url, str(pydicom.dcmread(ct, stop_before_pixels=True).StudyInstanceUID)
    finally:
        server.stop()


def test_login_and_read_a_study_over_https(https_site: tuple[str, str], browser) -> None:  # noqa: ANN001
    url, study = https_site
    with pytest.raises(httpx.HTTPError):
        httpx.get(url.replace("https://", "http://") + "/", timeout=3)
    # The browser trusts nothing here but is told to accept this self-signed certificate, as a
    # site would install its own CA.
    ctx = browser.new_context(ignore_https_errors=True, viewport={"width": 1200, "height": 800})
    try:
        page = ctx.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{url}/#/study/{study}")
        page.wait_for_selector("form.login")
        page.fill("form.login input[name=name]", "reader1")
        page.fill("form.login input[name=password]", "a long enough password")
        page.click("form.login button[type=submit]")
        page.wait_for_function(WAIT_IMAGE, arg=[0, None, None], timeout=20_000)
        assert page.evaluate("() => location.protocol") == "https:"
        assert page.evaluate("() => window.dicomvault.grid.viewports[0].image.studyUid") == study
        assert page.text_content("header .who") == "reader1 (reader)"
        # a reader sees no share or save buttons: the archive would refuse them anyway
        assert page.evaluate("() => [...document.querySelectorAll('nav.toolbar button')]"
                             ".some((b) => b.textContent === 'Share')") is False
        out = Path("test-output/viewer")
        out.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(out / "https_login_and_read.png"))
        assert not errors, errors
    finally:
        ctx.close()
