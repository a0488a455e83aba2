"""The index attributes decoded natively (core/src/attrtext.rs) against the Python reference
(attributes.decode_attrs): the same strings, in the same order, on every real file; and the
Python path taken, with the same result, for what the native side leaves to it."""

from __future__ import annotations

import io
from pathlib import Path

import pydicom
import pydicom.data
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomvault import _native
from dicomvault.attributes import decode_attrs, index_attrs
from dicomvault.engine import Engine
from dv_corpus import charset_files, corpus_files


def _both(data: bytes) -> tuple[dict[str, str] | None, dict[str, str]]:
    """(native decoding or None, Python decoding) of one file's index attributes."""
    parsed = _native.parse(data)
    return parsed["index_attrs"], decode_attrs(parsed["attrs"])


def test_native_and_python_decoding_agree_on_every_real_file() -> None:
    native = fallback = 0
    for path in [*corpus_files(), *charset_files()]:
        try:
            got, want = _both(path.read_bytes())
        except _native.DicomVaultError:
            continue  # not a file the archive takes: nothing is decoded
        if got is None:
            fallback += 1
            continue
        native += 1
        # Order too: the records keep the attributes as a msgpack map in this order.
        assert list(got.items()) == list(want.items()), path.name
    # The corpus has both kinds: plain images, and ISO 2022 / other character sets.
    assert native > 50 and fallback > 5, (native, fallback)


def _part10(charset: str | None, name: bytes, *, extra: dict[str, object] | None = None) -> bytes:
    ds = Dataset()
    if charset is not None:
        ds.SpecificCharacterSet = charset
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "P1"
    ds.Modality = "OT"
    for k, v in (extra or {}).items():
        setattr(ds, k, v)
    # The name goes in as raw bytes, whatever pydicom would encode: what a modality may send.
    name += b" " * (len(name) % 2)
    ds.PatientName = "X" * len(name)
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    data = buf.getvalue()
    at = data.index(b"PN" + len(name).to_bytes(2, "little") + b"X" * len(name)) + 4
    return data[:at] + name + data[at + len(name):]


@pytest.mark.parametrize(
    ("charset", "name", "native", "expected"),
    [
        (None, b"Doe^John", True, "Doe^John"),
        ("ISO_IR 100", "Müller^Jürgen".encode("latin-1"), True, "Müller^Jürgen"),
        (None, b"M\xfcller^J", True, "Müller^J"),  # default repertoire: latin-1, as pydicom does
        ("ISO_IR 192", "Łukasz^Żółć".encode(), True, "Łukasz^Żółć"),
        ("ISO_IR 192", b"M\xfcller^J", False, None),  # invalid UTF-8: pydicom's replacements
        ("ISO_IR 144", "Иванов^Иван".encode("iso8859_5"), False, "Иванов^Иван"),
        ("\\ISO 2022 IR 87", b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B", False, None),
        ("ISO_IR 100", b"Esc\x1b(Bape", False, None),
    ],
)
def test_character_sets(charset: str | None, name: bytes, native: bool, expected: str | None) -> None:
    data = _part10(charset, name)
    got, want = _both(data)
    assert (got is not None) == native
    if got is not None:
        assert list(got.items()) == list(want.items())
    assert index_attrs(_native.parse(data)) == want
    assert want["PatientName"] == (expected if expected is not None else str(pydicom.dcmread(
        io.BytesIO(data)).PatientName))


def test_numbers_and_multiple_values() -> None:
    data = _part10("ISO_IR 192", b"A^B", extra={
        "ImageType": ["ORIGINAL", "PRIMARY"], "Rows": 512, "Columns": 256, "BitsAllocated": 16,
        "PixelRepresentation": 1, "SeriesNumber": "  7", "InstanceNumber": "-3 ", "StudyDate": "20260102",
    })
    got, want = _both(data)
    assert got is not None and list(got.items()) == list(want.items())
    assert (got["ImageType"], got["Rows"], got["Columns"], got["SeriesNumber"], got["InstanceNumber"]) == (
        "ORIGINAL\\PRIMARY", "512", "256", "7", "-3")


def test_the_engine_indexes_both_paths_alike(tmp_path: Path) -> None:
    """An ingest result carries the raw attributes only when the native side left them to Python,
    and the index holds pydicom's reading of the name either way."""
    files = {
        "latin": _part10("ISO_IR 100", "Müller^Jürgen".encode("latin-1")),
        "jis": _part10("\\ISO 2022 IR 87", b"Yamada^Tarou=\x1b$B;3ED\x1b(B^\x1b$BB@O:\x1b(B"),
    }
    with Engine(tmp_path / "data") as engine:
        natives = engine.vault.ingest_buffers(list(files.values()))
        assert natives[0]["index_attrs"] is not None and "attrs" not in natives[0]
        assert natives[1]["index_attrs"] is None and natives[1]["attrs"]
        outcomes = engine.store_buffers(list(files.values()))
        for data, out in zip(files.values(), outcomes, strict=True):
            assert not isinstance(out, Exception), out
            rec = engine.instance(out.sop_instance_uid)
            assert rec is not None
            assert rec.attrs["PatientName"] == str(pydicom.dcmread(io.BytesIO(data)).PatientName)
