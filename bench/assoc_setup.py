"""Association set-up alone: a dcmtk tool's own A-ASSOCIATE-RQ replayed against `dicomvault serve`
(and Orthanc with --orthanc), timed from the request's last byte sent to the A-ASSOCIATE-AC's last
byte read, many times, servers interleaved; plus the server's CPU per association.

The request is captured once per tool by letting the tool (getscu -S: ~120 presentation contexts,
echoscu: one) associate with a socket of this script; each replay then sends those exact bytes on a
new TCP connection (TCP_NODELAY), reads the answer, and releases the association (A-RELEASE-RQ,
-RP). No tool process runs during the measurement, so what is timed is the server's side only:
accept, admission, negotiation, the answer on the wire. Medians and the 10th/90th percentiles.

    .venv/bin/python bench/assoc_setup.py                     # 300 per tool, dicomvault only
    .venv/bin/python bench/assoc_setup.py --orthanc --count 500 --json out.json
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dicomvault.bench.dimse import HOST, start_serve
from dicomvault.bench.orthanc import start_orthanc
from dicomvault.bench.ports import free_port
from dicomvault.bench.procs import proc_cpu
from dicomvault.dimse.transport import recv_pdu

RELEASE_RQ = bytes([5, 0, 0, 0, 0, 4, 0, 0, 0, 0])
TOOLS = {
    "getscu": ["getscu", "-S", "-aec", "DICOMVAULT", "-k", "QueryRetrieveLevel=STUDY", "-k",
               "StudyInstanceUID=1.2.3.4"],
    "echoscu": ["echoscu", "-aec", "DICOMVAULT"],
}


def capture(tool: str) -> bytes:
    """The A-ASSOCIATE-RQ `tool` sends (it is then disconnected: it exits with an error)."""
    port = free_port()
    with socket.create_server((HOST, port)) as listener:
        proc = subprocess.Popen([*TOOLS[tool], HOST, str(port)], stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        listener.settimeout(30)
        conn, _ = listener.accept()
        with conn:
            raw = recv_pdu(conn)
        proc.wait(30)
    if raw[0] != 0x01:
        raise RuntimeError(f"{tool} sent PDU type 0x{raw[0]:02X}, not an A-ASSOCIATE-RQ")
    return raw


def associate_once(port: int, raw: bytes) -> float:
    """Seconds from the request sent to the accept read; the association is then released."""
    with socket.create_connection((HOST, port), timeout=30) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.sendall(raw)
        t0 = time.perf_counter()
        answer = recv_pdu(sock)
        took = time.perf_counter() - t0
        if answer[0] != 0x02:
            raise RuntimeError(f"association not accepted (PDU type 0x{answer[0]:02X})")
        sock.sendall(RELEASE_RQ)
        recv_pdu(sock)
    return took


@dataclass
class Result:
    server: str
    tool: str
    ms: list[float] = field(default_factory=list)
    cpu_s: float = 0.0

    def summary(self) -> dict[str, float]:
        s = sorted(self.ms)
        n = len(s)
        return {"median_ms": statistics.median(s), "p10_ms": s[n // 10], "p90_ms": s[(9 * n) // 10],
                "cpu_ms_per_association": 1000 * self.cpu_s / max(1, n), "n": n}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--count", type=int, default=300, help="associations per server and tool")
    ap.add_argument("--tools", default="getscu,echoscu")
    ap.add_argument("--orthanc", action="store_true", help="Orthanc too, interleaved")
    ap.add_argument("--pause", type=float, default=0.005, help="seconds between associations")
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    tools = [t for t in args.tools.split(",") if t]
    requests = {t: capture(t) for t in tools}
    with tempfile.TemporaryDirectory(prefix="assoc-setup-") as tmp:
        servers: list[tuple[str, int, int]] = []
        stops = []
        dv = start_serve(Path(tmp) / "dv")
        servers.append(("dicomvault", dv.port, dv.proc.pid))
        stops.append(dv.stop)
        if args.orthanc:
            orth = start_orthanc(Path(tmp) / "orthanc")
            servers.append(("Orthanc", orth.dicom_port, orth.proc.pid))
            stops.append(lambda: orth.stop(60))
        try:
            results = {(s, t): Result(s, t) for s, _, _ in servers for t in tools}
            for tool in tools:
                for _, port, _ in servers:
                    for _ in range(5):  # warm-up: first-time costs (imports, caches) are not the steady state
                        associate_once(port, requests[tool])
                for i in range(args.count):
                    # interleaved, the order rotated: the machine's noise falls on every server alike
                    order = servers[i % len(servers):] + servers[:i % len(servers)]
                    for name, port, pid in order:
                        before = proc_cpu(pid)
                        results[(name, tool)].ms.append(1000 * associate_once(port, requests[tool]))
                        time.sleep(args.pause)  # the release finishes on the server's side
                        results[(name, tool)].cpu_s += proc_cpu(pid) - before
        finally:
            for stop in stops:
                stop()
    out = {f"{r.server} {r.tool}": r.summary() for r in results.values()}
    print(f"association set-up (A-ASSOCIATE-RQ sent -> A-ASSOCIATE-AC read), {args.count} per server "
          "and request")
    print("| server | request | median ms | p10 ms | p90 ms | server CPU ms per association |")
    print("| --- | --- | --- | --- | --- | --- |")
    for r in results.values():
        s = r.summary()
        print(f"| {r.server} | {r.tool} ({len(requests[r.tool])} B) | {s['median_ms']:.2f} "
              f"| {s['p10_ms']:.2f} | {s['p90_ms']:.2f} | {s['cpu_ms_per_association']:.1f} |")
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
