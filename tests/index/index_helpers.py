"""Helpers shared by the index tests (uniquely named to avoid module-name clashes)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

MakeInst = Callable[..., dict[str, Any]]


def make_inst(
    sop: str,
    study: str = "1.2.840.1",
    series: str = "1.2.840.1.1",
    *,
    patient_id: str = "PID1",
    patient_name: str = "Doe^John",
    modality: str = "CT",
    study_date: str = "20240115",
    accession: str = "ACC1",
    sop_class: str = "1.2.840.10008.5.1.4.1.1.2",
    instance_number: int | None = 1,
    series_number: int | None = 1,
    content: bytes | None = None,
    logical_len: int = 1000,
    stored_len: int = 600,
    **extra: str,
) -> dict[str, Any]:
    """A synthetic add_instance() payload; the blob hash derives from ``content`` (default: sop)."""
    attrs: dict[str, str] = {
        "PatientID": patient_id,
        "PatientName": patient_name,
        "StudyInstanceUID": study,
        "SeriesInstanceUID": series,
        "SOPInstanceUID": sop,
        "SOPClassUID": sop_class,
        "Modality": modality,
        "StudyDate": study_date,
        "AccessionNumber": accession,
    }
    if instance_number is not None:
        attrs["InstanceNumber"] = str(instance_number)
    if series_number is not None:
        attrs["SeriesNumber"] = str(series_number)
    attrs.update(extra)
    return {
        "attrs": attrs,
        "hash": hashlib.blake2b(content if content is not None else sop.encode(), digest_size=32).digest(),
        "prefix": b"\x00" * 128 + b"DICM",
        "transfer_syntax": "1.2.840.10008.1.2.1",
        "logical_len": logical_len,
        "stored_len": stored_len,
        "codec": 0,
        "tier": "hot",
        "received_at": 1700000000.0,
    }
