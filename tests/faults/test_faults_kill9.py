"""kill -9 at random moments of ingest (`dicomvault ingest`, DIMSE from pynetdicom and dcmtk
storescu), compaction (landing -> warm), tier moves (warm <-> cold on SeaweedFS) and replication.

Every trial starts the work, SIGKILLs it at a moment drawn from a seeded RNG (FAULT_SEED), starts
again on the same data directory and checks: every object acknowledged before the kill (the CLI's
summary, a DIMSE Success status, an HTTP 200, a store call that returned) reads back bit-exact,
the crash's leftovers are reclaimed as the next start does, and `dicomvault verify` is clean with
nothing unreferenced. The short form runs a few trials each; FAULT_TRIALS=N the long one."""

from __future__ import annotations

import json
import random
import re
import subprocess
import threading
import time
import uuid
from pathlib import Path

import pytest
from fault_kit import (
    CLI,
    Acked,
    Tally,
    check_restart,
    digest,
    part10_digest,
    run_and_kill,
    seed,
    timed,
    trials,
)

from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.engine import Engine, StoreOutcome
from dicomvault.tiering import studies
from seaweed_server import SeaweedServer


def series(seed_: int, slices: int, size: int = 128, patient: str = "FAULTS") -> list[bytes]:
    return list(ct_series(SeriesSpec(slices=slices, rows=size, columns=size, seed=seed_, patient_id=patient)))


def write_folder(folder: Path, files: list[bytes]) -> dict[Path, bytes]:
    folder.mkdir(parents=True)
    out = {}
    for i, buf in enumerate(files):
        p = folder / f"{i:04d}.dcm"
        p.write_bytes(buf)
        out[p] = buf
    return out


def uid_of(buf: bytes) -> str:
    import io

    import pydicom

    return str(
        pydicom.dcmread(
            io.BytesIO(buf), stop_before_pixels=True, specific_tags=["SOPInstanceUID"]
        ).SOPInstanceUID
    )


def store_in_process(data: Path, files: list[bytes], acked: Acked, **engine_kw: object) -> None:
    """Stores with the engine (each returned StoreOutcome is an acknowledgement)."""
    with Engine(data, min_free_bytes=0, **engine_kw) as engine:  # type: ignore[arg-type]
        for buf, res in zip(files, engine.store_buffers(files), strict=True):
            assert isinstance(res, StoreOutcome), res
            acked[res.sop_instance_uid] = part10_digest(buf)


# -- dicomvault ingest -----------------------------------------------------------------------------


def test_kill9_cli_ingest(tmp_path: Path) -> None:
    """A run of `dicomvault ingest` reports what it stored only at its end: a run killed before
    acknowledges nothing, and the same command run again must then store every file (what the
    killed run left must neither block nor duplicate it)."""
    n, s = trials(2), seed()
    rng, tally = random.Random(s), Tally("kill9 cli-ingest", s)
    data, acked = tmp_path / "data", {}
    work = 0.0
    for t in range(n):
        files = write_folder(tmp_path / f"in{t}", series(s * 1000 + t, slices=rng.randint(60, 120), size=256))
        args = [
            CLI,
            "ingest",
            str(tmp_path / f"in{t}"),
            "--data",
            str(data),
            "--json",
            "-j",
            str(rng.choice([1, 2, 4])),
        ]
        # The first run is timed to its end: the later kills fall within a run's length (scaled
        # by its file count), the last few percent past it so that some runs finish.
        r = run_and_kill(args, data, None if t == 0 else rng.uniform(0, 1.05) * work * len(files))
        work = work or r.work / len(files)
        out = r.out
        tally.trials += 1
        if r.killed:
            tally.killed += 1
            check_restart(data, acked, tally, cli=False)
            out = timed(args, data).out  # the same command again finishes the folder
        else:
            tally.finished += 1
        summary = json.loads(out)
        assert summary["rejected"] == [] and summary["storage_full"] is None, summary
        assert summary["stored"] + summary["duplicates"] + summary["replaced"] == len(files), summary
        for buf in files.values():
            acked[uid_of(buf)] = part10_digest(buf)
        check_restart(data, acked, tally, cli=t == n - 1)
    tally.acked = len(acked)
    tally.notes.append(f"every killed run's folder re-ingested whole ({tally.killed} runs)")
    tally.report()
    assert tally.lost == 0


# -- DIMSE: pynetdicom and dcmtk storescu against `dicomvault serve` ------------------------------


def _pynetdicom_client(
    port: int, files: list[tuple[Path, str, str]], acked: Acked, lock: threading.Lock
) -> None:
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE, build_context
    from pynetdicom.sop_class import CTImageStorage

    ae = AE(ae_title="FAULTSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    try:
        assoc = ae.associate(
            "127.0.0.1",
            port,
            contexts=[build_context(CTImageStorage, ExplicitVRLittleEndian)],
            ae_title="DICOMVAULT",
        )
    except OSError:
        return
    if not assoc.is_established:
        return
    try:
        for path, uid, want in files:
            rsp = assoc.send_c_store(path)
            if rsp is None or getattr(rsp, "Status", None) != 0x0000:
                return  # no answer (the server died) or a failure: not acknowledged
            with lock:
                acked[uid] = want
    except (RuntimeError, OSError):
        return
    finally:
        if assoc.is_established:
            assoc.abort()


STORESCU_ACKS: list[str] = []
_SENDING = re.compile(r"Sending file: (\S+)")


def _storescu_client(
    port: int, files: list[tuple[Path, str, str]], acked: Acked, lock: threading.Lock
) -> None:
    """dcmtk storescu -v: a 'Received Store Response (Success)' after 'Sending file: X' acknowledges X."""
    by_path = {str(p): (uid, want) for p, uid, want in files}
    proc = subprocess.Popen(
        [
            "storescu",
            "-v",
            "-aet",
            "FAULTSCU",
            "-aec",
            "DICOMVAULT",
            "-to",
            "10",
            "-ta",
            "10",
            "-td",
            "10",
            "127.0.0.1",
            str(port),
            *by_path,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    assert proc.stdout is not None
    current = None
    for line in proc.stdout:
        if m := _SENDING.search(line):
            current = m.group(1)
        elif "Received Store Response (Success)" in line and current in by_path:
            with lock:
                acked[by_path[current][0]] = by_path[current][1]
                STORESCU_ACKS.append(current)
            current = None
    proc.wait(30)


def test_kill9_dimse_ingest(tmp_path: Path) -> None:
    from dimse_helpers import free_port, start_archive, stop_archive
    from pynetdicom import _config

    n, s = trials(2), seed()
    rng, tally = random.Random(s + 1), Tally("kill9 dimse-ingest", s)
    acked: Acked = {}
    saved = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True  # the data set goes out as in the file: bytes comparable
    try:
        for t in range(n):
            folder = write_folder(tmp_path / f"in{t}", series(s * 1000 + 500 + t, slices=60, size=256))
            files = [(p, uid_of(b), part10_digest(b)) for p, b in folder.items()]
            arch = start_archive(tmp_path / "srv", free_port(), free_port())  # srv/data every time
            lock = threading.Lock()
            storescu_share = rng.random() < 0.5
            clients = [
                threading.Thread(
                    target=_storescu_client if (i == 0 and storescu_share) else _pynetdicom_client,
                    args=(arch.port, files[i::3], acked, lock),
                )
                for i in range(3)
            ]
            before = len(acked)
            for c in clients:
                c.start()
            # the kill comes once the stores are flowing (after 1-30 acknowledgements)
            target = before + rng.randint(1, 30)
            deadline = time.monotonic() + 60
            while len(acked) < target and time.monotonic() < deadline and any(c.is_alive() for c in clients):
                time.sleep(0.002)
            tally.trials += 1
            if arch.proc.poll() is None and any(c.is_alive() for c in clients):
                tally.killed += 1
            else:
                tally.finished += 1
            arch.proc.kill()
            arch.proc.wait(10)
            for c in clients:
                c.join(60)
            assert len(acked) > before, f"nothing acknowledged in trial {t}\n{arch.log_text()[-3000:]}"
            check_restart(arch.data, acked, tally, cli=t == n - 1)
            if t == n - 1:  # the same data directory serves again
                again = start_archive(tmp_path / "srv", free_port(), free_port())
                _pynetdicom_client(again.port, files[-1:], acked, threading.Lock())
                assert stop_archive(again) == 0
                assert files[-1][1] in acked
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = saved
    tally.acked = len(acked)
    tally.notes.append(
        f"3 associations per trial, one of them dcmtk storescu in about half "
        f"({len(STORESCU_ACKS)} of the acknowledgements were storescu's)"
    )
    tally.report()


# -- compaction and tier moves ---------------------------------------------------------------------


def test_kill9_compaction(tmp_path: Path) -> None:
    """`dicomvault tier compact` (landing raw -> warm hot) killed at random; each trial first lands
    a new series, so a killed pass leaves work for the next."""
    from dicomvault.storage.settings import TierSpec

    n, s = trials(2), seed()
    rng, tally = random.Random(s + 2), Tally("kill9 compaction", s)
    data, acked = tmp_path / "data", {}
    layout = (
        TierSpec("landing", "local", "raw", path="landing"),
        TierSpec("warm", "local", "hot", path="warm"),
    )
    args = [CLI, "tier", "compact", "--data", str(data)]
    work = 0.0
    for t in range(n):
        store_in_process(
            data, series(s * 1000 + 700 + t, slices=rng.randint(60, 120), size=256), acked, tiers=layout
        )
        r = run_and_kill(args, data, None if t == 0 else rng.uniform(0, 1.05) * work)
        work = work or r.work
        killed = r.killed
        tally.trials += 1
        tally.killed += killed
        tally.finished += not killed
        check_restart(data, acked, tally, cli=t == n - 1)
    timed(args, data)  # what is left compacts
    with Engine(data, min_free_bytes=0) as engine:
        st = engine.tier_stats()
        assert st["landing"]["objects"] == 0 and st["warm"]["objects"] == len(acked), st
    check_restart(data, acked, tally)
    tally.acked = len(acked)
    tally.report()


def test_kill9_tier_moves(tmp_path: Path, seaweed: SeaweedServer) -> None:
    """`dicomvault tier move` of a study to cold (SeaweedFS) or back to warm, killed at random."""
    from dicomvault.storage.settings import TierSpec

    n, s = trials(2), seed()
    rng, tally = random.Random(s + 3), Tally("kill9 tier-moves", s)
    data, acked = tmp_path / "data", {}
    layout = (
        TierSpec("landing", "local", "raw", path="landing"),
        TierSpec("warm", "local", "hot", path="warm"),
        TierSpec(
            "cold",
            "s3",
            "cold",
            endpoint=seaweed.endpoint,
            bucket=f"f-{uuid.uuid4().hex[:12]}",
            access_key=seaweed.access_key,
            secret_key=seaweed.secret_key,
        ),
    )
    study_uids: list[str] = []
    durations: dict[str, float] = {}
    moves = {"cold": 0, "warm": 0}
    for t in range(n):
        files = series(s * 1000 + 900 + t, slices=rng.randint(10, 40), size=256)
        store_in_process(data, files, acked, tiers=layout)
        with Engine(data, min_free_bytes=0) as engine:
            from dicomvault.tiering.compactor import Compactor

            assert Compactor(engine, threads=1).run_once().report.failed == []
            study_uids.append(engine.instance(uid_of(files[0])).study_uid)
            tiers_now = {u: studies.get(engine, u).tier for u in study_uids}
        to_warm = [u for u, tier in tiers_now.items() if tier == "cold"]
        if to_warm and rng.random() < 0.4:
            study, to = rng.choice(to_warm), "warm"
        else:
            study, to = study_uids[-1], "cold"
        args = [CLI, "tier", "move", "--data", str(data), "--study", study, "--to", to]
        r = run_and_kill(args, data, rng.uniform(0, 1.05) * durations[to] if to in durations else None)
        durations.setdefault(to, r.work)
        killed = r.killed
        moves[to] += 1
        tally.trials += 1
        tally.killed += killed
        tally.finished += not killed
        check_restart(data, acked, tally, remote=True, cli=False)
        if killed:  # the move run again completes
            timed(args, data)
            check_restart(data, acked, tally, remote=True, cli=False)
    check_restart(data, acked, tally, remote=True)
    tally.acked = len(acked)
    tally.notes.append(f"moves to cold {moves['cold']}, back to warm {moves['warm']}; each killed move rerun")
    tally.report()


# -- replication -----------------------------------------------------------------------------------


def test_kill9_replication(tmp_path: Path) -> None:
    """A primary under HTTP ingest, a replica pulling from it; each trial kills one of them (the
    primary every third trial) at a random moment and restarts it. At the end the replica must
    hold exactly the primary's objects, every acknowledged one bit-exact."""
    import sys

    sys.path.insert(0, str(Path(__file__).parents[1] / "replication"))
    from procs import Ingester, files_of, free_port, replicate, serve, snapshot, wait_until
    from repl_helpers import TOKEN, synth_stream

    n, s = trials(2), seed()
    rng, tally = random.Random(s + 4), Tally("kill9 replication", s)
    pdata, rdata = tmp_path / "primary", tmp_path / "replica"
    port = free_port()
    primary = serve(pdata, port, tmp_path / "primary.log", "--replication-token", TOKEN).start()
    replica = replicate(rdata, primary.url, TOKEN, tmp_path / "replica.log").start()
    ing = Ingester([primary.url], synth_stream(s % 10000)).start()
    kills = {"primary": 0, "replica": 0}
    try:
        for t in range(n):
            time.sleep(rng.uniform(0.2, 1.5))
            who = "primary" if t % 3 == 1 else "replica"
            proc = primary if who == "primary" else replica
            proc.kill9()
            kills[who] += 1
            tally.trials += 1
            tally.killed += 1
            time.sleep(rng.uniform(0.0, 0.5))
            proc.start()
        time.sleep(0.5)
    finally:
        ing.stop()

    def converged() -> bool:
        try:
            return snapshot(pdata) == snapshot(rdata)
        except Exception:  # noqa: BLE001 - a read-only open can race a starting writer; poll again
            return False

    try:
        assert len(ing.acked) > 0
        assert wait_until(converged, 60), "replica did not converge"
        assert set(ing.acked) <= set(snapshot(rdata))
        got = files_of(rdata, sorted(ing.acked))
        tally.lost = sum(got[k] != v for k, v in ing.acked.items())
        assert tally.lost == 0
    finally:
        replica.stop()
        primary.stop()
    for data in (pdata, rdata):
        with Engine(data, read_only=True) as engine:
            acked = {
                rec.sop_uid: digest(*engine.read_dataset(rec.sop_uid))
                for rec in engine.index.instances()
                if rec.sop_uid in ing.acked
            }
        check_restart(data, acked, tally)
    tally.acked = len(ing.acked)
    tally.notes.append(
        f"kills: primary {kills['primary']}, replica {kills['replica']}; replica converged to "
        "the primary's exact set"
    )
    tally.report()


@pytest.fixture(autouse=True)
def _dimse_helpers_on_path() -> None:
    import sys

    here = str(Path(__file__).parents[1] / "dimse")
    if here not in sys.path:
        sys.path.insert(0, here)
