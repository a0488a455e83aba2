"""IOCM across replication: a replica derives the hiding from the rejection note it receives,
holds what its primary hides (restorable there too), follows restores and policy deletes."""

from __future__ import annotations

from pathlib import Path

from dv_iocm import ct_series, rejection_note
from repl_helpers import TOKEN

from dicomvault.engine import Engine
from dicomvault.replication.client import SiteClient
from dicomvault.replication.puller import Puller


def catch_up(eng: Engine, url: str) -> None:
    p = Puller(eng, SiteClient(url, TOKEN), limit=3)  # small pages: notes and images in other pages
    try:
        p.catch_up()
    finally:
        p.close()


def visible(eng: Engine) -> set[str]:
    return {r.sop_uid for r in eng.index.instances()}


def hidden(eng: Engine) -> set[str]:
    return {e.sop_uid for e in eng.index.rejected() if e.record}


def test_replica_hides_and_restores_with_its_primary(primary, tmp_path: Path) -> None:
    eng, site = primary
    images = ct_series(tmp_path / "ct", 4)
    note = rejection_note(tmp_path / "kos.dcm", images[:2])
    eng.store_files([im.path for im in images])
    with Engine(tmp_path / "replica", min_free_bytes=0) as rep:
        catch_up(rep, site.url)
        assert visible(rep) == visible(eng)
        eng.store_files([tmp_path / "kos.dcm"])
        catch_up(rep, site.url)
        assert visible(rep) == visible(eng) == {images[2].sop_uid, images[3].sop_uid, note}
        assert hidden(rep) == hidden(eng) == {images[0].sop_uid, images[1].sop_uid}
        assert rep.index.get_study(images[0].study_uid).num_instances == 3
        eng.index.restore([images[0].sop_uid])
        catch_up(rep, site.url)
        assert visible(rep) == visible(eng)
        assert rep.read_file(images[0].sop_uid) == images[0].path.read_bytes()
        assert rep.index.check() == [] and eng.index.check() == []


def test_replica_that_was_behind_still_holds_the_hidden_instances(primary, tmp_path: Path) -> None:
    eng, site = primary
    images = ct_series(tmp_path / "ct", 3)
    rejection_note(tmp_path / "kos.dcm", images[:1])
    eng.store_files([tmp_path / "kos.dcm"])  # the note first: the image is hidden on arrival
    eng.store_files([im.path for im in images])
    with Engine(tmp_path / "replica", min_free_bytes=0) as rep:
        catch_up(rep, site.url)  # everything was already hidden on the primary when it pulled
        assert visible(rep) == visible(eng)
        assert hidden(rep) == {images[0].sop_uid}
        eng.index.restore([images[0].sop_uid])
        catch_up(rep, site.url)
        assert rep.read_file(images[0].sop_uid) == images[0].path.read_bytes()
        assert rep.index.check() == []


def test_policy_delete_reaches_a_replica_with_the_hide_policy(tmp_path: Path) -> None:
    from dicomvault.site import Site, SiteOptions

    images = ct_series(tmp_path / "ct", 3)
    note = rejection_note(tmp_path / "kos.dcm", images[:2], code="113039")
    with Engine(tmp_path / "primary", min_free_bytes=0, delete_on_retention_expired=True) as eng:
        site = Site(eng, SiteOptions(port=0, replication_tokens=[TOKEN]))
        site.start()
        try:
            eng.store_files([im.path for im in images])
            with Engine(tmp_path / "replica", min_free_bytes=0) as rep:
                catch_up(rep, site.url)
                eng.store_files([tmp_path / "kos.dcm"])
                catch_up(rep, site.url)
                assert visible(rep) == visible(eng) == {images[2].sop_uid, note}
                assert hidden(rep) == set()  # the primary's deletes dropped what it held aside
                assert rep.index.stats()["blobs"] == eng.index.stats()["blobs"] == 2
                assert rep.index.check() == []
        finally:
            site.stop()
