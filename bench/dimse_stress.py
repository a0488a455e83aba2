"""Stall hunt: hammers `dicomvault serve` with mixed DIMSE traffic on persistent associations.

Why: a pynetdicom SCU benchmarking C-FIND on one persistent association (bench/find_dv.py) twice
saw the association stop answering until its 60 s timeout. This script reproduces that kind of
stall fast: every client uses a short DIMSE timeout (default 5 s), so a request without an answer
is noticed within seconds, and then the server's threads (py-spy dump) and the client's threads
(faulthandler) are written to the report folder.

Traffic, per client (1-4 pynetdicom clients, threads or processes, one association each, reused
for everything): C-FIND at study, series and image level (some with ~300 matches), C-FIND cut
short by C-CANCEL, C-ECHO, C-STORE of small new instances and C-GET of what the client stored;
optionally dcmtk `findscu`/`echoscu --repeat` loops beside them (`--dcmtk`).

    .venv/bin/python bench/dimse_stress.py --seconds 180 --clients 4              # tuned, then stock
    .venv/bin/python bench/dimse_stress.py --tuned true --procs --tune-client --dcmtk 2
    .venv/bin/python bench/dimse_stress.py --seconds 20 --stock-client     # pynetdicom's own bug

Exit code 0 if no request went unanswered. `run_stress()` is what tests/dimse/test_dimse_stress.py
calls (a short variant by default, a long one marked slow).
"""

from __future__ import annotations

import argparse
import datetime as dt
import faulthandler
import logging
import multiprocessing as mp
import os
import random
import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid
from pynetdicom import AE, build_context, build_role, evt
from pynetdicom.sop_class import (
    StudyRootQueryRetrieveInformationModelFind,
    StudyRootQueryRetrieveInformationModelGet,
    Verification,
)

sys.path.insert(0, str(Path(__file__).resolve().parent))
import dimse_compare as dc  # noqa: E402

from dicomvault.bench.dimse import DCMTK_ENV, DV_AE, HOST, start_serve  # noqa: E402
from dicomvault.dimse.association import ArchiveAE  # noqa: E402

FIND = StudyRootQueryRetrieveInformationModelFind
GET = StudyRootQueryRetrieveInformationModelGet
PENDING = (0xFF00, 0xFF01)
# Messages pynetdicom drops as "unexpected" (a response taken off the queue by the wrong thread):
# counted, because each one is a request that will never be answered.
_DROPPED = Counter[str]()


class _DropCounter(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        msg = record.getMessage()
        if "unexpected" in msg.lower():
            _DROPPED[msg] += 1


@dataclass
class ClientResult:
    name: str
    ops: Counter[str] = field(default_factory=Counter)
    stalls: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dropped: int = 0

    def line(self) -> str:
        ops = " ".join(f"{k}={v}" for k, v in sorted(self.ops.items()))
        return (f"{self.name}: {sum(self.ops.values())} ops ({ops}); stalls {len(self.stalls)}; "
                f"errors {len(self.errors)}; dropped-as-unexpected {self.dropped}")


class Stall(Exception):
    """A request that got no answer within the DIMSE timeout."""


def _dump_server(pid: int, out: Path, tag: str) -> None:
    """py-spy dumps (Python and native frames) of the server, for the stall's post-mortem."""
    pyspy = str(Path(sys.executable).with_name("py-spy"))
    for extra in ([], ["--native"]):
        name = out / f"{tag}-server{'-native' if extra else ''}.txt"
        try:
            r = subprocess.run([pyspy, "dump", "--pid", str(pid), *extra], capture_output=True, text=True,
                               timeout=60)
            name.write_text(r.stdout + r.stderr)
        except (OSError, subprocess.TimeoutExpired) as exc:
            name.write_text(f"py-spy failed: {exc}\n")


def _dump_client(out: Path, tag: str) -> None:
    with (out / f"{tag}-client.txt").open("w") as f:
        faulthandler.dump_traceback(f, all_threads=True)


def _sc_dataset(study: str, series: str, n: int, patient: str) -> Dataset:
    """A small secondary capture (8x8 pixels) in a study of this client's own."""
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.PatientID, ds.PatientName = patient, "STRESS^TEST"
    ds.StudyDate, ds.StudyTime, ds.Modality = "20240101", "120000", "OT"
    ds.AccessionNumber, ds.StudyID, ds.SeriesNumber, ds.InstanceNumber = "S1", "1", "1", str(n)
    ds.ConversionType = "WSD"
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.Rows = ds.Columns = 8
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = bytes(range(64))
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return ds


def _date_range(rng: random.Random, days: int) -> str:
    d0 = dc.DATE0 + dt.timedelta(days=rng.randrange(dc.DAYS - days))
    return f"{d0:%Y%m%d}-{d0 + dt.timedelta(days=days - 1):%Y%m%d}"


def _find_identifier(rng: random.Random, instances: int) -> tuple[str, Dataset]:
    """(kind, identifier): exact / wildcard / date-range queries at the three levels. The image
    level over ~1/20 of the date span returns a few hundred matches at 20k instances."""
    patients = max(1, instances // dc.INSTANCES_PER_STUDY // dc.STUDIES_PER_PATIENT)
    ds = Dataset()
    ds.StudyInstanceUID = ""
    ds.PatientID = ""
    ds.PatientName = ""
    ds.StudyDate = ""
    kind = rng.choice(["study-id", "study-name", "study-range", "series-range", "image-range", "image-pid"])
    level = kind.split("-")[0].upper()
    ds.QueryRetrieveLevel = level
    if level in ("SERIES", "IMAGE"):
        ds.SeriesInstanceUID = ""
        ds.Modality = ""
    if level == "IMAGE":
        ds.SOPInstanceUID = ""
        ds.InstanceNumber = ""
    if kind.endswith("-id") or kind.endswith("-pid"):
        ds.PatientID = f"P{rng.randrange(patients):07d}"
    elif kind.endswith("-name"):
        ds.PatientName = f"{dc.SURNAMES[rng.randrange(min(patients, len(dc.SURNAMES)))][:4]}*"
    else:
        # image level: ~300 matches at 20k instances (30 studies x 10 images)
        ds.StudyDate = _date_range(rng, 90 if level == "IMAGE" else 365)
    return kind, ds


class Client:
    """One pynetdicom association, used for everything until the time is up or it stalls."""

    def __init__(self, name: str, port: int, server_pid: int, timeout: float, instances: int,
                 out: Path, seed: int, tune: bool = False, stock: bool = False) -> None:
        self.name = name
        self.tune, self.stock = tune, stock
        self.port = port
        self.server_pid = server_pid
        self.timeout = timeout
        self.instances = instances
        self.out = out
        self.rng = random.Random(seed)
        self.result = ClientResult(name)
        self.study = generate_uid()
        self.series = generate_uid()
        self.patient = f"STRESS-{name}"
        self.stored = 0
        self.received = 0
        self.msg_id = 0

    def _on_store(self, event: Any) -> int:
        self.received += 1
        return 0x0000

    def connect(self) -> Any:
        ae = client_ae(f"STRESS{self.name}"[:16], self.tune, self.stock)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = self.timeout
        contexts = [build_context(Verification), build_context(FIND), build_context(GET),
                    build_context(SecondaryCaptureImageStorage, ExplicitVRLittleEndian)]
        assoc = ae.associate(HOST, self.port, contexts=contexts, ae_title=DV_AE,
                             ext_neg=[build_role(SecondaryCaptureImageStorage, scu_role=True, scp_role=True)],
                             evt_handlers=[(evt.EVT_C_STORE, self._on_store)])
        if not assoc.is_established:
            raise RuntimeError(f"{self.name}: association refused")
        return assoc

    def next_id(self) -> int:
        self.msg_id = self.msg_id % 65535 + 1
        return self.msg_id

    def stall(self, what: str) -> None:
        tag = f"stall-{self.name}-{len(self.result.stalls) + 1}"
        _dump_server(self.server_pid, self.out, tag)
        _dump_client(self.out, tag)
        self.result.stalls.append(f"{time.strftime('%H:%M:%S')} {what} (dumps: {self.out}/{tag}-*)")
        raise Stall(what)

    def op_find(self, assoc: Any, cancel_after: int | None = None) -> None:
        kind, ident = _find_identifier(self.rng, self.instances)
        mid = self.next_id()
        n = 0
        final = None
        cx = next(c.context_id for c in assoc.accepted_contexts if c.abstract_syntax == FIND)
        for st, _ident in assoc.send_c_find(ident, FIND, msg_id=mid):
            if "Status" not in st:
                self.stall(f"C-FIND {kind} msg {mid}: no response after {n} pending (DIMSE timeout)")
            if st.Status in PENDING:
                n += 1
                if cancel_after is not None and n == cancel_after:
                    assoc.send_c_cancel(mid, cx)
                continue
            final = int(st.Status)
        if final not in (0x0000, 0xFE00):
            self.result.errors.append(f"C-FIND {kind}: final status 0x{final or 0:04X}")
        self.result.ops["find-cancel" if cancel_after is not None else f"find-{kind}"] += 1

    def op_echo(self, assoc: Any) -> None:
        st = assoc.send_c_echo(msg_id=self.next_id())
        if "Status" not in st:
            self.stall("C-ECHO: no response (DIMSE timeout)")
        self.result.ops["echo"] += 1

    def op_store(self, assoc: Any) -> None:
        self.stored += 1
        ds = _sc_dataset(self.study, self.series, self.stored, self.patient)
        st = assoc.send_c_store(ds, msg_id=self.next_id())
        if "Status" not in st:
            self.stall("C-STORE: no response (DIMSE timeout)")
        if st.Status != 0x0000:
            self.result.errors.append(f"C-STORE status 0x{st.Status:04X}")
        self.result.ops["store"] += 1

    def op_get(self, assoc: Any) -> None:
        if not self.stored:
            return self.op_store(assoc)
        ident = Dataset()
        ident.QueryRetrieveLevel = "STUDY"
        ident.StudyInstanceUID = self.study
        before = self.received
        final = None
        for st, _ident in assoc.send_c_get(ident, GET, msg_id=self.next_id()):
            if "Status" not in st:
                self.stall(f"C-GET: no response after {self.received - before} sub-operations "
                           "(DIMSE timeout)")
            if st.Status not in PENDING:
                final = int(st.Status)
        if final != 0x0000 or self.received - before != self.stored:
            self.result.errors.append(f"C-GET: final 0x{final or 0:04X}, {self.received - before} of "
                                      f"{self.stored} received")
        self.result.ops["get"] += 1
        return None

    def run(self, deadline: float) -> ClientResult:
        # Dropped messages are counted from pynetdicom's own warnings (its loggers stay quiet
        # otherwise: formatting every PDU would slow the client down).
        for name in ("pynetdicom.assoc", "pynetdicom.association"):
            lg = logging.getLogger(name)
            lg.setLevel(logging.WARNING)
            if not any(isinstance(h, _DropCounter) for h in lg.handlers):
                lg.addHandler(_DropCounter())
        assoc = self.connect()
        ops = [(self.op_find, 40), (lambda a: self.op_find(a, cancel_after=self.rng.randint(1, 20)), 8),
               (self.op_echo, 20), (self.op_store, 10), (self.op_get, 3)]
        funcs = [f for f, w in ops for _ in range(w)]
        try:
            while time.monotonic() < deadline:
                if not assoc.is_established:
                    self.result.errors.append("association ended under us; reconnecting")
                    assoc = self.connect()
                try:
                    self.rng.choice(funcs)(assoc)
                except Stall:
                    assoc.abort()
                    assoc = self.connect()
        finally:
            if assoc.is_established:
                assoc.release()
        self.result.dropped = sum(_DROPPED.values())
        return self.result


def client_ae(title: str, tune_client: bool, stock_client: bool) -> AE:
    """The clients' AE: our associations tuned (`--tune-client`), our associations with pynetdicom's
    polling and our reactor pause fix (the default, as dicomvault's own SCUs run), or plain stock
    pynetdicom (`--stock-client`: shows its lost responses, see dimse/association.py)."""
    if stock_client:
        return AE(ae_title=title)
    return ArchiveAE(title, tuned=tune_client)


def _client_proc(args: tuple[str, int, int, float, int, str, int, float, bool, bool], q: Any) -> None:
    name, port, pid, timeout, instances, out, seed, deadline_in, tune, stock = args
    c = Client(name, port, pid, timeout, instances, Path(out), seed, tune, stock)
    q.put(c.run(time.monotonic() + deadline_in))


def _dcmtk_loop(name: str, port: int, pid: int, timeout: float, deadline: float, out: Path,
                result: ClientResult) -> None:
    """findscu / echoscu --repeat on one association each, until the deadline; a run that fails
    on its DIMSE timeout (-td) counts as a stall (and gets the server dumped)."""
    rng = random.Random(hash(name))
    env = {**os.environ, **DCMTK_ENV}
    t = str(int(max(1, timeout)))
    while time.monotonic() < deadline:
        if rng.random() < 0.3:
            args = ["echoscu", "--repeat", "200", "-to", t, "-ta", t, "-td", t, "-aec", DV_AE, HOST,
                    str(port)]
            kind = "echo"
        else:
            d = _date_range(rng, rng.choice([30, 365]))
            args = ["findscu", "-S", "--repeat", "20", "-to", t, "-ta", t, "-td", t, "-aec", DV_AE,
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyDate={d}", "-k", "StudyInstanceUID",
                    "-k", "PatientID", "-k", "PatientName", HOST, str(port)]
            kind = "find"
        r = subprocess.run(args, capture_output=True, text=True, env=env, timeout=600)
        if r.returncode != 0:
            tag = f"stall-{name}-{len(result.stalls) + 1}"
            _dump_server(pid, out, tag)
            (out / f"{tag}-dcmtk.txt").write_text(" ".join(args) + "\n" + r.stdout + r.stderr)
            result.stalls.append(f"{kind}: exit {r.returncode}: {r.stderr.strip()[-300:]}")
        result.ops[f"dcmtk-{kind}-runs"] += 1


def ensure_index(data: Path, instances: int) -> None:
    marker = data.parent / f"{data.name}.done"
    if not (marker.exists() and data.exists()):
        marker.unlink(missing_ok=True)
        dc.log(f"building a {instances:,}-instance index at {data}")
        dc.build_dv_index(data, instances)
        marker.touch()


def run_stress(scratch: Path, *, tuned: bool, seconds: float, clients: int = 2, procs: bool = False,
               timeout: float = 5.0, instances: int = 20_000, dcmtk: int = 0,
               tune_client: bool = False, stock_client: bool = False) -> list[ClientResult]:
    """One server (a copy of the cached index), `clients` pynetdicom clients and `dcmtk` dcmtk
    loops for `seconds`; every client's result (stalls are in `.stalls`)."""
    base = scratch / f"index-{instances}"
    ensure_index(base, instances)
    data = scratch / f"run-{'tuned' if tuned else 'stock'}"
    if data.exists():
        shutil.rmtree(data)
    shutil.copytree(base, data)
    out = scratch / f"dumps-{'tuned' if tuned else 'stock'}"
    out.mkdir(parents=True, exist_ok=True)
    cfg = scratch / f"stress-{'tuned' if tuned else 'stock'}.toml"
    cfg.write_text(f"[dimse]\ntuned_reactor = {'true' if tuned else 'false'}\nmax_associations = 32\n")
    server = start_serve(data, config=cfg, fresh=False)
    pid = server.proc.pid
    results: list[ClientResult] = []
    try:
        deadline = time.monotonic() + seconds
        threads: list[threading.Thread] = []
        for i in range(dcmtk):
            r = ClientResult(f"dcmtk{i}")
            results.append(r)
            th = threading.Thread(target=_dcmtk_loop,
                                  args=(r.name, server.port, pid, timeout, deadline, out, r))
            th.start()
            threads.append(th)
        if procs:
            ctx = mp.get_context("spawn")
            q = ctx.Queue()
            ps = [ctx.Process(target=_client_proc,
                              args=((f"p{i}", server.port, pid, timeout, instances, str(out), i, seconds,
                                     tune_client, stock_client), q)) for i in range(clients)]
            for p in ps:
                p.start()
            results += [q.get(timeout=seconds + 300) for _ in ps]
            for p in ps:
                p.join(30)
        else:
            cs = [Client(f"t{i}", server.port, pid, timeout, instances, out, i, tune_client, stock_client)
                  for i in range(clients)]
            box: list[ClientResult] = []
            for c in cs:
                th = threading.Thread(target=lambda c=c: box.append(c.run(deadline)))
                th.start()
                threads.append(th)
            for th in threads:
                th.join()
            results += box
        for th in threads:
            th.join()
    finally:
        rc = server.stop(60)
        if rc != 0:
            results.append(ClientResult("server", errors=[f"serve exited {rc}; see {server.log_path}"]))
    return results


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=180)
    ap.add_argument("--clients", type=int, default=4, help="pynetdicom clients (default %(default)s)")
    ap.add_argument("--procs", action="store_true", help="clients in processes instead of threads")
    ap.add_argument("--tuned", choices=("both", "true", "false"), default="both",
                    help="the server's [dimse] tuned_reactor (default: both, one after the other)")
    ap.add_argument("--tune-client", action="store_true", help="clients with the tuned reactors too")
    ap.add_argument("--stock-client", action="store_true",
                    help="clients on stock pynetdicom, without our reactor pause fix")
    ap.add_argument("--dcmtk", type=int, default=0, metavar="N", help="N dcmtk findscu/echoscu loops too")
    ap.add_argument("--timeout", type=float, default=5.0, help="client DIMSE timeout (default %(default)s s)")
    ap.add_argument("--index", type=int, default=20_000, help="index size in instances (default %(default)s)")
    ap.add_argument("--scratch", type=Path, default=dc.ROOT / ".scratch" / "dimse-stress")
    args = ap.parse_args()
    stalls = 0
    for tuned in ((True, False) if args.tuned == "both" else (args.tuned == "true",)):
        dc.log(f"server tuned_reactor={tuned}: {args.clients} client(s), {args.dcmtk} dcmtk loop(s), "
               f"{args.seconds:.0f} s")
        t0 = time.monotonic()
        res = run_stress(args.scratch, tuned=tuned, seconds=args.seconds, clients=args.clients,
                         procs=args.procs, timeout=args.timeout, instances=args.index, dcmtk=args.dcmtk,
                         tune_client=args.tune_client, stock_client=args.stock_client)
        for r in res:
            dc.log("  " + r.line())
            for s in r.stalls:
                dc.log(f"    STALL {s}")
            for e in r.errors[:5]:
                dc.log(f"    error {e}")
        for msg, n in _DROPPED.most_common(5):
            dc.log(f"  dropped x{n}: {msg}")
            stalls += len(r.stalls)
        dc.log(f"  {time.monotonic() - t0:.0f} s")
    return 1 if stalls else 0


if __name__ == "__main__":
    sys.exit(main())
