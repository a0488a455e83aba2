"""What the HTTP routes share: the open engine, who may do what, and the site's HTTP settings.
Built once by the composition root (site.py) and handed to `app.build_app`."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..engine import Engine

if TYPE_CHECKING:
    from ..integration.deid.settings import DeidSettings
    from ..replication.feed_api import FeedService
    from ..replication.tracker import ReplicaTracker
    from .security import Security


@dataclass(frozen=True)
class WebSettings:
    # The URL clients reach us at (behind a reverse proxy); None = from X-Forwarded-* or Host.
    public_base_url: str | None = None
    cors_origins: tuple[str, ...] = ()
    # Largest request body (STOW-RS); a bigger one is refused with 413 while it streams in.
    max_body: int = 8 << 30
    # QIDO-RS: most results one response carries (Warning 299 when cut).
    max_results: int = 1000
    # requests/s per credential and per client address (0 = off), bucket size (web/limits.py)
    rate_limit: float = 0.0
    rate_limit_per_address: float = 0.0
    rate_burst: int = 200
    trust_forwarded: bool = True


@dataclass
class WebContext:
    engine: Engine
    security: Security
    settings: WebSettings = field(default_factory=WebSettings)
    # set when the service stops: long polls return, in-flight failures become 503s
    closing: threading.Event = field(default_factory=threading.Event)
    feed: FeedService | None = None
    tracker: ReplicaTracker | None = None
    # per-request caches and services of the DICOMweb routes (metadata cache, frame index)
    extras: dict[str, Any] = field(default_factory=dict)
    # [deidentify]: the research projects of export-research (web/research_routes.py)
    deidentify: DeidSettings | None = None

    @property
    def spool_dir(self) -> Path:
        d = Path(self.engine.data_dir) / "tmp" / "http"
        d.mkdir(parents=True, exist_ok=True)
        return d
