"""The retrieve ceiling (bench/noop_get.py, bench/retrieve_ceiling.py): the no-op C-GET SCP really
delivers the objects it holds, whole and bit-exact, with DIMSE's pending and final counts, to the
benchmark's client (dcmtk getscu), on a repeated association too (its negotiation cache); and the
benchmark's measurement of one getscu run reads what getscu logged; a C-MOVE reaches the
destination on a sub-association."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.uid import ExplicitVRLittleEndian

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import noop_get  # noqa: E402
import retrieve_ceiling as rc  # noqa: E402

from dicomvault.bench.dimse import DCMTK_ENV, StoreScp, start_storescp  # noqa: E402
from dicomvault.bench.synth import SeriesSpec, ct_series  # noqa: E402

pytestmark = [pytest.mark.interop,
              pytest.mark.skipif(shutil.which("getscu") is None, reason="dcmtk getscu not installed")]
SLICES = 6


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    folder = tmp_path_factory.mktemp("ct")
    for i, data in enumerate(ct_series(SeriesSpec(slices=SLICES, rows=64, columns=64, seed=5))):
        (folder / f"{i:04d}.dcm").write_bytes(data)
    uid = str(dcmread(folder / "0000.dcm", stop_before_pixels=True).StudyInstanceUID)
    return folder, uid


@pytest.fixture(scope="module")
def dest(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreScp]:
    scp = start_storescp(tmp_path_factory.mktemp("storescp"))
    yield scp
    scp.stop()


@pytest.fixture(scope="module")
def noop(study: tuple[Path, str], dest: StoreScp, tmp_path_factory: pytest.TempPathFactory
         ) -> Iterator[rc.Server]:
    server = rc.start_noop([study[0]], tmp_path_factory.mktemp("noop"), dest)
    yield server
    server.stop()


def test_read_part10_gives_the_data_set_after_the_meta_group(study: tuple[Path, str]) -> None:
    path = sorted(study[0].glob("*.dcm"))[0]
    obj = noop_get.read_part10(path)
    ds = dcmread(path)
    assert (obj.sop_class, obj.sop_uid, obj.transfer_syntax) == (ds.SOPClassUID, ds.SOPInstanceUID,
                                                                  ExplicitVRLittleEndian)
    assert path.read_bytes().endswith(obj.data)
    assert obj.data[:2] == b"\x08\x00"  # the data set starts with group 0008


def test_getscu_receives_every_object_bit_exact(noop: rc.Server, study: tuple[Path, str],
                                                tmp_path: Path) -> None:
    folder, uid = study
    for attempt in range(2):  # the second association is answered from the negotiation cache
        out = tmp_path / f"got{attempt}"
        out.mkdir()
        r = subprocess.run(["getscu", "-v", "-aet", "GETSCU", "-aec", noop.ae, "-S", "-od", str(out),
                            "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={uid}",
                            "127.0.0.1", str(noop.port)], capture_output=True, text=True, env=DCMTK_ENV,
                           timeout=60, check=False)
        log = r.stdout + r.stderr
        assert r.returncode == 0, log
        remaining = [int(n) for n in re.findall(r"Number of Remaining Suboperations\s*:\s*(\d+)", log)]
        assert re.search(r"Number of Completed Suboperations\s*:\s*6", log), log
        assert remaining[-1] == 0
        got = {dcmread(p).SOPInstanceUID: p for p in out.iterdir()}
        assert len(got) == SLICES
        for src in folder.glob("*.dcm"):
            obj = noop_get.read_part10(src)
            assert got[obj.sop_uid].read_bytes().endswith(obj.data), f"{obj.sop_uid} differs"


def test_the_measured_retrieve_reads_getscu_s_log(noop: rc.Server, study: tuple[Path, str],
                                                  tmp_path: Path) -> None:
    cfg = tmp_path / "us.cfg"
    cfg.write_text(rc.LOG_CONFIG)
    r = rc.getscu(noop.ae, noop.port, study[1], cfg, tmp_path / "getscu.log", noop.pid)
    assert (r.exit_code, r.objects) == (0, SLICES)
    assert r.first_ms is not None and 0 < r.first_ms < r.seconds * 1e3
    assert r.assoc_ms is not None and 0 < r.assoc_ms < r.seconds * 1e3
    assert r.client_cpu >= 0 and r.server_cpu >= 0
    unknown = rc.getscu(noop.ae, noop.port, "1.2.3.4", cfg, tmp_path / "none.log", noop.pid)
    assert (unknown.exit_code, unknown.objects, unknown.first_ms) == (0, 0, None)


def test_movescu_gets_every_object_to_the_destination(noop: rc.Server, dest: StoreScp,
                                                     study: tuple[Path, str], tmp_path: Path) -> None:
    cfg = tmp_path / "us.cfg"
    cfg.write_text(rc.LOG_CONFIG)
    for _ in range(2):
        r = rc.movescu(noop.ae, noop.port, study[1], dest, cfg, tmp_path / "movescu.log", noop.pid)
        assert (r.exit_code, r.objects) == (0, SLICES), r.log_tail
        assert r.first_ms is not None and r.first_ms > 0
    log = (tmp_path / "movescu.log").read_text()
    assert "Move Response" in log and "Failed" not in log


def test_the_tree_report_has_a_column_per_tree_and_the_last_over_the_first() -> None:
    """--tree A/B: each tree's medians, its share of the ceiling and the last tree / the first;
    an incomplete retrieve does not count."""
    load = rc.Workload("CT", Path("."), "1.2.3", 300, 150.0)

    def runs(*seconds: float, objects: int = 300) -> list[rc.Retrieve]:
        return [rc.Retrieve(s, objects, 1.0, 0.05, 0.1, 0) for s in seconds]

    results = {("C-GET", "CT", rc.NOOP): runs(0.1, 0.1, 0.1),
               ("C-GET", "CT", "old"): runs(0.6, 0.6, 0.5),
               ("C-GET", "CT", "new"): runs(0.2, 0.3, 0.3) + runs(0.01, 0.01, objects=299)}
    text = rc.report_trees(results, [load], ["old", "new"], 3, False, rc.dt.datetime.now(rc.dt.UTC),
                           (0.0, 0.0, 0.0))
    header = next(line for line in text.splitlines() if line.startswith("| figure"))
    assert header.split(" | ")[1:] == [rc.NOOP, "old", "new", "old / ceiling", "new / ceiling", "new / old |"]
    row = next(line for line in text.splitlines() if line.startswith("| C-GET CT, MB/s"))
    assert [c.strip() for c in row.strip("|").split("|")][1:] == ["1,500", "250", "500", "0.17x", "0.33x",
                                                                  "2.00x"]
