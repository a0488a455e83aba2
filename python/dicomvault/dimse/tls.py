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

from .. import tls_policy
from ..config import DimseConfig, PeerConfig


def server_context(d: DimseConfig) -> ssl.SSLContext:
    """Our listener (tls_policy's BCP 195 policy): our certificate; with tls_ca, callers must
    present one it signed."""
    assert d.tls_cert is not None and d.tls_key is not None  # config.py enforces it with tls_port
    return tls_policy.server_context(d.tls_cert, d.tls_key, d.tls_ca)


def listener_contexts(d: DimseConfig) -> tls_policy.CertificateReloader:
    """The listener's contexts: `context()` is the one for the next handshake, rebuilt when the
    certificate or key file changes."""
    assert d.tls_cert is not None
    return tls_policy.CertificateReloader(lambda: server_context(d), d.tls_cert, d.tls_key)


def client_context(d: DimseConfig) -> ssl.SSLContext:
    """Our side of an association to a TLS peer: its chain verified (not its host name: see the
    module docstring), our certificate offered."""
    return tls_policy.client_context(d.tls_ca, d.tls_cert, d.tls_key, check_hostname=False)


def associate_args(peer: PeerConfig, d: DimseConfig) -> dict[str, Any]:
    """Extra keyword arguments of `AE.associate` for an association to `peer`."""
    return {"tls_args": (client_context(d), peer.host)} if peer.tls else {}
