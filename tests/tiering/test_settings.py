"""The `tiers` / `[tiering]` configuration: defaults, the documented example, sizes, windows and
one test per class of validation error (each message must name the file and the key)."""

from __future__ import annotations

import tomllib
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from dicomvault.config import Config, ConfigError, load_config
from dicomvault.errors import DicomVaultError
from dicomvault.storage.settings import (
    DEFAULT_PACK_SIZE,
    DEFAULT_TIERS,
    PolicySpec,
    SettingsError,
    TieringSettings,
    TierSpec,
    format_size,
    parse_size,
    parse_tiering,
)

WHERE = "/etc/dv.toml"

EXAMPLE = """
[[tiers]]
name = "landing"
backend = "local"
path = "landing"
codec = "raw"
capacity = "200GB"

[[tiers]]
name = "warm"
backend = "local"
path = "warm"
codec = "hot"
capacity = "2TB"
high_watermark = 0.85
low_watermark = 0.70

[[tiers]]
name = "cold"
backend = "s3"
endpoint = "http://127.0.0.1:8333"
bucket = "dicomvault"
codec = "cold"
region = "us-east-1"
access_key = "AK"
secret_key = "SK"
prefix = "site-a/"
sse = "AES256"
pack_size = "256MB"

[tiering]
compaction = "background"
compactor_threads = 0
compact_after = 0
promote_days = 7
rate_limit = "200MB"
window = "22:00-06:00"
verify_rate = "50MB"
interval = 300

[[tiering.policies]]
name = "age-out"
from = "warm"
to = "cold"
min_age_days = 90
idle_days = 30
modalities = ["CT", "mr"]
min_study_bytes = "0"
max_study_bytes = "10GB"

[[tiering.policies]]
name = "warm-full"
from = "warm"
to = "cold"
watermark = true
"""

LANDING = {"name": "landing", "backend": "local", "path": "landing"}
WARM = {"name": "warm", "backend": "local", "path": "warm", "capacity": "1TB"}
COLD = {"name": "cold", "backend": "s3", "bucket": "b"}


def parse(text: str) -> TieringSettings:
    return parse_tiering(tomllib.loads(text), WHERE)


def tiers_doc(*tiers: dict[str, Any], **tiering: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {"tiers": [dict(t) for t in tiers]}
    if tiering:
        doc["tiering"] = tiering
    return doc


def rejects(doc: dict[str, Any], *fragments: str) -> str:
    with pytest.raises(SettingsError) as info:
        parse_tiering(doc, WHERE)
    message = str(info.value)
    assert message.startswith(WHERE), message
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    return message


# ---- defaults and the example -----------------------------------------------------------------


def test_defaults_without_any_key() -> None:
    s = parse_tiering({}, WHERE)
    assert s == TieringSettings() == Config().tiering
    assert [(t.name, t.backend, t.path, t.codec, t.codec_id) for t in s.tiers] == [
        ("landing", "local", "landing", "raw", 0),
        ("warm", "local", "volumes", "hot", 1),
    ]
    assert s.tiers == DEFAULT_TIERS
    assert s.landing.name == "landing"
    assert (s.compaction, s.compactor_threads, s.compact_after, s.promote_days) == ("background", 0, 0, 7)
    assert (s.rate_limit, s.window, s.verify_rate, s.interval, s.policies) == (None, None, None, 300, ())


def test_inline_compaction_defaults_to_a_single_warm_tier() -> None:
    s = parse_tiering({"tiering": {"compaction": "inline"}}, WHERE)
    assert s.compaction == "inline"
    assert s.tiers == (TierSpec("warm", "local", "hot", path="volumes"),)
    assert s.landing.name == "warm"


def test_the_documented_example() -> None:
    s = parse(EXAMPLE)
    landing, warm, cold = s.tiers
    assert landing == TierSpec("landing", "local", "raw", path="landing", capacity=200 * 10**9)
    assert warm == TierSpec("warm", "local", "hot", path="warm", capacity=2 * 10**12,
                            high_watermark=0.85, low_watermark=0.70)
    assert cold == TierSpec(
        "cold", "s3", "cold", endpoint="http://127.0.0.1:8333", bucket="dicomvault", region="us-east-1",
        access_key="AK", secret_key="SK", prefix="site-a/", sse="AES256", pack_size=256 * 10**6,
    )
    assert (cold.codec_id, cold.is_local, warm.is_local) == (2, False, True)
    assert "SK" not in repr(cold)  # the secret stays out of logs
    assert s.policies == (
        PolicySpec("age-out", "warm", "cold", min_age_days=90, idle_days=30,
                   modalities=frozenset({"CT", "MR"}), min_study_bytes=0, max_study_bytes=10 * 10**9),
        PolicySpec("warm-full", "warm", "cold", watermark=True),
    )
    assert (s.rate_limit, s.verify_rate, s.window, s.interval) == (200 * 10**6, 50 * 10**6, (1320, 360), 300)
    assert (s.index_of("landing"), s.index_of("cold")) == (0, 2)
    assert s.tier("warm") is warm
    assert s.local_tiers() == (landing, warm)


def test_inline_array_form_is_the_same() -> None:
    text = """
tiers = [
  { name = "landing", backend = "local", path = "landing", codec = "raw", capacity = "200GB" },
  { name = "cold", backend = "s3", bucket = "dicomvault" },
]
"""
    s = parse(text)
    assert s.tiers == (
        TierSpec("landing", "local", "raw", path="landing", capacity=200 * 10**9),
        # codec defaults by backend; the s3 options have defaults too
        TierSpec("cold", "s3", "cold", bucket="dicomvault", prefix="", pack_size=DEFAULT_PACK_SIZE),
    )


def test_local_codec_defaults_to_hot() -> None:
    s = parse_tiering(tiers_doc(LANDING, WARM), WHERE)
    assert [t.codec for t in s.tiers] == ["hot", "hot"]


def test_unknown_tier_lookup_names_it() -> None:
    s = parse_tiering({}, WHERE)
    with pytest.raises(SettingsError, match="unknown tier 'nope'"):
        s.tier("nope")
    with pytest.raises(SettingsError, match="unknown tier 'nope'"):
        s.index_of("nope")
    assert issubclass(SettingsError, DicomVaultError)


# ---- sizes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("value", "expected"), [
    (0, 0),
    (4096, 4096),
    ("0", 0),
    ("512", 512),
    ("512B", 512),
    ("200GB", 200 * 10**9),
    ("200G", 200 * 10**9),
    ("200gb", 200 * 10**9),
    ("1.5TB", 1_500_000_000_000),
    ("1.1TB", 1_100_000_000_000),
    ("512MiB", 512 * 2**20),
    ("512mib", 512 * 2**20),
    ("10 GiB", 10 * 2**30),
    ("10Gi", 10 * 2**30),
    ("  3kB ", 3000),
    ("1KiB", 1024),
    ("1.5KiB", 1536),
    ("2PB", 2 * 10**15),
    ("1EiB", 2**60),
    ("0.5B", 0),  # fractions of a byte round down
])
def test_parse_size(value: int | str, expected: int) -> None:
    assert parse_size(value, "x.size") == expected


@pytest.mark.parametrize(("value", "fragment"), [
    (-1, "negative"),
    ("-5GB", "negative"),
    ("lots", "not a size"),
    ("", "not a size"),
    ("5 XB", "not a size"),
    ("5GBB", "not a size"),
    ("1e9", "not a size"),
    ("GB", "not a size"),
    (1.5, "integer or a string"),
    (True, "integer or a string"),
    (None, "integer or a string"),
    ("100EB", "too large"),
])
def test_parse_size_rejects(value: object, fragment: str) -> None:
    with pytest.raises(SettingsError) as info:
        parse_size(value, "f.toml: tiers[0].capacity")
    assert fragment in str(info.value)
    assert str(info.value).startswith("f.toml: tiers[0].capacity")


def test_format_size() -> None:
    assert [format_size(n) for n in (512, 1500, 2 * 10**12, 1_500_000_000)] == [
        "512 B", "1.5 kB", "2 TB", "1.5 GB"]


# ---- windows ----------------------------------------------------------------------------------


def test_window_within_a_day() -> None:
    s = parse_tiering({"tiering": {"window": "09:30-17:00"}}, WHERE)
    assert s.window == (570, 1020)
    at = [datetime(2024, 5, 1, h, m) for h, m in ((9, 29), (9, 30), (16, 59), (17, 0), (3, 0))]
    assert [s.in_window(t) for t in at] == [False, True, True, False, False]


def test_window_wrapping_midnight() -> None:
    s = parse_tiering({"tiering": {"window": "22:00-06:00"}}, WHERE)
    assert s.window == (22 * 60, 6 * 60)
    times = ((21, 59), (22, 0), (23, 59), (0, 0), (5, 59), (6, 0), (12, 0))
    at = [datetime(2024, 5, 1, h, m) for h, m in times]
    assert [s.in_window(t) for t in at] == [False, True, True, True, True, False, False]


def test_no_window_is_any_time() -> None:
    assert parse_tiering({}, WHERE).in_window(datetime(2024, 5, 1, 12, 0))


@pytest.mark.parametrize("window", ["22:00", "10-12", "25:00-06:00", "22:60-06:00", "08:00-08:00", 2200])
def test_bad_window(window: object) -> None:
    rejects({"tiering": {"window": window}}, "tiering.window")


# ---- validation: tiers ------------------------------------------------------------------------


def test_unknown_keys_are_errors() -> None:
    rejects(tiers_doc({**LANDING, "pth": "x"}, WARM), "tiers[0]", "unknown key(s) pth")
    rejects({"tiering": {"intervall": 5}}, "tiering", "unknown key(s) intervall")
    policy = {"name": "p", "from": "landing", "to": "warm", "min_age_days": 1, "max_age": 3}
    rejects({"tiering": {"policies": [policy]}}, "tiering.policies[0]", "unknown key(s) max_age")


def test_tiers_must_be_an_array_of_tables() -> None:
    rejects({"tiers": {"name": "x"}}, "tiers must be an array")
    rejects({"tiers": ["landing"]}, "tiers[0]", "must be a table")
    rejects({"tiering": "fast"}, "[tiering] must be a table")


def test_at_least_one_tier() -> None:
    rejects({"tiers": []}, "tiers is empty")


def test_missing_name_or_backend() -> None:
    rejects(tiers_doc({"backend": "local", "path": "x"}, WARM), "tiers[0]", "missing name")
    rejects(tiers_doc({"name": "landing", "path": "x"}, WARM), "tiers[0]", "missing backend")


@pytest.mark.parametrize("name", ["Warm", "", "a b", "x" * 33, "tier.1", 7])
def test_bad_tier_name(name: object) -> None:
    rejects(tiers_doc({**LANDING, "name": name}, WARM), "tiers[0].name", "a-z, 0-9")


def test_duplicate_tier_names() -> None:
    rejects(tiers_doc(LANDING, {**WARM, "name": "landing"}), "tiers[1].name", "'landing' is configured twice")


def test_bad_backend_and_codec() -> None:
    rejects(tiers_doc({**LANDING, "backend": "nfs"}, WARM), "tiers[0].backend", "'local', 's3'")
    rejects(tiers_doc({**LANDING, "codec": "zstd"}, WARM), "tiers[0].codec", "'raw', 'hot', 'cold'")


def test_first_tier_must_be_local() -> None:
    rejects(tiers_doc(COLD, LANDING), "tiers[0] (cold)", "must be local")


def test_local_tier_needs_a_path() -> None:
    rejects(tiers_doc(LANDING, {"name": "warm", "backend": "local"}), "tiers[1]", "missing path")
    rejects(tiers_doc(LANDING, {**WARM, "path": "  "}), "tiers[1].path", "non-empty string")


@pytest.mark.parametrize("path", ["landing", "landing/", "./landing", "landing/sub", "."])
def test_local_paths_must_not_overlap(path: str) -> None:
    rejects(tiers_doc(LANDING, {**WARM, "path": path}), "tiers[1].path", "overlaps tiers[0]")


def test_keys_of_the_other_backend() -> None:
    rejects(tiers_doc(LANDING, {**WARM, "bucket": "b"}), "tiers[1].bucket", "s3 tiers only")
    rejects(tiers_doc(LANDING, {**COLD, "path": "cold"}), "tiers[1].path", "local tiers only")


def test_s3_tier_needs_a_bucket() -> None:
    rejects(tiers_doc(LANDING, {"name": "cold", "backend": "s3"}), "tiers[1]", "missing bucket")


def test_s3_tier_options() -> None:
    rejects(tiers_doc(LANDING, {**COLD, "endpoint": "127.0.0.1:8333"}), "tiers[1].endpoint", "http://")
    rejects(tiers_doc(LANDING, {**COLD, "access_key": "AK"}), "tiers[1]", "access_key and secret_key")
    rejects(tiers_doc(LANDING, {**COLD, "sse": "aes"}), "tiers[1].sse", "'AES256', 'aws:kms'")
    rejects(tiers_doc(LANDING, {**COLD, "pack_size": 0}), "tiers[1].pack_size", "positive")
    rejects(tiers_doc(LANDING, {**COLD, "prefix": 3}), "tiers[1].prefix", "string")
    s = parse_tiering(tiers_doc(LANDING, {**COLD, "sse": "aws:kms"}), WHERE)
    assert s.tiers[1].sse == "aws:kms"


def test_bad_capacity() -> None:
    rejects(tiers_doc(LANDING, {**WARM, "capacity": "2 tons"}), "tiers[1].capacity", "not a size")
    rejects(tiers_doc(LANDING, {**WARM, "capacity": -5}), "tiers[1].capacity", "negative")
    rejects(tiers_doc(LANDING, {**WARM, "capacity": 0}), "tiers[1].capacity", "positive")


@pytest.mark.parametrize(("low", "high"), [(0.9, 0.8), (0.8, 0.8), (0, 0.5), (0.5, 1.2), (-0.1, 0.5)])
def test_watermarks_must_be_ordered(low: float, high: float) -> None:
    rejects(tiers_doc(LANDING, {**WARM, "low_watermark": low, "high_watermark": high}),
            "tiers[1]", "0 < low_watermark < high_watermark <= 1")


def test_watermarks_need_a_capacity_and_numbers() -> None:
    no_capacity = {k: v for k, v in WARM.items() if k != "capacity"}
    rejects(tiers_doc(LANDING, {**no_capacity, "high_watermark": 0.9}), "tiers[1]", "need(s) a capacity")
    rejects(tiers_doc(LANDING, {**WARM, "high_watermark": "90%"}), "tiers[1].high_watermark", "number")
    s = parse_tiering(tiers_doc(LANDING, {**WARM, "low_watermark": 0.5, "high_watermark": 1}), WHERE)
    assert (s.tiers[1].low_watermark, s.tiers[1].high_watermark) == (0.5, 1.0)


def test_background_compaction_needs_a_second_tier() -> None:
    rejects(tiers_doc(LANDING), "tiering.compaction", "compaction = \"inline\"")
    s = parse_tiering(tiers_doc(LANDING, compaction="inline"), WHERE)
    assert [t.name for t in s.tiers] == ["landing"]


# ---- validation: [tiering] scalars ------------------------------------------------------------


@pytest.mark.parametrize(("key", "value", "fragment"), [
    ("compaction", "lazy", "'background', 'inline'"),
    ("compactor_threads", -1, "0-1024"),
    ("compactor_threads", 2.5, "0-1024"),
    ("compact_after", -1, "non-negative number"),
    ("promote_days", "7", "non-negative number"),
    ("interval", float("inf"), "non-negative number"),
    ("interval", True, "non-negative number"),
    ("rate_limit", "fast", "not a size"),
    ("verify_rate", -1, "negative"),
])
def test_bad_tiering_values(key: str, value: object, fragment: str) -> None:
    rejects({"tiering": {key: value}}, f"tiering.{key}", fragment)


def test_zero_rates_mean_unlimited() -> None:
    s = parse_tiering({"tiering": {"rate_limit": 0, "verify_rate": "0", "interval": 0, "compact_after": 30}},
                      WHERE)
    assert (s.rate_limit, s.verify_rate, s.interval, s.compact_after) == (None, None, 0, 30)


# ---- validation: policies ---------------------------------------------------------------------


def policy_doc(**policy: Any) -> dict[str, Any]:
    base = {"name": "p", "from": "warm", "to": "cold", "min_age_days": 1}
    return tiers_doc(LANDING, WARM, COLD, policies=[{**base, **policy}])


def test_policy_missing_keys() -> None:
    doc = tiers_doc(LANDING, WARM, COLD, policies=[{"name": "p", "to": "cold", "min_age_days": 1}])
    rejects(doc, "tiering.policies[0]", "missing from")
    rejects(tiers_doc(LANDING, WARM, policies={"name": "p"}), "tiering.policies", "[[tiering.policies]]")


def test_policy_unknown_tier() -> None:
    rejects(policy_doc(to="glacier"), "tiering.policies[0].to", "unknown tier 'glacier'")
    rejects(policy_doc(**{"from": "hot"}), "tiering.policies[0].from", "unknown tier 'hot'")


@pytest.mark.parametrize(("src", "dst"), [("cold", "warm"), ("warm", "warm"), ("cold", "landing")])
def test_policy_moves_only_colder(src: str, dst: str) -> None:
    rejects(policy_doc(**{"from": src, "to": dst}), "tiering.policies[0]", "later (colder) tier only")


def test_duplicate_policy_names() -> None:
    p = {"name": "p", "from": "warm", "to": "cold", "min_age_days": 1}
    rejects(tiers_doc(LANDING, WARM, COLD, policies=[p, dict(p)]), "tiering.policies[1].name",
            "'p' is configured twice")


def test_bad_policy_name() -> None:
    rejects(policy_doc(name="Age Out"), "tiering.policies[0].name", "a-z, 0-9")


def test_watermark_policy_needs_capacity() -> None:
    rejects(policy_doc(**{"from": "landing", "watermark": True}), "tiering.policies[0].watermark",
            "'landing' has no capacity")
    rejects(policy_doc(watermark="yes"), "tiering.policies[0].watermark", "true or false")


def test_policy_criteria_values() -> None:
    rejects(policy_doc(min_age_days=-1), "tiering.policies[0].min_age_days", "non-negative")
    rejects(policy_doc(idle_days="30"), "tiering.policies[0].idle_days", "non-negative")
    rejects(policy_doc(modalities="CT"), "tiering.policies[0].modalities", "list of modality codes")
    rejects(policy_doc(max_study_bytes="big"), "tiering.policies[0].max_study_bytes", "not a size")
    rejects(policy_doc(min_study_bytes="2GB", max_study_bytes="1GB"), "tiering.policies[0]",
            "min_study_bytes (2000000000) is above max_study_bytes (1000000000)")


def test_policy_without_criteria_is_refused() -> None:
    doc = tiers_doc(LANDING, WARM, COLD, policies=[{"name": "drain", "from": "warm", "to": "cold"}])
    rejects(doc, "tiering.policies[0]", "no criterion")
    # an empty modality list filters nothing, so it is no criterion either
    empty = {"name": "drain", "from": "warm", "to": "cold", "modalities": []}
    rejects(tiers_doc(LANDING, WARM, COLD, policies=[empty]), "tiering.policies[0]", "no criterion")
    # a size bound alone is one
    sized = {"name": "big", "from": "warm", "to": "cold", "min_study_bytes": "1GB"}
    s = parse_tiering(tiers_doc(LANDING, WARM, COLD, policies=[sized]), WHERE)
    assert s.policies[0].min_study_bytes == 10**9


# ---- load_config ------------------------------------------------------------------------------


def test_load_config_reads_tiers(tmp_path: Path) -> None:
    path = tmp_path / "dv.toml"
    path.write_text('data = "archive"\n' + EXAMPLE)
    cfg = load_config(path)
    assert cfg.data_dir == tmp_path / "archive"
    assert [t.name for t in cfg.tiering.tiers] == ["landing", "warm", "cold"]
    assert [p.name for p in cfg.tiering.policies] == ["age-out", "warm-full"]
    assert cfg.tiering.tiers[0].path == "landing"  # kept as written, resolved by the engine


def test_load_config_without_tiers_keeps_defaults(tmp_path: Path) -> None:
    path = tmp_path / "dv.toml"
    path.write_text('[dimse]\nport = 11999\n')
    cfg = load_config(path)
    assert cfg.dimse.port == 11999
    assert cfg.tiering == TieringSettings()


def test_load_config_names_the_file_in_tiering_errors(tmp_path: Path) -> None:
    path = tmp_path / "dv.toml"
    path.write_text('[tiering]\nwindow = "late"\n')
    with pytest.raises(SettingsError, match=rf"^{path}: tiering.window"):
        load_config(path)
    path.write_text('[tearing]\n')
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(path)


def test_the_module_documentation_example_parses() -> None:
    from dicomvault.storage import settings

    doc = settings.__doc__ or ""
    block = doc.split("```toml\n", 1)[1].split("```", 1)[0]
    s = parse(block)
    assert [t.name for t in s.tiers] == ["landing", "warm", "cold"]
    assert [p.name for p in s.policies] == ["age-out", "warm-full"]
