"""Orthanc 1.10 (/usr/sbin/Orthanc) as a real peer of our SCU and SCP.

* `dicomvault send` to Orthanc: every file arrives in its own transfer syntax, bit for bit;
* `dicomvault query` of Orthanc;
* `dicomvault retrieve` from Orthanc by C-GET and by C-MOVE to ourselves: what we store, and what
  `export` writes, is the original dataset bytes exactly;
* `dicomvault serve` with Orthanc as a configured peer: a C-MOVE asking us to send a study to
  ORTHANC lands the very bytes we hold in Orthanc's storage (checked through its REST API).

The real files are ones Orthanc's C-GET/C-MOVE send back unchanged: Orthanc re-serialises a
dataset through DCMTK when it sends it, which drops group length elements and re-encodes some
sequences, so a file carrying those comes back different from Orthanc's side, whatever we do.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom.dsutils import split_dataset

from dicomvault.bench.orthanc import Orthanc, free_port, start_orthanc
from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.dimse import scu
from dicomvault.engine import Engine
from dv_corpus import corpus_dirs

pytestmark = pytest.mark.interop

OUR_AE = "DICOMVAULT"
HOST = "127.0.0.1"
DV = str(Path(sys.executable).with_name("dicomvault"))
# Real files of several modalities and transfer syntaxes (explicit LE and BE, JPEG baseline,
# JPEG lossless, JPEG 2000, an SR), each its own study, that Orthanc sends back unchanged.
REAL_FILES = ("MR-SIEMENS-DICOM-WithOverlays.dcm", "emri_small.dcm", "JPGLosslessP14SV1_1s_1f_8b.dcm",
              "SC_rgb_jpeg_dcmtk.dcm", "ExplVR_BigEnd.dcm", "GDCMJ2K_TextGBR.dcm", "test-SR.dcm")


def _scu_cmd() -> list[str]:
    """`dicomvault` once cli.py registers the SCU commands, the module's own entry point until then."""
    probe = subprocess.run([DV, "send", "--help"], capture_output=True)
    return [DV] if probe.returncode == 0 else [sys.executable, "-m", "dicomvault.dimse.scu_cli"]


def dv(*args: str, expect: int = 0) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run([*_scu_cmd(), *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode == expect, (
        f"dicomvault {' '.join(args)} -> {proc.returncode}\n{proc.stdout}\n{proc.stderr}")
    return proc


def dataset_part(data_or_path: bytes | Path) -> tuple[str, bytes]:
    """(transfer syntax, dataset bytes after the file meta) of a Part-10 file."""
    data = data_or_path.read_bytes() if isinstance(data_or_path, Path) else data_or_path
    tmp = None
    if isinstance(data_or_path, bytes):
        # split_dataset wants a path; a scratch file is simpler than re-implementing it
        tmp = Path(f"/tmp/dv-orthanc-split-{time.monotonic_ns()}.dcm")
        tmp.write_bytes(data)
    try:
        meta, offset = split_dataset(tmp or data_or_path)  # type: ignore[arg-type]
    finally:
        if tmp is not None:
            tmp.unlink()
    return str(meta.TransferSyntaxUID), data[offset:]


@dataclass(frozen=True)
class Obj:
    path: Path
    sop_uid: str
    study_uid: str
    series_uid: str
    patient_id: str
    ts: str


def _obj(path: Path) -> Obj:
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    return Obj(path, str(ds.SOPInstanceUID), str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID),
               str(ds.get("PatientID", "")), str(ds.file_meta.TransferSyntaxUID))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Obj]]:
    """'real': the real files; 'ct1', 'ct2': synthetic CT studies of 6 slices (64x64)."""
    d = tmp_path_factory.mktemp("orthanc-corpus")
    real = []
    for name in REAL_FILES:
        src = next(p / name for p in corpus_dirs() if (p / name).exists())
        shutil.copy(src, d / name)
        real.append(_obj(d / name))
    out: dict[str, list[Obj]] = {"real": real}
    for key, seed in (("ct1", 101), ("ct2", 102)):
        sd = d / key
        sd.mkdir()
        spec = SeriesSpec(slices=6, rows=64, columns=64, seed=seed, patient_id=f"ORTH{seed}")
        for i, data in enumerate(ct_series(spec)):
            (sd / f"{i:03d}.dcm").write_bytes(data)
        out[key] = [_obj(p) for p in sorted(sd.iterdir())]
    return out


@pytest.fixture(scope="module")
def move_port() -> int:
    """Where `retrieve --move-to-self` listens; Orthanc knows us there."""
    return free_port()


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory: pytest.TempPathFactory, corpus: dict[str, list[Obj]], move_port: int
            ) -> Iterator[Orthanc]:
    """Orthanc holding the corpus, uploaded through its REST API (stored exactly as given)."""
    orth = start_orthanc(tmp_path_factory.mktemp("orthanc") / "o",
                         modalities={OUR_AE: (OUR_AE, HOST, move_port)})
    try:
        for objs in corpus.values():
            for o in objs:
                orth.upload(o.path.read_bytes())
        yield orth
    finally:
        rc = orth.stop()
        assert rc == 0, f"Orthanc exited {rc}\n{orth.log_text()[-3000:]}"


def _assert_held_exactly(data: Path, objs: list[Obj], export_dir: Path) -> None:
    """Our archive holds every object with its original dataset bytes, and `export` writes them."""
    with Engine(data, read_only=True) as eng:
        for o in objs:
            ts, raw = eng.read_dataset(o.sop_uid)
            want_ts, want = dataset_part(o.path)
            assert ts == want_ts, f"{o.path.name}: stored as {ts}, original {want_ts}"
            assert raw == want, f"{o.path.name}: stored dataset bytes differ from the original"
        studies = {o.study_uid for o in objs}
        for st in studies:
            eng.export("study", st, export_dir)
    for o in objs:
        f = export_dir / o.study_uid / o.series_uid / f"{o.sop_uid}.dcm"
        assert dataset_part(f) == dataset_part(o.path), f"export of {o.path.name} is not bit-exact"


# -- SCU against Orthanc ---------------------------------------------------------------------------

def test_send_to_orthanc_keeps_syntax_and_bytes(tmp_path: Path, corpus: dict[str, list[Obj]]) -> None:
    orth = start_orthanc(tmp_path / "o2")
    try:
        folder = corpus["ct1"][0].path.parent
        files = [str(o.path) for o in corpus["real"]]
        proc = dv("send", folder.as_posix(), *files, "--to", orth.peer, "-j", "2", "--json")
        summary = json.loads(proc.stdout)
        n = len(corpus["real"]) + len(corpus["ct1"])
        assert summary["statuses"] == {"success": n} and summary["files"] == n
        for o in corpus["real"] + corpus["ct1"]:
            oid = orth.lookup_instance(o.sop_uid)
            assert oid, f"{o.path.name} ({o.sop_uid}) not in Orthanc"
            # Orthanc keeps what arrived: the file's own transfer syntax, its own bytes.
            assert dataset_part(orth.file(oid)) == dataset_part(o.path), f"{o.path.name} changed on the way"
        # a refused peer: non-zero exit naming it
        bad = dv("send", files[0], "--to", f"NOBODY@{HOST}:{free_port()}", expect=1)
        assert f"NOBODY@{HOST}" in bad.stdout
    finally:
        orth.stop()


def test_query_orthanc(orthanc: Orthanc, corpus: dict[str, list[Obj]]) -> None:
    ct = corpus["ct1"][0]
    rows = json.loads(dv("query", "--to", orthanc.peer, "-k", f"PatientID={ct.patient_id}", "--json").stdout)
    assert [r["StudyInstanceUID"] for r in rows] == [ct.study_uid]
    assert rows[0]["NumberOfStudyRelatedInstances"] == len(corpus["ct1"])
    # wildcard + patient root + series level, as a table
    out = dv("query", "--to", orthanc.peer, "--patient-root", "--level", "SERIES",
             "-k", "PatientID=ORTH10*", "-k", f"StudyInstanceUID={ct.study_uid}").stdout
    assert ct.series_uid in out and "(1 matches" in out


def test_retrieve_get_bit_exact(orthanc: Orthanc, corpus: dict[str, list[Obj]], tmp_path: Path) -> None:
    data = tmp_path / "data"
    objs = corpus["ct1"] + corpus["real"]
    studies = list(dict.fromkeys(o.study_uid for o in objs))
    # Through the CLI for three studies; the other ones in-process (same code, no ~1 s start-up).
    for st in studies[:3]:
        out = dv("retrieve", "--from", orthanc.peer, "--study", st, "--data", str(data), "--json").stdout
        rep = json.loads(out)
        want = sum(o.study_uid == st for o in objs)
        assert rep["received"] == rep["expected"] == want and rep["stored"] == {"success": want}, out
    with Engine(data) as eng:
        for st in studies[3:]:
            r = scu.retrieve_get(scu.Peer.parse(orthanc.peer), eng, st)
            assert r.ok and r.received == sum(o.study_uid == st for o in objs), r.as_dict()
    _assert_held_exactly(data, objs, tmp_path / "export")


def test_retrieve_series_by_move_to_self(orthanc: Orthanc, corpus: dict[str, list[Obj]], move_port: int,
                                         tmp_path: Path) -> None:
    data = tmp_path / "data"
    ct = corpus["ct2"]
    out = dv("retrieve", "--from", orthanc.peer, "--study", ct[0].study_uid, "--series", ct[0].series_uid,
             "--move-to-self", "--port", str(move_port), "--listen-host", HOST, "--data", str(data)).stdout
    assert f"C-MOVE of series {ct[0].series_uid}" in out and f"{len(ct)} received" in out
    _assert_held_exactly(data, ct, tmp_path / "export")


def test_retrieve_unknown_study_fails(orthanc: Orthanc, tmp_path: Path) -> None:
    proc = dv("retrieve", "--from", orthanc.peer, "--study", "1.2.3.4.5.6.7.8.9", "--data",
              str(tmp_path / "d"), expect=2)
    assert f"{orthanc.peer} has no instances of study 1.2.3.4.5.6.7.8.9" in proc.stderr


# -- our SCP with Orthanc as a configured peer -----------------------------------------------------

@pytest.fixture
def archive_with_orthanc_peer(tmp_path: Path, orthanc: Orthanc) -> Iterator[tuple[int, Path]]:
    """`dicomvault serve` (A's SCP) whose [[peers]] list Orthanc."""
    data, port = tmp_path / "archive", free_port()
    cfg = tmp_path / "dicomvault.toml"
    cfg.write_text(textwrap.dedent(f"""\
        [[peers]]
        ae_title = "ORTHANC"
        host = "{HOST}"
        port = {orthanc.dicom_port}
        """))
    log = tmp_path / "serve.log"
    with log.open("wb") as f:
        proc = subprocess.Popen([DV, "serve", "--data", str(data), "--accept-unknown-callers",
                                 "--ae", "DVSERVE", "--dimse-port",
                                 str(port), "--host", HOST, "--config", str(cfg)],
                                stdout=f, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while "serving DIMSE" not in log.read_text(errors="replace"):
            assert proc.poll() is None, f"dicomvault serve exited {proc.returncode}\n{log.read_text()}"
            assert time.monotonic() < deadline, f"dicomvault serve not ready\n{log.read_text()}"
            time.sleep(0.05)
        yield port, data
    finally:
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(40)
        assert rc == 0, f"dicomvault serve exited {rc} on SIGTERM\n{log.read_text(errors='replace')[-3000:]}"


def test_archive_moves_study_to_orthanc(archive_with_orthanc_peer: tuple[int, Path], orthanc: Orthanc,
                                        tmp_path: Path) -> None:
    port, data = archive_with_orthanc_peer
    # A study Orthanc does not have yet: made here, ingested into us by our own SCU.
    study_dir = tmp_path / "ct3"
    study_dir.mkdir()
    spec = SeriesSpec(slices=5, rows=64, columns=64, seed=103, patient_id="ORTH103")
    for i, raw in enumerate(ct_series(spec)):
        (study_dir / f"{i}.dcm").write_bytes(raw)
    objs = [_obj(p) for p in sorted(study_dir.iterdir())]
    assert all(orthanc.lookup_instance(o.sop_uid) is None for o in objs)
    dv("send", str(study_dir), "--to", f"DVSERVE@{HOST}:{port}")

    ident = Dataset()
    ident.QueryRetrieveLevel = "STUDY"
    ident.StudyInstanceUID = objs[0].study_uid
    rep = scu.move(scu.Peer("DVSERVE", HOST, port), ident, "ORTHANC", calling_ae="MOVESCU")
    assert rep.final_status == "success" and rep.remote.get("completed") == len(objs), rep.as_dict()

    with Engine(data, read_only=True) as eng:
        for o in objs:
            ts, ours = eng.read_dataset(o.sop_uid)
            oid = orthanc.lookup_instance(o.sop_uid)
            assert oid, f"{o.sop_uid} did not reach Orthanc"
            assert dataset_part(orthanc.file(oid)) == (ts, ours), f"{o.sop_uid}: Orthanc holds other bytes"
