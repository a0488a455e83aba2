"""kill -9 of `dicomvault serve` while three associations store through the native path: every
object acknowledged with Success is there afterwards, byte-exact, and the archive restarts on the
same data directory and goes on serving."""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from dimse_helpers import Archive, associate, dataset_bytes, free_port, start_archive, stop_archive
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import _config, build_context
from pynetdicom.sop_class import CTImageStorage, Verification

from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.engine import Engine

CLIENTS = 3
KILL_AFTER = 12  # acknowledgements before the kill, while the other stores are in flight


@pytest.fixture
def raw_send() -> Iterator[None]:
    """pynetdicom sends a file's data set as it is (not decoded and re-encoded), so what we
    acknowledge can be compared byte for byte with what was sent."""
    saved = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = saved


def _files(folder: Path, n: int) -> list[Path]:
    folder.mkdir(parents=True)
    out = []
    # 256x256 16-bit: ~130 KB, more than one 128 KiB PDU each
    spec = SeriesSpec(slices=n, rows=256, columns=256, seed=91, patient_id="K9")
    for i, data in enumerate(ct_series(spec)):
        p = folder / f"{i:04d}.dcm"
        p.write_bytes(data)
        out.append(p)
    return out


def _store(arch: Archive, files: list[Path], acked: dict[str, Path], lock: threading.Lock) -> None:
    """Stores until the server dies; records what was acknowledged with Success."""
    try:
        assoc = associate(arch, [build_context(CTImageStorage, ExplicitVRLittleEndian)])
    except (AssertionError, OSError):
        return
    try:
        for path in files:
            rsp = assoc.send_c_store(path)
            if rsp is None or getattr(rsp, "Status", None) != 0x0000:
                return  # no answer (the server is gone) or a failure: not acknowledged
            uid = dataset_uid(path)
            with lock:
                acked[uid] = path
    except (RuntimeError, OSError):
        return  # the association died under the request
    finally:
        if assoc.is_established:
            assoc.abort()


def dataset_uid(path: Path) -> str:
    import pydicom

    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["SOPInstanceUID"])
    return str(ds.SOPInstanceUID)


def test_kill9_during_native_path_ingest_loses_nothing_acknowledged(tmp_path: Path,
                                                                   raw_send: None) -> None:
    files = _files(tmp_path / "series", 90)
    arch = start_archive(tmp_path, free_port(), free_port())
    acked: dict[str, Path] = {}
    lock = threading.Lock()
    threads = [threading.Thread(target=_store, args=(arch, files[i::CLIENTS], acked, lock))
               for i in range(CLIENTS)]
    try:
        for t in threads:
            t.start()
        deadline = time.monotonic() + 60
        while len(acked) < KILL_AFTER and time.monotonic() < deadline:
            time.sleep(0.001)
        assert len(acked) >= KILL_AFTER, f"{len(acked)} acknowledged in 60 s\n{arch.log_text()[-2000:]}"
        arch.proc.send_signal(signal.SIGKILL)
        arch.proc.wait(10)
        for t in threads:
            t.join(30)
    finally:
        if arch.proc.poll() is None:
            arch.proc.kill()
    assert len(acked) < len(files), "the kill came after everything was stored: nothing was in flight"
    with Engine(arch.data) as engine:  # writable: runs crash recovery
        for uid, path in acked.items():
            assert engine.read_dataset(uid) == dataset_bytes(path), f"acknowledged {uid} lost or changed"
    # the same data directory serves again
    again = start_archive(tmp_path, free_port(), free_port())  # tmp_path/data again
    try:
        assoc = associate(again, [build_context(Verification),
                                  build_context(CTImageStorage, ExplicitVRLittleEndian)])
        try:
            assert assoc.send_c_echo().Status == 0x0000
            assert assoc.send_c_store(files[-1]).Status == 0x0000
        finally:
            assoc.release()
    finally:
        assert stop_archive(again) == 0
