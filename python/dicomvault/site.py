"""The composition root of a site: the open engine, the HTTP application with its routers, the
replication feed and puller, and the forwarding threads, wired together and started.

`dicomvault serve` starts one of these next to the DIMSE SCP; `python -m dicomvault.site` runs
one on its own (used by `dicomvault replicate`, the replication benchmark and the fault tests).
Nothing imports this module but the CLI: it is the one place that knows every layer.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import secrets
import shutil
import socket
import ssl
import threading
from collections.abc import Callable
from typing import Any

from .analysis.service import AnalysisService
from .analysis.settings import AnalysisSettings
from .audit.log import AuditLog
from .auth.oidc import OidcVerifier
from .auth.sessions import SessionStore
from .auth.shares import ShareStore
from .auth.users import UserStore, split_token_spec
from .engine import Engine
from .errors import DicomVaultError
from .http_info import remove_http_info, write_http_info
from .replication import state
from .replication.client import SiteClient
from .replication.feed_api import FeedService
from .replication.puller import Puller
from .replication.tracker import ReplicaTracker
from .site_args import AUTO, AUTO_ANONYMOUS_ROLE, SiteOptions
from .storage.settings import TieringSettings, default_settings
from .tiering.service import TieringService
from .web.app import build_app
from .web.context import WebContext, WebSettings
from .web.dicomweb.warmer import MetadataWarmer
from .web.security import Security
from .web.server import HttpServer

log = logging.getLogger("dicomvault.site")
def is_loopback(host: str) -> bool:
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        try:
            return all(ipaddress.ip_address(a[4][0]).is_loopback for a in socket.getaddrinfo(host, None))
        except OSError:
            return False


class Site:
    def __init__(self, engine: Engine, options: SiteOptions, tiering: TieringService | None = None,
                 analysis: AnalysisService | None = None) -> None:
        self.engine = engine
        self.options = options
        self.admin_token = secrets.token_urlsafe(24)
        self.users = UserStore(engine.data_dir)
        self.users.add_runtime_token(self.admin_token, "local-admin", "admin")
        for i, tok in enumerate(options.replication_tokens, 1):
            name, secret = split_token_spec(tok, f"replica-{i}")
            if not secret:
                raise DicomVaultError(f"replication token {name!r} is empty: it would admit anyone")
            self.users.add_runtime_token(secret, name, "replicator")
        # One of each per site: sessions live in this process only, shares and the audit trail in
        # the data directory (the CLI edits and appends to the same files).
        self.sessions = SessionStore(self.users, lifetime=options.session_lifetime, idle=options.session_idle)
        self.shares = ShareStore(engine.data_dir)
        self.audit = AuditLog(engine.data_dir)
        self.security = self._security()
        # STOW-RS spools big parts here; what a crash left behind is garbage.
        shutil.rmtree(engine.data_dir / "tmp" / "http", ignore_errors=True)
        self.tracker = ReplicaTracker(engine.data_dir)
        self.closing = threading.Event()
        self.feed = FeedService(engine, self.tracker, self.closing)
        self.ctx = WebContext(
            engine=engine, security=self.security, closing=self.closing, feed=self.feed,
            tracker=self.tracker, deidentify=options.deidentify,
            settings=WebSettings(public_base_url=options.public_url, cors_origins=options.cors_origins,
                                 max_body=options.max_body, max_results=options.max_query_results,
                                 rate_limit=options.rate_limit,
                                 rate_limit_per_address=options.rate_limit_per_address,
                                 rate_burst=options.rate_burst))
        self.puller: Puller | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.forward_status: Callable[[], list[dict[str, Any]]] | None = None
        self.app = build_app(self.ctx, jobs=self._jobs, status_extra=self._status_extra, tiering=tiering,
                             analysis=analysis)
        # The series a modality just sent is the one a radiologist opens next: warm its metadata.
        metadata = self.ctx.extras.get("metadata")
        cached = metadata is not None and metadata.cache is not None and not engine.read_only
        self.warmer = MetadataWarmer(engine, metadata) if cached else None
        try:
            self.http = HttpServer(self.app, options.host, options.port, certfile=options.certfile,
                                   keyfile=options.keyfile, port_explicit=options.port_explicit)
            if options.replicate_from:
                self._prepare_replica(options.replicate_from)
        except BaseException:
            self._close_metadata_cache()  # a bad certificate must not leave the cache locked
            raise

    def _security(self) -> Security:
        o = self.options
        oidc = self._oidc()
        stores: dict[str, Any] = {"sessions": self.sessions, "shares": self.shares, "audit": self.audit,
                                  "oidc": oidc, "patient_of": self._patient_of}
        loopback = is_loopback(o.host)
        if not loopback:
            if o.anonymous not in (AUTO, "none"):
                raise DicomVaultError(f"anonymous access ({o.anonymous}) is only allowed on a loopback "
                                      f"address, not {o.host}")
            if not self.users.has_users() and not o.replication_tokens and oidc is None:
                raise DicomVaultError(
                    f"refusing to serve HTTP on {o.host} with no users: anyone on the network could "
                    f"read the archive. Add one first: dicomvault users add NAME --role admin --data "
                    f"{self.engine.data_dir}")
            return Security(self.users, None, **stores)
        if o.anonymous == AUTO and oidc is None:
            return Security(self.users, AUTO_ANONYMOUS_ROLE, only_without_users=True, **stores)
        if o.anonymous == AUTO:
            # A site that named an identity provider wants its users identified, local users or not.
            return Security(self.users, None, **stores)
        if o.anonymous == "none":
            return Security(self.users, None, **stores)
        return Security(self.users, o.anonymous, **stores)

    def _patient_of(self, study: str) -> str | None:
        """The patient of a study, for its audit records (one index read per record)."""
        rows = self.engine.index.find("STUDY", {"StudyInstanceUID": study, "PatientID": ""}, limit=1)
        return next((r.get("PatientID") or None for r in rows), None)

    def _oidc(self) -> OidcVerifier | None:
        if self.options.oidc is None:
            return None
        verifier = OidcVerifier(self.options.oidc)
        # Fetched now so the first token needs no wait; an identity provider down at our start is
        # logged and fetched again when a token comes (the site serves local users meanwhile).
        verifier.jwks.refresh(force=True)
        return verifier

    def _prepare_replica(self, url: str) -> None:
        index = self.engine.index
        if state.role(index) == state.PRIMARY and state.upstream(index) is not None:
            raise DicomVaultError(
                f"{self.engine.data_dir} was promoted to primary; replicating from {url} again would "
                "mix two primaries. Use `dicomvault dr failback` to re-sync it from the new primary")
        if not self.options.upstream_token:
            raise DicomVaultError(f"replicating from {url} needs --token")
        state.set_role(index, state.REPLICA)
        client = SiteClient(url, self.options.upstream_token, cafile=self.options.cafile,
                            insecure=self.options.insecure)
        self.puller = Puller(self.engine, client)

    def _status_extra(self) -> dict[str, Any]:
        return {"upstream_error": self.puller.last_error if self.puller else None}

    def _jobs(self) -> list[dict[str, Any]]:
        jobs: list[dict[str, Any]] = []
        if self.puller is not None:
            up = state.upstream(self.engine.index)
            jobs.append({"kind": "replication", "from": self.options.replicate_from,
                         "cursor": None if up is None else up.__dict__, "last_error": self.puller.last_error})
        if self.forward_status is not None:
            jobs += [{"kind": "forward", **f} for f in self.forward_status()]
        return jobs

    def _close_metadata_cache(self) -> None:
        md = self.ctx.extras.get("metadata")
        if md is not None and md.cache is not None:
            try:
                md.cache.close()
            except Exception as exc:  # noqa: BLE001 - rocksdict raises bare Exception; a cache may fail
                log.warning("metadata cache: closing failed (it is rebuilt as needed): %s", exc)

    @property
    def url(self) -> str:
        return self.http.url

    def start(self) -> str:
        self.http.start()
        write_http_info(self.engine.data_dir, {"url": self.url, "admin_token": self.admin_token,
                                               "pid": os.getpid(), "tls": self.http.tls is not None})
        if self.warmer is not None:
            self.warmer.start()
        if self.puller is not None:
            self._thread = threading.Thread(target=self.puller.run, args=(self._stop,),
                                            name="dicomvault-replicate", daemon=True)
            self._thread.start()
        return self.url

    def stop(self) -> None:
        self.closing.set()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.puller is not None:
            self.puller.close()
        self.http.stop()
        self.security.close()  # after the last request: its reads are counted
        if self.warmer is not None:
            self.warmer.stop()
        self._close_metadata_cache()
        self.tracker.flush()
        remove_http_info(self.engine.data_dir)


def start_site(engine: Engine, options: SiteOptions) -> Site:
    site = Site(engine, options)
    site.start()
    return site


def run_site(data_dir: str | os.PathLike[str], options: SiteOptions, *, announce: bool = True) -> int:
    """Engine + site until SIGTERM/SIGINT; prints `dicomvault site <url> data=<dir>` once bound."""
    import signal

    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        log.info("%s received, shutting down", signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        with Engine(data_dir) as engine:
            site = start_site(engine, options)
            if announce:
                print(f"dicomvault site {site.url} data={data_dir}", flush=True)
            try:
                stop.wait()
            finally:
                site.stop()
        return 0
    finally:
        for s, h in previous.items():
            signal.signal(s, h)


def start_analysis(engine: Engine, settings: AnalysisSettings) -> AnalysisService | None:
    """The analysis pipeline, heard by the MPPS service of this index; None where it is off, has
    no analyzer, or on a replica (whose results arrive from its primary with the rest)."""
    from .integration.mpps import add_completion_listener

    if not settings.enabled:
        return None
    if state.role(engine.index) == state.REPLICA:
        log.info("analysis: not run on a replica (its primary's results are replicated)")
        return None
    service = AnalysisService(engine, settings)
    if not service.plugins:
        # nothing would ever be queued: no thread, no feed reads, no index writes beside ingest
        log.info("analysis: no analyzer enabled (none installed or configured)")
        return None
    service.start()
    add_completion_listener(engine.index.path, service.mpps_completed)
    return service


def start_services(engine: Engine, options: SiteOptions, forward_rules: tuple[Any, ...] = (),
                   tiering: TieringSettings | None = None, forward_tls: ssl.SSLContext | None = None,
                   analysis: AnalysisSettings | None = None) -> tuple[str, Callable[[], None]]:
    """What `dicomvault serve` runs beside the DIMSE SCP: the site (HTTP, feed, admin, optional
    puller), the tiering service (compactor, policies), the analysis pipeline and one forwarding
    thread per `[[forward]]` destination. Returns the stop function."""
    from .dimse.association import requestor_ae
    from .integration.mpps import remove_completion_listener
    from .replication.forward import Forwarder, forward_status

    analysis_service = start_analysis(engine, analysis or AnalysisSettings())
    tier_service = TieringService(engine, tiering or default_settings())
    tier_service.start()
    site = Site(engine, options, tier_service, analysis_service)
    site.forward_status = lambda: forward_status(engine.data_dir)
    site.start()
    log.info("HTTP service at %s (%d replication token(s))", site.url, len(options.replication_tokens))
    stop = threading.Event()
    threads = []
    for rule in forward_rules:
        fwd = Forwarder(engine, rule, forward_tls, requestor_ae)
        t = threading.Thread(target=fwd.run, args=(stop,), name=f"dicomvault-forward-{rule.name}",
                             daemon=True)
        t.start()
        threads.append(t)

    def stop_all() -> None:
        stop.set()
        for t in threads:
            t.join(35)
        if analysis_service is not None:
            remove_completion_listener(engine.index.path, analysis_service.mpps_completed)
            analysis_service.stop()
        site.stop()
        tier_service.stop()

    return site.url, stop_all


def main(argv: list[str] | None = None) -> int:
    """`python -m dicomvault.site --data DIR [--http-port N] ...`: a site without the DIMSE SCP."""
    import argparse
    import sys

    from .allocator import tune_allocator
    from .site_args import add_site_arguments, options_from_args

    tune_allocator()
    p = argparse.ArgumentParser(prog="python -m dicomvault.site", description=main.__doc__)
    p.add_argument("--data", required=True, metavar="DIR")
    p.add_argument("-v", "--verbose", action="store_true")
    add_site_arguments(p, replica=False)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return run_site(args.data, options_from_args(args))
    except DicomVaultError as exc:
        print(f"dicomvault site: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    import sys

    sys.exit(main())
