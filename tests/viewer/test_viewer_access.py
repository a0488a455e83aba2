"""Access in the real browser viewer, against `dicomvault serve --anonymous none`: the login page,
share links (one study, read-only), and links that stop working once revoked or expired.
Fixtures (access_site: two studies, user alice/writer; new_page: fresh browser contexts whose
console errors fail the test): conftest.py."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import httpx

from dicomvault.auth.shares import MIN_EXPIRES_IN, ShareStore

SHOTS = Path(__file__).resolve().parents[2] / "test-output" / "viewer"
REVOKED_TEXT = "This share link has expired or was revoked."

# A request from inside the page, with a bearer token, as any script on it could make.
FETCH = """async ([path, token]) => {
  const r = await fetch(path, { headers: token ? { Authorization: `Bearer ${token}` } : {} });
  return r.status;
}"""

WAIT_IMAGE = """() => { const vp = window.dicomvault?.grid?.viewports[0];
  return !!(vp && vp.image && vp.pixels && !vp.dirty && vp.lastDraw); }"""


def _shot(name: str) -> Path:
    """Where a screenshot of one view goes."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    return SHOTS / f"{name}.png"


def login_token(site: Any) -> str:
    r = httpx.post(f"{site.server.url}/api/session", json={"name": site.user, "password": site.password})
    assert r.status_code == 200, r.text
    return r.json()["token"]


def create_share(site: Any, token: str, study: str, **extra: Any) -> httpx.Response:
    return httpx.post(
        f"{site.server.url}/api/shares",
        json={"study": study, **extra},
        headers={"Authorization": f"Bearer {token}"},
    )


def open_link(new_page, url: str, name: str):  # noqa: ANN001, ANN201 - playwright Page
    """A fresh browser (context) opening a share link. The viewer first asks /api/session without
    credentials, which this server answers 401: the browser logs that, and it is expected."""
    page = new_page(name=name)
    page.log.allow(r"status of 401")
    page.goto(url)
    return page


def shown_study(page) -> str:  # noqa: ANN001
    page.wait_for_function(WAIT_IMAGE)
    return page.evaluate("() => window.dicomvault.grid.viewports[0].image.studyUid")


def test_login_page_wrong_and_right_password_and_share_dialog(access_site, new_page) -> None:
    base = access_site.server.url
    page = new_page()
    page.log.allow(r"status of 401")  # /api/session before login, and the wrong password
    page.goto(f"{base}/")
    page.wait_for_selector("form.login")
    assert page.evaluate("() => document.querySelector('table.studies')") is None
    page.screenshot(path=str(_shot("access_login")))

    page.fill("form.login input[name=name]", access_site.user)
    page.fill("form.login input[name=password]", "not the password")
    page.click("form.login button[type=submit]")
    page.wait_for_function("() => document.querySelector('form.login .error').textContent !== ''")
    assert page.text_content("form.login .error") == "Wrong user name or password."
    assert page.evaluate("() => sessionStorage.getItem('dicomvault.token')") is None
    page.screenshot(path=str(_shot("access_login_wrong_password")))

    page.fill("form.login input[name=password]", access_site.password)
    page.click("form.login button[type=submit]")
    page.wait_for_function("() => document.querySelectorAll('table.studies tr.study').length === 2")
    studies = page.evaluate("() => [...document.querySelectorAll('tr.study')].map((tr) => tr.dataset.study)")
    assert sorted(studies) == sorted([access_site.study_a, access_site.study_b])
    assert page.text_content("header .who") == f"{access_site.user} (writer)"
    page.screenshot(path=str(_shot("access_study_list")))

    # A writer may share: the viewer's Share dialog makes a link (POST /api/shares)...
    page.click(f"tr.study[data-study='{access_site.study_a}']")
    assert shown_study(page) == access_site.study_a
    page.click("nav.toolbar button:text-is('Share')")
    page.click("dialog.share button[value=create]")
    url = page.wait_for_selector("dialog.share input.share-url").input_value()
    assert url.startswith(f"{base}/#/share/")
    page.screenshot(path=str(_shot("access_share_dialog")))
    shared = open_link(new_page, url, "shared")
    assert shown_study(shared) == access_site.study_a
    # ...and revokes it (DELETE /api/shares/{id}): a fresh browser gets the message instead.
    page.click("dialog.share button:text-is('Revoke')")
    page.wait_for_selector("dialog.share >> text=Link revoked.")
    again = open_link(new_page, url, "revoked")
    again.wait_for_selector(f"text={REVOKED_TEXT}")


def test_share_link_opens_its_study_only_until_revoked(access_site, new_page) -> None:
    base = access_site.server.url
    user = login_token(access_site)
    r = create_share(access_site, user, access_site.study_a, expires_in=3600, note="browser test")
    assert r.status_code == 201, r.text
    share = r.json()
    assert share["url"] == f"{base}/#/share/{share['token']}" and share["study"] == access_site.study_a

    page = open_link(new_page, share["url"], "share")
    assert shown_study(page) == access_site.study_a
    assert page.evaluate("location.hash") == f"#/study/{access_site.study_a}"
    # No login page left pending behind the study (the viewer's first /api/session was a 401).
    assert page.evaluate("() => window.dicomvault.loggingIn") is False
    assert page.evaluate("() => document.querySelector('form.login')") is None
    session = page.evaluate("() => window.dicomvault.session")
    assert session["method"] == "share" and session["study"] == access_site.study_a
    assert session["actions"] == ["read"]
    panel = page.evaluate(
        "() => [...document.querySelectorAll('.seriespanel section')].map((s) => s.dataset.study)"
    )
    assert panel == [access_site.study_a]
    assert page.evaluate("() => document.querySelector('nav.toolbar').textContent.includes('Share')") is False
    page.screenshot(path=str(_shot("access_share_open")))

    # The token opens study A, and nothing else: not B, not the study list.
    page.log.allow(r"status of 403")
    tok = share["token"]
    a_md = f"/dicom-web/studies/{access_site.study_a}/metadata"
    b_md = f"/dicom-web/studies/{access_site.study_b}/metadata"
    assert page.evaluate(FETCH, [a_md, tok]) == 200
    assert page.evaluate(FETCH, [b_md, tok]) == 403
    assert page.evaluate(FETCH, ["/dicom-web/studies", tok]) == 403
    assert page.evaluate(FETCH, [f"/dicom-web/studies?StudyInstanceUID={access_site.study_b}", tok]) == 403
    assert page.evaluate(FETCH, ["/api/shares", tok]) == 403

    # Revoked: the open page's next request is refused, a fresh browser gets the message.
    r = httpx.delete(f"{base}/api/shares/{share['id']}", headers={"Authorization": f"Bearer {user}"})
    assert r.status_code == 204, r.text
    assert page.evaluate(FETCH, [a_md, tok]) == 401
    again = open_link(new_page, share["url"], "share_revoked")
    again.wait_for_selector(f"text={REVOKED_TEXT}")
    assert again.evaluate("() => sessionStorage.getItem('dicomvault.token')") is None
    assert again.evaluate("() => window.dicomvault.grid") in (None, {})


def test_share_link_expires(access_site, new_page) -> None:
    user = login_token(access_site)
    # The API refuses links shorter than MIN_EXPIRES_IN (60 s)...
    r = create_share(access_site, user, access_site.study_a, expires_in=MIN_EXPIRES_IN - 1)
    assert r.status_code == 400, r.text
    # ...so the link is made the way the CLI makes them, by the share store on the data directory
    # the server reads, with its clock hook set back: a 60 s link made 54 s ago has 6 s left.
    lifetime = 6.0
    store = ShareStore(access_site.data_dir, clock=lambda: time.time() - (MIN_EXPIRES_IN - lifetime))
    info, token = store.create(access_site.study_a, access_site.user, MIN_EXPIRES_IN, "expiry test")
    url = f"{access_site.server.url}/#/share/{token}"

    page = open_link(new_page, url, "expiring")
    assert shown_study(page) == access_site.study_a
    a_md = f"/dicom-web/studies/{access_site.study_a}/metadata"
    assert page.evaluate(FETCH, [a_md, token]) == 200
    left = info.expires_at - time.time()
    assert left > 0, "the page took longer to open than the link lives; raise `lifetime`"
    time.sleep(left + 0.3)

    assert page.evaluate(FETCH, [a_md, token]) == 401
    r = httpx.get(f"{access_site.server.url}/api/session", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and "expired" in r.text, r.text
    again = open_link(new_page, url, "expired")
    again.wait_for_selector(f"text={REVOKED_TEXT}")
