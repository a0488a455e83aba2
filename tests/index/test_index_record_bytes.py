"""Record encoding (records.pack: ormsgpack, msgpack for what it refuses) writes the bytes
msgpack.packb(record.to_wire(), use_bin_type=True) writes, for every record an index holds."""

from __future__ import annotations

import msgpack
from index_helpers import MakeInst

from dicomvault.index import Index
from dicomvault.index.records import RECORD_VERSION, Change, Record, Stats
from dicomvault.index.rejections import RejectedEntry


def _reference(rec: Record) -> bytes:
    return bytes((RECORD_VERSION,)) + msgpack.packb(rec.to_wire(), use_bin_type=True)


def test_every_stored_record_is_msgpacks_bytes(idx: Index, mk: MakeInst) -> None:
    idx.add_instances([mk(f"1.2.3.{i}", series=f"1.2.840.1.{i % 2}", instance_number=i - 3,
                          PatientName="Müller^Jürgen=ミュラー", content=b"x" * (i + 1)) for i in range(6)])
    idx.update_patient("PID1", {"PatientName": "Doe^Jane"})
    series = [se for st in idx.studies() for se in idx.series_of(st.study_uid)]
    records: list[Record] = [*idx.patients(), *idx.studies(), *series, *idx.instances(),
                             *(b for _, b in idx.blobs()), *idx.changes(0, 100)]
    kinds = {type(r).__name__ for r in records}
    assert kinds == {"PatientRecord", "StudyRecord", "SeriesRecord", "InstanceRecord", "BlobRecord",
                     "Change"}, kinds
    for rec in records:
        assert rec.encode() == _reference(rec), rec
        assert type(rec).decode(rec.encode()) == rec


def test_what_ormsgpack_refuses_msgpack_writes() -> None:
    # A non-str map key, big and negative numbers, nested containers.
    ch = Change(seq=2**63, detail={"values": {1: "a"}, "n": -(2**63), "l": [1.5, None, b"\x00"]})
    assert ch.encode() == _reference(ch)
    st = Stats(objects=2**64 - 1, tiers={"landing": [1, 2, 3]})
    assert st.encode() == _reference(st)
    assert Stats.decode(st.encode()) == st
    entry = RejectedEntry(sop_uid="1.2", study_uid="1", series_uid="1.1", note_uid="9", code="113001",
                          at=1.25, deleted=True, record=b"\x01\x80")
    assert entry.encode() == _reference(entry)
