"""Fixtures for the DIMSE tests: a real `dicomvault serve` process, real dcmtk tools, real files.

The archive runs as a subprocess on a free loopback port with a temporary data directory; at the
end it gets SIGTERM and must exit 0. A dcmtk `storescp` (the C-MOVE destination) and a pynetdicom
storage commitment SCP are configured as its peers.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from dimse_helpers import (
    DCMTK_TOOLS,
    STORESCP_AE,
    Archive,
    Sent,
    free_port,
    run,
    start_archive,
    stop_archive,
    storescu,
    wait_port,
)

from dv_corpus import corpus_dirs


@pytest.fixture(scope="session")
def dcmtk() -> None:
    """dcmtk must be there (`make sysdeps` installs it): a missing tool fails, never skips."""
    missing = [t for t in DCMTK_TOOLS if shutil.which(t) is None]
    if missing:
        pytest.fail(f"dcmtk tools missing: {', '.join(missing)} (run `make sysdeps`)")


@pytest.fixture(scope="session")
def storescp(tmp_path_factory: pytest.TempPathFactory, dcmtk: None) -> Iterator[tuple[int, Path]]:
    """dcmtk storescp, the C-MOVE destination: accepts every transfer syntax and writes exactly
    the bytes it receives (+B), so what our C-MOVE sent can be compared bit for bit."""
    out = tmp_path_factory.mktemp("storescp")
    port = free_port()
    proc = subprocess.Popen(["storescp", "-aet", STORESCP_AE, "+xa", "+B", "-od", str(out), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, proc, None)
        yield port, out
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture(scope="session")
def archive(tmp_path_factory: pytest.TempPathFactory, storescp: tuple[int, Path]) -> Iterator[Archive]:
    # a pending response after every sub-operation: the tests read C-GET/C-MOVE counts step by
    # step (test_pending_interval.py runs the default)
    arch = start_archive(tmp_path_factory.mktemp("archive"), storescp[0], free_port(), pending_interval=0)
    try:
        yield arch
    finally:
        rc = stop_archive(arch)
        assert rc == 0, f"dicomvault serve exited {rc} on SIGTERM\n{arch.log_text()[-4000:]}"
        assert "DIMSE SCP stopped" in arch.log_text()


@pytest.fixture(scope="session")
def corpus(tmp_path_factory: pytest.TempPathFactory, dcmtk: None) -> list[Path]:
    """Five studies: a CT in six transfer syntaxes (one series: explicit/implicit LE, explicit BE,
    deflate, JPEG-LS, RLE), an MR, a JPEG 2000 NM, a JPEG baseline + decompressed SC, an RT plan.
    Variants get new SOP Instance UIDs (dcmodify -gin) so nothing replaces anything."""
    test_files = corpus_dirs()[1]
    d = tmp_path_factory.mktemp("corpus")
    ct = d / "ct_ele.dcm"
    shutil.copy(test_files / "CT_small.dcm", ct)
    made = [ct]
    for name, cmd in {
        "ct_ile.dcm": ["dcmconv", "+ti"], "ct_ebe.dcm": ["dcmconv", "+tb"], "ct_dfl.dcm": ["dcmconv", "+td"],
        "ct_jls.dcm": ["dcmcjpls"], "ct_rle.dcm": ["dcmcrle"],
    }.items():
        run([*cmd, str(ct), str(d / name)])
        made.append(d / name)
    run(["dcmdjpeg", str(test_files / "SC_rgb_jpeg_dcmtk.dcm"), str(d / "sc_ele.dcm")])
    made.append(d / "sc_ele.dcm")
    for p in made[1:]:
        run(["dcmodify", "-nb", "-gin", str(p)])
    for name in ("MR_small.dcm", "JPEG2000.dcm", "SC_rgb_jpeg_dcmtk.dcm", "rtplan.dcm"):
        shutil.copy(test_files / name, d / name)
        made.append(d / name)
    uids = [Sent.of(p).sop_uid for p in made]
    assert len(set(uids)) == len(uids), "corpus SOP Instance UIDs must be distinct"
    return made


@pytest.fixture(scope="session")
def stored(archive: Archive, corpus: list[Path]) -> Archive:
    """The archive with the corpus stored through dcmtk storescu."""
    storescu(archive, corpus)
    return archive
