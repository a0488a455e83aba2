"""The tier layout stored in the data directory (storage/layout.py) and how the engine opens
old and re-configured data directories."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydicom.data import get_testdata_file

from dicomvault.engine import Engine
from dicomvault.storage.layout import LayoutError
from dicomvault.storage.settings import TierSpec

CT = get_testdata_file("CT_small.dcm")
MR = get_testdata_file("MR_small.dcm")


def test_a_fresh_directory_stores_the_default_layout(tmp_path: Path) -> None:
    with Engine(tmp_path / "d") as e:
        assert [t.name for t in e.tiers] == ["landing", "warm"]
        (out,) = e.store_files([CT])
        assert e.index.blob(out.hash).tier == "landing"
    doc = json.loads((tmp_path / "d" / "tiers.json").read_text())
    assert [t["name"] for t in doc["tiers"]] == ["landing", "warm"]
    assert (tmp_path / "d" / "tiers.json").stat().st_mode & 0o777 == 0o600
    # A read-only open (ls, export) finds the landing tier's objects without any config.
    with Engine(tmp_path / "d", read_only=True) as e:
        assert e.read_file(out.sop_instance_uid) == Path(CT).read_bytes()


def test_a_directory_from_before_tiers_opens_with_its_volumes_as_warm(tmp_path: Path) -> None:
    d = tmp_path / "d"
    inline = (TierSpec("hot", "local", "hot", path="volumes"),)
    with Engine(d, tiers=inline) as e:
        (out,) = e.store_files([CT])
    # What an old data directory looks like: no layout file, blobs in volumes/, records say "hot".
    (d / "tiers.json").unlink()
    with Engine(d) as e:
        assert [t.name for t in e.tiers] == ["landing", "warm"]
        assert e.placed_tier(e.index.blob(out.hash)) == "warm"
        assert e.read_file(out.sop_instance_uid) == Path(CT).read_bytes()
        assert e.tier_stats()["warm"]["objects"] == 1
        (mr,) = e.store_files([MR])
        assert e.vault.holders(mr.hash) == [0]
        assert e.verify().clean


def test_a_config_that_drops_a_tier_holding_blobs_is_refused(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with Engine(d) as e:
        e.store_files([CT])
    only_warm = (TierSpec("warm", "local", "hot", path="volumes"),)
    with pytest.raises(LayoutError, match="'landing'.*still holds blobs"):
        Engine(d, tiers=only_warm)
    moved = (
        TierSpec("landing", "local", "raw", path="elsewhere"),
        TierSpec("warm", "local", "hot", path="volumes"),
    )
    with pytest.raises(LayoutError, match="moves it"):
        Engine(d, tiers=moved)
    # Adding a tier is fine, and is remembered for the next open without a config.
    more = (
        TierSpec("landing", "local", "raw", path="landing"),
        TierSpec("warm", "local", "hot", path="volumes"),
        TierSpec("archive", "local", "hot", path="archive"),
    )
    with Engine(d, tiers=more) as e:
        assert [t.name for t in e.tiers] == ["landing", "warm", "archive"]
    with Engine(d) as e:
        assert [t.name for t in e.tiers] == ["landing", "warm", "archive"]


def test_blobs_in_any_lane_of_a_tier_count_as_held(tmp_path: Path) -> None:
    d = tmp_path / "d"
    with Engine(d) as e:
        (out,) = e.store_files([CT])
    # Concurrent writers fill the lanes in `lane-k/`: put the only blob in lane 1.
    landing = d / "blobs" / "landing"
    (landing / "lane-1").mkdir(exist_ok=True)
    for vol in landing.glob("*.dat"):
        vol.rename(landing / "lane-1" / vol.name)
    with Engine(d) as e:
        assert e.read_file(out.sop_instance_uid) == Path(CT).read_bytes()
    with pytest.raises(LayoutError, match="'landing'.*still holds blobs"):
        Engine(d, tiers=(TierSpec("warm", "local", "hot", path="volumes"),))


def test_an_object_store_tier_cannot_silently_disappear(tmp_path: Path) -> None:
    d = tmp_path / "d"
    three = (
        TierSpec("landing", "local", "raw", path="landing"),
        TierSpec("warm", "local", "hot", path="volumes"),
        TierSpec("cold", "s3", "cold", endpoint="http://127.0.0.1:1", bucket="never-used"),
    )
    Engine(d, tiers=three).close()
    with pytest.raises(LayoutError, match="'cold'.*unreachable"):
        Engine(d, tiers=three[:2])
