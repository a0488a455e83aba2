"""A C-GET or C-MOVE of a study in the object-store tier runs on the native retrieve batches too
(Engine.stored_for_sending + _native.retrieve_batch's `stored`): the objects come bit-exact and in
order, a blob damaged in the store fails its own sub-operation only, and the rest still go the
native way rather than one by one through Python."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)
from test_cold_readahead import cold_study

from dicomvault.bench.ports import free_port
from dicomvault.bench.synth import SeriesSpec
from dicomvault.config import Config, DimseConfig, PeerConfig
from dicomvault.dimse import DimseServer
from dicomvault.engine import Engine, cold_placement
from dicomvault.storage.settings import TierSpec
from dv_corpus import split_part10
from seaweed_server import SeaweedServer

SLICES, DAMAGED = 40, 17
DEST_AE = "COLDDEST"
# (archive port, engine, files, store outcomes, native run lengths, what the C-MOVE destination got)
Served = tuple[int, Engine, list[bytes], list[Any], list[int], list[tuple[str, bytes]]]


def sound(outs: list[Any], files: list[bytes]) -> list[tuple[str, bytes]]:
    """(SOP Instance UID, data set) of every object but the damaged one, in the study's order."""
    return [(o.sop_instance_uid, split_part10(f)[1]) for i, (o, f) in enumerate(zip(outs, files, strict=True))
            if i != DAMAGED]


@contextmanager
def serving(data: Path, tiers: tuple[TierSpec, ...] | None = None
            ) -> Iterator[tuple[int, Engine, list[int], list[tuple[str, bytes]]]]:
    """(port, engine, native run lengths, what the C-MOVE destination got) of an in-process
    DIMSE server on `data`, whose Engine.stored_for_sending records how many objects each call
    handed to a native batch."""
    with Engine(data, tiers=tiers) as engine:
        runs: list[int] = []
        inner = engine.stored_for_sending

        def stored_for_sending(sop_uids: list[str]) -> list[tuple[int, bytes, int]]:
            got = inner(sop_uids)
            runs.append(len(got))
            return got

        engine.stored_for_sending = stored_for_sending  # type: ignore[method-assign]
        moved: list[tuple[str, bytes]] = []
        dest = AE(ae_title=DEST_AE)
        dest.add_supported_context(CTImageStorage, ExplicitVRLittleEndian)
        scp = dest.start_server(("127.0.0.1", 0), block=False, evt_handlers=[
            (evt.EVT_C_STORE, lambda e: moved.append(received(e)) or 0x0000)])
        peers = (PeerConfig(DEST_AE, "127.0.0.1", scp.server_address[1]),)
        srv = DimseServer(engine, Config(data_dir=data, peers=peers, dimse=DimseConfig(
            port=0, accept_unknown_callers=True, pending_interval=0.0)))
        _, port = srv.start()
        try:
            yield port, engine, runs, moved
        finally:
            assert srv.stop(10)
            scp.shutdown()


@pytest.fixture
def served(tmp_path: Path, seaweed: SeaweedServer) -> Iterator[Served]:
    data, files, outs = cold_study(tmp_path, seaweed, SeriesSpec(slices=SLICES, rows=96, columns=96, seed=21),
                                   damaged=DAMAGED)
    with serving(data) as (port, engine, runs, moved):
        yield port, engine, files, outs, runs, moved


def received(event: Any) -> tuple[str, bytes]:
    return str(event.request.AffectedSOPInstanceUID), event.request.DataSet.getvalue()


def c_get(port: int, study: str) -> tuple[list[tuple[str, bytes]], list[tuple[Dataset, Dataset | None]]]:
    got: list[tuple[str, bytes]] = []

    def on_store(event: Any) -> int:
        got.append(received(event))
        return 0x0000

    ae = AE(ae_title="COLDGET")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelGet)
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMVAULT",
                         ext_neg=[build_role(CTImageStorage, scp_role=True)],
                         evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert assoc.is_established
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = study
    try:
        rsps = list(assoc.send_c_get(q, StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    return got, rsps


def test_a_cold_c_get_goes_natively_bit_exact_in_order_and_a_damaged_blob_fails_alone(
        served: Served) -> None:
    port, engine, files, outs, runs, _ = served
    assert {engine.index.blob(o.hash).tier for o in outs} == {"cold"}
    got, rsps = c_get(port, outs[0].study_instance_uid)
    want = sound(outs, files)
    assert [uid for uid, _ in got] == [uid for uid, _ in want]  # in order, the damaged one left out
    assert got == want  # bit-exact
    final, failed = rsps[-1]
    assert final.Status == 0xB000  # some sub-operations failed
    assert (final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (SLICES - 1, 1)
    assert failed is not None and failed.FailedSOPInstanceUIDList == outs[DAMAGED].sop_instance_uid
    # every pending response counts one more (pending_interval 0)
    pend = [(r.NumberOfRemainingSuboperations, r.NumberOfCompletedSuboperations) for r, _ in rsps[:-1]]
    assert pend[-1] == (0, SLICES - 1) and len(pend) == SLICES
    # every sound object after the first (sent before the listing) went in a native batch, once
    assert sum(runs) == SLICES - 2, runs



def test_a_cold_object_that_does_not_decode_in_a_native_batch_fails_alone(served: Served) -> None:
    """Stored bytes that passed the pack's digest but do not decode (damaged in the read cache
    here, as a codec bug would leave them) stop the native batch at that object: it fails
    alone, read one by one, and the objects after it still come, in order."""
    port, engine, files, outs, _, _ = served
    bad = 25
    blob = engine.index.blob(outs[bad].hash)
    codec, stored = engine.remote("cold").read(cold_placement(blob))
    broken = bytearray(stored)
    broken[len(broken) // 2] ^= 0xFF
    engine._cold_cache.put_many({blob.hash: (codec, bytes(broken))})  # kept: a fetch skips cached blobs
    got, rsps = c_get(port, outs[0].study_instance_uid)
    final, failed = rsps[-1]
    assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (
        0xB000, SLICES - 2, 2)
    assert failed is not None and sorted(failed.FailedSOPInstanceUIDList) == sorted(
        [outs[DAMAGED].sop_instance_uid, outs[bad].sop_instance_uid])
    assert got == [x for x in sound(outs, files) if x[0] != outs[bad].sop_instance_uid]

def test_a_cold_c_move_goes_natively_bit_exact_in_order(served: Served) -> None:
    port, _, files, outs, runs, moved = served
    ae = AE(ae_title="COLDMOVE")
    ae.add_requested_context(StudyRootQueryRetrieveInformationModelMove)
    assoc = ae.associate("127.0.0.1", port, ae_title="DICOMVAULT")
    assert assoc.is_established
    q = Dataset()
    q.QueryRetrieveLevel = "STUDY"
    q.StudyInstanceUID = outs[0].study_instance_uid
    try:
        rsps = list(assoc.send_c_move(q, DEST_AE, StudyRootQueryRetrieveInformationModelMove))
    finally:
        assoc.release()
    final, failed = rsps[-1]
    assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (
        0xB000, SLICES - 1, 1)
    assert failed is not None and failed.FailedSOPInstanceUIDList == outs[DAMAGED].sop_instance_uid
    assert moved == sound(outs, files)
    assert sum(runs) == SLICES - 2, runs


def test_a_cold_c_get_while_the_store_is_down_fails_every_object_fast(tmp_path: Path,
                                                                     seaweed: SeaweedServer) -> None:
    """The cold tier's endpoint moved to a port nothing listens on: every sub-operation fails
    within seconds (the store is marked down at the first failure, not tried per object), the
    Failed SOP Instance UID List names them all, and nothing went to a native batch."""
    data, _, outs = cold_study(tmp_path, seaweed, SeriesSpec(slices=SLICES, rows=96, columns=96, seed=22))
    with Engine(data) as e:
        tiers = tuple(replace(t, endpoint=f"http://127.0.0.1:{free_port()}") if t.backend == "s3" else t
                      for t in e.tiers)
    with serving(data, tiers) as (port, _, runs, _):
        t0 = time.monotonic()
        got, rsps = c_get(port, outs[0].study_instance_uid)
        took = time.monotonic() - t0
    final, failed = rsps[-1]
    assert got == []
    assert (final.Status, final.NumberOfCompletedSuboperations, final.NumberOfFailedSuboperations) == (
        0xA702, 0, SLICES)
    assert failed is not None and sorted(failed.FailedSOPInstanceUIDList) == sorted(
        o.sop_instance_uid for o in outs)
    assert took < 15, took
    assert sum(runs) == 0, runs
