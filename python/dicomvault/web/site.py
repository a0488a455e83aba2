"""A site's HTTP side on an open engine: the replication feed for its replicas, admin endpoints
(backup, heal, status) for the local CLI, optionally a puller replicating from an upstream.

`dicomvault serve` starts one of these next to the DIMSE SCP; `python -m dicomvault.web` runs
one on its own (used by `dicomvault replicate` and the fault tests).

The admin token is random per start and written with the URL to `<data>/http.json` (mode 0600):
whoever can read the data directory may administer the running server, nobody else.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..engine import Engine, StoreOutcome
from ..errors import DicomVaultError
from ..replication import state
from ..replication.client import SiteClient
from ..replication.feed_api import FeedService
from ..replication.puller import Puller
from ..replication.tracker import ReplicaTracker
from .router import ADMIN, INGEST, REPLICATION, HttpError, Request, Response, Router, Tokens
from .server import HttpService

log = logging.getLogger("dicomvault.web")
HTTP_INFO = "http.json"
DEFAULT_HTTP_PORT = 8080


@dataclass
class SiteOptions:
    host: str = "127.0.0.1"
    port: int = DEFAULT_HTTP_PORT
    replication_tokens: list[str] = field(default_factory=list)
    certfile: str | None = None
    keyfile: str | None = None
    replicate_from: str | None = None
    upstream_token: str | None = None
    cafile: str | None = None
    insecure: bool = False
    # POST /instances without a token (loopback test and bench rigs; DICOMweb STOW comes later)
    open_ingest: bool = False
    # the port came from the user (a busy one is an error) or is the default (a busy one falls
    # back to any free port, announced on stdout and in http.json: several servers on one host,
    # test suites run side by side, must not fail on 8080)
    port_explicit: bool = True


def _json(data: Any, status: int = 200) -> Response:
    return Response(status, json.dumps(data, default=str).encode(), "application/json")


def _body_json(req: Request) -> dict[str, Any]:
    try:
        data = json.loads(req.body or b"{}")
    except ValueError as exc:
        raise HttpError(400, f"body is not JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise HttpError(400, "body must be a JSON object")
    return data


def read_http_info(data_dir: str | os.PathLike[str]) -> dict[str, Any] | None:
    try:
        return json.loads((Path(data_dir) / HTTP_INFO).read_text())
    except (FileNotFoundError, ValueError):
        return None


class Site:
    def __init__(self, engine: Engine, options: SiteOptions) -> None:
        self.engine = engine
        self.options = options
        self.admin_token = secrets.token_urlsafe(24)
        tokens = Tokens()
        tokens.add(self.admin_token, {ADMIN, REPLICATION, INGEST}, name="local-admin")
        for i, tok in enumerate(options.replication_tokens, 1):
            tokens.add(tok, {REPLICATION}, name=None if "=" in tok else f"replica-{i}")
        self.router = Router(tokens)
        self.tracker = ReplicaTracker(engine.data_dir)
        self.feed = FeedService(engine, self.tracker, self.router.closing)
        self.feed.register(self.router)
        self.router.add("GET", "/health", lambda r: _json({"ok": True}), None)
        self.router.add("GET", "/admin/status", self._status, ADMIN)
        self.router.add("POST", "/admin/backup", self._backup, ADMIN)
        self.router.add("POST", "/admin/heal", self._heal, ADMIN)
        self.router.add("POST", "/instances", self._ingest, None if options.open_ingest else INGEST)
        self.http = HttpService(self.router, options.host, options.port, options.certfile, options.keyfile)
        self.puller: Puller | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        if options.replicate_from:
            self._prepare_replica(options.replicate_from)

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

    @property
    def url(self) -> str:
        return f"{self.http.scheme}://{self.http.host}:{self.http.port}"

    def start(self) -> str:
        try:
            self.http.start()
        except OSError as exc:
            if self.options.port_explicit or exc.errno != errno.EADDRINUSE:
                raise DicomVaultError(f"cannot serve HTTP on {self.options.host}:{self.options.port}: "
                                      f"{exc.strerror or exc}") from exc
            log.warning("HTTP port %d is busy; serving on a free port instead", self.options.port)
            self.http.port = 0
            self.http.start()
        info = Path(self.engine.data_dir) / HTTP_INFO
        tmp = info.with_suffix(".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": self.url, "admin_token": self.admin_token, "pid": os.getpid(),
                       "tls": self.http.tls}, f)
        os.replace(tmp, info)
        if self.puller is not None:
            self._thread = threading.Thread(target=self.puller.run, args=(self._stop,),
                                            name="dicomvault-replicate", daemon=True)
            self._thread.start()
        return self.url

    def stop(self) -> None:
        self.router.closing.set()
        self._stop.set()
        if self._thread is not None:
            self._thread.join(30)
        if self.puller is not None:
            self.puller.close()
        self.http.stop()
        self.tracker.flush()
        (Path(self.engine.data_dir) / HTTP_INFO).unlink(missing_ok=True)

    # -- admin --------------------------------------------------------------------------------
    def _status(self, req: Request) -> Response:
        index = self.engine.index
        up = state.upstream(index)
        return _json({
            "role": state.role(index),
            "feed_id": self.feed.feed_id,
            "last_seq": index.last_seq(),
            "objects": index.stats()["objects"],
            "upstream": None if up is None else up.__dict__,
            "upstream_error": self.puller.last_error if self.puller else None,
            "replicas": self.tracker.snapshot(),
        })

    def _backup(self, req: Request) -> Response:
        from ..dr.backup import backup

        body = _body_json(req)
        if not body.get("dir"):
            raise HttpError(400, "backup needs {\"dir\": path}")
        try:
            report = backup(self.engine, body["dir"], verify=bool(body.get("verify")))
        except DicomVaultError as exc:
            raise HttpError(500, str(exc)) from exc
        return _json(report.as_dict())

    def _heal(self, req: Request) -> Response:
        from ..dr.heal import heal

        body = _body_json(req)
        if not body.get("from") or not body.get("token"):
            raise HttpError(400, "heal needs {\"from\": url, \"token\": token}")
        client = SiteClient(body["from"], body["token"], cafile=body.get("cafile"),
                            insecure=bool(body.get("insecure")))
        try:
            return _json(heal(self.engine, client).as_dict())
        finally:
            client.close()

    def _ingest(self, req: Request) -> Response:
        if state.role(self.engine.index) == state.REPLICA:
            raise HttpError(409, f"{self.engine.data_dir} is a replica; promote it to take writes")
        if not req.body:
            raise HttpError(400, "POST /instances needs a DICOM Part-10 body")
        res = self.engine.store_buffers([req.body])[0]
        if not isinstance(res, StoreOutcome):
            raise HttpError(400 if not isinstance(res, OSError) else 500, f"rejected: {res}")
        return _json({"SOPInstanceUID": res.sop_instance_uid, "hash": res.hash.hex(),
                      "duplicate": res.duplicate, "replaced": res.replaced})


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


def add_site_arguments(p: Any, *, replica: bool) -> None:
    """The HTTP/replication options shared by `serve`, `replicate` and `python -m dicomvault.web`."""
    p.add_argument("--http-host", default="127.0.0.1", metavar="ADDR",
                   help="HTTP listen address (default: %(default)s)")
    p.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, metavar="N",
                   help="HTTP port; 0 picks a free one (default: %(default)s)")
    p.add_argument("--replication-token", action="append", default=[], metavar="TOKEN",
                   help="a token a replica may pull with (repeatable; NAME=SECRET names the replica)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert (if not in it)")
    p.add_argument("--ca", metavar="PEM", help="CA bundle to verify an https upstream")
    p.add_argument("--insecure", action="store_true", help="do not verify an https upstream's certificate")
    p.add_argument("--open-ingest", action="store_true",
                   help="accept POST /instances without a token (test and bench rigs)")
    if not replica:
        p.add_argument("--replicate-from", metavar="URL", help="also replicate from this site")
        p.add_argument("--token", metavar="TOKEN", help="token for --replicate-from")


def options_from_args(args: Any, *, replicate_from: str | None = None, token: str | None = None,
                      extra_tokens: list[str] | None = None) -> SiteOptions:
    return SiteOptions(
        host=args.http_host, port=args.http_port,
        replication_tokens=list(args.replication_token) + list(extra_tokens or []),
        certfile=args.tls_cert, keyfile=args.tls_key,
        replicate_from=replicate_from or getattr(args, "replicate_from", None),
        upstream_token=token or getattr(args, "token", None),
        cafile=args.ca, insecure=args.insecure, open_ingest=args.open_ingest,
    )


def start_services(engine: Engine, options: SiteOptions, forward_rules: tuple[Any, ...] = ()
                   ) -> tuple[str, Callable[[], None]]:
    """What `dicomvault serve` runs beside the DIMSE SCP: the site (HTTP, feed, admin, optional
    puller) and one forwarding thread per `[[forward]]` destination. Returns the stop function."""
    from ..replication.forward import Forwarder

    site = start_site(engine, options)
    log.info("HTTP service at %s (%d replication token(s))", site.url, len(options.replication_tokens))
    stop = threading.Event()
    threads = []
    for rule in forward_rules:
        fwd = Forwarder(engine, rule)
        t = threading.Thread(target=fwd.run, args=(stop,), name=f"dicomvault-forward-{rule.name}",
                             daemon=True)
        t.start()
        threads.append(t)

    def stop_all() -> None:
        stop.set()
        for t in threads:
            t.join(35)
        site.stop()

    return site.url, stop_all


def add_serve_site_arguments(p: Any) -> None:
    """`serve` options for the HTTP side; left None when not given so the config file decides."""
    p.add_argument("--http-host", metavar="ADDR", help="HTTP listen address (default: 127.0.0.1)")
    p.add_argument("--http-port", type=int, metavar="N",
                   help=f"HTTP port, 0 = any free one (default: {DEFAULT_HTTP_PORT})")
    p.add_argument("--replication-token", action="append", default=[], metavar="TOKEN",
                   help="a token a replica may pull with (repeatable; NAME=SECRET names the replica)")
    p.add_argument("--replicate-from", metavar="URL", help="be a replica of this site")
    p.add_argument("--token", metavar="TOKEN", help="token for --replicate-from")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert")
    p.add_argument("--ca", metavar="PEM", help="CA bundle to verify an https upstream")
    p.add_argument("--insecure", action="store_true", help="do not verify an https upstream's certificate")
    p.add_argument("--open-ingest", action="store_true",
                   help="accept POST /instances without a token (test and bench rigs)")


def serve_site_options(args: Any, settings: Any) -> SiteOptions:
    """Command line over `[replication]` over the defaults."""
    port = args.http_port if args.http_port is not None else settings.http_port
    return SiteOptions(
        host=args.http_host or "127.0.0.1",
        port=DEFAULT_HTTP_PORT if port is None else port,
        port_explicit=port is not None,
        replication_tokens=list(settings.tokens) + list(args.replication_token),
        certfile=args.tls_cert or settings.tls_cert, keyfile=args.tls_key or settings.tls_key,
        replicate_from=args.replicate_from or settings.replicate_from,
        upstream_token=args.token or settings.token,
        cafile=args.ca or settings.ca, insecure=args.insecure, open_ingest=args.open_ingest,
    )
