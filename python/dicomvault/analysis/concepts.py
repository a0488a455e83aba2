"""Coded concepts the built-in analyzers write into their SR and SEG objects, with where each
comes from. Codes are checked against PS3.16 as pydicom's code dictionary carries it
(`pydicom.sr.codedict.codes`), and against what dcmqi and highdicom write for lung segments.

* Lung: (39607008, SCT, "Lung") with the laterality modifier (272741003, SCT, "Laterality") =
  (7771000, SCT, "Left") | (24028007, SCT, "Right") (CID 244). PS3.16 lists "Lung" in CID 7151
  "Segmentation Property Types" and CID 4 "Anatomic Region" but no separate "Left lung"
  concept, so the side is the modifier: Segmented Property Type Modifier in the SEG (PS3.3
  C.8.20.2), the Laterality of the Finding Site in the SR (TID 1419 row 2).
* Segment category: (91723000, SCT, "Anatomical Structure") (CID 7150).
* Volume: (118565006, SCT, "Volume") (CID 7469 "Generic Intensity and Size Measurements"),
  UCUM "mL" (CID 7462 lists mL for volumes).
* Emphysema index: PS3.16 has no concept for "percentage of lung volume below -950 HU" (its
  quantitative lung measurements stop at attenuation statistics, CID 6141), so it is a local
  code of the private scheme 99DVAULT, declared in the SR's Coding Scheme Identification
  Sequence (PS3.3 C.12.1.1.3.1), in UCUM "%".
"""

from __future__ import annotations

from pydicom.sr.coding import Code

from .api import Code as CodeTuple

LOCAL_SCHEME = "99DVAULT"
LOCAL_SCHEME_NAME = "dicomvault local codes"

LUNG = Code("39607008", "SCT", "Lung")
LATERALITY = Code("272741003", "SCT", "Laterality")
LEFT = Code("7771000", "SCT", "Left")
RIGHT = Code("24028007", "SCT", "Right")
ANATOMICAL_STRUCTURE = Code("91723000", "SCT", "Anatomical Structure")
VOLUME = Code("118565006", "SCT", "Volume")
EMPHYSEMA_INDEX = Code("LAA-950", LOCAL_SCHEME, "Lung volume percentage below -950 HU")
CT_UNSPECIFIED = Code("25045-6", "LN", "CT unspecified body region")  # CID 100, as sr.py writes it

UNITS = {"mL": Code("mL", "UCUM", "milliliter"), "%": Code("%", "UCUM", "Percent"),
         "1": Code("1", "UCUM", "no units"), "mm": Code("mm", "UCUM", "millimeter")}


def as_tuple(code: Code) -> CodeTuple:
    """The analysis contract's form of a code (value, scheme, meaning)."""
    return (code.value, code.scheme_designator, code.meaning)


def from_tuple(code: CodeTuple) -> Code:
    return Code(code[0], code[1], code[2])


def unit(ucum: str) -> Code:
    return UNITS.get(ucum, Code(ucum, "UCUM", ucum))
