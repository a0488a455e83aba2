"""[analysis]: the analysis pipeline's settings and its analyzer instances (docs/analysis.md).

```toml
[analysis]
enabled = true          # false: no events are read and no job runs (`dicomvault jobs` still lists)
quiet_seconds = 30      # a series is complete once no instance arrived for this long
concurrency = 1         # jobs running at once (one worker process each)
timeout_seconds = 600   # a worker still running after this long is killed; the attempt failed
retries = 2             # a failed job is tried again this many times (with backoff)
retry_delay = 10        # seconds before the first retry; doubled for each further one
nice = 10               # workers run this much nicer than the server (0-19); above 0 they also
                        # ask for SCHED_IDLE and the idle I/O class

[analysis.analyzers.ct-chest]      # one table per analyzer instance, named by the table
enabled = true                     # built-ins registered as entry points run without a table
# uses = "ct-chest"                # the entry point (group dicomvault.analyzers); default: the name
# class = "site_tools.mine:Mine"   # or a class of the site's own, without packaging
# ...                              # every other key is the analyzer's own option
```

This module is imported by config.py: it must stay free of the analyzers' heavy imports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config_values import ConfigError, check_bool, check_str, unknown_keys

_KEYS = {"enabled", "quiet_seconds", "concurrency", "timeout_seconds", "retries", "retry_delay", "nice",
         "analyzers"}
# the keys of an analyzer table the pipeline reads; the rest go to the analyzer
PIPELINE_KEYS = frozenset({"enabled", "uses", "class"})


@dataclass(frozen=True)
class AnalyzerConfig:
    """One `[analysis.analyzers.INSTANCE]` table. `target` is "module:Class" when `class` was
    given; otherwise `uses` names an entry point (default: the instance name)."""

    instance: str
    enabled: bool = True
    uses: str = ""
    target: str = ""
    options: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AnalysisSettings:
    enabled: bool = True
    quiet_seconds: float = 30.0
    concurrency: int = 1
    timeout_seconds: float = 600.0
    retries: int = 2
    retry_delay: float = 10.0
    nice: int = 10
    # the configured tables, in file order; entry points without a table are added by plugins.py
    analyzers: tuple[AnalyzerConfig, ...] = ()

    def configured(self, instance: str) -> AnalyzerConfig | None:
        return next((a for a in self.analyzers if a.instance == instance), None)


def _number(table: Mapping[str, Any], key: str, default: float, lo: float, hi: float, where: str) -> float:
    value = table.get(key, default)
    if not isinstance(value, int | float) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{where}.{key}: must be a number {lo:g}-{hi:g}, got {value!r}")
    return float(value)


def _integer(table: Mapping[str, Any], key: str, default: int, lo: int, hi: int, where: str) -> int:
    value = table.get(key, default)
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        raise ConfigError(f"{where}.{key}: must be an integer {lo}-{hi}, got {value!r}")
    return value


def _analyzer(instance: str, table: object, where: str) -> AnalyzerConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    if not instance or any(c in instance for c in "/\\ \t") or len(instance) > 64:
        raise ConfigError(f"{where}: analyzer instance name {instance!r} must be 1-64 characters "
                          "without spaces or slashes")
    if "uses" in table and "class" in table:
        raise ConfigError(f"{where}: give `uses` (an entry point) or `class` (module:Class), not both")
    target = ""
    if "class" in table:
        target = check_str(table["class"], f"{where}.class")
        module, _, name = target.partition(":")
        if not module or not name:
            raise ConfigError(f"{where}.class: must be \"package.module:Class\", got {target!r}")
    uses = check_str(table["uses"], f"{where}.uses") if "uses" in table else ("" if target else instance)
    return AnalyzerConfig(
        instance=instance,
        enabled=check_bool(table.get("enabled", True), f"{where}.enabled"),
        uses=uses, target=target,
        options={k: v for k, v in table.items() if k not in PIPELINE_KEYS})


def parse_analysis(table: object, where: str) -> AnalysisSettings:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: expected a table")
    unknown_keys(table, _KEYS, where)
    d = AnalysisSettings()
    tables = table.get("analyzers", {})
    if not isinstance(tables, dict):
        raise ConfigError(f"{where}.analyzers: expected tables [analysis.analyzers.NAME]")
    return AnalysisSettings(
        enabled=check_bool(table.get("enabled", d.enabled), f"{where}.enabled"),
        quiet_seconds=_number(table, "quiet_seconds", d.quiet_seconds, 0, 86_400, where),
        concurrency=_integer(table, "concurrency", d.concurrency, 1, 64, where),
        timeout_seconds=_number(table, "timeout_seconds", d.timeout_seconds, 0.5, 7 * 86_400, where),
        retries=_integer(table, "retries", d.retries, 0, 100, where),
        retry_delay=_number(table, "retry_delay", d.retry_delay, 0, 86_400, where),
        nice=_integer(table, "nice", d.nice, 0, 19, where),
        analyzers=tuple(_analyzer(name, t, f"{where}.analyzers.{name}") for name, t in tables.items()),
    )
