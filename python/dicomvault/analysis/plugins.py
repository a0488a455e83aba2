"""Finding and making the analyzer instances of a configuration.

Every entry point of the group `dicomvault.analyzers` is an instance of the same name, enabled
unless its `[analysis.analyzers.NAME]` table says `enabled = false`; a table may also make an
instance of another entry point (`uses`) or of a site's own class (`class = "module:Class"`).
Both the server (to ask `wants()` cheaply) and each worker process (to `run()`) make them with
the same options, from the `target` ("module:Class") resolved here.
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from ..errors import DicomVaultError
from .api import ENTRY_POINT_GROUP, EVENTS, Analyzer
from .settings import AnalysisSettings, AnalyzerConfig

log = logging.getLogger("dicomvault.analysis")


class PluginError(DicomVaultError):
    """An analyzer could not be found or made (the message names the instance and the target)."""


@dataclass(frozen=True)
class Plugin:
    """A resolved, enabled analyzer instance."""

    instance: str
    target: str  # "module:Class"
    options: Mapping[str, Any]
    event: str
    analyzer: Analyzer
    explicit: bool  # configured by a table (a failure to load it is the site's error)


def _entry_points() -> dict[str, str]:
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def resolve_class(target: str, instance: str) -> type[Any]:
    module, _, name = target.partition(":")
    try:
        obj: Any = importlib.import_module(module)
        for part in name.split("."):
            obj = getattr(obj, part)
    except (ImportError, AttributeError) as exc:
        raise PluginError(f"analyzer {instance}: cannot load {target}: {exc}") from exc
    if not isinstance(obj, type):
        raise PluginError(f"analyzer {instance}: {target} is not a class")
    return obj


def make(instance: str, target: str, options: Mapping[str, Any]) -> Analyzer:
    """An analyzer instance; raises PluginError naming the instance when it cannot be made."""
    cls = resolve_class(target, instance)
    event = getattr(cls, "event", None)
    if event not in EVENTS:
        raise PluginError(f"analyzer {instance} ({target}): event must be one of {', '.join(EVENTS)}, "
                          f"got {event!r}")
    try:
        analyzer: Analyzer = cls(dict(options))
    except Exception as exc:  # noqa: BLE001 - a plugin's constructor may raise anything
        raise PluginError(f"analyzer {instance} ({target}): {type(exc).__name__}: {exc}") from exc
    return analyzer


def instances(settings: AnalysisSettings) -> list[tuple[AnalyzerConfig, str]]:
    """(config, "module:Class") of every enabled instance: the tables in file order, then the
    entry points no table names."""
    eps = _entry_points()
    out: list[tuple[AnalyzerConfig, str]] = []
    for cfg in settings.analyzers:
        if not cfg.enabled:
            continue
        target = cfg.target or eps.get(cfg.uses, "")
        if not target:
            known = ", ".join(sorted(eps)) or "none installed"
            raise PluginError(f"analyzer {cfg.instance}: no entry point {cfg.uses!r} in group "
                              f"{ENTRY_POINT_GROUP} (installed: {known}); or give class = \"module:Class\"")
        out.append((cfg, target))
    named = {cfg.instance for cfg in settings.analyzers}
    for name, target in sorted(eps.items()):
        if name not in named:
            out.append((AnalyzerConfig(instance=name, uses=name), target))
    return out


def load(settings: AnalysisSettings) -> list[Plugin]:
    """The enabled analyzers, made. A configured one that fails is an error (the site asked for
    it); a built-in enabled only by default that fails (an option it needs is not set) is left
    out with a warning, and one that says it `needs_configuration` (a model runner) is not made
    at all without its table."""
    plugins = []
    for cfg, target in instances(settings):
        explicit = settings.configured(cfg.instance) is not None
        try:
            if not explicit and getattr(resolve_class(target, cfg.instance), "needs_configuration", False):
                # a runner of the site's own models (onnx): nothing to run until a table names one
                log.info("analyzer %s: not configured ([analysis.analyzers.NAME] uses = %r)", cfg.instance,
                         cfg.instance)
                continue
            analyzer = make(cfg.instance, target, cfg.options)
        except PluginError as exc:
            if explicit:
                raise
            log.warning("%s; left out (configure [analysis.analyzers.%s] or set enabled = false)",
                        exc, cfg.instance)
            continue
        plugins.append(Plugin(cfg.instance, target, cfg.options, type(analyzer).event, analyzer, explicit))
    return plugins
