"""Known remote AEs, by AE title: C-MOVE destinations, storage commitment report targets, and
(when unknown callers are refused) the callers allowed in."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

from ..config import PeerConfig


class Peers:
    """Peers from the configuration, looked up by AE title (padding-insensitive, case-sensitive
    as PS3.5 says AE titles are)."""

    def __init__(self, peers: Iterable[PeerConfig]) -> None:
        self._by_title = {p.ae_title.strip(): p for p in peers}

    def get(self, ae_title: str | bytes | None) -> PeerConfig | None:
        if ae_title is None:
            return None
        if isinstance(ae_title, bytes):
            ae_title = ae_title.decode("ascii", "replace")
        return self._by_title.get(ae_title.strip())

    def titles(self) -> list[str]:
        return list(self._by_title)

    def __iter__(self) -> Iterator[PeerConfig]:
        return iter(self._by_title.values())

    def __len__(self) -> int:
        return len(self._by_title)
