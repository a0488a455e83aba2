"""A `dicomvault serve` with limits configured, for the limit tests (DIMSE and HTTP): the config
file is written from the test's own `[dimse]` and `[http]` keys (callers need not be declared
peers: the limits, not the admission, are under test), both ports are free loopback ports, and
/metrics is read over HTTP."""

from __future__ import annotations

import re
import subprocess
import textwrap
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
from dimse_helpers import ARCHIVE_AE, CLI, HOST, free_port, stop_archive, wait_port
from pydicom.uid import generate_uid


@dataclass
class Served:
    proc: subprocess.Popen[bytes]
    port: int
    http_port: int
    data: Path
    log: Path

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.http_port}"

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def refused(self, kind: str, reason: str) -> int:
        """dicomvault_refused_total{kind, reason} as /metrics shows it now."""
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        m = re.search(rf'^dicomvault_refused_total{{kind="{kind}",reason="{reason}"}} (\d+)$', text, re.M)
        assert m is not None, f"no refusal counter {kind}/{reason} in /metrics:\n{text}"
        return int(m.group(1))


def _toml(table: dict[str, object]) -> str:
    def value(v: object) -> str:
        if isinstance(v, bool):
            return str(v).lower()
        if isinstance(v, str):
            return f'"{v}"'
        return str(v)

    return "".join(f"{k} = {value(v)}\n" for k, v in table.items())


@contextmanager
def serving(tmp: Path, dimse: dict[str, object] | None = None,
            http: dict[str, object] | None = None) -> Iterator[Served]:
    tmp.mkdir(parents=True, exist_ok=True)
    port, http_port = free_port(), free_port()
    cfg = tmp / "dicomvault.toml"
    cfg.write_text(textwrap.dedent(f"""\
        data = "{tmp / 'data'}"

        [dimse]
        ae_title = "{ARCHIVE_AE}"
        host = "{HOST}"
        port = {port}
        """) + _toml({"accept_unknown_callers": True, **(dimse or {})}) + textwrap.dedent(f"""
        [http]
        host = "{HOST}"
        port = {http_port}
        """) + _toml(http or {}))
    log = tmp / "serve.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([CLI, "serve", "--config", str(cfg)], stdout=out, stderr=subprocess.STDOUT)
    served = Served(proc, port, http_port, tmp / "data", log)
    try:
        wait_port(port, proc, log)
        wait_port(http_port, proc, log)
        yield served
    finally:
        code = stop_archive(served)  # type: ignore[arg-type]  # Served has what stop_archive uses
        assert code == 0, f"serve exited {code}\n{served.log_text()}"


def fresh_copy(name: str, **changes: object) -> pydicom.Dataset:
    """One of pydicom's test files with new UIDs (and `changes`), so each test stores new objects."""
    from pydicom.data import get_testdata_file

    ds = pydicom.dcmread(get_testdata_file(name))
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for k, v in changes.items():
        setattr(ds, k, v)
    return ds
