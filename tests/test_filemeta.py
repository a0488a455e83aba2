"""The hand-written file meta is exactly what pydicom writes."""

from __future__ import annotations

import io

import pytest
from pydicom.dataset import FileMetaDataset
from pydicom.filereader import _read_file_meta_info, read_preamble
from pydicom.filewriter import write_file_meta_info
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID

from dicomvault.filemeta import IMPLEMENTATION_VERSION_NAME, file_meta_prefix


def _pydicom_prefix(cls: str, inst: str, ts: str, ae: str | None) -> bytes:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = cls
    meta.MediaStorageSOPInstanceUID = inst
    meta.TransferSyntaxUID = ts
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    if ae:
        meta.SourceApplicationEntityTitle = ae
    buf = io.BytesIO()
    buf.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(buf, meta, enforce_standard=True)
    return buf.getvalue()


@pytest.mark.parametrize("ae", [None, "CT1", "MODALITY_AE_16CH"])
@pytest.mark.parametrize("inst", ["1.2.3", "1.2.840.113619.2.55.3.604688119.969.1268071029.320", "1.2.34"])
@pytest.mark.parametrize("ts", ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.4.50"])
def test_same_bytes_as_pydicom(ae: str | None, inst: str, ts: str) -> None:
    cls = "1.2.840.10008.5.1.4.1.1.2"
    ours = file_meta_prefix(cls, inst, ts, ae)
    assert ours == _pydicom_prefix(cls, inst, ts, ae)
    fp = io.BytesIO(ours)
    read_preamble(fp, force=False)
    meta = _read_file_meta_info(fp)
    assert meta.MediaStorageSOPInstanceUID == inst and meta.TransferSyntaxUID == ts


def test_objects_of_one_class_and_syntax_differ_in_their_instance_and_sender() -> None:
    """The elements that do not depend on the instance are made once per (class, syntax, sender):
    consecutive objects, of odd and even UID lengths, from one sender and then another."""
    cls, ts = "1.2.840.10008.5.1.4.1.1.4", "1.2.840.10008.1.2.1"
    for ae in ("MR1", None, " MR1 ", "MR2"):
        for inst in (
            "1.2.3.4",
            "1.2.3.45",
            "1.2.3.4.5.6.7.8.9.10.11.12.13.14.15.16.17.18.19.20.21.22.23.24.25",
        ):
            assert file_meta_prefix(cls, inst, ts, ae) == _pydicom_prefix(
                cls, inst, ts, ae.strip() if ae else None
            )
