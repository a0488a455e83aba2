"""Engine facade behaviours not covered by the CLI and corpus suites."""

from __future__ import annotations

import io

import pydicom
import pytest

from dicomvault.bench.synth import SeriesSpec, ct_series
from dicomvault.engine import Engine
from dicomvault.errors import DicomVaultError, UIDMismatchError


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


def test_received_data_set_is_stored_like_bytes_and_consumed(engine: Engine, tmp_path) -> None:
    """The DIMSE reader's ReceivedDataSet (no copy into bytes) stores exactly what the same
    bytes store: same blob, same dataset read back, and a file copy of it dedupes to it."""
    from dicomvault import _native

    bufs = list(ct_series(SeriesSpec(slices=2, rows=64, columns=64, seed=11)))
    ts, ds = _dataset(bufs[0])
    received = _native.ReceivedDataSet(ds)
    assert len(received) == len(ds) and received.bytes() == ds
    out = engine.store_dataset(received, ts)
    assert len(received) == 0 and received.bytes() == b""  # consumed, not copied
    assert engine.read_dataset(out.sop_instance_uid) == (ts, ds)
    again = engine.store_dataset(ds, ts)
    assert (again.hash, again.duplicate) == (out.hash, True)
    path = tmp_path / "slice.dcm"
    path.write_bytes(bufs[0])
    (from_file,) = engine.store_files([path])
    assert not isinstance(from_file, Exception) and from_file.hash == out.hash
    with pytest.raises(ValueError, match="already ingested"):
        engine.store_dataset(received, ts)
    # refused like bytes: a data set without the hierarchy UIDs
    ts2, ds2 = _dataset(bufs[1])
    with pytest.raises(DicomVaultError):
        engine.store_dataset(_native.ReceivedDataSet(ds2[:200]), ts2)


def test_get_listing_reads_records_late_and_fails_only_unreadable_objects(
        engine: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    """A C-GET lists a study's SOP UIDs from the hierarchy index (retrieve.resolve with
    syntaxes=False) and reads each record when its object is loaded: same order as the full
    listing, SOP class and syntax filled at load, and an object deleted or damaged in between
    fails alone, with its SOP class when the record still names it."""
    from pydicom.dataset import Dataset

    from dicomvault.dimse.retrieve import _load, resolve
    from dicomvault.errors import IntegrityError

    bufs = list(ct_series(SeriesSpec(slices=3, rows=32, columns=32, seed=21)))
    outs = [engine.store_dataset(ds, ts) for ts, ds in map(_dataset, bufs)]
    study = outs[0].study_instance_uid
    q = Dataset()
    q.QueryRetrieveLevel, q.StudyInstanceUID = "STUDY", study
    model = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root C-GET
    lazy, full = resolve(engine, q, model, syntaxes=False), resolve(engine, q, model)
    assert [m.sop_uid for m in lazy] == [m.sop_uid for m in full] and len(lazy) == 3
    assert all(m.sop_class == "" for m in lazy) and all(m.sop_class for m in full)
    first = _load(engine, lazy[0])
    want = (full[0].sop_class, *engine.read_dataset(lazy[0].sop_uid))
    assert (first.SOPClassUID, first.dv_ts, first.dv_raw) == want
    engine.delete("instance", lazy[1].sop_uid)
    gone = _load(engine, lazy[1])
    assert gone.dv_raw is None and gone.SOPClassUID == ""

    def damaged(uid: str) -> tuple[object, str, bytes]:
        raise IntegrityError(f"blob of {uid} damaged")

    monkeypatch.setattr(engine, "read_instance", damaged)
    bad = _load(engine, lazy[2])
    assert bad.dv_raw is None and bad.SOPClassUID == full[2].sop_class and "damaged" in bad.dv_error


def test_read_for_sending_is_the_read_data_set_in_a_native_buffer(engine: Engine) -> None:
    """What a DIMSE retrieve sends (engine.read_for_sending): the same transfer syntax and bytes
    as read_instance; a native buffer (sent without a copy) unless a patient correction rewrites
    the data set, then the corrected bytes. The buffers are pooled: objects read after others
    were released are whole and right, a shorter one after a longer one too."""
    from dicomvault import _native

    bufs = list(ct_series(SeriesSpec(slices=3, rows=64, columns=64, seed=21)))
    bufs += list(ct_series(SeriesSpec(slices=1, rows=32, columns=48, seed=22)))
    sops = [engine.store_dataset(ds, ts).sop_instance_uid for ts, ds in map(_dataset, bufs)]
    for _ in range(2):  # the second pass reads into buffers the first one gave back
        for sop, buf in zip(sops, bufs, strict=True):
            rec, ts, data = engine.read_for_sending(sop)
            assert isinstance(data, _native.DecodedObject)
            want = engine.read_instance(sop)
            assert (rec.sop_uid, ts) == (sop, want[1]) and (ts, data.bytes()) == _dataset(buf)
            assert len(data) == len(want[2]) and data.bytes() == want[2]
            del data
    held = [engine.read_for_sending(sop)[2] for sop in sops]  # alive together: distinct buffers
    assert [d.bytes() for d in held] == [_dataset(b)[1] for b in bufs]
    rec = engine.instance(sops[0])
    assert rec is not None
    engine.index.update_patient(rec.patient_id, {"PatientName": "Fixed^Name"})
    _, ts, corrected = engine.read_for_sending(sops[0])
    assert isinstance(corrected, bytes) and corrected == engine.read_instance(sops[0])[2]
    assert "Fixed^Name" in str(pydicom.dcmread(io.BytesIO(corrected), force=True).PatientName)
