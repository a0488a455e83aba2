"""Orthanc (the Debian package's /usr/sbin/Orthanc) as a real peer: started on free ports with a
generated JSON configuration in a directory of ours, checked through its REST API, stopped.

Used by the interop tests (tests/dimse/test_orthanc.py) and by the side-by-side DIMSE benchmark
(bench/dimse_compare.py), so both run the same, fairly tuned Orthanc.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .ports import free_port  # noqa: F401  (the bench scripts take it from here)
from .procs import terminate

ORTHANC_BIN = "/usr/sbin/Orthanc"
ORTHANC_AE = "ORTHANC"
# The Debian orthanc-dicomweb package (plugin 1.7 for Orthanc 1.10).
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"
DICOMWEB_ROOT = "/dicom-web/"


class OrthancError(RuntimeError):
    """Orthanc would not start, or its REST API answered an error (the message says which URL)."""


def orthanc_config(root: Path, *, dicom_port: int, http_port: int,
                   modalities: dict[str, tuple[str, str, int]], compression: bool = False,
                   threads: int = 4, extra: dict[str, Any] | None = None, dicomweb: bool = False
                   ) -> dict[str, Any]:
    """Orthanc 1.10 configuration (key names as documented in /etc/orthanc/orthanc.json).

    Tuned as a careful admin would for throughput without giving up durability: TCP_NODELAY,
    the largest PDU it allows (131072), no plugins, no job persistence; SyncStorageArea stays true
    (its default: fsync per file, i.e. acknowledged = durable, the same contract as ours) and the
    SQLite index keeps its default synchronous mode.

    `dicomweb=True` loads the DICOMweb plugin, configured as its documentation's sample
    (section "DicomWeb" of the plugin's dicomweb.json): QIDO/WADO-RS/STOW-RS under /dicom-web/,
    WADO-URI under /wado; full study and series metadata (read from the stored files, the
    plugin's own default and the only mode comparable with an archive that answers from its
    stored datasets); BulkDataURIs built from the request's Host header rather than a fixed host.
    """
    cfg: dict[str, Any] = {
        "Name": "dicomvault-peer",
        "StorageDirectory": str(root / "storage"),
        "IndexDirectory": str(root / "index"),
        "StorageCompression": compression,
        "Plugins": [],
        "ConcurrentJobs": 2,
        "HttpServerEnabled": True,
        "HttpPort": http_port,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "OrthancExplorerEnabled": False,
        "DicomServerEnabled": True,
        "DicomAet": ORTHANC_AE,
        "DicomPort": dicom_port,
        "DicomCheckCalledAet": False,
        "DicomAlwaysAllowEcho": True,
        "DicomAlwaysAllowStore": True,
        "DicomAlwaysAllowFind": True,
        "DicomAlwaysAllowGet": True,
        "DicomAlwaysAllowMove": True,
        "DicomCheckModalityHost": False,
        "DicomModalities": {name: list(v) for name, v in modalities.items()},
        "DicomThreadsCount": threads,
        "UnknownSopClassAccepted": True,
        "TcpNoDelay": True,
        "MaximumPduLength": 131072,
        "SyncStorageArea": True,
        "SaveJobs": False,
        "SynchronousCMove": True,
        "LogExportedResources": False,
        "StableAge": 3600,  # no "stable" events firing during a measurement
        "HttpThreadsCount": 4,
    }
    if dicomweb:
        cfg["Plugins"] = [DICOMWEB_PLUGIN]
        cfg["DicomWeb"] = {
            "Enable": True,
            "Root": DICOMWEB_ROOT,
            "EnableWado": True,
            "WadoRoot": "/wado",
            "Ssl": False,
            "StudiesMetadata": "Full",
            "SeriesMetadata": "Full",
        }
    if extra:
        cfg.update(extra)
    return cfg


@dataclass
class Orthanc:
    """A running Orthanc."""

    root: Path
    proc: subprocess.Popen[bytes]
    dicom_port: int
    http_port: int
    log_path: Path
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        """The DICOMweb root (no trailing slash, as dicomweb-client's `url` wants it); only
        served when started with `dicomweb=True`."""
        return self.url + DICOMWEB_ROOT.rstrip("/")

    @property
    def peer(self) -> str:
        return f"{ORTHANC_AE}@127.0.0.1:{self.dicom_port}"

    def request(self, method: str, path: str, body: bytes | None = None, timeout: float = 120) -> bytes:
        req = urllib.request.Request(self.url + path, data=body, method=method)
        if body is not None:
            req.add_header("Content-Type", "application/dicom")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as rsp:
                return bytes(rsp.read())
        except urllib.error.HTTPError as exc:
            detail = exc.read()[:500].decode("utf-8", "replace")
            raise OrthancError(f"Orthanc {method} {path} -> HTTP {exc.code}: {detail}") from exc
        except urllib.error.URLError as exc:
            raise OrthancError(f"Orthanc {method} {path}: {exc.reason}") from exc

    def get_json(self, path: str) -> Any:
        return json.loads(self.request("GET", path))

    def post_json(self, path: str, doc: Any) -> Any:
        return json.loads(self.request("POST", path, json.dumps(doc).encode()))

    def upload(self, data: bytes) -> dict[str, Any]:
        """POST /instances: stores a Part-10 file exactly as given."""
        return dict(json.loads(self.request("POST", "/instances", data)))

    def instance_ids(self) -> list[str]:
        return list(self.get_json("/instances"))

    def lookup_instance(self, sop_uid: str) -> str | None:
        """Orthanc's id of the instance with this SOP Instance UID, if it has it."""
        hits = json.loads(self.request("POST", "/tools/lookup", sop_uid.encode())) if sop_uid else []
        for hit in hits:
            if hit.get("Type") == "Instance":
                return str(hit["ID"])
        return None

    def file(self, orthanc_id: str) -> bytes:
        return self.request("GET", f"/instances/{orthanc_id}/file")

    def statistics(self) -> dict[str, Any]:
        return dict(self.get_json("/statistics"))

    def log_text(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def stop(self, timeout: float = 30) -> int:
        return terminate(self.proc, timeout)


def start_orthanc(root: Path, *, modalities: dict[str, tuple[str, str, int]] | None = None,
                  compression: bool = False, threads: int = 4, extra: dict[str, Any] | None = None,
                  timeout: float = 30, dicomweb: bool = False) -> Orthanc:
    """Starts Orthanc with its storage and index under `root` (created; emptied if it exists);
    with `dicomweb=True` also its DICOMweb plugin (see `orthanc_config`)."""
    if not Path(ORTHANC_BIN).exists():
        raise OrthancError(f"{ORTHANC_BIN} not found (apt-get install orthanc)")
    if dicomweb and not Path(DICOMWEB_PLUGIN).exists():
        raise OrthancError(f"{DICOMWEB_PLUGIN} not found (apt-get install orthanc-dicomweb)")
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    dicom_port, http_port = free_port(), free_port()
    cfg = orthanc_config(root, dicom_port=dicom_port, http_port=http_port, modalities=modalities or {},
                         compression=compression, threads=threads, extra=extra, dicomweb=dicomweb)
    cfg_path = root / "orthanc.json"
    cfg_path.write_text(json.dumps(cfg, indent=2))
    log_path = root / "orthanc.log"
    with log_path.open("wb") as log:
        # The "TcpNoDelay" option only reaches Orthanc's HTTP server; its DICOM side is DCMTK's,
        # which turns Nagle off when the environment says TCP_NODELAY=1. Without it every
        # response waits for the peer's delayed ACK (~40 ms per C-FIND or C-STORE, measured).
        proc = subprocess.Popen([ORTHANC_BIN, "--no-jobs", str(cfg_path)], stdout=log,
                                stderr=subprocess.STDOUT, cwd=root,
                                env={**os.environ, "MALLOC_ARENA_MAX": "2", "TCP_NODELAY": "1"})
    orthanc = Orthanc(root, proc, dicom_port, http_port, log_path, cfg)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise OrthancError(f"Orthanc exited with {proc.returncode} at start-up:\n"
                               f"{orthanc.log_text()[-3000:]}")
        try:
            orthanc.get_json("/system")
            if dicomweb:
                # plugins register their routes after the core's REST API answers
                orthanc.request("GET", DICOMWEB_ROOT + "studies?limit=1")
            # the HTTP server comes up before the DICOM one: wait for both
            with socket.create_connection(("127.0.0.1", dicom_port), timeout=0.5):
                return orthanc
        except (OrthancError, OSError):
            time.sleep(0.1)
    orthanc.stop()
    raise OrthancError(f"Orthanc not answering on {http_port}/{dicom_port} after {timeout} s:\n"
                       f"{orthanc.log_text()[-3000:]}")
