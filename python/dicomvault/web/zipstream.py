"""A ZIP archive written as it is sent: no temporary file, no whole archive in memory.

zipfile writes to an unseekable stream with data descriptors (sizes after each member), which
every unzip reads; members are stored, not deflated: DICOM pixel data is mostly compressed
already or compresses poorly for the CPU it costs on the server.
"""

from __future__ import annotations

import zipfile
from collections.abc import Iterator


class _Sink:
    """What zipfile writes into: collected until the caller takes it (no tell/seek on purpose:
    zipfile then knows the stream is unseekable)."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> int:
        self.parts.append(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass

    def take(self) -> Iterator[bytes]:
        parts, self.parts = self.parts, []
        yield from (p for p in parts if p)


class ZipStream:
    def __init__(self) -> None:
        self._sink = _Sink()
        self._zip = zipfile.ZipFile(self._sink, "w", compression=zipfile.ZIP_STORED)  # type: ignore[arg-type]

    def add(self, name: str, data: bytes) -> Iterator[bytes]:
        """Adds a member; yields the bytes that are ready to send."""
        self._zip.writestr(name, data)
        yield from self._sink.take()

    def close(self) -> Iterator[bytes]:
        """The central directory: the archive's last bytes."""
        self._zip.close()
        yield from self._sink.take()
