"""Every real file pydicom can read is stored and comes back byte-identical.

One test id per file, so a regression names the file. Files pydicom itself cannot read must be
either rejected with a reason or, if we can keep them, also come back byte-identical: never a
silent half-store.
"""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from dicomvault.engine import Engine, StoreOutcome
from dicomvault.errors import DicomVaultError
from dv_corpus import corpus_files, pydicom_reads

FILES = corpus_files()

# Files pydicom "reads" only because it never checks a value length against the end of the file.
# Storing them would archive a damaged object as if it were whole, so they are rejected, with
# the offset and tag in the reason.
KNOWN_BROKEN = {
    "MR_truncated.dcm": "Pixel Data declared 8192 bytes, 8130 remain",
    "rtplan_truncated.dcm": "cut inside (300A,00B0)",
    "emri_small_jpeg_2k_lossless_too_short.dcm": "encapsulated Pixel Data has no sequence delimiter",
    "no_meta.dcm": "a stray leading byte: pydicom reads one junk element running 170 MB past EOF",
}


def _ids(p: Path) -> str:
    return f"{p.parent.parent.name}/{p.name}"


@pytest.mark.parametrize("path", FILES, ids=[_ids(p) for p in FILES])
def test_ingest_export_byte_identical(path: Path, engine: Engine, tmp_path: Path) -> None:
    original = path.read_bytes()
    unreadable = pydicom_reads(path)
    (result,) = engine.store_files([path])
    if path.name in KNOWN_BROKEN:
        assert isinstance(result, DicomVaultError), f"{path.name} is broken ({KNOWN_BROKEN[path.name]})"
        assert str(result)
        assert engine.stats()["objects"] == 0
        return
    if unreadable is not None:
        if isinstance(result, Exception):
            assert isinstance(result, DicomVaultError) and str(result), "rejection must say why"
            assert engine.stats()["objects"] == 0, "a rejected file must leave nothing behind"
            return
    else:
        ds = pydicom.dcmread(path)
        missing = [k for k in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID") if not ds.get(k)]
        if missing:
            assert isinstance(result, DicomVaultError), f"{path.name} lacks {missing} yet was stored"
            assert missing[0] in str(result)
            assert engine.stats()["objects"] == 0
            return
        assert isinstance(result, StoreOutcome), f"pydicom reads {path.name} but we rejected it: {result}"
        assert result.sop_instance_uid == str(ds.SOPInstanceUID)
        assert result.study_instance_uid == str(ds.StudyInstanceUID)

        (row,) = list(engine.ls("instances", study=result.study_instance_uid, columns=["Rows", "Columns"]))
        assert row["SOPInstanceUID"] == str(ds.SOPInstanceUID)
        if "Rows" in ds:
            assert int(row["Rows"]) == ds.Rows and int(row["Columns"]) == ds.Columns
        studies = list(engine.ls("studies", study=result.study_instance_uid, columns=["PatientID"]))
        assert studies and studies[0].get("PatientID", "") == str(ds.get("PatientID", ""))

    assert isinstance(result, StoreOutcome)
    assert engine.read_file(result.sop_instance_uid) == original
    (exported,) = engine.export("instance", result.sop_instance_uid, tmp_path / "out")
    assert exported.read_bytes() == original
    assert engine.verify().clean
