"""The options of a site's HTTP side (`SiteOptions`), the command-line options that set them
(shared by `serve`, `replicate` and `python -m dicomvault.site`), and their merge with the
config file's `[http]` and `[replication]`. Light on purpose: every CLI command imports it."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .auth.oidc_settings import OidcSettings
    from .integration.deid.settings import DeidSettings

DEFAULT_HTTP_PORT = 8080
# A working day: a radiologist logs in once per shift, and a forgotten browser does not stay in.
DEFAULT_SESSION_LIFETIME = 8 * 3600.0
AUTO = "auto"
# What an anonymous caller may do on a loopback bind while no users exist ("auto"): read and
# store, as a workstation's own archive would; admin needs the token in http.json, replication
# a replication token.
AUTO_ANONYMOUS_ROLE = "writer"


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
    # the port came from the user (a busy one is an error) or is the default (a busy one falls
    # back to any free port, announced on stdout and in http.json)
    port_explicit: bool = True
    # "auto": on loopback, anonymous callers get AUTO_ANONYMOUS_ROLE while no users exist;
    # "none": never; a role name: that role (loopback only)
    anonymous: str = AUTO
    public_url: str | None = None
    cors_origins: tuple[str, ...] = ()
    max_body: int = 8 << 30
    # [http] max_query_results, rate_limit, rate_limit_per_address, rate_burst (web/limits.py)
    max_query_results: int = 1000
    rate_limit: float = 0.0
    rate_limit_per_address: float = 0.0
    rate_burst: int = 200
    # Login sessions of /api/session: seconds from login to the end, and without a request.
    session_lifetime: float = DEFAULT_SESSION_LIFETIME
    session_idle: float | None = None
    # [http.oidc]: bearer tokens of the site's identity provider
    oidc: OidcSettings | None = None
    # [deidentify]: research projects for POST /api/studies/{uid}/export-research
    deidentify: DeidSettings | None = None


ANONYMOUS_CHOICES = (AUTO, "none", "reader", "writer", "admin")


def _common(p: argparse.ArgumentParser, *, defaults: bool) -> None:
    p.add_argument("--replication-token", action="append", default=[], metavar="TOKEN",
                   help="a token a replica may pull with (repeatable; NAME=SECRET names the replica)")
    p.add_argument("--tls-cert", metavar="PEM", help="serve HTTPS with this certificate chain")
    p.add_argument("--tls-key", metavar="PEM", help="private key of --tls-cert (if not in it)")
    p.add_argument("--ca", metavar="PEM", help="CA bundle to verify an https upstream")
    p.add_argument("--insecure", action="store_true", help="do not verify an https upstream's certificate")
    p.add_argument("--anonymous", choices=ANONYMOUS_CHOICES, default=AUTO if defaults else None,
                   help="what callers without credentials may do; only on a loopback address "
                        "(auto: read and store while no users exist)")
    p.add_argument("--public-url", metavar="URL",
                   help="the URL clients reach this server at (behind a reverse proxy), for BulkDataURIs")
    p.add_argument("--cors-origin", action="append", default=[], metavar="ORIGIN",
                   help="a web origin whose pages may call the API (repeatable; e.g. an OHIF host)")
    p.add_argument("--session-lifetime", type=_seconds, metavar="SECONDS",
                   help=f"a login session ends this long after login (default: {DEFAULT_SESSION_LIFETIME:g})")
    p.add_argument("--session-idle", type=_seconds, metavar="SECONDS",
                   help="a login session also ends after this long without a request (default: never)")


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a positive number of seconds")
    return value


def _session_options(args: Any) -> dict[str, Any]:
    lifetime = getattr(args, "session_lifetime", None)
    return {"session_lifetime": DEFAULT_SESSION_LIFETIME if lifetime is None else lifetime,
            "session_idle": getattr(args, "session_idle", None)}


def add_site_arguments(p: argparse.ArgumentParser, *, replica: bool) -> None:
    """Options of `replicate` and `python -m dicomvault.site`."""
    p.add_argument("--http-host", default="127.0.0.1", metavar="ADDR",
                   help="HTTP listen address (default: %(default)s)")
    p.add_argument("--http-port", type=int, default=DEFAULT_HTTP_PORT, metavar="N",
                   help="HTTP port; 0 picks a free one (default: %(default)s)")
    _common(p, defaults=True)
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
        cafile=args.ca, insecure=args.insecure, anonymous=args.anonymous,
        public_url=args.public_url, cors_origins=tuple(args.cors_origin), **_session_options(args),
    )


def add_serve_site_arguments(p: argparse.ArgumentParser) -> None:
    """`serve` options for the HTTP side; left None when not given so the config file decides."""
    p.add_argument("--http-host", metavar="ADDR", help="HTTP listen address (default: 127.0.0.1)")
    p.add_argument("--http-port", type=int, metavar="N",
                   help=f"HTTP port, 0 = any free one (default: {DEFAULT_HTTP_PORT})")
    p.add_argument("--replicate-from", metavar="URL", help="be a replica of this site")
    p.add_argument("--token", metavar="TOKEN", help="token for --replicate-from")
    _common(p, defaults=False)


def serve_site_options(args: Any, http: Any, replication: Any) -> SiteOptions:
    """Command line over `[http]` over `[replication]` over the defaults."""
    port = next((v for v in (args.http_port, http.port, replication.http_port) if v is not None), None)
    return SiteOptions(
        host=args.http_host or http.host or "127.0.0.1",
        port=DEFAULT_HTTP_PORT if port is None else port,
        port_explicit=port is not None,
        replication_tokens=list(replication.tokens) + list(args.replication_token),
        certfile=args.tls_cert or http.tls_cert or replication.tls_cert,
        keyfile=args.tls_key or http.tls_key or replication.tls_key,
        replicate_from=args.replicate_from or replication.replicate_from,
        upstream_token=args.token or replication.token,
        cafile=args.ca or replication.ca, insecure=args.insecure,
        anonymous=args.anonymous or http.anonymous,
        public_url=args.public_url or http.public_url,
        cors_origins=tuple(args.cors_origin) or http.cors_origins,
        max_body=http.max_body, oidc=http.oidc, max_query_results=http.max_query_results,
        rate_limit=http.rate_limit, rate_limit_per_address=http.rate_limit_per_address,
        rate_burst=http.rate_burst, **_session_options(args),
    )
