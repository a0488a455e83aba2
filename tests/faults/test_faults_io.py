"""ENOSPC and EIO injected into the blob store's writes, syncs and reads of a running `dicomvault
serve` (and of `dicomvault ingest` / `verify`) with the LD_PRELOAD shim (iofault.c).

Checked: while the fault is armed a store is answered with a failure status (0xA7xx), never a
Success that was not kept; every object acknowledged before, during and after is there bit-exact;
the server keeps answering (C-ECHO, new associations) and stores again by itself once the fault
clears; a read of a blob whose reads fail is an error, not wrong bytes; after a clean stop
`dicomvault verify` is clean."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fault_kit import CLI, Acked, Tally, check_restart, long_only, part10_digest, seed
from io_shim import READS, SYNCS, WRITES, build, injected, shim_env

from dicomvault.bench.synth import SeriesSpec, ct_series

sys.path.insert(0, str(Path(__file__).parents[1] / "dimse"))
from dimse_helpers import HOST, free_port, wait_port  # noqa: E402

FAILURE_CLASSES = (0xA700, 0xA7FF)  # out of resources: the sender retries later


@pytest.fixture(scope="module")
def shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    lib = build(tmp_path_factory.mktemp("iofault"))
    if lib is None:
        pytest.skip("no C compiler for the LD_PRELOAD shim")
    return lib


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    data: Path
    dimse: int
    http: int
    log: Path

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    def stop(self) -> int:
        self.proc.terminate()
        try:
            return self.proc.wait(40)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise AssertionError(f"serve ignored SIGTERM\n{self.log_text()[-3000:]}") from None


def start_serve(tmp: Path, env: dict[str, str]) -> Server:
    data, dimse, http, log = tmp / "data", free_port(), free_port(), tmp / "serve.log"
    with log.open("ab") as out:
        proc = subprocess.Popen(
            [
                CLI,
                "serve",
                "--data",
                str(data),
                "--accept-unknown-callers",  # the tools call with their own AE titles
                "--host",
                HOST,
                "--dimse-port",
                str(dimse),
                "--http-port",
                str(http),
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, **env},
        )
    wait_port(dimse, proc, log)
    wait_port(http, proc, log)
    return Server(proc, data, dimse, http, log)


def series(seed_: int, n: int) -> list[bytes]:
    return list(ct_series(SeriesSpec(slices=n, rows=128, columns=128, seed=seed_, patient_id="IOFAULT")))


@pytest.fixture
def assoc_factory() -> Iterator[object]:
    from pydicom.uid import ExplicitVRLittleEndian
    from pynetdicom import AE, build_context
    from pynetdicom.sop_class import CTImageStorage, Verification

    opened = []

    def make(port: int) -> object:
        ae = AE(ae_title="IOFAULTSCU")
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
        assoc = ae.associate(
            HOST,
            port,
            ae_title="DICOMVAULT",
            contexts=[build_context(CTImageStorage, ExplicitVRLittleEndian), build_context(Verification)],
        )
        assert assoc.is_established, "association refused"
        opened.append(assoc)
        return assoc

    def release_all() -> None:
        for a in opened:
            if a.is_established:
                a.release()

    # Released before the server is stopped: serve drains open associations for up to 30 s on
    # SIGTERM, and idle ones only end at the client's 20 s network timeout.
    make.release_all = release_all  # type: ignore[attr-defined]
    yield make
    release_all()


def send(assoc: object, files: list[bytes], acked: Acked, tally: Tally) -> list[int]:
    """C-STOREs each file; the statuses; a Success is an acknowledgement."""
    import io

    import pydicom

    statuses = []
    for buf in files:
        ds = pydicom.dcmread(io.BytesIO(buf))
        rsp = assoc.send_c_store(ds)  # type: ignore[attr-defined]
        assert rsp is not None and "Status" in rsp, "no answer: the association died"
        statuses.append(int(rsp.Status))
        if rsp.Status == 0x0000:
            acked[str(ds.SOPInstanceUID)] = part10_digest(buf)
            tally.acked += 1
    return statuses


WRITE_FAULTS = [
    pytest.param("ENOSPC", WRITES, id="ENOSPC-write"),
    pytest.param("EIO", WRITES, id="EIO-write", marks=long_only),
    pytest.param("EIO", SYNCS, id="EIO-fsync"),
    pytest.param("ENOSPC", SYNCS, id="ENOSPC-fsync", marks=long_only),
]


@pytest.mark.parametrize(("errno", "ops"), WRITE_FAULTS)
def test_write_faults_under_dimse(tmp_path: Path, shim: Path, assoc_factory, errno: str, ops: str) -> None:  # type: ignore[no-untyped-def]
    s = seed()
    rng, tally = random.Random(f"{s}-{errno}-{ops}"), Tally(f"io {errno} on blob {ops.split(',')[0]}*", s)
    arm, flog = tmp_path / "arm", tmp_path / "injected.log"
    nth = rng.randint(1, 4)  # the first armed calls may pass: the failure lands mid-stream
    env = shim_env(
        shim,
        path=str((tmp_path / "data" / "blobs").resolve()),
        ops=ops,
        errno=errno,
        arm=arm,
        log=flog,
        nth=nth,
    )
    srv = start_serve(tmp_path, env)
    acked: Acked = {}
    files = series(s % 100000, 18)
    try:
        a = assoc_factory(srv.dimse)
        before = send(a, files[:6], acked, tally)
        assert before == [0] * 6, before
        arm.touch()
        during = send(a, files[6:12], acked, tally)
        assert injected(flog), f"the shim never fired ({ops})"
        failed = [st for st in during if st != 0]
        assert failed, f"every store succeeded under {errno} on {ops}: {during}"
        assert all(FAILURE_CLASSES[0] <= st <= FAILURE_CLASSES[1] for st in failed), [hex(x) for x in failed]
        assert a.send_c_echo().Status == 0x0000  # type: ignore[attr-defined]
        arm.unlink()
        # The fault cleared: the same association and a new one store again, no restart.
        after = send(a, files[12:15], acked, tally) + send(assoc_factory(srv.dimse), files[15:], acked, tally)
        assert after == [0] * 6, (
            f"stores still fail after the fault cleared: {after}\n{srv.log_text()[-3000:]}"
        )
    finally:
        assoc_factory.release_all()
        rc = srv.stop()
    assert rc == 0, srv.log_text()[-3000:]
    tally.trials = 1
    check_restart(srv.data, acked, tally, cli=False)
    tally.notes.append(
        f"armed from call {nth}: {len(injected(flog))} calls failed, answered "
        f"{sorted({hex(x) for x in failed})} to {len(failed)} of 6 stores, 0x0000 again after"
    )
    tally.report()


def wado(srv: Server, study: str, series_uid: str, sop: str) -> tuple[int, bytes]:
    url = (
        f"http://{HOST}:{srv.http}/wado?requestType=WADO&studyUID={study}&seriesUID={series_uid}"
        f"&objectUID={sop}&contentType=application/dicom"
    )
    try:
        with urllib.request.urlopen(url, timeout=30) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@pytest.mark.parametrize("errno", ["EIO"])
def test_read_faults_report_errors_not_wrong_bytes(
    tmp_path: Path, shim: Path, assoc_factory, errno: str
) -> None:  # type: ignore[no-untyped-def]
    import io

    import pydicom

    s = seed()
    tally = Tally(f"io {errno} on blob reads", s)
    arm, flog = tmp_path / "arm", tmp_path / "injected.log"
    blobs = str((tmp_path / "data" / "blobs").resolve())
    srv = start_serve(tmp_path, shim_env(shim, path=blobs, ops=READS, errno=errno, arm=arm, log=flog))
    acked: Acked = {}
    files = series(s % 100000 + 1, 6)
    try:
        assert send(assoc_factory(srv.dimse), files, acked, tally) == [0] * 6
        uids = [pydicom.dcmread(io.BytesIO(b), stop_before_pixels=True) for b in files]
        arm.touch()
        answers = [
            wado(srv, str(d.StudyInstanceUID), str(d.SeriesInstanceUID), str(d.SOPInstanceUID)) for d in uids
        ]
        assert injected(flog), "the shim never fired on a read"
        for (code, body), d, buf in zip(answers, uids, files, strict=True):
            if code == 200:  # allowed only with the right bytes (e.g. a read that did not touch the disk)
                assert part10_digest(body) == part10_digest(buf), f"{d.SOPInstanceUID}: wrong bytes served"
            else:
                assert code >= 500, (code, body[:200])
        assert any(code != 200 for code, _ in answers), "every read succeeded with reads failing"
        arm.unlink()
        for d, buf in zip(uids, files, strict=True):
            code, body = wado(srv, str(d.StudyInstanceUID), str(d.SeriesInstanceUID), str(d.SOPInstanceUID))
            assert code == 200 and part10_digest(body) == part10_digest(buf)
        # verify under the same fault: damage reported, exit 2, never "ok"
        arm.touch()
        env = {
            **os.environ,
            **shim_env(
                shim, path=blobs, ops=READS, errno=errno, arm=arm, log=tmp_path / "verify-injected.log"
            ),
        }
        run = subprocess.run(
            [CLI, "verify", "--data", str(srv.data), "--json"],
            capture_output=True,
            text=True,
            env=env,
            timeout=120,
        )
        arm.unlink()
        assert run.returncode != 0, run.stdout
        if run.stdout.strip().startswith("{"):
            report = json.loads(run.stdout)
            assert report["ok"] < len(files), report
    finally:
        assoc_factory.release_all()
        rc = srv.stop()
    assert rc == 0
    tally.trials = 1
    check_restart(srv.data, acked, tally)
    errors = sorted({code for code, _ in answers if code != 200})
    tally.notes.append(
        f"{len(injected(flog))} reads failed: WADO answered {errors} to "
        f"{sum(c != 200 for c, _ in answers)} of {len(answers)}, no wrong bytes; verify under the "
        f"fault exit {run.returncode}; all 200 and exact once cleared"
    )
    tally.report()


@pytest.mark.parametrize(
    ("errno", "ops"),
    [
        pytest.param("ENOSPC", WRITES, id="ENOSPC-write", marks=long_only),
        pytest.param("EIO", WRITES, id="EIO-write"),
        pytest.param("EIO", SYNCS, id="EIO-fsync", marks=long_only),
    ],
)
def test_ingest_cli_under_write_faults(tmp_path: Path, shim: Path, errno: str, ops: str) -> None:
    """`dicomvault ingest` hitting a failing write: it must not exit 0 as if all went well, and
    what it reported stored is stored; the same command once the fault cleared stores the rest."""
    s = seed()
    tally = Tally(f"io {errno} on blob {ops.split(',')[0]}* under dicomvault ingest", s)
    inbox = tmp_path / "in"
    inbox.mkdir()
    files = series(s % 100000 + 2, 120)
    for i, buf in enumerate(files):
        (inbox / f"{i:04d}.dcm").write_bytes(buf)
    data, arm, flog = tmp_path / "data", tmp_path / "arm", tmp_path / "injected.log"
    arm.touch()
    env = {
        **os.environ,
        **shim_env(
            shim,
            path=str(data.resolve() / "blobs"),
            ops=ops,
            errno=errno,
            arm=arm,
            log=flog,
            nth=random.Random(s).randint(6, 30),
        ),
    }
    run = subprocess.run(
        [CLI, "ingest", str(inbox), "--data", str(data), "--json", "-j", "2"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert injected(flog), "the shim never fired"
    assert run.returncode != 0, (
        f"ingest exit 0 although writes failed:\n{run.stdout[-1500:]}\n{run.stderr[-1500:]}"
    )
    assert run.returncode == 2, run.stderr[-2000:]
    assert "Traceback" not in run.stderr, run.stderr[-3000:]
    if not run.stdout.strip():
        # the fault hit the opening of the store (a directory sync): a one-line error, nothing stored
        assert "I/O error on" in run.stderr or "storage full" in run.stderr, run.stderr[-2000:]
        summary = {"stored": 0}
    else:
        summary = json.loads(run.stdout)
        # one clear reason, not a "rejected" line per remaining file
        assert summary["rejected"] == [], summary["rejected"][:3]
        if errno == "ENOSPC":
            assert "storage full, stopped" in run.stderr and summary["storage_full"], run.stderr[-2000:]
        else:
            assert "archive error, stopped" in run.stderr and summary["archive_error"], run.stderr[-2000:]
        assert summary["stored"] < len(files)
    with_fault = summary["stored"]
    arm.unlink()
    run2 = subprocess.run(
        [CLI, "ingest", str(inbox), "--data", str(data), "--json"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run2.returncode == 0, run2.stderr
    again = json.loads(run2.stdout)
    assert again["stored"] + again["duplicates"] == len(files), again
    assert again["duplicates"] >= with_fault
    import io

    import pydicom

    acked = {
        str(pydicom.dcmread(io.BytesIO(b), stop_before_pixels=True).SOPInstanceUID): part10_digest(b)
        for b in files
    }
    tally.trials, tally.acked = 1, len(acked)
    check_restart(data, acked, tally)
    tally.notes.append(
        f"exit {run.returncode} with {with_fault} of {len(files)} stored under the fault; "
        "the same command then stored the rest"
    )
    tally.report()
