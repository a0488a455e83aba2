"""Reading an IHE IOCM rejection note: a Key Object Selection document whose title is a
rejection code (CID 7011) and whose evidence lists the rejected instances.

Only KOS objects are decoded (the engine asks by SOP Class UID first), so ordinary ingest pays
nothing. The decode reads the stored dataset bytes with pydicom, stopping before any bulk data.
"""

from __future__ import annotations

import io
import logging
import zlib

from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.filereader import read_dataset
from pydicom.uid import UID, DeflatedExplicitVRLittleEndian, ExplicitVRBigEndian, ImplicitVRLittleEndian

from .index import REJECTION_TITLES, Reference, Rejection

KOS_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.88.59"
REJECTION_SCHEME = "DCM"

log = logging.getLogger("dicomvault.iocm")


def _decode(dataset: bytes, transfer_syntax: str) -> Dataset:
    ts = UID(transfer_syntax.rstrip("\0 "))
    data = dataset
    if ts == DeflatedExplicitVRLittleEndian:
        data = zlib.decompress(dataset, -zlib.MAX_WBITS)
    return read_dataset(io.BytesIO(data), ts == ImplicitVRLittleEndian, ts != ExplicitVRBigEndian)


def _title_code(ds: Dataset) -> str | None:
    seq = ds.get("ConceptNameCodeSequence")
    if not seq:
        return None
    item = seq[0]
    code = str(item.get("CodeValue", "")).strip()
    scheme = str(item.get("CodingSchemeDesignator", "")).strip()
    if scheme != REJECTION_SCHEME or code not in REJECTION_TITLES:
        return None
    return code


def _references(ds: Dataset) -> tuple[Reference, ...]:
    refs: list[Reference] = []
    for study in ds.get("CurrentRequestedProcedureEvidenceSequence") or []:
        study_uid = str(study.get("StudyInstanceUID", "")).strip()
        for series in study.get("ReferencedSeriesSequence") or []:
            series_uid = str(series.get("SeriesInstanceUID", "")).strip()
            for sop in series.get("ReferencedSOPSequence") or []:
                sop_uid = str(sop.get("ReferencedSOPInstanceUID", "")).strip()
                if sop_uid:
                    refs.append(Reference(study_uid, series_uid, sop_uid))
    return tuple(refs)


def parse_rejection(dataset: bytes, transfer_syntax: str, sop_uid: str) -> Rejection | None:
    """The rejection a KOS dataset expresses, or None when it is an ordinary KOS (another title,
    no evidence) or cannot be read (then it is stored as an ordinary object and logged)."""
    try:
        ds = _decode(dataset, transfer_syntax)
        code = _title_code(ds)
        if code is None:
            return None
        refs = _references(ds)
    except (InvalidDicomError, ValueError, KeyError, TypeError, EOFError, zlib.error, OSError) as exc:
        log.warning("KOS %s: cannot read it as a rejection note (%s); stored as an ordinary object",
                    sop_uid, exc)
        return None
    if not refs:
        log.warning("KOS %s has rejection title %s but references no instance", sop_uid, code)
        return None
    return Rejection(note_uid=sop_uid, code=code, refs=refs)
