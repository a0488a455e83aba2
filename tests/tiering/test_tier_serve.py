"""Tiered storage in a running `dicomvault serve` (subprocess) on a real SeaweedFS: objects sent
by DIMSE C-STORE land raw, the background compactor drains them into warm, the policy job of
the tier pass moves the studies it matches to cold, `POST /api/tiers/move` moves another, and
cold studies come back bit-exact through C-GET and WADO-RS; /metrics shows the cold tier. With
the object store unreachable, a cold retrieve fails cleanly (C-GET: a failed sub-operation;
HTTP: 503)."""

from __future__ import annotations

import io
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE, _config, build_context, build_role, evt
from pynetdicom.sop_class import StudyRootQueryRetrieveInformationModelGet
from tier_toml import THREE_TIERS

from dicomvault.config import load_config
from dicomvault.engine import Engine
from dicomvault.tiering import jobs
from dicomvault.tiering.compactor import Compactor
from dv_corpus import real_file, split_part10
from seaweed_server import SeaweedServer, free_ports

CLI = str(Path(sys.executable).with_name("dicomvault"))
HOST = "127.0.0.1"
AE_TITLE = "DICOMVAULT"
DICOM_ANY = 'multipart/related; type="application/dicom"; transfer-syntax=*'

# Small real images; US goes to cold by policy, CT by POST /api/tiers/move.
IMAGES = {"CT_small.dcm": "CT", "MR_small.dcm": "MR", "US1_J2KI.dcm": "US"}

CONFIG = """\
data = "{data}"

[dimse]
ae_title = "{ae}"
port = {dimse_port}
accept_unknown_callers = true

""" + THREE_TIERS + """
[tiering]
interval = 1

[[tiering.policies]]
name = "us-out"
from = "warm"
to = "cold"
modalities = ["US"]
"""


@dataclass(frozen=True)
class Obj:
    path: Path
    data: bytes
    ts: str
    dataset: bytes  # the bytes after the file meta: what C-STORE sends and C-GET returns
    sop: str
    sop_class: str
    series: str
    study: str




def real(name: str) -> Obj:
    p = real_file(name)
    ts, dataset = split_part10(p)
    ds = pydicom.dcmread(p, stop_before_pixels=True)
    return Obj(p, p.read_bytes(), ts, dataset, str(ds.SOPInstanceUID), str(ds.SOPClassUID),
               str(ds.SeriesInstanceUID), str(ds.StudyInstanceUID))


@pytest.fixture(scope="module")
def objs() -> dict[str, Obj]:
    out = {IMAGES[n]: real(n) for n in IMAGES}
    assert len({o.study for o in out.values()}) == len(out)
    return out


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    dimse_port: int
    url: str
    log: Path
    data: Path
    extra: dict[str, Any] = field(default_factory=dict)

    def tail(self, n: int = 4000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(40)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
                raise AssertionError(f"dicomvault serve ignored SIGTERM\n{self.tail()}") from None
        return int(self.proc.returncode)


def write_config(path: Path, data: Path, endpoint: str, bucket: str, seaweed: SeaweedServer) -> Path:
    path.write_text(CONFIG.format(data=data, ae=AE_TITLE, dimse_port=1, endpoint=endpoint, bucket=bucket,
                                  access_key=seaweed.access_key, secret_key=seaweed.secret_key))
    return path


def start_serve(tmp: Path, config: Path) -> Server:
    dimse_port, http_port = free_ports(2)
    log = tmp / f"serve-{uuid.uuid4().hex[:6]}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [CLI, "serve", "--config", str(config), "--dimse-port", str(dimse_port), "--host", HOST,
             "--http-port", str(http_port), "--anonymous", "admin"],
            stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )
    server = Server(proc, dimse_port, f"http://{HOST}:{http_port}", log, Path(config).parent / "data")
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None:
            raise AssertionError(f"dicomvault serve exited {proc.returncode}\n{server.tail()}")
        try:
            with socket.create_connection((HOST, dimse_port), timeout=0.5):
                pass
            if httpx.get(server.url + "/healthz", timeout=2).status_code == 200:
                return server
        except (OSError, httpx.HTTPError):
            pass
        if time.monotonic() > deadline:
            server.stop()
            raise AssertionError(f"dicomvault serve not up after 30 s\n{server.tail()}")
        time.sleep(0.1)


def associate(server: Server, contexts: list[Any], **kw: Any) -> Any:
    ae = AE(ae_title="TIERSCU")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    assoc = ae.associate(HOST, server.dimse_port, contexts=contexts, ae_title=AE_TITLE, **kw)
    assert assoc.is_established, "association refused"
    return assoc


def c_store(server: Server, objs: list[Obj]) -> None:
    """Sends the files as they are (pynetdicom's chunked send: the dataset bytes go out unparsed)."""
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    try:
        assoc = associate(server, [build_context(o.sop_class, o.ts) for o in objs])
        try:
            for o in objs:
                st = assoc.send_c_store(o.path)
                assert st is not None and st.Status == 0x0000, (o.path.name, st)
        finally:
            assoc.release()
    finally:
        _config.STORE_SEND_CHUNKED_DATASET = old


def c_get(server: Server, o: Obj) -> tuple[list[tuple[str, str, bytes]], Dataset]:
    """C-GET of o's study; (received (uid, ts, dataset bytes), the final response)."""
    got: list[tuple[str, str, bytes]] = []

    def on_store(event: Any) -> int:
        got.append((str(event.request.AffectedSOPInstanceUID), str(event.context.transfer_syntax),
                    event.request.DataSet.getvalue()))
        return 0x0000

    assoc = associate(server, [build_context(StudyRootQueryRetrieveInformationModelGet),
                               build_context(o.sop_class, o.ts)],
                      ext_neg=[build_role(o.sop_class, scp_role=True)],
                      evt_handlers=[(evt.EVT_C_STORE, on_store)])
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = o.study
    try:
        rsps = [s for s, _ in assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet)]
    finally:
        assoc.release()
    assert rsps and rsps[-1] is not None
    return got, rsps[-1]


def wado_rs(http: httpx.Client, o: Obj) -> httpx.Response:
    return http.get(f"/dicom-web/studies/{o.study}/series/{o.series}/instances/{o.sop}",
                    headers={"Accept": DICOM_ANY})


def multipart_parts(r: httpx.Response) -> list[bytes]:
    m = re.search(r'boundary="?([^";]+)"?', r.headers["content-type"])
    assert m, r.headers["content-type"]
    delim = b"--" + m.group(1).encode()
    parts = []
    for chunk in r.content.split(delim)[1:]:
        if chunk.startswith(b"--"):
            break
        _, _, body = chunk.partition(b"\r\n\r\n")
        parts.append(body[:-2] if body.endswith(b"\r\n") else body)
    return parts


def until(what: str, fn: Callable[[], Any], timeout: float, server: Server | None = None) -> Any:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.2)
    raise AssertionError(f"{what}: not after {timeout} s (last: {last})\n{server.tail() if server else ''}")


# -- the archive ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer,
           objs: dict[str, Obj]) -> Iterator[Server]:
    tmp = tmp_path_factory.mktemp("tier-serve")
    cfg = write_config(tmp / "dicomvault.toml", tmp / "data", seaweed.endpoint, f"t-{uuid.uuid4().hex[:12]}",
                       seaweed)
    server = start_serve(tmp, cfg)
    try:
        c_store(server, list(objs.values()))
        yield server
    finally:
        rc = server.stop()
        assert rc == 0, f"dicomvault serve exited {rc} on SIGTERM\n{server.tail()}"


@pytest.fixture
def http(served: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=served.url, timeout=30) as c:
        yield c


def tier_objects(http: httpx.Client) -> dict[str, int]:
    r = http.get("/api/tiers")
    assert r.status_code == 200, r.text
    return {k: v["objects"] for k, v in r.json()["tiers"].items()}


def settled(served: Server, http: httpx.Client) -> dict[str, Any]:
    """/api/tiers once the compactor drained landing and the policy job moved the US study."""

    def done() -> dict[str, Any] | None:
        st = http.get("/api/tiers").json()
        job = st["job"] or {}
        ok = st["tiers"]["landing"]["objects"] == 0 and job.get("state") == "done"
        return st if ok else None

    return until("landing drained and the policy job done", done, 30, served)


def test_compactor_and_policy_run_in_the_background(served: Server, http: httpx.Client,
                                                    objs: dict[str, Obj]) -> None:
    n = len(objs)
    # The compactor drains landing; the tier pass (every `interval`) moves the US study to cold.
    st = settled(served, http)
    assert tier_objects(http) == {"landing": 0, "warm": n - 1, "cold": 1}
    assert st["tiers"]["warm"]["stored_bytes"] < st["tiers"]["warm"]["logical_bytes"]
    assert st["tiers"]["warm"]["studies"] == n - 1 and st["tiers"]["cold"]["studies"] == 1
    job = st["job"]
    assert job["done"] == job["moves"] == 1 and job["failed"] == []
    assert http.get("/api/tiers/plan").json() == []
    assert st["tiers"]["warm"]["pending_moves_out"] == 0

    # The policy's study comes back bit-exact by C-GET (JPEG 2000, as stored).
    us = objs["US"]
    got, final = c_get(served, us)
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 1
    assert got == [(us.sop, us.ts, us.dataset)]


def test_move_to_cold_then_retrieve(served: Server, http: httpx.Client, objs: dict[str, Obj]) -> None:
    settled(served, http)
    ct = objs["CT"]
    before = tier_objects(http)

    r = http.post("/api/tiers/move", json={"study": ct.study, "to": "cold"})
    assert r.status_code == 200, r.text
    assert r.json()["blobs"] == 1 and r.json()["failed"] == []
    assert tier_objects(http) == {"landing": 0, "warm": before["warm"] - 1, "cold": before["cold"] + 1}
    # Unknown tier or study: refused, nothing moved.
    r = http.post("/api/tiers/move", json={"study": ct.study, "to": "tape"})
    assert r.status_code == 400 and "tape" in r.text
    assert http.get("/api/tiers/plan", params={"policy": "nope"}).status_code == 400
    assert http.post("/api/tiers/move", json={"study": "1.2.3.999", "to": "cold"}).status_code == 404

    # C-GET: the stored bytes, bit-exact.
    got, final = c_get(served, ct)
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 1
    assert got == [(ct.sop, ct.ts, ct.dataset)]

    # WADO-RS, as stored: one part, the Part-10 object whose dataset is the bytes sent.
    r = wado_rs(http, ct)
    assert r.status_code == 200, r.text[:300]
    (part,) = multipart_parts(r)
    assert split_part10(part) == (ct.ts, ct.dataset)
    assert pydicom.dcmread(io.BytesIO(part)).SOPInstanceUID == ct.sop

    # /metrics has the tier gauges.
    text = http.get("/metrics").text
    m = re.search(r'^dicomvault_tier_objects\{tier="cold"\} (\d+)$', text, re.M)
    assert m, text[:2000]
    assert int(m.group(1)) == tier_objects(http)["cold"] == before["cold"] + 1
    assert re.search(r'^dicomvault_tier_objects\{tier="landing"\} 0$', text, re.M)

    # Read from cold: the service promotes the study (a local copy; still placed in cold).
    def promoted() -> bool:
        with Engine(served.data, read_only=True) as e:
            blob = e.index.blob(e.instance(ct.sop).hash)
            return blob.tier == "cold" and e.vault.holders(blob.hash) == [e.local_index("warm")]

    until("CT study promoted", promoted, 15, served)
    assert http.get("/api/tiers").json()["promoted"] >= 1
    assert tier_objects(http)["cold"] == before["cold"] + 1
    got, final = c_get(served, ct)
    assert got == [(ct.sop, ct.ts, ct.dataset)]


# -- the object store is unreachable ---------------------------------------------------------------

@pytest.fixture(scope="module")
def store_down(tmp_path_factory: pytest.TempPathFactory, seaweed: SeaweedServer,
               objs: dict[str, Obj]) -> Iterator[Server]:
    """An archive whose CT study is in cold, served with the cold tier's endpoint pointing to a
    port nothing listens on (the store is down; the layout lets an S3 endpoint change)."""
    tmp = tmp_path_factory.mktemp("tier-serve-down")
    data, name = tmp / "data", f"t-{uuid.uuid4().hex[:12]}"
    live = write_config(tmp / "live.toml", data, seaweed.endpoint, name, seaweed)
    with Engine(data, tiers=load_config(live).tiering.tiers, min_free_bytes=0) as e:
        assert not [r for r in e.store_files([o.path for o in objs.values()]) if isinstance(r, Exception)]
        assert Compactor(e).run_once().report.blobs == len(objs)
        assert jobs.move_study(e, objs["CT"].study, "cold").blobs == 1
    (dead_port,) = free_ports(1)
    dead = write_config(tmp / "dead.toml", data, f"http://{HOST}:{dead_port}", name, seaweed)
    server = start_serve(tmp, dead)
    try:
        yield server
    finally:
        server.stop()


def test_cold_retrieve_while_the_store_is_down_fails_cleanly(store_down: Server,
                                                             objs: dict[str, Obj]) -> None:
    ct, mr = objs["CT"], objs["MR"]
    # C-GET: the sub-operation fails, fast; the association and the server stay up.
    t0 = time.monotonic()
    got, final = c_get(store_down, ct)
    assert time.monotonic() - t0 < 10
    assert got == []
    assert final.Status != 0x0000 and final.NumberOfFailedSuboperations == 1
    # Warm studies are served as ever.
    got, final = c_get(store_down, mr)
    assert final.Status == 0x0000 and got == [(mr.sop, mr.ts, mr.dataset)]
    # WADO-URI reads before it answers: 503, try later.
    with httpx.Client(base_url=store_down.url, timeout=30) as http:
        r = http.get("/wado", params={"requestType": "WADO", "studyUID": ct.study, "seriesUID": ct.series,
                                      "objectUID": ct.sop, "contentType": "application/dicom"})
        assert r.status_code == 503, (r.status_code, r.text[:300])
    assert store_down.proc.poll() is None


def test_wado_rs_of_a_cold_instance_while_the_store_is_down_is_503(store_down: Server,
                                                                   objs: dict[str, Obj]) -> None:
    ct = objs["CT"]
    with httpx.Client(base_url=store_down.url, timeout=30) as http:
        t0 = time.monotonic()
        r = wado_rs(http, ct)
        assert r.status_code == 503, (r.status_code, r.content[:300])
        assert time.monotonic() - t0 < 10
