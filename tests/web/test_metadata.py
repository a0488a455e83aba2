"""WADO-RS metadata service and its cache: hits, misses, base URL placeholder, rebuilds."""

from __future__ import annotations

import io
import warnings
from pathlib import Path
from typing import Any

import orjson
import pydicom
import pydicom.data
import pytest

from dicomvault.engine import Engine
from dicomvault.index import InstanceRecord
from dicomvault.web.dicomweb.json_model import dataset_json
from dicomvault.web.dicomweb.metadata import PLACEHOLDER, MetadataCache, MetadataService, with_stored_syntax

FILES = ["CT_small.dcm", "MR_small_bigendian.dcm", "waveform_ecg.dcm", "image_dfl.dcm", "JPEG2000.dcm",
         "rtplan.dcm"]
BASE = "https://pacs.example:8443/dicom-web"


class CountingEngine:
    """The engine, counting reads of stored objects (a hit must not touch the store)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.reads = 0

    def read_record(self, rec: InstanceRecord, *, background: bool = False,
                    as_received: bool = False) -> tuple[str, bytes]:
        self.reads += 1
        return self.engine.read_record(rec, background=background, as_received=as_received)

    def coercion_of(self, study_uid: str) -> dict[str, str]:
        return self.engine.coercion_of(study_uid)

    def is_remote(self, blob_hash: bytes) -> bool:
        return self.engine.is_remote(blob_hash)


def store(engine: Engine, files: list[str]) -> list[InstanceRecord]:
    outcomes = engine.store_files([pydicom.data.get_testdata_file(name) for name in files])
    records = []
    for outcome in outcomes:
        assert not isinstance(outcome, Exception), outcome
        rec = engine.instance(outcome.sop_instance_uid)
        assert rec is not None
        records.append(rec)
    return records


def expected_json(engine: Engine, rec: InstanceRecord, base: str, threshold: int = 1024) -> dict[str, Any]:
    _, ts, dataset = engine.read_instance(rec.sop_uid)
    prefix = f"{base}/studies/{rec.study_uid}/series/{rec.series_uid}/instances/{rec.sop_uid}"
    return with_stored_syntax(dataset_json(ts, dataset, prefix, threshold=threshold), ts)


@pytest.fixture
def records(engine: Engine) -> list[InstanceRecord]:
    return store(engine, FILES)


def test_miss_then_hit_for_any_base_url(
    engine: Engine, records: list[InstanceRecord], tmp_path: Path
) -> None:
    counting = CountingEngine(engine)
    with MetadataCache(tmp_path / "cache" / "metadata") as cache:
        service = MetadataService(counting, cache)
        first = orjson.loads(service.instances_json(records, BASE))
        assert counting.reads == len(records)
        assert first == [expected_json(engine, rec, BASE) for rec in records]

        other = "http://10.0.0.5/proxy/dicom-web"
        second = orjson.loads(service.instances_json(records, other + "/"))
        assert counting.reads == len(records), "a hit read the store"
        assert second == [expected_json(engine, rec, other) for rec in records]
        assert PLACEHOLDER not in orjson.dumps(second).decode()

        ct = second[0]
        rec = records[0]
        assert ct["7FE00010"]["BulkDataURI"] == (
            f"{other}/studies/{rec.study_uid}/series/{rec.series_uid}/instances/{rec.sop_uid}/bulkdata/7FE00010"
        )


def test_base_url_is_json_escaped(engine: Engine, records: list[InstanceRecord], tmp_path: Path) -> None:
    with MetadataCache(tmp_path / "m") as cache:
        service = MetadataService(engine, cache)
        service.instances_json(records[:1], BASE)
        odd = 'http://h/a"b\\c/ü'
        doc = orjson.loads(service.instances_json(records[:1], odd))
        assert doc[0]["7FE00010"]["BulkDataURI"].startswith(odd + "/studies/")


def test_order_and_duplicates_follow_the_records(engine: Engine, records: list[InstanceRecord],
                                                 tmp_path: Path) -> None:
    with MetadataCache(tmp_path / "m") as cache:
        service = MetadataService(engine, cache)
        picked = [records[2], records[0], records[2]]
        doc = orjson.loads(service.instances_json(picked, BASE))
        assert [d["00080018"]["Value"][0] for d in doc] == [r.sop_uid for r in picked]
        assert orjson.loads(service.instances_json([], BASE)) == []


def test_cache_survives_reopen_and_warm(
    engine: Engine, records: list[InstanceRecord], tmp_path: Path
) -> None:
    path = tmp_path / "cache" / "metadata"
    counting = CountingEngine(engine)
    with MetadataCache(path) as cache:
        service = MetadataService(counting, cache)
        assert service.warm(records[:3]) == 3
        assert service.warm(records) == len(records) - 3
        assert service.warm(records) == 0
    reads = counting.reads
    with MetadataCache(path) as cache:
        service = MetadataService(counting, cache)
        doc = orjson.loads(service.instances_json(records, BASE))
        assert counting.reads == reads
        assert doc == [expected_json(engine, rec, BASE) for rec in records]


@pytest.mark.parametrize("damage", ["current", "manifest", "file"])
def test_a_cache_that_cannot_be_opened_is_rebuilt(engine: Engine, records: list[InstanceRecord],
                                                  tmp_path: Path, damage: str) -> None:
    path = tmp_path / "cache" / "metadata"
    with MetadataCache(path) as cache:
        MetadataService(engine, cache).warm(records)
    if damage == "current":
        (path / "CURRENT").write_bytes(b"garbage\n")
    elif damage == "manifest":
        for manifest in path.glob("MANIFEST-*"):
            manifest.write_bytes(b"\0" * 64)
    else:
        import shutil

        shutil.rmtree(path)
        path.write_bytes(b"not a database")
    counting = CountingEngine(engine)
    with MetadataCache(path) as cache:
        assert cache.enabled
        service = MetadataService(counting, cache)
        doc = orjson.loads(service.instances_json(records, BASE))
        assert counting.reads == len(records)  # rebuilt empty: every instance is a miss
        assert doc == [expected_json(engine, rec, BASE) for rec in records]
        service.instances_json(records, BASE)
        assert counting.reads == len(records)


def test_a_cache_held_elsewhere_leaves_the_service_working(engine: Engine, records: list[InstanceRecord],
                                                          tmp_path: Path) -> None:
    path = tmp_path / "m"
    with MetadataCache(path) as holder:
        MetadataService(engine, holder).warm(records)
        with MetadataCache(path) as second:
            assert not second.enabled
            doc = orjson.loads(MetadataService(engine, second).instances_json(records, BASE))
            assert doc == [expected_json(engine, rec, BASE) for rec in records]
        # the holder's entries were not dropped
        assert all(v is not None for v in holder.get_many([r.hash for r in records]))


def test_a_value_spelling_the_placeholder_is_served_verbatim_and_not_cached(engine: Engine,
                                                                            tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = "1.2.3.4.5.6.7.8.9"
    ds.StudyDescription = f"{PLACEHOLDER}/x"
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    outcome = engine.store_buffers([buf.getvalue()])[0]
    assert not isinstance(outcome, Exception), outcome
    rec = engine.instance(outcome.sop_instance_uid)
    assert rec is not None
    with MetadataCache(tmp_path / "m") as cache:
        service = MetadataService(engine, cache)
        for _ in range(2):
            doc = orjson.loads(service.instances_json([rec], BASE))[0]
            assert doc["00081030"]["Value"] == [f"{PLACEHOLDER}/x"]
            assert doc["7FE00010"]["BulkDataURI"].startswith(BASE + "/studies/")
        assert cache.get_many([rec.hash]) == [None]
        assert service.warm([rec]) == 0


def test_works_without_a_cache(engine: Engine, records: list[InstanceRecord]) -> None:
    doc = orjson.loads(MetadataService(engine, None).instances_json(records, BASE))
    assert doc == [expected_json(engine, rec, BASE) for rec in records]


def test_a_cache_made_with_another_threshold_is_emptied(engine: Engine, records: list[InstanceRecord],
                                                       tmp_path: Path) -> None:
    path = tmp_path / "m"
    with MetadataCache(path) as cache:
        MetadataService(engine, cache).warm(records)
    with MetadataCache(path, threshold=64) as cache:
        assert cache.get_many([r.hash for r in records]) == [None] * len(records)
        service = MetadataService(engine, cache)
        doc = orjson.loads(service.instances_json(records, BASE))
        assert doc == [expected_json(engine, rec, BASE, threshold=64) for rec in records]
        assert doc != [expected_json(engine, rec, BASE) for rec in records]
    with MetadataCache(path, threshold=64) as cache:
        assert all(v is not None for v in cache.get_many([r.hash for r in records]))


def test_stored_syntax_is_announced_in_tag_order(engine: Engine, records: list[InstanceRecord]) -> None:
    """A viewer asks frames as native bytes and must know what they went through (a YBR JPEG
    comes back RGB): every instance names its stored syntax in (0008,3002), keys kept in order."""
    service = MetadataService(engine, None)
    for rec, doc in zip(records, orjson.loads(service.instances_json(records, BASE)), strict=True):
        assert doc["00083002"] == {"vr": "UI", "Value": [rec.transfer_syntax]}
        assert list(doc) == sorted(doc)
