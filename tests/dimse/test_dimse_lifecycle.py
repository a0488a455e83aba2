"""`dicomvault serve` as a process: the unknown-caller policy, and SIGTERM letting an in-flight
association finish (new connections refused meanwhile) before a clean exit."""

from __future__ import annotations

import signal
import socket
import time
from pathlib import Path

import pytest
from dimse_helpers import (
    ARCHIVE_AE,
    HOST,
    STORESCP_AE,
    associate,
    dataset_bytes,
    free_port,
    run,
    start_archive,
    stop_archive,
)
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import _config, build_context
from pynetdicom.sop_class import CTImageStorage, Verification

from dicomvault.engine import Engine
from dv_corpus import corpus_dirs

pytestmark = pytest.mark.interop


def test_refuses_unknown_callers_and_finishes_in_flight_work_on_sigterm(
    tmp_path: Path, storescp: tuple[int, Path]
) -> None:
    arch = start_archive(tmp_path, storescp[0], free_port(), accept_unknown_callers=False)
    try:
        stranger = run(["echoscu", "-aet", "STRANGER", "-aec", ARCHIVE_AE, *arch.addr], check=False)
        assert stranger.returncode != 0, "an unknown calling AE must be refused"
        contexts = [build_context(Verification), build_context(CTImageStorage, ExplicitVRLittleEndian)]
        assoc = associate(arch, contexts, ae_title=STORESCP_AE)  # a configured peer
        arch.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while "waiting up to" not in arch.log_text():
            assert time.monotonic() < deadline, arch.log_text()
            time.sleep(0.05)
        with pytest.raises(ConnectionRefusedError):  # no longer accepting
            socket.create_connection((HOST, arch.port), timeout=2).close()
        # The association that was open goes on: an echo and a (durable) store.
        assert assoc.send_c_echo().Status == 0x0000
        ct = corpus_dirs()[1] / "CT_small.dcm"
        old = _config.STORE_SEND_CHUNKED_DATASET
        _config.STORE_SEND_CHUNKED_DATASET = True
        try:
            assert assoc.send_c_store(ct).Status == 0x0000
        finally:
            _config.STORE_SEND_CHUNKED_DATASET = old
        assert arch.proc.poll() is None, "exited while an association was active"
        assoc.release()
        assert arch.proc.wait(20) == 0
    finally:
        stop_archive(arch)
    log = arch.log_text()
    assert "association rejected: STRANGER" in log
    assert ("calling AE title 'STRANGER' is not a known peer; "
            "admit it with `dicomvault peers add STRANGER 127.0.0.1") in log
    assert "DIMSE SCP stopped;" in log and "aborted" not in log.split("SIGTERM received")[1]
    with Engine(arch.data, read_only=True) as eng:
        assert eng.read_dataset("1.3.6.1.4.1.5962.1.1.1.1.1.20040119072730.12322") == dataset_bytes(ct)


def test_the_association_limit_refuses_with_the_reason_and_service_goes_on(
    tmp_path: Path, storescp: tuple[int, Path]
) -> None:
    arch = start_archive(tmp_path, storescp[0], free_port(), max_associations=2)
    try:
        # pynetdicom counts an association until its thread has ended: the start-up probe's (and
        # a refused one's) for a moment after its connection closed. Let them end first.
        time.sleep(1.0)
        held = [associate(arch, [build_context(Verification)]) for _ in range(2)]
        third = run(["echoscu", "-aec", ARCHIVE_AE, "-to", "5", "-ta", "5", *arch.addr], check=False)
        assert third.returncode != 0, "a third association got past max_associations = 2"
        for a in held:
            a.release()
        time.sleep(1.0)
        run(["echoscu", "-aec", ARCHIVE_AE, *arch.addr])  # served again once they ended
    finally:
        stop_archive(arch)
    log = arch.log_text()
    assert "local limit exceeded: 2 associations active, [dimse] max_associations = 2" in log, log[-3000:]
