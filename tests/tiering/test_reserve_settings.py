"""The `[storage]` table: the free-space reserve every write leaves (storage/reserve.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from dicomvault.config import load_config
from dicomvault.storage.reserve import Reserve, parse_reserve
from dicomvault.storage.settings import SettingsError


def test_defaults_scale_between_16_mib_and_4_gib() -> None:
    r = load_config(None).reserve
    assert r == Reserve(16 << 20, 0.02, 4 << 30)
    assert r.bytes_for(48 << 20) == 16 << 20
    assert r.bytes_for(100 << 30) == 2 << 30
    assert r.bytes_for(10 << 40) == 4 << 30


def test_the_config_file_sets_it(tmp_path: Path) -> None:
    cfg = tmp_path / "dv.toml"
    cfg.write_text('[storage]\nreserve_min = "1GiB"\nreserve_fraction = 0.05\nreserve_max = "20GB"\n')
    assert load_config(cfg).reserve == Reserve(1 << 30, 0.05, 20_000_000_000)
    cfg.write_text('[storage]\nreserve_min = "64MiB"\nreserve_fraction = 0\n')
    fixed = load_config(cfg).reserve
    assert fixed.bytes_for(1 << 40) == 64 << 20


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"reserve": "1GB"}, "unknown key.*reserve"),
        ({"reserve_fraction": 0.9}, "reserve_fraction.*0 to 0.5"),
        ({"reserve_fraction": True}, "reserve_fraction"),
        ({"reserve_min": "lots"}, "reserve_min: not a size"),
        ({"reserve_min": "2GB", "reserve_max": "1GB"}, "reserve_max .* below reserve_min"),
    ],
)
def test_each_mistake_names_the_key(table: dict[str, object], message: str) -> None:
    with pytest.raises(SettingsError, match=message):
        parse_reserve(table, "/etc/dv.toml: storage")
