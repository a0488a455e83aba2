"""The audit log sent to an audit repository over syslog (RFC 5424 over TLS, RFC 5425, and over UDP,
RFC 5426), against receivers written in the tests on real loopback sockets: records arrive framed
and coded right; a repository that stops never blocks the writers and misses nothing once it is
back; a torn line is not sent; `serve` restarted with a backlog resumes from its cursor."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from syslog_receivers import TlsReceiver, UdpReceiver, parse, seq_of

from dicomvault.audit.atna import AuditSource, render
from dicomvault.audit.log import FAILURE, INSTANCES_TRANSFERRED, LOGIN, SUCCESS, AuditLog
from dicomvault.audit.sender import SyslogSender
from dicomvault.audit.settings import AuditSettingsError, parse_audit
from dicomvault.audit.syslog import Endpoint, Target, message, parse_target
from dicomvault.audit.tail import cursor_path, load_cursor
from dicomvault.bench.pki import Pki, issue
from dicomvault.bench.ports import free_port
from dicomvault.cli import main as cli_main
from dicomvault.config import load_config

CLI = str(Path(sys.executable).with_name("dicomvault"))
SOURCE = AuditSource("DV_TEST", site="test site", hostname="pacs.test")
# Fast retries and confirmation for tests; production waits 1-60 s between attempts.
FAST = {"poll": 0.02, "retry_min": 0.05, "retry_max": 0.2, "grace": 0.05}


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("pki")
    ca = issue(folder, "ca", None)
    return {"ca": ca, "server": issue(folder, "server", ca), "client": issue(folder, "client", ca)}


@pytest.fixture
def tls_receiver(pki: Pki) -> Iterator[TlsReceiver]:
    r = TlsReceiver(pki["server"][1], pki["server"][0], client_ca=pki["ca"][1]).start()
    yield r
    r.stop()


def tls_endpoint(pki: Pki, port: int) -> Endpoint:
    return Endpoint(Target("tls", "localhost", port), ca=pki["ca"][1], cert=pki["client"][1],
                    key=pki["client"][0], timeout=5)


def write(log: AuditLog, first: int, n: int) -> None:
    """Records first..first+n-1, each naming its own seq in the user (`seq_of` reads it back)."""
    for i in range(first, first + n):
        log.record(LOGIN, SUCCESS if i % 3 else FAILURE, user=f"user#{i}", client="10.0.0.7",
                   patient=f"P{i}", detail={"reason": "bad password"} if i % 3 == 0 else None)


def first_arrivals(messages: list[bytes]) -> list[int]:
    seen: list[int] = []
    for m in messages:
        s = seq_of(parse(m))
        if s not in seen:
            seen.append(s)
    return seen


def wait_until(what: object, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not what():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not true after {timeout} s"
        time.sleep(0.02)


def test_records_arrive_over_mutual_tls_framed_and_coded(tmp_path: Path, pki: Pki,
                                                         tls_receiver: TlsReceiver) -> None:
    log = AuditLog(tmp_path)
    write(log, 1, 3)
    log.record(INSTANCES_TRANSFERRED, SUCCESS, user="CT1", client="CT1", study="1.2.3", patient="P9",
               detail={"direction": "received", "protocol": "DIMSE C-STORE", "instances": 40})
    sender = SyslogSender(tmp_path, tls_endpoint(pki, tls_receiver.port), SOURCE, **FAST)
    sender.start()
    try:
        got = tls_receiver.wait_for(4)
        wait_until(lambda: sender.cursor.seq == 4)
    finally:
        sender.stop()
    assert not tls_receiver.framing_errors
    assert tls_receiver.peers == ["client"]  # our certificate was presented and verified
    msgs = [parse(m) for m in got]
    assert [(m.facility, m.severity) for m in msgs] == [(10, 5), (10, 5), (10, 4), (10, 5)]
    for m in msgs:
        assert (m.version, m.hostname, m.app, m.msgid, m.sd) == (1, "pacs.test", "dicomvault", "IHE+RFC-3881",
                                                                  "-")
        assert m.timestamp.endswith("Z") and m.timestamp.startswith(time.strftime("%Y-", time.gmtime()))
    assert [seq_of(m) for m in msgs[:3]] == [1, 2, 3]
    third = msgs[2].xml()
    assert third.find("EventIdentification/EventID").get("csd-code") == "110114"  # type: ignore[union-attr]
    assert third.find("EventIdentification").get("EventOutcomeIndicator") == "4"  # type: ignore[union-attr]
    transfer = msgs[3].xml()
    assert transfer.find("EventIdentification/EventID").get("csd-code") == "110104"  # type: ignore[union-attr]
    assert [o.get("ParticipantObjectID") for o in transfer.iter("ParticipantObjectIdentification")] == \
        ["P9", "1.2.3"]
    assert load_cursor(cursor_path(tmp_path)).seq == 4


def test_a_stopped_repository_blocks_nobody_and_misses_nothing(tmp_path: Path, pki: Pki,
                                                               tls_receiver: TlsReceiver) -> None:
    log = AuditLog(tmp_path)
    sender = SyslogSender(tmp_path, tls_endpoint(pki, tls_receiver.port), SOURCE, **FAST)
    sender.start()
    try:
        write(log, 1, 5)
        tls_receiver.wait_for(5)
        tls_receiver.stop()
        # Alone, record 6 is written into a connection the repository closed: only the reset (or
        # the unacknowledged bytes) tells it did not arrive.
        write(log, 6, 1)
        wait_until(lambda: sender.down_since is not None)
        # The writers go on at disk speed while the repository is away.
        t0 = time.monotonic()
        write(log, 7, 29)
        assert time.monotonic() - t0 < 10.0
        status = json.loads(subprocess.run([CLI, "audit", "status", "--data", str(tmp_path), "--json"],
                                           capture_output=True, text=True, check=True, timeout=60).stdout)
        assert status["state"] == "down" and status["last_seq"] == 35
        assert status["backlog"] == 35 - status["sent_seq"] >= 30
        assert sender.outages == 1
        tls_receiver.start()  # the same port
        write(log, 36, 2)
        got = tls_receiver.wait_for(37 - 5)
        wait_until(lambda: sender.cursor.seq == 37)
        got = tls_receiver.received()
    finally:
        sender.stop()
    # Every record arrived, first arrivals in seq order (one sent just as the repository went
    # away, not yet known delivered, is sent again: at-least-once).
    assert first_arrivals(got) == list(range(1, 38))
    assert len(got) <= 37 + 5
    assert sender.outages == 1


def test_a_stalled_repository_holds_the_sender_not_the_writers(tmp_path: Path, pki: Pki) -> None:
    """A repository that accepts the connection and then says nothing: the sender waits in its
    handshake; the writers (which share the log's lock with the sender) go on."""
    stalled = socket.create_server(("127.0.0.1", 0))
    sender = SyslogSender(tmp_path, Endpoint(Target("tls", "localhost", stalled.getsockname()[1]),
                                             ca=pki["ca"][1], timeout=60), SOURCE, **FAST)
    log = AuditLog(tmp_path)
    write(log, 1, 1)
    sender.start()
    conn, _ = stalled.accept()  # the sender is connected and waits for the server's hello
    try:
        t0 = time.monotonic()
        write(log, 2, 30)
        assert time.monotonic() - t0 < 10.0  # 30 fsync'd appends, nothing waits on the network
        assert sender.sent == 0 and sender.cursor.seq == 0
    finally:
        conn.close()  # the handshake fails at once: the sender can stop
        stalled.close()
        sender.stop()
    assert load_cursor(cursor_path(tmp_path)).seq == 0


def test_a_torn_line_is_not_sent_until_complete(tmp_path: Path, pki: Pki, tls_receiver: TlsReceiver) -> None:
    log = AuditLog(tmp_path)
    write(log, 1, 2)
    path = tmp_path / "audit" / "audit.jsonl"
    line = json.dumps({"time": "2026-01-01T00:00:00.000+00:00", "event": "login", "code": "DCM 110114",
                       "outcome": "success", "user": "user#3", "client": None, "patient": None,
                       "study": None, "detail": {}, "seq": 3, "prev": "x" * 64}).encode()
    with path.open("ab") as f:
        f.write(line[:40])  # an append cut short
    sender = SyslogSender(tmp_path, tls_endpoint(pki, tls_receiver.port), SOURCE, **FAST)
    sender.start()
    try:
        tls_receiver.wait_for(2)
        time.sleep(0.3)  # many polls of the log
        assert len(tls_receiver.received()) == 2
        with path.open("ab") as f:
            f.write(line[40:] + b"\n")  # the line completed
        got = tls_receiver.wait_for(3)
        assert [seq_of(parse(m)) for m in got] == [1, 2, 3]
        with path.open("ab") as f:
            f.write(b'{"time": "2026-01-01T00:00:01')  # torn again: the next writer cuts it off
        write(log, 4, 1)
        got = tls_receiver.wait_for(4)
    finally:
        sender.stop()
    assert [seq_of(parse(m)) for m in got] == [1, 2, 3, 4]


def test_udp_sends_one_message_per_datagram(tmp_path: Path) -> None:
    receiver = UdpReceiver().start()
    try:
        log = AuditLog(tmp_path)
        sender = SyslogSender(tmp_path, Endpoint(parse_target(f"udp://127.0.0.1:{receiver.port}")), SOURCE,
                              **FAST)
        sender.start()
        try:
            write(log, 1, 4)
            got = receiver.wait_for(4)
            wait_until(lambda: sender.cursor.seq == 4)
        finally:
            sender.stop()
    finally:
        receiver.stop()
    msgs = [parse(m) for m in got]  # each datagram is one whole message
    assert [seq_of(m) for m in msgs] == [1, 2, 3, 4]
    assert {m.msgid for m in msgs} == {"IHE+RFC-3881"}


def test_udp_resends_what_an_icmp_error_says_was_refused(tmp_path: Path) -> None:
    """On loopback (as on a LAN passing ICMP) a closed port answers "unreachable": the records
    sent meanwhile are sent again once the receiver is back. Elsewhere UDP loses them."""
    receiver = UdpReceiver().start()
    log = AuditLog(tmp_path)
    udp = Endpoint(parse_target(f"udp://127.0.0.1:{receiver.port}"))
    # A grace long enough for the ICMP error to come back on a loaded machine (loopback delivers
    # it from a softirq, which a busy CI host can run late): with FAST's 50 ms, record 4 once
    # counted as delivered before its error arrived, and was lost as UDP loses it.
    sender = SyslogSender(tmp_path, udp, SOURCE, **{**FAST, "grace": 0.5})
    sender.start()
    try:
        write(log, 1, 3)
        receiver.wait_for(3)
        receiver.stop()
        write(log, 4, 1)  # alone: only the ICMP error it draws tells that it was refused
        wait_until(lambda: sender.down_since is not None)
        write(log, 5, 9)
        receiver.start()
        # Every record, not 13 datagrams: a record sent again (its first copy having arrived)
        # counts twice among the datagrams, so 13 of them once came before record 13 had.
        wait_until(lambda: len(first_arrivals(receiver.received())) >= 13)
        wait_until(lambda: sender.cursor.seq == 13)
        got = receiver.received()
    finally:
        sender.stop()
        receiver.stop()
    assert first_arrivals(got) == list(range(1, 14))


def test_audit_table_is_checked(tmp_path: Path, pki: Pki) -> None:
    ca = pki["ca"][1]
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[audit]\nsyslog = "tls://audit.example"\nsyslog_ca = "{ca}"\nsite = "West"\n')
    a = load_config(cfg).audit
    assert a.endpoint is not None and a.endpoint.target == Target("tls", "audit.example", 6514)
    assert (a.endpoint.ca, a.site, a.source_id) == (ca, "West", None)
    udp = parse_audit({"syslog": "udp://h"}, "f", tmp_path).endpoint
    assert udp is not None and udp.target.port == 514
    assert parse_audit({}, "f", tmp_path).endpoint is None
    cases = [({"syslog": "http://h"}, "tls://HOST"), ({"syslog": "udp://h", "syslog_ca": str(ca)}, "for tls"),
             ({"syslog": "tls://h", "syslog_cert": str(ca)}, "go together"), ({"sislog": "x"}, "unknown"),
             ({"syslog_ca": str(ca)}, "need syslog"), ({"syslog": "tls://h", "syslog_ca": "nope"}, "no such")]
    for bad, why in cases:
        with pytest.raises(AuditSettingsError, match=why):
            parse_audit(bad, "f: audit", tmp_path)
    cfg.write_text('[audit]\nsyslog = "tls://h:99999"\n')
    with pytest.raises(AuditSettingsError, match="c.toml: audit.syslog"):
        load_config(cfg)


def serve_config(tmp_path: Path, pki: Pki, syslog_port: int) -> tuple[Path, Path]:
    """(data directory, config file) of a `serve` sending its audit log to localhost:syslog_port."""
    dimse_port = free_port()
    data = tmp_path / "data"
    config = tmp_path / "dicomvault.toml"
    config.write_text(f"""data = "{data}"
[dimse]
ae_title = "DVSERVE"
port = {dimse_port}
[audit]
syslog = "tls://localhost:{syslog_port}"
syslog_ca = "{pki['ca'][1]}"
syslog_cert = "{pki['client'][1]}"
syslog_key = "{pki['client'][0]}"
""")
    return data, config


def serve(tmp_path: Path, config: Path, log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    proc = subprocess.Popen([CLI, "serve", "--config", str(config), "--http-port", "0"], stdout=out,
                            stderr=subprocess.STDOUT)
    out.close()
    deadline = time.monotonic() + 60
    while b"serving DIMSE" not in log.read_bytes():
        assert proc.poll() is None, log.read_text()
        assert time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0


def test_serve_sends_and_resumes_from_its_cursor_after_a_restart(tmp_path: Path, pki: Pki,
                                                                 tls_receiver: TlsReceiver) -> None:
    data, config = serve_config(tmp_path, pki, tls_receiver.port)
    log = tmp_path / "serve.log"
    proc = serve(tmp_path, config, log)
    try:
        first = tls_receiver.wait_for(1)  # application-start, seq 1
    finally:
        stop(proc)
    tls_receiver.wait_for(2)  # application-stop, seq 2, is sent before serve exits
    write(AuditLog(data), 3, 3)  # and writers of other processes add 3..5 while it is down
    status = json.loads(subprocess.run([CLI, "audit", "status", "--data", str(data), "--json"],
                                       capture_output=True, text=True, check=True, timeout=60).stdout)
    assert (status["sent_seq"], status["backlog"], status["state"]) == (2, 3, "stopped")
    proc = serve(tmp_path, config, log)
    try:
        tls_receiver.wait_for(6)  # the backlog 3..5 and the new application-start, 6
    finally:
        stop(proc)
    got = tls_receiver.wait_for(7)
    events = [parse(m).xml().find("EventIdentification/EventTypeCode") for m in got]
    kinds = [None if e is None else e.get("csd-code") for e in events]
    # Application Start (110120) and Stop (110121), three logins (110122) written while serve was
    # down, start and stop again: resumed from the cursor, nothing sent twice (clean stops).
    assert kinds == ["110120", "110121", "110122", "110122", "110122", "110120", "110121"], log.read_text()
    assert parse(first[0]).xml().find("ActiveParticipant").get("UserID") == "dicomvault:DVSERVE"  # type: ignore[union-attr]
    assert load_cursor(cursor_path(data)).seq == 7


def test_serve_killed_resends_what_it_could_not_confirm(tmp_path: Path, pki: Pki, tls_receiver: TlsReceiver,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    """kill -9 while records are being sent: after the restart every record of the log has
    arrived, in order of first arrival, exactly as the log renders it; some may come twice."""
    data, config = serve_config(tmp_path, pki, tls_receiver.port)
    log = tmp_path / "serve.log"
    proc = serve(tmp_path, config, log)
    tls_receiver.wait_for(1)
    write(AuditLog(data), 2, 40)
    proc.kill()  # no stop, no application-stop, no last cursor commit
    proc.wait(30)
    assert cli_main(["audit", "status", "--data", str(data), "--json"]) == 0
    status = json.loads(capsys.readouterr().out)
    assert status["state"] == f"up when its server (pid {proc.pid}) ended without stopping"
    assert status["last_seq"] == 41
    proc = serve(tmp_path, config, log)
    try:
        tls_receiver.wait_for(42)
    finally:
        stop(proc)
    records = [json.loads(line) for line in (data / "audit" / "audit.jsonl").read_text().splitlines()]
    assert len(records) == 43  # 1 start, 40 logins, a start and a stop
    source = AuditSource("DVSERVE", hostname=socket.gethostname())
    want = [message(r, render(r, source), source.hostname) for r in records]
    got = tls_receiver.wait_for(43)
    firsts = list(dict.fromkeys(got))
    assert firsts == want
    assert len(got) - len(firsts) <= 41  # duplicates: only what the killed server had not confirmed
