"""`/api/peers`: admins manage the DICOM nodes over HTTP as `dicomvault peers` does, each change an
audit Security Alert; the DIMSE side of the same file is tested in tests/dimse/test_dimse_peers.py."""

from __future__ import annotations

import httpx

from dicomvault.audit.log import search
from dicomvault.auth.peer_store import PeerStore
from dicomvault.site import Site


def test_admins_add_replace_list_and_remove_peers(site: Site, http: httpx.Client) -> None:
    site.users.add("pacs-admin", "admin")
    site.users.add("reader", "reader")
    admin = {"Authorization": f"Bearer {site.users.issue_token('pacs-admin')}"}
    reader = {"Authorization": f"Bearer {site.users.issue_token('reader')}"}
    ct = {"ae_title": "CT_ROOM1", "host": "10.1.4.21", "allow": ["store", "commit"]}
    assert http.post("/api/peers", json=ct, headers=reader).status_code == 403
    assert http.post("/api/peers", json=ct, headers=admin).status_code == 201
    assert http.post("/api/peers", json=ct, headers=admin).status_code == 409
    moved = {**ct, "host": "10.1.4.22", "replace": True}
    assert http.post("/api/peers", json=moved, headers=admin).status_code == 200
    bad = http.post("/api/peers", json={**ct, "allow": ["stor"]}, headers=admin)
    assert bad.status_code == 400 and "unknown service(s) stor" in bad.text
    assert http.post("/api/peers", json={"ae_title": "X"}, headers=admin).status_code == 400
    listed = http.get("/api/peers", headers=admin).json()
    assert listed == [{"ae_title": "CT_ROOM1", "host": "10.1.4.22", "port": 0, "allow": ["commit", "store"]}]
    assert http.get("/api/peers", headers=reader).status_code == 403
    # what a running DIMSE server reads is what the API wrote
    assert PeerStore(site.engine.data_dir).current()["CT_ROOM1"].host == "10.1.4.22"
    assert http.delete("/api/peers/CT_ROOM1", headers=admin).status_code == 204
    assert http.delete("/api/peers/CT_ROOM1", headers=admin).status_code == 404
    changes = [r["detail"]["change"] for r in search(site.engine.data_dir, event="security-alert")
               if "change" in r["detail"]]
    assert changes == ["peer-added", "peer-replaced", "peer-removed"]
