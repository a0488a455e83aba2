"""The `tiers` array and the `[tiering]` table of the server's TOML configuration (issue 12).

```toml
[[tiers]]                   # hottest first; policies only ever move studies down this list
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
access_key = "..."
secret_key = "..."
prefix = "site-a/"
sse = "AES256"
pack_size = "256MB"

[tiering]
compaction = "background"   # "background": ingest lands raw in the first tier, the compactor moves
                            # it to the next; "inline": ingest compresses in place
compactor_threads = 0       # 0 = every core
compact_after = 0           # seconds a landing blob waits before compaction
promote_days = 7            # a study read from an s3 tier is copied back to the first local tier
                            # after it (codec hot) and kept there this long
rate_limit = "200MB"        # bytes per second for migrations (0 or absent: unlimited)
window = "22:00-06:00"      # policy migrations only in this local-time window (absent: any time)
verify_rate = "50MB"        # bytes per second for the streaming verify of s3 tiers
interval = 300              # seconds between automatic policy runs in `serve` (0: never)

[[tiering.policies]]
name = "age-out"
from = "warm"
to = "cold"                 # must come after `from` in `tiers`
min_age_days = 90           # since the study's newest instance was received
idle_days = 30              # since its last read (or its receipt, if never read)
modalities = ["CT", "MR"]   # studies with any of these modalities
min_study_bytes = "0"       # bounds on the study's logical size
max_study_bytes = "10GB"

[[tiering.policies]]
name = "warm-full"
from = "warm"
to = "cold"
watermark = true            # past `from`'s high_watermark of capacity, the least recently read
                            # studies move until it is below its low_watermark
```

The same as an array, `tiers = [{ name = "landing", backend = "local", ... }, ...]`, works too,
but TOML 1.0 wants each inline table on a single line.

Tier keys: `name` (`[a-z0-9_-]{1,32}`, unique), `backend` ("local" or "s3"), `codec` ("raw", "hot"
or "cold"; default "hot" for local tiers, "cold" for s3), `capacity`, `high_watermark`,
`low_watermark` (0 < low < high <= 1, only with a capacity). Local tiers: `path` (relative paths
are relative to the data directory's `blobs/` folder). S3 tiers: `bucket` (required), `endpoint`
(absent: the AWS default from the environment), `region`, `access_key` and `secret_key`
(together), `prefix`, `sse` ("AES256" or "aws:kms"), `pack_size`. The first tier must be local.

Sizes are a number of bytes or a string such as "200GB", "1.5TB", "512MiB", "10 GiB", "200G":
SI units are decimal, IEC units binary, case does not matter, the B is optional.

Without `tiers`: a raw "landing" tier (path "landing") and a hot "warm" tier (path "volumes",
where existing data directories keep their blobs, so an existing archive opens unchanged as its
warm tier); with `compaction = "inline"`, only the warm tier. Unknown keys are errors.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from fractions import Fraction
from pathlib import PurePath
from typing import Any

from ..errors import DicomVaultError


class SettingsError(DicomVaultError):
    """A `tiers` entry or the `[tiering]` table is invalid (the message names the file and key)."""


BACKENDS = ("local", "s3")
CODECS = ("raw", "hot", "cold")  # index = the codec id stored with each blob
COMPACTION_MODES = ("background", "inline")
SSE_MODES = ("AES256", "aws:kms")
DEFAULT_PACK_SIZE = 256 << 20
DAY = 86400.0

_NAME = re.compile(r"[a-z0-9_-]{1,32}")
_SIZE = re.compile(r"([0-9]+(?:\.[0-9]+)?|\.[0-9]+)\s*(?:([kmgtpe])(i)?)?b?", re.IGNORECASE)
_UNIT_POWER = {"k": 1, "m": 2, "g": 3, "t": 4, "p": 5, "e": 6}
# Sizes end up in 64-bit signed integers (SQLite, the native store).
_MAX_SIZE = (1 << 63) - 1
_WINDOW = re.compile(r"([0-9]{1,2}):([0-9]{2})-([0-9]{1,2}):([0-9]{2})")

_TIER_KEYS = {
    "name", "backend", "codec", "path", "capacity", "high_watermark", "low_watermark", "endpoint",
    "bucket", "region", "access_key", "secret_key", "prefix", "sse", "pack_size",
}
_LOCAL_ONLY = {"path"}
_S3_ONLY = {"endpoint", "bucket", "region", "access_key", "secret_key", "prefix", "sse", "pack_size"}
_TIERING_KEYS = {
    "compaction", "compactor_threads", "compact_after", "promote_days", "rate_limit", "window",
    "verify_rate", "interval", "policies",
}
_POLICY_KEYS = {
    "name", "from", "to", "min_age_days", "idle_days", "modalities", "min_study_bytes",
    "max_study_bytes", "watermark",
}


@dataclass(frozen=True)
class TierSpec:
    """One storage tier: where its blobs live and how they are encoded there."""

    name: str
    backend: str
    codec: str
    path: str | None = None  # local tiers; as written (relative to <data>/blobs/)
    capacity: int | None = None  # bytes
    high_watermark: float = 0.85
    low_watermark: float = 0.70
    endpoint: str | None = None
    bucket: str | None = None
    region: str | None = None
    access_key: str | None = None
    secret_key: str | None = field(default=None, repr=False)  # kept out of logs and tracebacks
    prefix: str = ""
    sse: str | None = None
    pack_size: int = DEFAULT_PACK_SIZE

    @property
    def codec_id(self) -> int:
        return CODECS.index(self.codec)

    @property
    def is_local(self) -> bool:
        return self.backend == "local"


@dataclass(frozen=True)
class PolicySpec:
    """One `[[tiering.policies]]` entry: which studies of `from_tier` move to `to_tier`."""

    name: str
    from_tier: str
    to_tier: str
    min_age_days: float | None = None
    idle_days: float | None = None
    modalities: frozenset[str] = frozenset()
    min_study_bytes: int | None = None
    max_study_bytes: int | None = None
    watermark: bool = False


DEFAULT_TIERS: tuple[TierSpec, ...] = (
    TierSpec("landing", "local", "raw", path="landing"),
    TierSpec("warm", "local", "hot", path="volumes"),
)
# compaction = "inline" compresses at ingest, so a raw landing tier would never be used.
DEFAULT_INLINE_TIERS: tuple[TierSpec, ...] = (DEFAULT_TIERS[1],)


@dataclass(frozen=True)
class TieringSettings:
    tiers: tuple[TierSpec, ...] = DEFAULT_TIERS
    policies: tuple[PolicySpec, ...] = ()
    compaction: str = "background"
    compactor_threads: int = 0  # 0 = every core
    compact_after: float = 0.0  # seconds
    promote_days: float = 7.0
    rate_limit: int | None = None  # bytes per second; None = unlimited
    window: tuple[int, int] | None = None  # (start, end) minutes since midnight; None = any time
    verify_rate: int | None = None  # bytes per second; None = unlimited
    interval: float = 300.0  # seconds; 0 = no automatic runs
    # The file named the tiers (or inline mode): they override the data directory's stored
    # layout. Otherwise the stored layout (storage/layout.py) is used.
    configured: bool = False

    def index_of(self, name: str) -> int:
        for i, tier in enumerate(self.tiers):
            if tier.name == name:
                return i
        raise SettingsError(f"unknown tier {name!r} (tiers: {', '.join(t.name for t in self.tiers)})")

    def tier(self, name: str) -> TierSpec:
        return self.tiers[self.index_of(name)]

    def local_tiers(self) -> tuple[TierSpec, ...]:
        return tuple(t for t in self.tiers if t.is_local)

    @property
    def landing(self) -> TierSpec:
        """Where ingest writes (the first tier, always local)."""
        return self.tiers[0]

    def in_window(self, dt: datetime) -> bool:
        """Whether policy migrations may run at `dt` (its own wall-clock fields are used)."""
        if self.window is None:
            return True
        start, end = self.window
        minute = dt.hour * 60 + dt.minute
        if start < end:
            return start <= minute < end
        return minute >= start or minute < end  # wraps midnight


def default_settings() -> TieringSettings:
    return TieringSettings()


# ---- sizes ------------------------------------------------------------------------------------


def parse_size(value: object, where: str) -> int:
    """A size in bytes from an integer or a string such as "200GB", "1.5TB", "512MiB", "10 GiB",
    "200G" (SI decimal, IEC binary, case-insensitive, B optional); fractions of a byte round down."""
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise SettingsError(f"{where}: a size must be an integer or a string like \"200GB\", got {value!r}")
    if isinstance(value, int):
        size = value
    else:
        size = _size_from_text(value, where)
    if size < 0:
        raise SettingsError(f"{where}: a size cannot be negative, got {value!r}")
    if size > _MAX_SIZE:
        raise SettingsError(f"{where}: size {value!r} is too large")
    return size


def _size_from_text(text: str, where: str) -> int:
    stripped = text.strip()
    if stripped.startswith("-"):
        raise SettingsError(f"{where}: a size cannot be negative, got {text!r}")
    m = _SIZE.fullmatch(stripped)
    if m is None:
        raise SettingsError(
            f"{where}: not a size: {text!r} (a number of bytes, or e.g. \"200GB\", \"1.5TB\", \"512MiB\")"
        )
    number, unit, binary = m.groups()
    base = 1024 if binary else 1000
    power = _UNIT_POWER[unit.lower()] if unit else 0
    # Fraction keeps "1.1TB" exact, where a float would be off by a few bytes.
    return int(Fraction(number) * base**power)


def format_size(n: int) -> str:
    """`n` bytes for people, in SI units: "2 TB", "1.5 GB", "512 B"."""
    for power, unit in ((4, "TB"), (3, "GB"), (2, "MB"), (1, "kB")):
        if n >= 1000**power:
            return f"{n / 1000**power:.3g} {unit}"
    return f"{n} B"


# ---- scalar checks ----------------------------------------------------------------------------


def _str(value: object, where: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise SettingsError(f"{where}: must be a non-empty string, got {value!r}")
    return value.strip()


def _choice(value: object, choices: tuple[str, ...], where: str) -> str:
    if value not in choices:
        raise SettingsError(f"{where}: must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return str(value)


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value) or value < 0:
        raise SettingsError(f"{where}: must be a non-negative number, got {value!r}")
    return float(value)


def _name(value: object, where: str) -> str:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise SettingsError(
            f"{where}: must be 1-32 characters of a-z, 0-9, '_' and '-', got {value!r}"
        )
    return value


def _rate(value: object, where: str) -> int | None:
    """A bytes-per-second limit; 0 means unlimited."""
    return parse_size(value, where) or None


def _unknown(table: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = sorted(set(table) - allowed)
    if extra:
        raise SettingsError(
            f"{where}: unknown key(s) {', '.join(extra)} (allowed: {', '.join(sorted(allowed))})"
        )


def parse_window(value: object, where: str) -> tuple[int, int]:
    """"HH:MM-HH:MM" as minutes since midnight (start, end); end before start wraps midnight."""
    m = _WINDOW.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise SettingsError(f"{where}: must be \"HH:MM-HH:MM\" (e.g. \"22:00-06:00\"), got {value!r}")
    h1, m1, h2, m2 = map(int, m.groups())
    if h1 > 23 or h2 > 23 or m1 > 59 or m2 > 59:
        raise SettingsError(f"{where}: not a time of day in {value!r}")
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if start == end:
        raise SettingsError(f"{where}: the window {value!r} is empty (omit `window` for any time)")
    return start, end


# ---- tiers ------------------------------------------------------------------------------------


def _parse_tier(item: object, where: str) -> TierSpec:
    if not isinstance(item, dict):
        raise SettingsError(f"{where}: must be a table")
    _unknown(item, _TIER_KEYS, where)
    for key in ("name", "backend"):
        if key not in item:
            raise SettingsError(f"{where}: missing {key}")
    name = _name(item["name"], f"{where}.name")
    backend = _choice(item["backend"], BACKENDS, f"{where}.backend")
    misplaced = sorted(set(item) & (_S3_ONLY if backend == "local" else _LOCAL_ONLY))
    if misplaced:
        other = "s3" if backend == "local" else "local"
        raise SettingsError(f"{where}.{misplaced[0]}: applies to {other} tiers only, this one is {backend}")
    codec = _choice(item.get("codec", "hot" if backend == "local" else "cold"), CODECS, f"{where}.codec")
    capacity, high, low = _parse_capacity(item, where)
    if backend == "local":
        if "path" not in item:
            raise SettingsError(f"{where}: missing path (a local tier's directory)")
        return TierSpec(name, backend, codec, path=_str(item["path"], f"{where}.path"), capacity=capacity,
                        high_watermark=high, low_watermark=low)
    return _parse_s3_tier(item, where, TierSpec(name, backend, codec, capacity=capacity,
                                                high_watermark=high, low_watermark=low))


def _parse_capacity(item: dict[str, Any], where: str) -> tuple[int | None, float, float]:
    capacity = None
    if "capacity" in item:
        capacity = parse_size(item["capacity"], f"{where}.capacity")
        if capacity == 0:
            raise SettingsError(f"{where}.capacity: must be positive (omit it for no capacity limit)")
    marks = {k: item[k] for k in ("high_watermark", "low_watermark") if k in item}
    if marks and capacity is None:
        raise SettingsError(f"{where}: {', '.join(marks)} need(s) a capacity")
    high = _fraction(marks.get("high_watermark", 0.85), f"{where}.high_watermark")
    low = _fraction(marks.get("low_watermark", 0.70), f"{where}.low_watermark")
    if not 0 < low < high <= 1:
        raise SettingsError(
            f"{where}: watermarks must satisfy 0 < low_watermark < high_watermark <= 1, "
            f"got low {low}, high {high}"
        )
    return capacity, high, low


def _fraction(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise SettingsError(f"{where}: must be a number between 0 and 1, got {value!r}")
    return float(value)


def _parse_s3_tier(item: dict[str, Any], where: str, tier: TierSpec) -> TierSpec:
    if "bucket" not in item:
        raise SettingsError(f"{where}: missing bucket (an s3 tier's bucket)")
    endpoint = None
    if "endpoint" in item:
        endpoint = _str(item["endpoint"], f"{where}.endpoint")
        if not endpoint.startswith(("http://", "https://")):
            raise SettingsError(f"{where}.endpoint: must be an http:// or https:// URL, got {endpoint!r}")
    if ("access_key" in item) != ("secret_key" in item):
        raise SettingsError(f"{where}: access_key and secret_key go together")
    prefix = item.get("prefix", "")
    if not isinstance(prefix, str):
        raise SettingsError(f"{where}.prefix: must be a string, got {prefix!r}")
    pack_size = parse_size(item.get("pack_size", DEFAULT_PACK_SIZE), f"{where}.pack_size")
    if pack_size == 0:
        raise SettingsError(f"{where}.pack_size: must be positive")

    def opt(key: str) -> str | None:
        return _str(item[key], f"{where}.{key}") if key in item else None

    return replace(
        tier, endpoint=endpoint, bucket=_str(item["bucket"], f"{where}.bucket"), region=opt("region"),
        access_key=opt("access_key"), secret_key=opt("secret_key"), prefix=prefix,
        sse=_choice(item["sse"], SSE_MODES, f"{where}.sse") if "sse" in item else None, pack_size=pack_size,
    )


def _parse_tiers(items: object, where: str) -> tuple[TierSpec, ...]:
    if not isinstance(items, list):
        raise SettingsError(f"{where}: tiers must be an array of tables (tiers = [...] or [[tiers]])")
    if not items:
        raise SettingsError(f"{where}: tiers is empty (at least one tier; omit `tiers` for the defaults)")
    tiers = tuple(_parse_tier(item, f"{where}: tiers[{i}]") for i, item in enumerate(items))
    if not tiers[0].is_local:
        raise SettingsError(f"{where}: tiers[0] ({tiers[0].name}): the first tier receives ingest "
                            "and must be local")
    seen: dict[str, int] = {}
    for i, tier in enumerate(tiers):
        if tier.name in seen:
            raise SettingsError(f"{where}: tiers[{i}].name: tier {tier.name!r} is configured twice")
        seen[tier.name] = i
    _check_paths(tiers, where)
    return tiers


def _check_paths(tiers: tuple[TierSpec, ...], where: str) -> None:
    """Two local tiers in one directory (or one inside the other) would see each other's blobs."""
    located = [(i, t, PurePath(os.path.normpath(t.path))) for i, t in enumerate(tiers) if t.path is not None]
    for n, (i, a, pa) in enumerate(located):
        for j, b, pb in located[n + 1:]:
            if pa == pb or pa in pb.parents or pb in pa.parents:
                raise SettingsError(
                    f"{where}: tiers[{j}].path: {b.name!r} ({b.path!r}) overlaps tiers[{i}] "
                    f"{a.name!r} ({a.path!r}); each local tier needs its own directory"
                )


# ---- policies ---------------------------------------------------------------------------------


def _parse_policy(item: object, where: str, tiers: TieringSettings) -> PolicySpec:
    if not isinstance(item, dict):
        raise SettingsError(f"{where}: must be a table")
    _unknown(item, _POLICY_KEYS, where)
    for key in ("name", "from", "to"):
        if key not in item:
            raise SettingsError(f"{where}: missing {key}")
    name = _name(item["name"], f"{where}.name")
    src = _policy_tier(item["from"], f"{where}.from", tiers)
    dst = _policy_tier(item["to"], f"{where}.to", tiers)
    if tiers.index_of(src) >= tiers.index_of(dst):
        raise SettingsError(
            f"{where}: from {src!r} to {dst!r}: policies move studies to a later (colder) tier only"
        )
    watermark = item.get("watermark", False)
    if not isinstance(watermark, bool):
        raise SettingsError(f"{where}.watermark: must be true or false, got {watermark!r}")
    if watermark and tiers.tier(src).capacity is None:
        raise SettingsError(f"{where}.watermark: tier {src!r} has no capacity to measure watermarks against")
    modalities = item.get("modalities", [])
    if not isinstance(modalities, list) or not all(isinstance(m, str) and m.strip() for m in modalities):
        raise SettingsError(f"{where}.modalities: must be a list of modality codes, got {modalities!r}")

    def opt(key: str, parse: Any) -> Any:
        return parse(item[key], f"{where}.{key}") if key in item else None

    policy = PolicySpec(
        name=name, from_tier=src, to_tier=dst,
        min_age_days=opt("min_age_days", _number), idle_days=opt("idle_days", _number),
        modalities=frozenset(m.strip().upper() for m in modalities),
        min_study_bytes=opt("min_study_bytes", parse_size),
        max_study_bytes=opt("max_study_bytes", parse_size),
        watermark=watermark,
    )
    _check_criteria(policy, where)
    return policy


def _policy_tier(value: object, where: str, tiers: TieringSettings) -> str:
    name = _str(value, where)
    names = [t.name for t in tiers.tiers]
    if name not in names:
        raise SettingsError(f"{where}: unknown tier {name!r} (tiers: {', '.join(names)})")
    return name


def _check_criteria(p: PolicySpec, where: str) -> None:
    lo, hi = p.min_study_bytes, p.max_study_bytes
    if lo is not None and hi is not None and lo > hi:
        raise SettingsError(f"{where}: min_study_bytes ({lo}) is above max_study_bytes ({hi})")
    criteria = (p.min_age_days, p.idle_days, lo, hi)
    # A policy with no criterion would empty its tier at every run: surely a forgotten line.
    if not p.watermark and not p.modalities and all(c is None for c in criteria):
        raise SettingsError(
            f"{where}: policy {p.name!r} has no criterion (min_age_days, idle_days, modalities, "
            "min_study_bytes, max_study_bytes or watermark) and would move every study"
        )


def _parse_policies(items: object, where: str, tiers: TieringSettings) -> tuple[PolicySpec, ...]:
    if not isinstance(items, list):
        raise SettingsError(f"{where}: must be an array of tables ([[tiering.policies]])")
    policies: list[PolicySpec] = []
    for i, item in enumerate(items):
        policy = _parse_policy(item, f"{where}[{i}]", tiers)
        if any(p.name == policy.name for p in policies):
            raise SettingsError(f"{where}[{i}].name: policy {policy.name!r} is configured twice")
        policies.append(policy)
    return tuple(policies)


# ---- the whole document -----------------------------------------------------------------------


def parse_tiering(doc: Mapping[str, Any], where: str) -> TieringSettings:
    """From a whole parsed config file: reads `tiers` and `[tiering]`, ignores the rest."""
    table = doc.get("tiering", {})
    if not isinstance(table, dict):
        raise SettingsError(f"{where}: [tiering] must be a table")
    w = f"{where}: tiering"
    _unknown(table, _TIERING_KEYS, w)
    compaction = _choice(table.get("compaction", "background"), COMPACTION_MODES, f"{w}.compaction")
    if "tiers" in doc:
        tiers = _parse_tiers(doc["tiers"], where)
    else:
        tiers = DEFAULT_INLINE_TIERS if compaction == "inline" else DEFAULT_TIERS
    if compaction == "background" and len(tiers) < 2:
        raise SettingsError(
            f"{w}.compaction: \"background\" moves landed blobs to the next tier, but only "
            f"{tiers[0].name!r} is configured (add a tier or set compaction = \"inline\")"
        )
    threads = table.get("compactor_threads", 0)
    if isinstance(threads, bool) or not isinstance(threads, int) or not 0 <= threads <= 1024:
        raise SettingsError(
            f"{w}.compactor_threads: must be an integer 0-1024 (0: every core), got {threads!r}"
        )
    settings = TieringSettings(
        tiers=tiers,
        compaction=compaction,
        compactor_threads=threads,
        compact_after=_number(table.get("compact_after", 0), f"{w}.compact_after"),
        promote_days=_number(table.get("promote_days", 7), f"{w}.promote_days"),
        rate_limit=_rate(table.get("rate_limit", 0), f"{w}.rate_limit"),
        window=parse_window(table["window"], f"{w}.window") if "window" in table else None,
        verify_rate=_rate(table.get("verify_rate", 0), f"{w}.verify_rate"),
        interval=_number(table.get("interval", 300), f"{w}.interval"),
        configured="tiers" in doc or compaction == "inline",
    )
    policies = _parse_policies(table.get("policies", []), f"{w}.policies", settings)
    return replace(settings, policies=policies)
