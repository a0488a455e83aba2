"""`[dimse] pending_interval`: a C-GET or C-MOVE sends a pending response (its counts so far) once
the interval has passed since its last one, the first sub-operation's at once, and its final
response has every count. PS3.4 makes pending responses optional; the other DIMSE tests run with
0 (one after every sub-operation) and check the counts step by step."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dimse_helpers import STORESCP_AE, Archive, associate, start_archive, stop_archive, storescu
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import build_context, build_role, evt
from pynetdicom.sop_class import (
    CTImageStorage,
    StudyRootQueryRetrieveInformationModelGet,
    StudyRootQueryRetrieveInformationModelMove,
)

from dicomvault.bench.ports import free_port
from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.config import ConfigError, load_config
from dicomvault.dimse.fastretrieve import BATCH, FIRST_BATCH, chunks

PENDING = 0xFF00
SLICES = 130  # three native batches (fastretrieve.chunks: 16, 100, then the rest)


@pytest.fixture(scope="module")
def sparse(tmp_path_factory: pytest.TempPathFactory,
           storescp: tuple[int, Path]) -> Iterator[tuple[Archive, str]]:
    """An archive with pending_interval = 60 holding one synthetic CT series of SLICES slices."""
    tmp = tmp_path_factory.mktemp("sparse")
    files = []
    for i, data in enumerate(ct_series(SeriesSpec(patient_id="PEND1", seed=41, slices=SLICES, rows=32,
                                                   columns=32))):
        files.append(tmp / f"{i:04d}.dcm")
        files[-1].write_bytes(data)
    arch = start_archive(tmp / "archive", storescp[0], free_port(), pending_interval=60)
    try:
        storescu(arch, files)
        study = {s.study_uid for s in arch.sent.values()}
        assert len(study) == 1 and len(arch.sent) == SLICES
        yield arch, study.pop()
    finally:
        assert stop_archive(arch) == 0, arch.log_text()[-3000:]


def _query(study: str) -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = "STUDY"
    ds.StudyInstanceUID = study
    return ds


def _counts(rsp: Any) -> tuple[int | None, int, int, int]:
    return (rsp.get("NumberOfRemainingSuboperations"), rsp.NumberOfCompletedSuboperations,
            rsp.NumberOfFailedSuboperations, rsp.NumberOfWarningSuboperations)


def _one_pending_then_final(rsps: list[Any]) -> None:
    statuses = [r[0].Status for r in rsps]
    assert statuses == [PENDING, 0x0000], statuses
    assert _counts(rsps[0][0]) == (SLICES - 1, 1, 0, 0)
    assert _counts(rsps[-1][0])[1:] == (SLICES, 0, 0)


def test_get_sends_the_first_pending_response_then_none_within_it(sparse: tuple[Archive, str]) -> None:
    arch, study = sparse
    got: list[str] = []

    def on_store(event: Any) -> int:
        got.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    contexts = [build_context(StudyRootQueryRetrieveInformationModelGet),
                build_context(CTImageStorage, ExplicitVRLittleEndian)]
    assoc = associate(arch, contexts, ext_neg=[build_role(CTImageStorage, scp_role=True)],
                      evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        rsps = list(assoc.send_c_get(_query(study), StudyRootQueryRetrieveInformationModelGet))
    finally:
        assoc.release()
    _one_pending_then_final(rsps)
    assert sorted(got) == sorted(arch.sent)


def test_move_sends_the_first_pending_response_then_none_within_it(sparse: tuple[Archive, str]) -> None:
    arch, study = sparse
    assoc = associate(arch, [build_context(StudyRootQueryRetrieveInformationModelMove)])
    try:
        rsps = list(assoc.send_c_move(_query(study), STORESCP_AE, StudyRootQueryRetrieveInformationModelMove))
    finally:
        assoc.release()
    _one_pending_then_final(rsps)


def test_pending_interval_setting(tmp_path: Path) -> None:
    cfg = tmp_path / "dv.toml"
    assert load_config(None).dimse.pending_interval == 0.1
    cfg.write_text("[dimse]\npending_interval = 0\n")
    assert load_config(cfg).dimse.pending_interval == 0.0
    for bad in ("-1", "61", '"fast"', "true"):
        cfg.write_text(f"[dimse]\npending_interval = {bad}\n")
        with pytest.raises(ConfigError, match="pending_interval"):
            load_config(cfg)


def test_batches_are_a_small_first_one_then_full_ones() -> None:
    assert chunks(1, 1) == []
    assert chunks(1, 5) == [(1, 5)]
    spans = chunks(1, SLICES)
    assert spans[0] == (1, 1 + FIRST_BATCH) and spans[1] == (1 + FIRST_BATCH, 1 + FIRST_BATCH + BATCH)
    assert spans[-1][1] == SLICES and len(spans) == 3
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))  # contiguous, in order
