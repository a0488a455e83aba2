"""DICOM TLS (PS3.15 Annex B.1; the BCP 195 profile: TLS 1.2 or later): the contexts of our TLS
listener and of our associations to peers configured with `tls = true`.

Peers are authenticated by certificate chain against `tls_ca` (the way DICOM nodes are usually
deployed: addressed by IP, certificates issued by a site CA), not by host name; without `tls_ca`
a peer's certificate is checked against the system's trusted roots. The TLS listener serves every
service the plain one does: tls_relay.py terminates TLS and relays each association to the plain
listener (in the server process, or in each receiver process with `workers`), so both take the
native fast path. A native C-MOVE reaches a TLS destination through a socket pair pumped by
tls_relay.pump_tls; commitment reports, forwarding and pynetdicom's own C-MOVE use pynetdicom on
a TLS socket.
"""

from __future__ import annotations

import ssl
from typing import Any

from ..config import DimseConfig, PeerConfig


def server_context(d: DimseConfig) -> ssl.SSLContext:
    """Our listener: our certificate; with tls_ca, callers must present one it signed."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    assert d.tls_cert is not None and d.tls_key is not None  # config.py enforces it with tls_port
    ctx.load_cert_chain(str(d.tls_cert), str(d.tls_key))
    if d.tls_ca is not None:
        ctx.load_verify_locations(str(d.tls_ca))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def client_context(d: DimseConfig) -> ssl.SSLContext:
    """Our side of an association to a TLS peer: its chain verified, our certificate offered."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.check_hostname = False  # peers are authenticated by chain (see the module docstring)
    ctx.verify_mode = ssl.CERT_REQUIRED
    if d.tls_ca is not None:
        ctx.load_verify_locations(str(d.tls_ca))
    else:
        ctx.load_default_certs()
    if d.tls_cert is not None and d.tls_key is not None:
        ctx.load_cert_chain(str(d.tls_cert), str(d.tls_key))
    return ctx


def associate_args(peer: PeerConfig, d: DimseConfig) -> dict[str, Any]:
    """Extra keyword arguments of `AE.associate` for an association to `peer`."""
    return {"tls_args": (client_context(d), peer.host)} if peer.tls else {}
