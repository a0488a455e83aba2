"""The metadata warmer computes a series' metadata once the series has been quiet, from the
change feed, so the first /metadata request is served from the cache."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from pydicom.uid import ExplicitVRLittleEndian

from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.engine import Engine
from dicomvault.web.dicomweb.metadata import MetadataCache, MetadataService
from dicomvault.web.dicomweb.warmer import MetadataWarmer


def test_warms_quiet_series_only(tmp_path: Path) -> None:
    with Engine(tmp_path / "d") as eng:
        cache = MetadataCache(str(tmp_path / "cache"))
        service = MetadataService(eng, cache)
        warmer = MetadataWarmer(eng, service, quiet_s=5.0)
        a = eng.store_buffers(list(ct_series(SeriesSpec(slices=6, rows=32, columns=32, seed=1))))
        assert warmer.step(now=100.0) == 0  # just arrived: the modality may still be sending
        b = eng.store_buffers(list(ct_series(SeriesSpec(slices=4, rows=32, columns=32, seed=2))))
        assert warmer.step(now=104.0) == 0  # series A is 4 s quiet, B 0 s
        assert warmer.step(now=106.0) == 6  # A is quiet now; B (seen at 104) is not
        assert all(cache.get_many([o.hash for o in a]))
        assert not any(cache.get_many([o.hash for o in b]))
        assert warmer.step(now=110.0) == 4
        assert all(cache.get_many([o.hash for o in b]))
        # a served request now reads nothing from the store
        recs = eng.index.instances_of("series", eng.instance(a[0].sop_instance_uid).series_uid)
        body = service.instances_json(recs, "http://x/dicom-web")
        assert body.count(b'"00080018"') == 6
        assert warmer.step(now=200.0) == 0  # nothing new
        cache.close()


def test_catches_up_on_what_arrived_while_not_serving(tmp_path: Path) -> None:
    """`dicomvault ingest` then `serve`: the warmer starts where its last run stopped (its cursor
    is kept in the cache), so the series stored in between are warm before their first view; a
    first run ever catches up on the newest feed entries."""
    with Engine(tmp_path / "d") as eng:
        first = eng.store_buffers(list(ct_series(SeriesSpec(slices=5, rows=32, columns=32, seed=3))))
        cache = MetadataCache(str(tmp_path / "cache"))
        service = MetadataService(eng, cache)
        warmer = MetadataWarmer(eng, service, quiet_s=5.0)
        assert warmer.step(now=0.0) == 0 and warmer.step(now=10.0) == 5  # never ran: catches up
        assert all(cache.get_many([o.hash for o in first]))
        assert cache.cursor() == eng.index.last_seq()
        # the server stops; an ingest adds a series; the server starts again
        later = eng.store_buffers(list(ct_series(SeriesSpec(slices=3, rows=32, columns=32, seed=4))))
        again = MetadataWarmer(eng, service, quiet_s=5.0)
        assert again.step(now=0.0) == 0 and again.step(now=10.0) == 3
        assert all(cache.get_many([o.hash for o in later]))
        assert again.step(now=20.0) == 0
        cache.close()


def test_an_unreadable_object_does_not_hold_up_the_others(tmp_path: Path) -> None:
    """An object that cannot be read (here: indexed, its blob never written) is skipped with a
    warning and counted; the rest of its series and the quiet series beside it are warmed in the
    same step. A passing failure (here the cache's write) skips nothing: the series is tried
    again at the next step, and the feed position is not saved past it."""
    with Engine(tmp_path / "d") as eng:
        good = eng.store_buffers(list(ct_series(SeriesSpec(slices=4, rows=32, columns=32, seed=5))))
        series = eng.instance(good[0].sop_instance_uid)
        attrs = {"PatientID": series.patient_id, "StudyInstanceUID": series.study_uid,
                 "SeriesInstanceUID": series.series_uid, "SOPInstanceUID": "1.2.3.9.1.1",
                 "SOPClassUID": "1.2.840.10008.5.1.4.1.1.2", "Modality": "CT"}
        eng.index.add_instances([{"attrs": attrs, "hash": b"\x07" * 32, "prefix": b"",
                                  "transfer_syntax": ExplicitVRLittleEndian, "logical_len": 500,
                                  "stored_len": 400, "codec": 1, "tier": "hot", "received_at": time.time()}])
        later = eng.store_buffers(list(ct_series(SeriesSpec(slices=3, rows=32, columns=32, seed=6))))
        cache = MetadataCache(str(tmp_path / "cache"))
        service = MetadataService(eng, cache)
        warmer = MetadataWarmer(eng, service, quiet_s=5.0)
        assert warmer.step(now=0.0) == 0
        put_many = cache.put_many

        def full(items: object) -> None:
            raise OSError(28, "No space left on device")

        cache.put_many = full  # type: ignore[method-assign]
        with pytest.raises(OSError):
            warmer.step(now=10.0)
        assert warmer.pending and cache.cursor() is None  # nothing given up, nothing saved
        cache.put_many = put_many  # type: ignore[method-assign]
        assert warmer.step(now=11.0) == 7  # both series but the lost object, in the same step
        assert warmer.skipped == 2  # the lost object, once per attempt at its series
        assert all(cache.get_many([o.hash for o in good + later]))
        assert cache.cursor() == eng.index.last_seq()
        cache.close()
