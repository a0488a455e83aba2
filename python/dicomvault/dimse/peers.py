"""Known remote AEs, by AE title: who may call us (from where, with which certificate, for which
services) and where we call them (C-MOVE destinations, storage commitment reports).

Two sources, merged at every look so `dicomvault peers add|remove` applies without a restart:
the TOML file's [[peers]] and `<data>/auth/peers.json` (auth/peer_store.py), the latter winning
for a title in both. A look costs one stat of peers.json.
"""

from __future__ import annotations

import ipaddress
import os
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..auth.peer_settings import SERVICES, PeerConfig
from ..auth.peer_store import PeerStore
from .admission import Verdict

# Hostnames in `host`/`from_hosts` are resolved again after this long (DHCP, DNS changes).
RESOLVE_TTL = 60.0

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.split("%", 1)[0])
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


class Peers:
    """Peers from the configuration and the data directory, looked up by AE title
    (padding-insensitive, case-sensitive as PS3.5 says AE titles are).

    `accept_unknown`: callers that are no peer get in with every service ([dimse]
    accept_unknown_callers); a known title calling from the wrong place is refused either way,
    so declaring a peer always protects its title."""

    def __init__(self, peers: Iterable[PeerConfig], data_dir: str | os.PathLike[str] | None = None, *,
                 accept_unknown: bool = False, our_title: str = "") -> None:
        self._configured = {p.ae_title.strip(): p for p in peers}
        self._store = PeerStore(data_dir) if data_dir is not None else None
        self.accept_unknown = accept_unknown
        self.our_title = our_title.strip()
        self._resolved: dict[str, tuple[float, list[Network]]] = {}
        self._lock = threading.Lock()

    @property
    def data_dir(self) -> Path | None:
        return self._store.path.parent.parent if self._store is not None else None

    def _all(self) -> dict[str, PeerConfig]:
        if self._store is None:
            return self._configured
        stored = self._store.current()
        if not stored:
            return self._configured
        return {**self._configured, **stored}

    def get(self, ae_title: str | bytes | None) -> PeerConfig | None:
        if ae_title is None:
            return None
        if isinstance(ae_title, bytes):
            ae_title = ae_title.decode("ascii", "replace")
        return self._all().get(ae_title.strip())

    def titles(self) -> list[str]:
        return list(self._all())

    def __iter__(self) -> Iterator[PeerConfig]:
        return iter(list(self._all().values()))

    def __len__(self) -> int:
        return len(self._all())

    # -- admission --------------------------------------------------------------------------------------

    def admit(self, calling: str, address: str, cert: str | None, host_checked: bool) -> Verdict:
        """Whether `calling`, connecting from `address` (with a TLS client certificate whose SHA-256
        is `cert`, if any), gets an association, and for which services. `host_checked`: a relay
        of ours already checked address and certificate at the edge."""
        title = calling.strip()
        peer = self.get(title)
        if peer is None:
            if self.accept_unknown:
                return Verdict(title, frozenset(SERVICES))
            return Verdict(title, frozenset(), refused=f"calling AE title {title!r} is not a known peer",
                           hint=f"admit it with `dicomvault peers add {title} {address} "
                                f"--allow {','.join(SERVICES)}`")
        if not host_checked:
            if not self._from_allowed(peer, address):
                where = ", ".join(peer.from_hosts or (peer.host,))
                return Verdict(title, frozenset(),
                               refused=f"peer {title!r} may call from {where}, not from {address}",
                               hint=f"if it moved: `dicomvault peers add {title} {address} --replace ...` "
                                    f"(or --from {address})")
            if peer.cert is not None and cert != peer.cert:
                got = "no certificate (plain DICOM)" if cert is None else f"certificate sha256 {cert}"
                return Verdict(title, frozenset(),
                               refused=f"peer {title!r} must present its certificate over DICOM TLS; "
                                       f"it presented {got}",
                               hint="check the peer's certificate, or `peers add ... --replace --cert`")
        return Verdict(title, peer.allow)

    def may_move_to(self, calling: str, destination: str) -> bool:
        """Whether `calling` may send a C-MOVE's objects to `destination` (itself always; others
        when its `move_to` names them or says "*"; an unknown caller admitted by
        accept_unknown_callers may name any known peer, as before there were permissions)."""
        caller, dest = calling.strip(), destination.strip()
        if caller == dest:
            return True
        peer = self.get(caller)
        if peer is None:
            return self.accept_unknown
        return "*" in peer.move_to or dest in peer.move_to

    def _from_allowed(self, peer: PeerConfig, address: str) -> bool:
        addr = _address(address)
        if addr is None:
            return False
        for entry in peer.from_hosts or (peer.host,):
            if entry == "*":
                return True
            if any(addr in net for net in self._networks(entry)):
                return True
        return False

    def _networks(self, entry: str) -> list[Network]:
        try:
            return [ipaddress.ip_network(entry, strict=False)]
        except ValueError:
            pass
        now = time.monotonic()
        with self._lock:
            hit = self._resolved.get(entry)
        if hit is not None and now - hit[0] < RESOLVE_TTL:
            return hit[1]
        try:
            infos = socket.getaddrinfo(entry, None, proto=socket.IPPROTO_TCP)
        except OSError:
            infos = []  # an unresolvable name admits nobody; the peer's own entry says which name
        nets: list[Network] = []
        for info in infos:
            addr = _address(str(info[4][0]))
            if addr is not None:
                nets.append(ipaddress.ip_network(addr))
        with self._lock:
            self._resolved[entry] = (now, nets)
        return nets
