"""`[dimse] workers = 2`: receiver processes in front of the writer (dimse/workers.py).

The interop tests of test_dimse_dcmtk.py and test_dimse_pynetdicom.py run again here against a
two-receiver archive (this module's `archive`/`stored` fixtures replace the session ones), so
storage goes through the store IPC and query/retrieve/commitment through the relay. Then the
process-level properties: parallel senders all durable and findable, kill -9 of receivers loses
nothing acknowledged and they come back, SIGTERM stops every process.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from dimse_helpers import (
    ARCHIVE_AE,
    HOST,
    Archive,
    associate,
    free_port,
    start_archive,
    stop_archive,
    storescu,
)
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import build_context
from pynetdicom.sop_class import CTImageStorage, StudyRootQueryRetrieveInformationModelFind
from test_dimse_dcmtk import (  # noqa: F401 - collected again, against this module's archive
    test_echo,
    test_find_study_level,
    test_get_study,
    test_move_study_every_transfer_syntax,
    test_store_every_transfer_syntax,
)
from test_dimse_pynetdicom import (  # noqa: F401 - idem
    chunked_send,
    test_bad_datasets_get_failure_statuses_and_association_stays,
    test_garbage_on_the_wire_drops_only_that_connection,
    test_storage_commitment,
    test_storage_commitment_report_on_same_association,
    test_store_is_bit_exact,
)

from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.engine import Engine

pytestmark = pytest.mark.interop


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory, storescp: tuple[int, Path]) -> Iterator[Archive]:
    arch = start_archive(tmp_path_factory.mktemp("archive-workers"), storescp[0], free_port(), workers=2)
    try:
        wait_ready(arch, 2)
        yield arch
    finally:
        rc = stop_archive(arch)
        assert rc == 0, f"dicomvault serve exited {rc} on SIGTERM\n{arch.log_text()[-4000:]}"
        assert "DIMSE SCP stopped" in arch.log_text()


@pytest.fixture(scope="module")
def stored(archive: Archive, corpus: list[Path]) -> Archive:
    storescu(archive, corpus)
    return archive


def receivers(arch: Archive) -> list[int]:
    """pids of the server's child processes (its receivers)."""
    kids = []
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            stat = Path(f"/proc/{d}/stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        if int(fields[1]) == arch.proc.pid and fields[0] != "Z":
            kids.append(int(d))
    return kids


def wait_ready(arch: Archive, n: int) -> list[int]:
    """The receivers' pids once the server says it serves (the port accepts connections, into
    the backlog, before the receivers are up: it is bound first, then inherited)."""
    deadline = time.monotonic() + 60
    while "serving DIMSE" not in arch.log_text() or len(receivers(arch)) != n:
        assert arch.proc.poll() is None and time.monotonic() < deadline, arch.log_text()[-3000:]
        time.sleep(0.05)
    return receivers(arch)


def synth_files(folder: Path, n: int, seed: int) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    spec = SeriesSpec(slices=n, rows=64, columns=64, seed=seed, patient_id=f"WORKERS{seed}")
    for i, data in enumerate(ct_series(spec)):
        p = folder / f"{i:04d}.dcm"
        p.write_bytes(data)
        paths.append(p)
    return paths


def find_images(arch: Archive, study_uid: str) -> int:
    assoc = associate(arch, [build_context(StudyRootQueryRetrieveInformationModelFind)])
    try:
        q = Dataset()
        q.QueryRetrieveLevel = "IMAGE"
        q.StudyInstanceUID = study_uid
        q.SeriesInstanceUID = ""
        q.SOPInstanceUID = ""
        rsps = list(assoc.send_c_find(q, StudyRootQueryRetrieveInformationModelFind))
    finally:
        assoc.release()
    assert rsps[-1][0].Status == 0x0000
    return sum(1 for st, _ in rsps if st.Status in (0xFF00, 0xFF01))


def test_receivers_cap_the_tcp_segment(archive: Archive) -> None:
    """The receivers accept on the writer's listening socket, which carries the segment cap
    (`[dimse] tcp_max_segment`, 16 KB by default; loopback's own is 64 KB)."""
    from dimse_helpers import announced_segment

    assert announced_segment(HOST, archive.port) <= 16384


def study_of(path: Path) -> str:
    import pydicom

    return str(pydicom.dcmread(path, stop_before_pixels=True).StudyInstanceUID)


def test_parallel_senders_all_durable_and_findable(archive: Archive, tmp_path: Path) -> None:
    files = synth_files(tmp_path / "series", 48, seed=11)
    dirs = []
    for q in range(4):
        d = tmp_path / f"q{q}"
        d.mkdir()
        for f in files[q::4]:
            os.link(f, d / f.name)
        dirs.append(d)
    cmd = ["storescu", "-aet", "STORESCU", "-aec", ARCHIVE_AE, "+sd", *archive.addr]
    procs = [subprocess.Popen([*cmd, str(d)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
             for d in dirs]
    for p in procs:
        _, err = p.communicate(60)
        assert p.returncode == 0, err.decode(errors="replace")
    study = study_of(files[0])
    with Engine(archive.data, read_only=True) as eng:
        assert len(eng.instances("study", study)) == 48
    assert find_images(archive, study) == 48  # C-FIND relayed to the writer


RECEIVER_SUMMARY = re.compile(r"dicomvault\.dimse\[w\d+\]: association from STORESCU: "
                              r"(\d+) object\(s\) stored")


def stored_by_receivers_natively(arch: Archive) -> int:
    """Objects the receivers' native reader (fastpath.py) stored, from its per-association lines."""
    return sum(int(m.group(1)) for m in RECEIVER_SUMMARY.finditer(arch.log_text()))


def test_receivers_take_the_native_store_path(archive: Archive, tmp_path: Path) -> None:
    """A receiver reads C-STOREs with the native reader, not pynetdicom's per-PDU Python (which
    made workers = 2 slower than one process), and still answers only what the writer stored."""
    files = synth_files(tmp_path / "series", 12, seed=13)
    before = stored_by_receivers_natively(archive)
    run_ok = subprocess.run(["storescu", "-aet", "STORESCU", "-aec", ARCHIVE_AE, *archive.addr,
                             *map(str, files)], capture_output=True, timeout=60)
    assert run_ok.returncode == 0, run_ok.stderr.decode(errors="replace")
    deadline = time.monotonic() + 10  # the line is written when the association has ended
    while stored_by_receivers_natively(archive) - before < 12 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stored_by_receivers_natively(archive) - before == 12, archive.log_text()[-3000:]
    with Engine(archive.data, read_only=True) as eng:
        assert len(eng.instances("study", study_of(files[0]))) == 12


def _store_until(arch: Archive, files: list[Path], kill_after: int, victims: list[int],
                 ae: Any = None, timeout: float = 20) -> set[str]:
    """Stores files one by one over pynetdicom (from `ae` if given), reconnecting when the
    association dies; kills `victims` (kill -9) after `kill_after` acknowledgements. The SOP UIDs
    acknowledged."""
    import pydicom

    acked: set[str] = set()
    killed = False
    pending = list(files)
    assoc = None
    deadline = time.monotonic() + 90
    while pending:
        assert time.monotonic() < deadline, f"{len(pending)} objects never acknowledged"
        if assoc is None or not assoc.is_established:
            try:
                assoc = associate(arch, [build_context(CTImageStorage, ExplicitVRLittleEndian)], ae=ae,
                                  timeout=timeout)
            except (AssertionError, OSError):
                time.sleep(0.2)  # receivers restarting
                continue
        ds = pydicom.dcmread(pending[0])
        try:
            rsp = assoc.send_c_store(ds)
        except RuntimeError:  # the association died under the request (its receiver was killed)
            assoc = None
            continue
        if rsp is not None and getattr(rsp, "Status", None) == 0x0000:
            acked.add(str(ds.SOPInstanceUID))
            pending.pop(0)
        if len(acked) >= kill_after and not killed:
            for pid in victims:
                os.kill(pid, signal.SIGKILL)
            killed = True
    if assoc is not None and assoc.is_established:
        assoc.release()
    return acked


# Slow: a store in flight on a receiver that is killed can leave the client waiting out a DIMSE
# timeout; under a loaded machine the whole run then passed its 90 s budget once (workers mode
# is opt-in; the default in-process SCP has its own kill -9 coverage in tests/test_crash_recovery).
@pytest.mark.slow
def test_kill9_of_receivers_loses_nothing_acknowledged(archive: Archive, tmp_path: Path) -> None:
    files = synth_files(tmp_path / "series", 30, seed=12)
    before = receivers(archive)
    acked = _store_until(archive, files, kill_after=10, victims=before)
    assert len(acked) == 30
    with Engine(archive.data, read_only=True) as eng:
        for uid in acked:
            assert eng.instance(uid) is not None, f"acknowledged {uid} is not in the archive"
    deadline = time.monotonic() + 30
    while len(set(receivers(archive)) - set(before)) < 2:
        assert time.monotonic() < deadline, archive.log_text()[-3000:]
        time.sleep(0.1)
    assert "exited with signal 9; restarting it" in archive.log_text()


def test_kill9_of_the_receivers_short_form(tmp_path: Path, storescp: tuple[int, Path]) -> None:
    """The kill -9 trial of the worker-process mode in `make test` (the long one above is slow):
    both receivers killed after 4 acknowledgements of 12; every acknowledged object is in the
    archive, the receivers come back, and the rest is stored through them. The client is our
    requestor AE (pynetdicom's reactor pause fixed) with 10 s timeouts, so an object lost in
    flight is sent again after at most 10 s, not 20."""
    from dicomvault.dimse.association import requestor_ae

    arch = start_archive(tmp_path, storescp[0], free_port(), workers=2)
    try:
        before = wait_ready(arch, 2)
        files = synth_files(tmp_path / "series", 12, seed=14)
        acked = _store_until(arch, files, kill_after=4, victims=before, ae=requestor_ae("PYSCU"), timeout=10)
        assert len(acked) == 12
        deadline = time.monotonic() + 30
        while len(set(receivers(arch)) - set(before)) < 2:
            assert time.monotonic() < deadline, arch.log_text()[-3000:]
            time.sleep(0.1)
    finally:
        stop_archive(arch)
    with Engine(arch.data, read_only=True) as eng:
        for uid in acked:
            assert eng.instance(uid) is not None, f"acknowledged {uid} is not in the archive"
    assert arch.log_text().count("exited with signal 9; restarting it") == 2


def test_sigterm_stops_writer_and_receivers(tmp_path: Path, storescp: tuple[int, Path]) -> None:
    arch = start_archive(tmp_path, storescp[0], free_port(), workers=3)
    try:
        kids = wait_ready(arch, 3)
        files = synth_files(tmp_path / "series", 6, seed=13)
        with ThreadPoolExecutor(2) as pool:  # two associations open while SIGTERM arrives
            futures = [pool.submit(_store_until, arch, files[i::2], 99, []) for i in range(2)]
            time.sleep(0.3)
            arch.proc.send_signal(signal.SIGTERM)
            acked = set().union(*(f.result() for f in futures))
    finally:
        rc = stop_archive(arch)
    assert rc == 0, arch.log_text()[-4000:]
    for pid in kids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    with pytest.raises(OSError):
        socket.create_connection((HOST, arch.port), timeout=2).close()
    log = arch.log_text()
    assert log.count("stopped: ") == 3, log[-3000:]
    with Engine(arch.data, read_only=True) as eng:
        for uid in acked:
            assert eng.instance(uid) is not None


@pytest.mark.parametrize(("line", "error"), [
    ("workers = 0", "workers: must be an integer 1-64"),
    ("workers = true", "workers: must be an integer 1-64"),
    ("tuned_reactor = 1", "tuned_reactor: must be true or false"),
    ("fast_path = 1", "fast_path: must be true or false"),
    ("tuned_reactor = false\nfast_path = true", "fast_path = true needs tuned_reactor = true"),
])
def test_config_keys(tmp_path: Path, line: str, error: str) -> None:
    from dicomvault.config import ConfigError, load_config

    ok = tmp_path / "ok.toml"
    ok.write_text("[dimse]\nworkers = 4\ntuned_reactor = false\n")
    d = load_config(ok).dimse
    assert (d.workers, d.tuned_reactor) == (4, False)
    bad = tmp_path / "bad.toml"
    bad.write_text(f"[dimse]\n{line}\n")
    with pytest.raises(ConfigError, match=error):
        load_config(bad)
