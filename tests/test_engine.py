"""Engine facade behaviours not covered by the CLI and corpus suites."""

from __future__ import annotations

import io

import pydicom
import pytest

from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.engine import Engine
from dicomvault.errors import UIDMismatchError


def _dataset(buf: bytes) -> tuple[str, bytes]:
    """Part-10 bytes → (transfer syntax, dataset bytes), as a C-STORE would carry them."""
    from dicomvault import _native

    parsed = _native.parse(buf)
    return parsed["transfer_syntax"], buf[parsed["dataset_offset"] :]


def test_store_dataset_refuses_uid_mismatch_before_indexing(engine: Engine) -> None:
    (buf,) = list(ct_series(SeriesSpec(slices=1, rows=32, columns=32, seed=9)))
    ts, ds = _dataset(buf)
    with pytest.raises(UIDMismatchError, match="SOPInstanceUID"):
        engine.store_dataset(ds, ts, expected_sop_instance_uid="1.2.3.4")
    assert engine.stats()["objects"] == 0
    out = engine.store_dataset(ds, ts, expected_sop_instance_uid=None, calling_ae="CT_SCANNER_1")
    assert engine.instance(out.sop_instance_uid) is not None
    # A dataset received without file meta gets one made at receive time, once: every read of
    # the file is the same bytes, and it is a valid Part-10 file.
    first = engine.read_file(out.sop_instance_uid)
    assert first[128:132] == b"DICM" and first.endswith(ds)
    assert engine.read_file(out.sop_instance_uid) == first
    meta = pydicom.dcmread(io.BytesIO(first)).file_meta
    assert meta.SourceApplicationEntityTitle == "CT_SCANNER_1"
    assert meta.MediaStorageSOPInstanceUID == out.sop_instance_uid
