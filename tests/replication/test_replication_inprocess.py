"""Replication mechanics on loopback HTTP with both sites in this process: ordering, dedup by
hash, deletes and replacements, idempotent replay, auth, chains."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from repl_helpers import TOKEN, synth_files

from dicomvault.engine import Engine
from dicomvault.replication import state
from dicomvault.replication.client import ReplicationError, SiteClient
from dicomvault.replication.puller import Puller
from dicomvault.site import Site, SiteOptions


def snapshot(eng: Engine) -> dict[str, bytes]:
    return {r.sop_uid: r.hash for r in eng.index.instances()}


def catch_up(eng: Engine, url: str, token: str = TOKEN) -> int:
    p = Puller(eng, SiteClient(url, token), limit=7)
    try:
        return p.catch_up().applied
    finally:
        p.close()


def test_replica_converges_with_deletes_and_replacements(primary, tmp_path: Path) -> None:
    eng, site = primary
    files = synth_files(3)
    eng.store_buffers(files[:10])
    with Engine(tmp_path / "replica", min_free_bytes=0) as rep:
        assert catch_up(rep, site.url) == 10
        assert snapshot(rep) == snapshot(eng)
        # more, a delete, a replacement (same SOP UID, other bytes)
        eng.store_buffers(files[10:])
        study = eng.index.get_instance(next(iter(snapshot(eng)))).study_uid
        victim = next(r for r in eng.index.instances() if r.study_uid != study)
        eng.delete("study", study)
        eng.store_buffers([files[0]])  # re-send of an instance of the deleted study: comes back
        changed = bytearray(files[12])
        changed[-1] ^= 0xFF  # same SOP Instance UID, other pixel bytes: a replacement
        (res,) = eng.store_buffers([bytes(changed)])
        assert res.replaced
        catch_up(rep, site.url)
        assert snapshot(rep) == snapshot(eng)
        assert victim.sop_uid in snapshot(rep)
        assert rep.verify().clean
        assert rep.index.check() == []
        assert rep.read_file(victim.sop_uid) == eng.read_file(victim.sop_uid)
        # replay from 0 is a no-op: nothing fetched, same state
        up = state.upstream(rep.index)
        up.seq = 0
        state.set_upstream(rep.index, up)
        p = Puller(rep, SiteClient(site.url, TOKEN))
        try:
            total = p.catch_up()
        finally:
            p.close()
        assert total.blobs_fetched == 0
        assert snapshot(rep) == snapshot(eng)
        assert rep.index.stats()["objects"] == eng.index.stats()["objects"]


def test_auth_is_required(primary) -> None:
    _, site = primary
    with pytest.raises(ReplicationError, match="401"):
        SiteClient(site.url, "wrong").changes(0, 1)


def test_chain(primary, tmp_path: Path) -> None:
    eng, site = primary
    eng.store_buffers(synth_files(2))
    with Engine(tmp_path / "b", min_free_bytes=0) as b, Engine(tmp_path / "c", min_free_bytes=0) as c:
        catch_up(b, site.url)
        b_site = Site(b, SiteOptions(port=0, replication_tokens=["chain-token"]))
        b_site.start()
        try:
            catch_up(c, b_site.url, "chain-token")
        finally:
            b_site.stop()
        assert snapshot(c) == snapshot(eng)
        assert c.verify().clean


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl to make a test certificate")
def test_tls(tmp_path: Path) -> None:
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    with Engine(tmp_path / "p", min_free_bytes=0) as eng, Engine(tmp_path / "r", min_free_bytes=0) as rep:
        eng.store_buffers(synth_files(1, slices=4))
        site = Site(eng, SiteOptions(port=0, replication_tokens=[TOKEN], certfile=str(cert),
                                     keyfile=str(key)))
        site.start()
        try:
            assert site.url.startswith("https://")
            with pytest.raises(ReplicationError, match="CERTIFICATE_VERIFY_FAILED"):
                SiteClient(site.url, TOKEN).changes(0, 1)  # an unknown CA is refused
            p = Puller(rep, SiteClient(site.url, TOKEN, cafile=str(cert)))
            try:
                p.catch_up()
            finally:
                p.close()
        finally:
            site.stop()
        assert snapshot(rep) == snapshot(eng)
