"""The HL7 pieces on their own: MLLP framing across arbitrary read boundaries, the [hl7] table,
escape sequences and character sets as parsed from real-shaped bytes."""

from __future__ import annotations

import ipaddress
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dicomvault.config_values import ConfigError
from dicomvault.integration.hl7.message import Hl7Error, parse
from dicomvault.integration.hl7.mllp import FrameError, FrameReader, MllpServer, frame
from dicomvault.integration.hl7.settings import parse_hl7

M1 = b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01|1|P|2.3\rOBX|1|TX|X||a\\F\\b\\S\\c\\T\\d\\R\\e\\E\\f\\X41E9\\\r"
M2 = b"MSH|^~\\&|A|B|C|D|20260101||ORU^R01|2|P|2.5.1||||||UNICODE UTF-8\rPID|||7||Zo\xc3\xab\r"


@pytest.mark.parametrize("step", [1, 2, 7, 64, 10_000])
def test_frames_survive_any_read_boundary(step: int) -> None:
    stream = b"noise" + frame(M1) + b"\r\n" + frame(M2)
    reader = FrameReader(max_message=4096)
    got: list[bytes] = []
    for i in range(0, len(stream), step):
        got += reader.feed(stream[i:i + step])
    assert got == [M1, M2]


def test_oversized_frame_refused_before_its_end() -> None:
    reader = FrameReader(max_message=100)
    with pytest.raises(FrameError):
        reader.feed(b"\x0b" + b"x" * 200)


def test_escapes_and_charsets() -> None:
    m = parse(M1)
    assert m.get(m.all("OBX")[0], 5) == "a|b^c&d~e\\fAé"  # \X..\ in the message charset (8859-1 here)
    assert m.version == "2.3" and m.control_id == "1"
    assert parse(M2).get("PID", 5) == "Zoë"
    with pytest.raises(Hl7Error, match="character set"):
        parse(M2.replace(b"UNICODE UTF-8", b"ISO IR87"))
    with pytest.raises(Hl7Error, match="declared character set"):
        parse(M2.replace(b"UNICODE UTF-8", b"ASCII"))


def test_hl7_table() -> None:
    cfg = parse_hl7({"port": 0, "stations": {"ct": "CT01"}}, "t: hl7")
    assert cfg.port == 0 and cfg.port_explicit and cfg.stations == {"CT": "CT01"}
    assert parse_hl7({}, "t").port == 2575 and not parse_hl7({}, "t").port_explicit
    with pytest.raises(ConfigError, match="hl7.idle_timeout"):
        parse_hl7({"idle_timeout": 0}, "t: hl7")
    with pytest.raises(ConfigError):
        parse_hl7({"colour": 1}, "t: hl7")


def test_connections_over_the_limit_are_closed() -> None:
    server = MllpServer("127.0.0.1", 0, lambda raw, peer: b"ACK " + raw, max_connections=2, idle_timeout=5)
    server.start()
    try:
        held = [socket.create_connection(server.address, timeout=5) for _ in range(2)]
        for s in held:  # both served
            s.sendall(frame(b"x"))
            assert s.recv(100) == frame(b"ACK x")
        extra = socket.create_connection(server.address, timeout=5)
        assert extra.recv(100) == b""  # closed at once
        extra.close()
        held.pop().close()
        deadline = time.monotonic() + 5
        while True:  # a slot frees once the server sees the close
            again = socket.create_connection(server.address, timeout=5)
            again.sendall(frame(b"y"))
            try:
                reply = again.recv(100)
            except ConnectionResetError:
                reply = b""
            again.close()
            if reply == frame(b"ACK y") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        assert reply == frame(b"ACK y")
        held[0].close()
    finally:
        server.stop()


def test_senders_outside_allow_are_closed() -> None:
    server = MllpServer("127.0.0.1", 0, lambda raw, peer: b"ACK", allow=(ipaddress.ip_network("10.0.0.0/8"),))
    server.start()
    try:
        with socket.create_connection(server.address, timeout=5) as s:
            try:
                s.sendall(frame(b"x"))
                assert s.recv(100) == b""
            except ConnectionResetError:
                pass  # closed before our bytes were read: refused all the same
    finally:
        server.stop()
    assert parse_hl7({"allow": ["10.1.2.3", "192.168.0.0/16"]}, "t").allow[1].prefixlen == 16
    with pytest.raises(ConfigError, match="allow"):
        parse_hl7({"allow": ["not-an-address"]}, "t: hl7")


def test_serve_refuses_a_non_loopback_listener_without_allow(tmp_path: Path) -> None:
    cfg = tmp_path / "dv.toml"
    cfg.write_text(f'data = "{tmp_path / "data"}"\n[hl7]\nhost = "0.0.0.0"\nport = 1\n')
    proc = subprocess.run([sys.executable, "-m", "dicomvault.cli", "serve", "--config", str(cfg),
                           "--dimse-port", "0", "--http-port", "0"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "refusing to listen for HL7 on 0.0.0.0 with no [hl7] allow" in proc.stderr
