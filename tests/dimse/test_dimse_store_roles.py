"""What the C-STORE path records and refuses, checked on the handler's status function."""

from __future__ import annotations

import io

import pydicom

from dicomvault import _native
from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.dimse.status import OUT_OF_RESOURCES_IO, SUCCESS
from dicomvault.dimse.store import store_status
from dicomvault.engine import Engine
from dicomvault.replication import state


def _dataset() -> tuple[str, bytes, str]:
    (buf,) = list(ct_series(SeriesSpec(slices=1, rows=32, columns=32, seed=11)))
    parsed = _native.parse(buf)
    ds = pydicom.dcmread(io.BytesIO(buf))
    return parsed["transfer_syntax"], buf[parsed["dataset_offset"] :], str(ds.SOPInstanceUID)


def test_calling_ae_is_kept_in_the_file_meta(engine: Engine) -> None:
    ts, ds, uid = _dataset()
    code, _ = store_status(engine, ds, ts, sop_uid=uid, sop_class="", caller="CT_ROOM_3")
    assert code == SUCCESS
    meta = pydicom.dcmread(io.BytesIO(engine.read_file(uid))).file_meta
    assert meta.SourceApplicationEntityTitle == "CT_ROOM_3"


def test_a_replica_refuses_dimse_writes(engine: Engine) -> None:
    state.set_role(engine.index, state.REPLICA)
    ts, ds, uid = _dataset()
    code, why = store_status(engine, ds, ts, sop_uid=uid, sop_class="", caller="CT_ROOM_3")
    assert code == OUT_OF_RESOURCES_IO and why and "replica" in why
    assert engine.stats()["objects"] == 0
    state.set_role(engine.index, state.PRIMARY)
    assert store_status(engine, ds, ts, sop_uid=uid, sop_class="", caller="X")[0] == SUCCESS
