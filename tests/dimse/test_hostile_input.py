"""Hostile input on the DIMSE port and in the objects: malformed PDUs (impossible lengths,
truncated, oversize), garbage after a valid association, 10,000-deep sequences, lengths of
0xFFFFFFFE, UIDs with path separators. Each is refused with a clear status or an abort, nothing
partial is kept, and the server goes on serving (checked with a real echoscu after each)."""

from __future__ import annotations

import socket
import struct
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from dimse_helpers import ARCHIVE_AE, HOST, Archive, associate, associate_rq, run
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import _config, build_context
from pynetdicom.sop_class import SecondaryCaptureImageStorage

from dicomvault.engine import Engine, file_name

pytestmark = pytest.mark.interop

SC = str(SecondaryCaptureImageStorage)


def established(archive: Archive) -> socket.socket:
    s = socket.create_connection((HOST, archive.port), timeout=10)
    s.sendall(associate_rq())
    head = s.recv(6, socket.MSG_WAITALL)
    assert head[0] == 0x02, f"not accepted: {head!r}"
    s.recv(struct.unpack(">I", head[2:6])[0], socket.MSG_WAITALL)
    return s


def ends(s: socket.socket) -> bytes:
    """What the server answers before it closes: b"" or an A-ABORT (0x07)."""
    try:
        data = s.recv(64)
        while data and data[0] != 0x07:
            data = s.recv(64)
        return data
    except (ConnectionResetError, TimeoutError):
        return b""
    finally:
        s.close()


def echo_works(archive: Archive) -> None:
    run(["echoscu", "-aet", "ECHOSCU", "-aec", ARCHIVE_AE, *archive.addr])


@pytest.mark.parametrize("pdu", [
    pytest.param(struct.pack(">BBI", 0x04, 0, 0xFFFFFFF0) + b"\0" * 64, id="oversize-p-data"),
    pytest.param(struct.pack(">BBI", 0x04, 0, 12) + struct.pack(">I", 0xFFFFFF00) + b"\x01\x03" + b"\0" * 6,
                 id="pdv-longer-than-its-pdu"),
    pytest.param(struct.pack(">BBI", 0x04, 0, 6) + struct.pack(">I", 1) + b"\x01\x03", id="pdv-too-short"),
    pytest.param(b"\x01\x00\x00\x00\x00\x40" + b"\xff" * 64, id="second-associate-rq-with-junk"),
    pytest.param(bytes(range(256)) * 16, id="garbage-after-the-association"),
])
def test_malformed_pdus_on_an_established_association_end_it_and_nothing_else(
        archive: Archive, pdu: bytes) -> None:
    s = established(archive)
    s.sendall(pdu)
    reply = ends(s)
    assert reply == b"" or reply[0] == 0x07
    echo_works(archive)


def test_a_pdu_cut_short_and_a_peer_that_vanishes_free_the_association(archive: Archive) -> None:
    s = established(archive)
    s.sendall(struct.pack(">BBI", 0x04, 0, 1000) + b"\0" * 10)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # reset, not FIN
    s.close()
    echo_works(archive)


@pytest.fixture
def raw_send() -> Iterator[None]:
    """pynetdicom sends a file's dataset as its bytes (nothing re-encoded by pydicom)."""
    old = _config.STORE_SEND_CHUNKED_DATASET
    _config.STORE_SEND_CHUNKED_DATASET = True
    yield
    _config.STORE_SEND_CHUNKED_DATASET = old


def _element(tag: int, vr: bytes, value: bytes) -> bytes:
    head = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    if vr in (b"SQ", b"OB", b"OW", b"UN", b"UT"):
        return head + b"\0\0" + struct.pack("<I", len(value)) + value
    return head + struct.pack("<H", len(value)) + value


def _uid(value: str) -> bytes:
    raw = value.encode()
    return raw + b"\0" * (len(raw) % 2)


def sc_dataset(sop: str, study: str, series: str, extra: bytes = b"") -> bytes:
    """A secondary capture without pixels, explicit VR little endian; `extra` goes after the UIDs
    (tags there sort after (0020,000E) only by their position: the parser does not care)."""
    return (_element(0x00080016, b"UI", _uid(SC)) + _element(0x00080018, b"UI", _uid(sop))
            + _element(0x0020000D, b"UI", _uid(study)) + _element(0x0020000E, b"UI", _uid(series)) + extra)


def part10(path: Path, sop: str, dataset: bytes) -> Path:
    meta = pydicom.dataset.FileMetaDataset()
    meta.MediaStorageSOPClassUID = SC
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    with path.open("wb") as f:
        f.write(b"\0" * 128 + b"DICM")
        pydicom.filewriter.write_file_meta_info(f, meta, enforce_standard=True)
        f.write(dataset)
    return path


def deep_sequences(depth: int) -> bytes:
    """(0040,0275) nested `depth` times, undefined lengths all the way down."""
    open_ = struct.pack("<HH", 0x0040, 0x0275) + b"SQ\0\0" + b"\xff\xff\xff\xff"
    item = struct.pack("<HHI", 0xFFFE, 0xE000, 0xFFFFFFFF)
    item_end = struct.pack("<HHI", 0xFFFE, 0xE00D, 0)
    seq_end = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)
    return (open_ + item) * depth + (item_end + seq_end) * depth


def test_hostile_objects_are_refused_with_a_status_and_the_association_goes_on(
        archive: Archive, tmp_path: Path, raw_send: None) -> None:
    study, series = generate_uid(), generate_uid()
    cases: dict[str, tuple[str, bytes, range]] = {}
    sop = generate_uid()
    cases["10k-deep sequences"] = (sop, sc_dataset(sop, study, series, deep_sequences(10_000)),
                                   range(0xC000, 0xD000))
    sop = generate_uid()
    huge = struct.pack("<HH", 0x0009, 0x1010) + b"OB\0\0" + struct.pack("<I", 0xFFFFFFFE) + b"\0" * 16
    cases["length 0xFFFFFFFE"] = (sop, sc_dataset(sop, study, series, huge), range(0xC000, 0xD000))
    for name, uid in (("study UID climbing out", "../../../../tmp/escaped"), ("slash", "1.2/3"),
                      ("backslash", "1.2\\3"), ("dot-dot", "..")):
        sop = generate_uid()
        cases[name] = (sop, sc_dataset(sop, uid, series), range(0xC000, 0xD000))
    assoc = associate(archive, [build_context(SC, ExplicitVRLittleEndian)], ae_title="HOSTILE")
    try:
        for i, (name, (sop, dataset, expected)) in enumerate(cases.items()):
            rsp = assoc.send_c_store(part10(tmp_path / f"{i}.dcm", sop, dataset))
            assert rsp.Status in expected, f"{name}: 0x{rsp.Status:04X}"
            assert assoc.is_established, f"{name}: association dropped"
        good = generate_uid()
        good_file = part10(tmp_path / "good.dcm", good, sc_dataset(good, study, series))
        assert assoc.send_c_store(good_file).Status == 0
    finally:
        assoc.release()
    with Engine(archive.data, read_only=True) as eng:
        assert all(eng.instance(sop) is None for sop, _, _ in cases.values())
        assert eng.instance(good) is not None
    log = archive.log_text()
    assert "nested deeper than" in log and "contains a path separator" in log
    echo_works(archive)


def test_ingest_refuses_path_separators_and_export_stays_in_its_folder(tmp_path: Path) -> None:
    sop = generate_uid()
    bad = part10(tmp_path / "bad.dcm", sop, sc_dataset(sop, "../../escaped", generate_uid()))
    data = tmp_path / "data"
    out = subprocess.run([sys.executable, "-m", "dicomvault.cli", "ingest", str(bad), "--data", str(data)],
                         capture_output=True, text=True)
    assert "1 rejected" in out.stdout + out.stderr and "path separator" in out.stdout + out.stderr
    # what an index may hold from before the check still exports inside the folder
    assert file_name("1.2.840.5") == "1.2.840.5"
    for hostile in ("../../x", "..", "a/b", "a\\b", "x\0y"):
        name = file_name(hostile)
        assert "/" not in name and "\\" not in name and name not in (".", "..") and name.startswith("uid-")
