"""Applies Table E.1-1 to one object: every attribute, in every sequence item, at any depth.

Actions:
- X removed; Z emptied (a sequence: no items); K kept (a sequence: its items de-identified).
- D a dummy of the attribute's VR (a sequence: its items de-identified).
- U a UID of the project (pseudonyms.py): the same original gives the same UID, so references
  between objects (Referenced SOP Instance UID, Frame of Reference, ...) stay consistent. The
  standard's own well-known UIDs (1.2.840.10008.*) are kept.
- C on a date (Modified Dates option): moved back by the patient's day shift; on a time:
  unchanged (whole days move, not hours); on anything else: a dummy, since we know no cleaning
  that keeps meaning and provably drops identity.
- The conditional codes keep IOD conformance without knowing each IOD's attribute types: X/Z
  becomes Z (an empty value is allowed for Type 2 and 3); X/D, Z/D and X/Z/D become D when the
  attribute has a value (it may be Type 1) and X or Z when it has none; X/Z/U* keeps the sequence
  with its UIDs replaced (its items are de-identified like everything else).
- Attributes the table does not list are kept. Private attributes are removed, or kept under
  Retain Safe Private when safe_private.py lists them. Group lengths are dropped (they would be
  wrong), and an overlay whose data is removed goes whole (60xx group), so no half overlay stays.
- Patient ID and Patient's Name become the project's pseudonyms of the original Patient ID.

Then Patient Identity Removed = YES, De-identification Method (+ Code Sequence, CID 7050) and
Longitudinal Temporal Information Modified are set, and the file meta is rebuilt around the new
SOP Instance UID.
"""

from __future__ import annotations

import io
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydicom import dcmread
from pydicom.dataelem import DataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.sequence import Sequence
from pydicom.tag import BaseTag, Tag
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian

from ...errors import MalformedError
from .burned_in import burned_in_reason
from .profile import Options, action_for, row_for
from .pseudonyms import Pseudonymizer, shift_da, shift_dt
from .safe_private import SAFE_CREATORS, is_safe

PATIENT_ID = Tag(0x0010, 0x0020)
PATIENT_NAME = Tag(0x0010, 0x0010)
DUMMY_TEXT = "ANONYMIZED"
DICOM_ROOT = "1.2.840.10008."
_DUMMY_BY_VR: dict[str, Any] = {
    "DA": "19000101", "DT": "19000101000000", "TM": "000000", "AS": "000Y",
    "DS": "0", "IS": "0", "US": 0, "SS": 0, "UL": 0, "SL": 0, "UV": 0, "SV": 0, "FL": 0.0, "FD": 0.0,
    "OB": b"\0\0", "OW": b"\0\0", "OD": b"\0" * 8, "OF": b"\0" * 4, "OL": b"\0" * 4, "OV": b"\0" * 8,
    "UN": b"\0\0", "AT": 0,
}
_BYTES_VRS = frozenset({"OB", "OW", "OD", "OF", "OL", "OV", "UN"})
_NUMBER_VRS = frozenset({"US", "SS", "UL", "SL", "UV", "SV", "FL", "FD", "AT"})
# De-identification Method (LO, 64 characters a value): who did it, then each option applied.
METHOD_NAME = "dicomvault, PS3.15 Annex E Table E.1-1"


@dataclass
class Result:
    """One object de-identified: its new identity, why it may carry burned-in text, its bytes."""

    sop_uid: str
    series_uid: str
    study_uid: str
    sop_class_uid: str
    burned_in: str | None
    data: bytes


@dataclass
class _Patient:
    original_id: str
    day_shift: int


@dataclass
class Mapping:
    """original -> pseudonym pairs met so far, by kind (uid, patient_id, date_shift_days)."""

    pairs: dict[tuple[str, str], str] = field(default_factory=dict)

    def add(self, kind: str, original: str, pseudonym: str) -> None:
        self.pairs[(kind, original)] = pseudonym

    def take(self) -> list[dict[str, str]]:
        out = [{"kind": k, "original": o, "pseudonym": p} for (k, o), p in self.pairs.items()]
        self.pairs.clear()
        return out


class Deidentifier:
    def __init__(self, project: str, secret: bytes, options: Options) -> None:
        self.project = project
        self.options = options
        self.pseudo = Pseudonymizer(project, secret)
        self.mapping = Mapping()

    # -- whole objects --

    def part10(self, data: bytes, *, where: str = "object") -> Result:
        """De-identifies a Part-10 file (or a bare dataset in implicit VR little endian).
        `where` names the object in errors (its original SOP Instance UID, a path)."""
        try:
            ds = dcmread(io.BytesIO(data), force=True)
        except (InvalidDicomError, ValueError, EOFError, OSError) as exc:
            raise MalformedError(f"{where}: cannot be read for de-identification: {exc}") from exc
        if not ds.get("SOPInstanceUID") or not ds.get("SOPClassUID"):
            raise MalformedError(f"{where}: no SOP Instance UID or SOP Class UID to de-identify")
        reason = burned_in_reason(ds)
        ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None) or _syntax_of(ds)
        buf = io.BytesIO()
        try:
            # Elements are decoded lazily: a value pydicom cannot decode or encode surfaces here.
            self.dataset(ds)
            meta = FileMetaDataset()
            meta.TransferSyntaxUID = ts
            meta.MediaStorageSOPClassUID = ds.get("SOPClassUID", "")
            meta.MediaStorageSOPInstanceUID = ds.get("SOPInstanceUID", "")
            ds.file_meta = meta
            ds.save_as(buf, enforce_file_format=True)
        except (ValueError, TypeError, KeyError, AttributeError, OverflowError, struct.error) as exc:
            raise MalformedError(f"{where}: cannot be de-identified: {type(exc).__name__}: {exc}") from exc
        return Result(sop_uid=str(ds.get("SOPInstanceUID", "")),
                      series_uid=str(ds.get("SeriesInstanceUID", "")),
                      study_uid=str(ds.get("StudyInstanceUID", "")),
                      sop_class_uid=str(ds.get("SOPClassUID", "")),
                      burned_in=reason, data=buf.getvalue())

    def dataset(self, ds: Dataset) -> None:
        """De-identifies `ds` in place (its file meta aside)."""
        original = str(ds.get("PatientID", "") or "").strip()
        if not original:
            # No patient ID: one pseudonym per study rather than one shared by every such patient.
            original = "study:" + str(ds.get("StudyInstanceUID", ""))
        patient = _Patient(original, self.pseudo.day_shift(original))
        self.mapping.add("patient_id", original, self.pseudo.patient_id(original))
        if "dates" in self.options.retain:
            self.mapping.add("date_shift_days", original, str(patient.day_shift))
        self._walk(ds, patient)
        ds.PatientID = self.pseudo.patient_id(original)
        ds.PatientName = self.pseudo.patient_name(original)
        ds.PatientIdentityRemoved = "YES"
        codes = self.options.codes()
        ds.DeidentificationMethod = [METHOD_NAME] + [meaning for _, meaning in codes]
        items = []
        for value, meaning in codes:
            item = Dataset()
            item.CodeValue = value
            item.CodingSchemeDesignator = "DCM"
            item.CodeMeaning = meaning
            items.append(item)
        ds.DeidentificationMethodCodeSequence = Sequence(items)
        ds.LongitudinalTemporalInformationModified = self.options.temporal()

    # -- attribute by attribute --

    def _walk(self, ds: Dataset, patient: _Patient) -> None:
        dropped_overlays: set[int] = set()
        for tag in list(ds.keys()):
            if tag not in ds:
                continue  # went with its overlay group
            if tag.element == 0 and tag.group != 0x0002:
                del ds[tag]
                continue
            if tag.is_private:
                self._private(ds, tag)
                continue
            elem = ds[tag]
            if tag in (PATIENT_ID, PATIENT_NAME):
                self._patient_element(ds, elem)
                continue
            row = row_for(int(tag))
            if row is None:
                self._into_items(elem, patient)
                continue
            code = action_for(row, self.options)
            if row.tag == "60xx3000" and code == "X":
                dropped_overlays.add(tag.group)
                continue
            self._apply(ds, elem, code, patient)
        for group in dropped_overlays:
            for tag in [t for t in ds.keys() if t.group == group]:
                del ds[tag]

    def _into_items(self, elem: DataElement, patient: _Patient) -> None:
        if elem.VR == "SQ" and elem.value:
            for item in elem.value:
                self._walk(item, patient)

    def _patient_element(self, ds: Dataset, elem: DataElement) -> None:
        # Nested identifiers (another patient in a sequence item) get their own pseudonym.
        own = str(ds.get("PatientID", "") or "").strip()
        if elem.tag == PATIENT_ID:
            if own:
                elem.value = self.pseudo.patient_id(own)
                self.mapping.add("patient_id", own, elem.value)
        elif own or elem.value:
            elem.value = self.pseudo.patient_name(own) if own else DUMMY_TEXT

    def _private(self, ds: Dataset, tag: BaseTag) -> None:
        if "private" in self.options.retain:
            if 0x10 <= tag.element <= 0xFF:  # a private creator: kept when it owns safe attributes
                if (str(ds[tag].value).strip(), tag.group) in SAFE_CREATORS:
                    return
            else:
                creator = ds.get(Tag(tag.group, tag.element >> 8))
                if creator is not None and is_safe(str(creator.value), tag.group, tag.element) \
                        and ds[tag].VR != "SQ":
                    return
        del ds[tag]

    def _apply(self, ds: Dataset, elem: DataElement, code: str, patient: _Patient) -> None:
        code = _resolve(code, elem)
        if elem.VR == "UN" and code in ("U", "C"):
            # A value of unknown VR (an attribute newer than pydicom's dictionary, in implicit VR)
            # cannot be given a UID or a shifted date of the right form: removed instead.
            code = "X"
        if code == "X":
            del ds[elem.tag]
        elif code == "Z":
            _empty(elem)
        elif elem.VR == "SQ":
            self._into_items(elem, patient)  # K, D, C, U* on a sequence: its items, cleaned
        elif code == "K":
            pass
        elif code == "U":
            self._map_values(elem, self._uid)
        elif code == "C" and elem.VR in ("DA", "DT", "TM"):
            self._shift(elem, patient)
        else:  # D, and C on anything but a date
            self._dummy(elem)

    def _uid(self, original: str) -> str:
        if original.startswith(DICOM_ROOT):
            # A well-known UID of the standard (the UTC synchronization frame of reference, a
            # standard frame of reference or palette): names no instance, and a replaced one
            # would lose its meaning.
            return original
        new = self.pseudo.uid(original)
        self.mapping.add("uid", original, new)
        return new

    def _map_values(self, elem: DataElement, fn: Callable[[str], str]) -> None:
        if elem.value in (None, ""):
            return
        if elem.VM > 1:
            elem.value = [fn(str(v)) for v in elem.value]
        else:
            elem.value = fn(str(elem.value))

    def _shift(self, elem: DataElement, patient: _Patient) -> None:
        if elem.VR == "TM" or elem.value in (None, ""):
            return
        shift = shift_da if elem.VR == "DA" else shift_dt
        values = list(elem.value) if elem.VM > 1 else [elem.value]
        moved = [shift(str(v), patient.day_shift) for v in values]
        if any(m is None for m in moved):  # not a full date: nothing to shift it by, so no value kept
            self._dummy(elem)
            return
        elem.value = moved if len(moved) > 1 else moved[0]

    def _dummy(self, elem: DataElement) -> None:
        vr = elem.VR
        if vr == "UI":
            tag = int(elem.tag)
            self._map_values(elem, lambda v: self.pseudo.dummy_uid(tag, v))
            if elem.value in (None, ""):
                elem.value = self.pseudo.dummy_uid(tag, "")
            return
        elem.value = _DUMMY_BY_VR.get(vr, DUMMY_TEXT)


def _syntax_of(ds: Dataset) -> str:
    """The transfer syntax a dataset without file meta was read in."""
    implicit, little = ds.original_encoding
    if implicit:
        return ImplicitVRLittleEndian
    return ExplicitVRLittleEndian if little or little is None else ExplicitVRBigEndian


def _resolve(code: str, elem: DataElement) -> str:
    if code == "X/Z":
        return "Z"
    if code in ("X/D", "Z/D", "X/Z/D"):
        if _has_value(elem):
            return "D"
        return "X" if code == "X/D" else "Z"
    if code == "X/Z/U*":
        return "K"  # the sequence stays; its UIDs are U rows of their own and get replaced
    return code


def _has_value(elem: DataElement) -> bool:
    v = elem.value
    return v not in (None, "", b"") and not (isinstance(v, list | Sequence) and len(v) == 0)


def _empty(elem: DataElement) -> None:
    if elem.VR == "SQ":
        elem.value = Sequence()
    elif elem.VR in _BYTES_VRS:
        elem.value = b""
    elif elem.VR in _NUMBER_VRS:
        elem.value = None
    else:
        elem.value = ""
