"""kill -9 at every step of a tier move, on a real SeaweedFS.

A child process opens the data directory (its stored tier layout: landing, warm, cold on S3),
runs a move with `DICOMVAULT_FAILPOINT` set and SIGKILLs itself at that point of mover.py. The
parent then reopens the directory and checks the move's crash contract: every object reads back
bit-exact, the index is consistent, `reclaim()` frees exactly what the crash left (a second
local copy, an unreferenced pack), after which `verify()` is clean with nothing unreferenced,
and running the move again finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest

from dicomvault.engine import Engine
from dicomvault.storage.settings import TierSpec
from dicomvault.tiering import jobs, studies
from dicomvault.tiering.compactor import Compactor
from dv_corpus import real_file
from seaweed_server import SeaweedServer

# Small real images of five modalities; JPEG2000_UNC + JPEG-LL are one two-instance NM study.
IMAGES = ["CT_small.dcm", "MR_small.dcm", "JPEG2000_UNC.dcm", "JPEG-LL.dcm", "US1_J2KI.dcm", "rtplan.dcm"]
MOVED = "1.3.6.1.4.1.5962.1.2.8.20040826185059.5457"  # the NM study (two blobs)

CHILD = r"""
import sys
from dicomvault.engine import Engine
from dicomvault.tiering import jobs
from dicomvault.tiering.compactor import Compactor

data, action, study = sys.argv[1:4]
with Engine(data, min_free_bytes=0) as e:  # the stored layout: landing, warm, cold
    if action == "compact":
        r = Compactor(e, threads=1).run_once().report
    else:
        r = jobs.move_study(e, study, action)
    assert not r.failed, r.failed
print("finished", r.blobs, flush=True)
"""


@dataclass(frozen=True)
class Obj:
    name: str
    data: bytes
    sop: str
    study: str




@pytest.fixture(scope="module")
def objs() -> list[Obj]:
    out = []
    for name in IMAGES:
        p = real_file(name)
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        out.append(Obj(name, p.read_bytes(), str(ds.SOPInstanceUID), str(ds.StudyInstanceUID)))
    assert sum(o.study == MOVED for o in out) == 2
    return out


def tiers(server: SeaweedServer) -> tuple[TierSpec, ...]:
    return (
        TierSpec("landing", "local", "raw", path="landing"),
        TierSpec("warm", "local", "hot", path="warm"),
        TierSpec("cold", "s3", "cold", endpoint=server.endpoint, bucket=f"t-{uuid.uuid4().hex[:12]}",
                 access_key=server.access_key, secret_key=server.secret_key),
    )


def crash(data: Path, action: str, failpoint: str) -> None:
    """Runs the move in a child that kills itself at `failpoint`; asserts it did."""
    env = {**os.environ, "DICOMVAULT_FAILPOINT": failpoint}
    proc = subprocess.run([sys.executable, "-c", CHILD, str(data), action, MOVED], env=env,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == -signal.SIGKILL, (proc.returncode, proc.stdout, proc.stderr[-3000:])
    assert "finished" not in proc.stdout


def placements(e: Engine, objs: list[Obj]) -> dict[str, str]:
    return {o.name: e.index.blob(e.instance(o.sop).hash).tier for o in objs}


def assert_readable(e: Engine, objs: list[Obj]) -> None:
    assert e.index.check() == []
    for o in objs:
        assert e.read_file(o.sop) == o.data, o.name


def assert_clean(e: Engine, cold_blobs: int) -> None:
    v = e.verify()
    assert v.clean, (v.damaged, v.missing)
    assert v.unreferenced == 0
    assert v.checked == v.ok
    assert v.remote_checked == ({"cold": cold_blobs} if cold_blobs else {})
    live = set(e.index.live_packs())
    assert e.remote("cold").orphan_packs(live) == []
    assert e.remote("cold").usage()[0] == len(live)


def local_copies(e: Engine, objs: list[Obj], names: set[str]) -> dict[str, list[str]]:
    """For the named objects: the local tiers holding a copy."""
    tier_names = [t.name for t in e.local_tiers]
    return {o.name: sorted(tier_names[i] for i in e.vault.holders(e.instance(o.sop).hash))
            for o in objs if o.name in names}


NM = {"JPEG2000_UNC.dcm", "JPEG-LL.dcm"}

# (failpoint, reclaim() right after the crash: orphans, extra_copies, packs)
COMPACT = [
    # copied into warm, index still says landing: the warm copies are extra
    ("move.local.copied", (0, 6, 0)),
    # index says warm, landing copies not freed yet: those are extra
    ("move.local.switched", (0, 6, 0)),
    # all done but the landing volume's removal
    ("move.local.freed", (0, 0, 0)),
]
TO_COLD = [
    # the pack is uploaded and verified, the index does not name it: an orphan pack
    pytest.param("move.remote.uploaded", (0, 0, 1), id="move.remote.uploaded"),
    # index says cold, the warm copies are still there: extra copies (not a promotion)
    pytest.param("move.remote.switched", (0, 2, 0), id="move.remote.switched"),
    pytest.param("move.remote.freed", (0, 0, 0), id="move.remote.freed"),
]
TO_WARM = [
    # fetched into warm, index still says cold and the study is not promoted: the copies are
    # extra (freed); the move run again fetches them anew
    ("move.local.copied", (0, 2, 0)),
    # index says warm: the pack has no live blob left, and its deletion was not reached
    ("move.local.switched", (0, 0, 1)),
    ("move.local.freed", (0, 0, 1)),
]


def reclaimed(e: Engine) -> tuple[int, int, int]:
    r = jobs.reclaim(e)
    return r["orphans"], r["extra_copies"], r["packs"]


@pytest.mark.parametrize(("failpoint", "expected"), COMPACT, ids=[c[0] for c in COMPACT])
def test_kill9_during_compaction(tmp_path: Path, seaweed: SeaweedServer, objs: list[Obj],
                                 failpoint: str, expected: tuple[int, int, int]) -> None:
    data = tmp_path / "data"
    with Engine(data, tiers=tiers(seaweed), min_free_bytes=0) as e:
        assert not [r for r in e.store_files([real_file(o.name) for o in objs]) if isinstance(r, Exception)]
    crash(data, "compact", failpoint)

    with Engine(data, min_free_bytes=0) as e:
        assert [t.name for t in e.tiers] == ["landing", "warm", "cold"]
        assert_readable(e, objs)
        switched = failpoint != "move.local.copied"
        assert set(placements(e, objs).values()) == {"warm" if switched else "landing"}
        assert reclaimed(e) == expected
        assert_clean(e, 0)
        assert_readable(e, objs)
        # Each blob now has exactly one copy, in the tier the index names.
        where = placements(e, objs)
        assert local_copies(e, objs, set(where)) == {n: [t] for n, t in where.items()}

        p = Compactor(e).run_once()
        assert p.report.failed == []
        assert p.report.blobs == (0 if switched else len(objs))
        assert set(placements(e, objs).values()) == {"warm"}
        st = e.tier_stats()
        assert (st["landing"]["objects"], st["warm"]["objects"]) == (0, len(objs))
        assert (st["landing"]["copies"], st["warm"]["copies"]) == (0, len(objs))
        assert reclaimed(e) == (0, 0, 0)
        assert_clean(e, 0)
        assert_readable(e, objs)


@pytest.mark.parametrize(("failpoint", "expected"), TO_COLD)
def test_kill9_moving_a_study_to_cold(tmp_path: Path, seaweed: SeaweedServer, objs: list[Obj],
                                      failpoint: str, expected: tuple[int, int, int]) -> None:
    data = tmp_path / "data"
    with Engine(data, tiers=tiers(seaweed), min_free_bytes=0) as e:
        assert not [r for r in e.store_files([real_file(o.name) for o in objs]) if isinstance(r, Exception)]
        assert Compactor(e).run_once().report.blobs == len(objs)
    crash(data, "cold", failpoint)

    with Engine(data, min_free_bytes=0) as e:
        assert_readable(e, objs)
        switched = failpoint != "move.remote.uploaded"
        moved = {n for n, t in placements(e, objs).items() if t == "cold"}
        assert moved == (NM if switched else set())
        got = reclaimed(e)
        assert (got[0], got[2]) == (expected[0], expected[2])  # orphans, packs
        assert_clean(e, 2 if switched else 0)
        assert_readable(e, objs)

        r = jobs.move_study(e, MOVED, "cold")
        assert r.failed == [] and r.blobs == (0 if switched else 2)
        assert {n for n, t in placements(e, objs).items() if t == "cold"} == NM
        assert studies.get(e, MOVED).tier == "cold"
        assert len(e.index.live_packs()) == 1
        assert_clean(e, 2)
        assert_readable(e, objs)
        assert reclaimed(e)[::2] == (0, 0)
        # The crash's extra warm copies were reclaimed, and after the move no local copy of the
        # moved blobs is left (the study was never promoted).
        assert got[1] == expected[1]
        assert local_copies(e, objs, NM) == {n: [] for n in NM}
        assert e.tier_stats()["warm"]["copies"] == len(objs) - 2


@pytest.mark.parametrize(("failpoint", "expected"), TO_WARM, ids=[c[0] for c in TO_WARM])
def test_kill9_moving_a_study_back_from_cold(tmp_path: Path, seaweed: SeaweedServer, objs: list[Obj],
                                             failpoint: str, expected: tuple[int, int, int]) -> None:
    data = tmp_path / "data"
    with Engine(data, tiers=tiers(seaweed), min_free_bytes=0) as e:
        assert not [r for r in e.store_files([real_file(o.name) for o in objs]) if isinstance(r, Exception)]
        assert Compactor(e).run_once().report.blobs == len(objs)
        assert jobs.move_study(e, MOVED, "cold").blobs == 2
        assert e.remote("cold").usage()[0] == 1
    crash(data, "warm", failpoint)

    with Engine(data, min_free_bytes=0) as e:
        assert_readable(e, objs)
        switched = failpoint != "move.local.copied"
        assert {n for n, t in placements(e, objs).items() if t == "cold"} == (set() if switched else NM)
        assert local_copies(e, objs, NM) == {n: ["warm"] for n in NM}
        assert reclaimed(e) == expected
        assert_clean(e, 0 if switched else 2)
        assert_readable(e, objs)
        assert e.remote("cold").usage()[0] == (0 if switched else 1)

        r = jobs.move_study(e, MOVED, "warm")
        assert r.failed == [] and r.blobs == (0 if switched else 2)
        assert set(placements(e, objs).values()) == {"warm"}
        assert studies.get(e, MOVED).tier == "warm"
        assert local_copies(e, objs, NM) == {n: ["warm"] for n in NM}
        assert e.index.live_packs() == {}
        assert e.remote("cold").usage() == (0, 0)
        assert reclaimed(e) == (0, 0, 0)
        assert_clean(e, 0)
        assert_readable(e, objs)
