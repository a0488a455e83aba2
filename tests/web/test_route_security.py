"""Every HTTP route goes through the one check (web/security.py): the route table of the real
application is walked, and each endpoint must be marked by `secured` (with the action it
requires) or by `public` (open on purpose). Then each secured route is asked over real HTTP,
without credentials (401) and as a reader (403 exactly where the route needs more than read),
so a route that carries the mark but skips the check is caught too."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from starlette.routing import BaseRoute, Mount, Route

from dicomvault.auth.roles import READ
from dicomvault.engine import Engine
from dicomvault.site import Site, SiteOptions
from dicomvault.web.security import PUBLIC, access_of

# What may be reached without credentials, and why: the rest of the table needs a role.
EXPECTED_PUBLIC = {
    ("GET", "/healthz"),  # liveness for load balancers
    ("POST", "/api/session"),  # the login itself
    ("GET", "/"),  # the viewer's shell: holds no data
    ("MOUNT", "/viewer"),  # the viewer's static files
}


def walk(routes: list[BaseRoute], prefix: str = "") -> Iterator[tuple[str, str, object]]:
    """(method, path, endpoint or mounted app) of every route, mounts entered."""
    for r in routes:
        if isinstance(r, Mount):
            inner = getattr(r.app, "routes", None)
            if inner is not None:
                yield from walk(list(inner), prefix + r.path)
            else:
                yield "MOUNT", prefix + r.path, r.app
        elif isinstance(r, Route):
            for m in sorted((r.methods or {"GET"}) - {"HEAD"}):
                yield m, prefix + r.path, r.endpoint
        else:
            raise AssertionError(f"route of an unchecked kind {type(r).__name__}: {r!r}")


@pytest.fixture
def locked_site(tmp_path: Path) -> Iterator[Site]:
    with Engine(tmp_path / "data", min_free_bytes=0) as eng:
        s = Site(eng, SiteOptions(port=0, anonymous="none"))
        s.start()
        try:
            yield s
        finally:
            s.stop()


def test_every_route_is_secured_or_explicitly_public(locked_site: Site) -> None:
    table = list(walk(locked_site.app.routes))
    assert len(table) > 40  # the whole application, mounts included
    unmarked = [(m, p) for m, p, e in table if access_of(e) is None]
    assert unmarked == [], f"routes that bypass web/security.py: {unmarked}"
    public = {(m, p) for m, p, e in table if access_of(e) == PUBLIC}
    assert public == EXPECTED_PUBLIC


def _concrete(path: str) -> str:
    # Any value will do: the check comes before the handler looks anything up.
    return re.sub(r"\{(\w+)(:\w+)?\}", "1.2.3", path)


def test_secured_routes_refuse_the_unauthenticated_and_the_underprivileged(locked_site: Site) -> None:
    locked_site.users.add("rita", "reader")
    reader = {"Authorization": f"Bearer {locked_site.users.issue_token('rita')}"}
    checked = 0
    with httpx.Client(base_url=locked_site.url, timeout=30) as http:
        for method, path, endpoint in walk(locked_site.app.routes):
            action = access_of(endpoint)
            if action == PUBLIC:
                continue
            url = _concrete(path)
            r = http.request(method, url)
            assert r.status_code == 401, (method, path, r.status_code, r.text)
            assert "Bearer" in r.headers["www-authenticate"]
            r = http.request(method, url, headers=reader)
            if action == READ:
                assert r.status_code not in (401, 403), (method, path, r.status_code, r.text)
            else:
                assert r.status_code == 403, (method, path, action, r.status_code, r.text)
            checked += 1
    assert checked > 40
