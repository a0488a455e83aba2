"""The viewer's measurements as a DICOM Comprehensive SR (1.2.840.10008.5.1.4.1.1.88.33) following
PS3.16 TID 1500 "Measurement Report", written with pydicom alone.

Content tree (codes checked against PS3.16 as pydicom's code tables carry it, and against the
TID 1500 writers dcmqi/DCMTK and highdicom):

  CONTAINER (126000, DCM, "Imaging Measurement Report")               TID 1500 (Content Template)
    HAS CONCEPT MOD CODE  (121049, DCM, "Language of Content Item and Descendants")
                          = (en-US, RFC5646, "English (United States)")                  TID 1204
    HAS OBS CONTEXT CODE  (121005, DCM, "Observer Type") = (121006, DCM, "Person")  TID 1001/1002
    HAS OBS CONTEXT PNAME (121008, DCM, "Person Observer Name") = the user            TID 1003
    HAS CONCEPT MOD CODE  (121058, DCM, "Procedure reported") = CID 100, by modality
    CONTAINS CONTAINER    (111028, DCM, "Image Library")                                TID 1600
      CONTAINS CONTAINER  (126200, DCM, "Image Library Group")
        CONTAINS IMAGE    one per referenced image                                      TID 1601
    CONTAINS CONTAINER    (126010, DCM, "Imaging Measurements")
      -- length, angle: TID 1501 "Measurement and Qualitative Evaluation Group"
      CONTAINS CONTAINER  (125007, DCM, "Measurement Group")             (Content Template 1501)
        HAS OBS CONTEXT TEXT   (112039, DCM, "Tracking Identifier") = the label
        HAS OBS CONTEXT UIDREF (112040, DCM, "Tracking Unique Identifier")
        CONTAINS NUM  (410668003, SCT, "Length") mm | (1483009, SCT, "Angle") deg         TID 300
          INFERRED FROM SCOORD POLYLINE: 2 points | 3 points, the vertex second           TID 320
            SELECTED FROM IMAGE (121324, DCM, "Source image")
      -- ellipse, rectangle: TID 1410 "Planar ROI Measurements and Qualitative Evaluations"
      CONTAINS CONTAINER  (125007, DCM, "Measurement Group")             (Content Template 1410)
        HAS OBS CONTEXT TEXT / UIDREF  tracking identifier and UID, as above
        CONTAINS SCOORD (111030, DCM, "Image Region"): ELLIPSE (major axis end points, then
                 minor axis end points) | POLYLINE closed (the 4 corners, then the first again)
          SELECTED FROM IMAGE (121324, DCM, "Source image")
        CONTAINS NUM  (42798000, SCT, "Area") mm2                                        TID 1419
        CONTAINS NUM  <quantity> <unit>                                                  TID 1419
          HAS CONCEPT MOD CODE (121401, DCM, "Derivation") = (373098007, SCT, "Mean") |
                 (386136009, SCT, "Standard Deviation") | (255605001, SCT, "Minimum") |
                 (56851009, SCT, "Maximum")                                              CID 7464

Decisions:
* Mean, SD, min and max are not measurement concepts in the standard: CID 7464 lists them as
  "General Region of Interest Measurement Modifiers", and TID 1419 row 8 carries them as the
  Derivation of a NUM whose concept is the quantity measured (CID 7180/7469): (112031, DCM,
  "Attenuation Coefficient") for HU, (110852, DCM, "MR signal intensity") on MR, and so on (see
  `quantity_for`). This is how dcmqi (DCMTK's TID 1419 class) writes ROI statistics.
* Angle: (1483009, SCT, "Angle"), the SNOMED concept PS3.16 uses for a measured angle (CID
  12304). (110859, DCM, "Angle") exists too but means an image dimension (CID 7182).
* A line and an angle are not regions, so they are TID 1501 groups whose NUM is INFERRED FROM
  its SCOORD (TID 300); an ellipse or a rectangle is a region, so TID 1410 puts it once in the
  group as "Image Region" and every NUM of the group applies to it.
* Coordinates are PS3.3 C.18.6.1.1 image coordinates: (column, row), sub-pixel, the top left
  corner of the top left pixel at 0.0\\0.0 and the bottom right corner of the bottom right pixel
  at Columns\\Rows (so the centre of pixel (c, r), 0-based, is (c + 0.5, r + 0.5)); they must lie
  within 0..Columns, 0..Rows. The viewer uses the same convention.
* Values are written twice: Numeric Value (DS, 16 characters at most) and Floating Point Value
  (FD, exact), which readers prefer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import Any

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import PYDICOM_IMPLEMENTATION_UID, ExplicitVRLittleEndian, generate_uid
from pydicom.valuerep import format_number_as_ds

from .. import __version__
from ..filemeta import IMPLEMENTATION_VERSION_NAME

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
DCMR_UID = "1.2.840.10008.8.1.1"
# Viewers list series by Series Number. Modalities number their series from 1 (a few thousand
# at most, reformats included), so reports at 9000 and above sort after every image series of
# the study and do not collide with a modality's numbers; each new report takes the next one.
SERIES_NUMBER_BASE = 9000
SERIES_DESCRIPTION = "dicomvault measurements"
MANUFACTURER = "dicomvault"
KINDS = ("length", "angle", "ellipse", "rectangle")
VALUE_NAMES = ("length", "angle", "area", "mean", "sd", "min", "max")
MAX_LABEL = 64  # as Tracking ID (0062,0020), LO, so the label can follow into a SEG
MAX_MEASUREMENTS = 1000
HU = "[hnsf'U]"
# Relative tolerance of the geometric checks (perpendicular axes, right angles, shared centre):
# the viewer computes corners with cos/sin in float64, the SR stores them as float32.
GEOMETRY_TOLERANCE = 1e-3

PATIENT_STUDY_KEYWORDS = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
    "StudyTime", "AccessionNumber", "ReferringPhysicianName", "StudyID",
)


@dataclass(frozen=True)
class Code:
    value: str
    scheme: str
    meaning: str


IMAGING_MEASUREMENT_REPORT = Code("126000", "DCM", "Imaging Measurement Report")
LANGUAGE = Code("121049", "DCM", "Language of Content Item and Descendants")
ENGLISH_US = Code("en-US", "RFC5646", "English (United States)")
OBSERVER_TYPE = Code("121005", "DCM", "Observer Type")
PERSON = Code("121006", "DCM", "Person")
PERSON_OBSERVER_NAME = Code("121008", "DCM", "Person Observer Name")
PROCEDURE_REPORTED = Code("121058", "DCM", "Procedure reported")
IMAGE_LIBRARY = Code("111028", "DCM", "Image Library")
IMAGE_LIBRARY_GROUP = Code("126200", "DCM", "Image Library Group")
IMAGING_MEASUREMENTS = Code("126010", "DCM", "Imaging Measurements")
MEASUREMENT_GROUP = Code("125007", "DCM", "Measurement Group")
TRACKING_IDENTIFIER = Code("112039", "DCM", "Tracking Identifier")
TRACKING_UNIQUE_IDENTIFIER = Code("112040", "DCM", "Tracking Unique Identifier")
IMAGE_REGION = Code("111030", "DCM", "Image Region")
SOURCE_IMAGE = Code("121324", "DCM", "Source image")
DERIVATION = Code("121401", "DCM", "Derivation")

LENGTH = Code("410668003", "SCT", "Length")
ANGLE = Code("1483009", "SCT", "Angle")
AREA = Code("42798000", "SCT", "Area")
MEAN = Code("373098007", "SCT", "Mean")
STANDARD_DEVIATION = Code("386136009", "SCT", "Standard Deviation")
MINIMUM = Code("255605001", "SCT", "Minimum")
MAXIMUM = Code("56851009", "SCT", "Maximum")

GEOMETRY_CONCEPTS = {"length": LENGTH, "angle": ANGLE, "area": AREA}
GEOMETRY_UNITS = {"length": "mm", "angle": "deg", "area": "mm2"}
DERIVATIONS = {"mean": MEAN, "sd": STANDARD_DEVIATION, "min": MINIMUM, "max": MAXIMUM}
ALLOWED_VALUES = {
    "length": frozenset({"length"}),
    "angle": frozenset({"angle"}),
    "ellipse": frozenset({"area", "mean", "sd", "min", "max"}),
    "rectangle": frozenset({"area", "mean", "sd", "min", "max"}),
}
REQUIRED_VALUES = {"length": frozenset({"length"}), "angle": frozenset({"angle"})}
POINT_COUNTS = {"length": 2, "angle": 3, "ellipse": 4, "rectangle": 4}

# Quantities of ROI statistics (CID 7180), by unit first, then by modality.
ATTENUATION_COEFFICIENT = Code("112031", "DCM", "Attenuation Coefficient")
MR_SIGNAL_INTENSITY = Code("110852", "DCM", "MR signal intensity")
STANDARDIZED_UPTAKE_VALUE = Code("126400", "DCM", "Standardized Uptake Value")
NM_TOMOGRAPHIC_ACTIVITY = Code("110821", "DCM", "Nuclear Medicine Tomographic Activity")
ECHOGENICITY = Code("110849", "DCM", "Echogenicity")
# Stored pixel values of anything else (CR, DX, XA, SC...): PS3.16 has no general concept for
# them, so a private one, declared in the Coding Scheme Identification Sequence (PS3.3 C.12.1).
LOCAL_SCHEME = "99DVAULT"
PIXEL_VALUE = Code("pixel-value", LOCAL_SCHEME, "Pixel value")

# Procedure reported (CID 100 "Quantitative Diagnostic Imaging Procedures"), by modality.
PROCEDURES = {
    "CT": Code("25045-6", "LN", "CT unspecified body region"),
    "MR": Code("25056-3", "LN", "MRI unspecified body region"),
    "PT": Code("44136-0", "LN", "PET unspecified body region"),
    "NM": Code("49118-3", "LN", "NM unspecified body region"),
    "CR": Code("43468-8", "LN", "XR unspecified body region"),
    "DX": Code("43468-8", "LN", "XR unspecified body region"),
}
IMAGING_PROCEDURE = Code("363679005", "SCT", "Imaging procedure")

UNIT_MEANINGS = {
    "mm": "millimeter", "deg": "degree", "mm2": "square millimeter", HU: "Hounsfield unit",
    "1": "no units", "%": "Percent", "g/ml{SUVbw}": "Standardized Uptake Value body weight",
    "Bq/ml": "Becquerels/milliliter", "{counts}": "Counts",
}
UNIT_ALIASES = {"HU": HU}


class MeasurementError(ValueError):
    """A measurement the report cannot hold as given; `index` is its place in the list (None
    when the problem is not one measurement's)."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


@dataclass(frozen=True)
class ImageRef:
    """The image (and frame) a measurement was drawn on, with what the index knows of it:
    `number_of_frames` decides whether the reference names a frame, `rows`/`columns` bound the
    coordinates, `modality` picks the quantity of ROI statistics."""

    sop_instance_uid: str
    sop_class_uid: str
    series_uid: str
    frame: int = 1
    number_of_frames: int = 1
    rows: int | None = None
    columns: int | None = None
    modality: str = ""


@dataclass(frozen=True)
class Value:
    name: str  # one of VALUE_NAMES
    value: float
    unit: str  # UCUM ("HU" is taken for [hnsf'U])


@dataclass(frozen=True)
class Measurement:
    kind: str  # one of KINDS
    image: ImageRef
    points: tuple[tuple[float, float], ...]  # (column, row), see the module docstring
    values: tuple[Value, ...] = ()
    label: str | None = None


# -- checks ---------------------------------------------------------------------------------------


def ucum(unit: str) -> str:
    """The UCUM code written for a unit as the viewer names it ("HU" -> "[hnsf'U]")."""
    return UNIT_ALIASES.get(unit, unit)


def _check_unit(unit: Any) -> str:
    if not isinstance(unit, str) or not unit:
        raise MeasurementError("a unit must be a non-empty string")
    code = ucum(unit)
    # Code Value is SH: 16 characters, no backslash, no control characters.
    if len(code) > 16 or any(ch.isspace() or ch == "\\" or not ch.isprintable() or ord(ch) > 126
                             for ch in code):
        raise MeasurementError(f"unit {unit!r} is not a UCUM code of at most 16 printable characters")
    return code


def _finite(x: Any, what: str) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float):
        raise MeasurementError(f"{what} must be a number, got {x!r}")
    f = float(x)
    if not math.isfinite(f):
        raise MeasurementError(f"{what} must be finite, got {x!r}")
    return f


def check_label(label: Any) -> str | None:
    if label is None or label == "":
        return None
    if not isinstance(label, str):
        raise MeasurementError(f"label must be a string, got {type(label).__name__}")
    if len(label) > MAX_LABEL:
        raise MeasurementError(f"label is {len(label)} characters long; at most {MAX_LABEL}")
    if any(not ch.isprintable() for ch in label) or not label.strip():
        raise MeasurementError(f"label {label!r} holds control characters or only spaces")
    return label


def _sub(a: tuple[float, float], b: tuple[float, float]) -> tuple[float, float]:
    return (a[0] - b[0], a[1] - b[1])


def _dot(u: tuple[float, float], v: tuple[float, float]) -> float:
    return u[0] * v[0] + u[1] * v[1]


def _norm(u: tuple[float, float]) -> float:
    return math.hypot(u[0], u[1])


def _perpendicular(u: tuple[float, float], v: tuple[float, float]) -> bool:
    return abs(_dot(u, v)) <= GEOMETRY_TOLERANCE * _norm(u) * _norm(v)


def graphic_points(m: Measurement) -> tuple[str, list[tuple[float, float]]]:
    """(Graphic Type, the points written) of a checked measurement: a rectangle is closed by
    repeating its first corner; an ellipse gets its longer axis first, as C.18.6.1.2 asks."""
    pts = list(m.points)
    if m.kind == "ellipse":
        if _norm(_sub(pts[3], pts[2])) > _norm(_sub(pts[1], pts[0])):
            pts = [pts[2], pts[3], pts[0], pts[1]]
        return "ELLIPSE", pts
    if m.kind == "rectangle":
        return "POLYLINE", [*pts, pts[0]]
    return "POLYLINE", pts


def check_measurement(m: Measurement) -> None:
    """Raises MeasurementError (without index) naming what is wrong with `m`."""
    if m.kind not in KINDS:
        raise MeasurementError(f"kind {m.kind!r} is not one of {', '.join(KINDS)}")
    img = m.image
    if not img.sop_instance_uid or not img.sop_class_uid or not img.series_uid:
        raise MeasurementError("image needs its series, instance and SOP class UIDs")
    if isinstance(img.frame, bool) or not isinstance(img.frame, int) or img.frame < 1:
        raise MeasurementError(f"image frame must be an integer from 1, got {img.frame!r}")
    if img.frame > max(1, img.number_of_frames):
        raise MeasurementError(f"image {img.sop_instance_uid} has {max(1, img.number_of_frames)} frame(s); "
                               f"there is no frame {img.frame}")
    want = POINT_COUNTS[m.kind]
    if len(m.points) != want:
        raise MeasurementError(f"a {m.kind} needs {want} points, got {len(m.points)}")
    pts = [(_finite(p[0], "a column"), _finite(p[1], "a row")) for p in m.points]
    for c, r in pts:
        if c < 0 or r < 0 or (img.columns is not None and c > img.columns) or (
                img.rows is not None and r > img.rows):
            size = f"0..{img.columns} x 0..{img.rows}" if img.columns is not None else "non-negative"
            raise MeasurementError(f"point ({c:g}, {r:g}) is outside the image ({size}: column, row with "
                                   "0,0 the top left corner of the top left pixel)")
    _check_shape(m.kind, pts)
    names = [v.name for v in m.values]
    for v in m.values:
        if v.name not in VALUE_NAMES:
            raise MeasurementError(f"value name {v.name!r} is not one of {', '.join(VALUE_NAMES)}")
        if v.name not in ALLOWED_VALUES[m.kind]:
            raise MeasurementError(f"a {m.kind} has no {v.name!r} value; it takes "
                                   f"{', '.join(sorted(ALLOWED_VALUES[m.kind]))}")
        if names.count(v.name) > 1:
            raise MeasurementError(f"value {v.name!r} is given twice")
        x = _finite(v.value, f"value {v.name!r}")
        unit = _check_unit(v.unit)
        if v.name in GEOMETRY_UNITS and unit != GEOMETRY_UNITS[v.name]:
            raise MeasurementError(f"{v.name} is in {GEOMETRY_UNITS[v.name]}, not {v.unit!r}")
        if v.name in ("length", "area", "sd") and x < 0:
            raise MeasurementError(f"{v.name} {x:g} is negative")
        if v.name == "angle" and not 0 <= x <= 360:
            raise MeasurementError(f"angle {x:g} is not within 0..360 degrees")
    missing = REQUIRED_VALUES.get(m.kind, frozenset()) - set(names)
    if missing:
        raise MeasurementError(f"a {m.kind} needs its {', '.join(sorted(missing))} value")
    got = {v.name: float(v.value) for v in m.values}
    if "min" in got and "max" in got:
        lo, hi = got["min"], got["max"]
        slack = 1e-9 * max(1.0, abs(lo), abs(hi))
        if lo > hi + slack or ("mean" in got and not lo - slack <= got["mean"] <= hi + slack):
            raise MeasurementError(f"min {lo:g}, mean {got.get('mean', lo):g}, max {hi:g} are inconsistent")


def _check_shape(kind: str, pts: list[tuple[float, float]]) -> None:
    if kind == "length":
        if pts[0] == pts[1]:
            raise MeasurementError("the two end points of a length coincide")
    elif kind == "angle":
        if pts[0] == pts[1] or pts[2] == pts[1]:
            raise MeasurementError("an arm of the angle has no length (points: arm end, vertex, arm end)")
    elif kind == "ellipse":
        a, b = _sub(pts[1], pts[0]), _sub(pts[3], pts[2])
        la, lb = _norm(a), _norm(b)
        if la == 0 or lb == 0:
            raise MeasurementError("an ellipse axis has no length (points: one axis's end points, then "
                                   "the other's)")
        ca = ((pts[0][0] + pts[1][0]) / 2, (pts[0][1] + pts[1][1]) / 2)
        cb = ((pts[2][0] + pts[3][0]) / 2, (pts[2][1] + pts[3][1]) / 2)
        if _norm(_sub(ca, cb)) > GEOMETRY_TOLERANCE * max(la, lb, 1.0) or not _perpendicular(a, b):
            raise MeasurementError("the ellipse axes must be perpendicular and share their midpoint "
                                   "(points: one axis's end points, then the other's)")
    elif kind == "rectangle":
        for i in range(4):
            u, v = _sub(pts[i - 1], pts[i]), _sub(pts[(i + 1) % 4], pts[i])
            if _norm(u) == 0 or _norm(v) == 0 or not _perpendicular(u, v):
                raise MeasurementError("the rectangle's 4 corners must be given in order around it, "
                                       "with right angles and no repeated corner")


# -- content items --------------------------------------------------------------------------------


def _code(c: Code) -> Dataset:
    ds = Dataset()
    ds.CodeValue = c.value
    ds.CodingSchemeDesignator = c.scheme
    ds.CodeMeaning = c.meaning
    return ds


def _item(relationship: str | None, value_type: str, name: Code | None = None) -> Dataset:
    ds = Dataset()
    if relationship is not None:
        ds.RelationshipType = relationship
    ds.ValueType = value_type
    if name is not None:
        ds.ConceptNameCodeSequence = [_code(name)]
    return ds


def _container(relationship: str | None, name: Code, children: list[Dataset],
               template: str | None = None) -> Dataset:
    ds = _item(relationship, "CONTAINER", name)
    ds.ContinuityOfContent = "SEPARATE"
    if template is not None:
        t = Dataset()
        t.MappingResource = "DCMR"
        t.MappingResourceUID = DCMR_UID
        t.TemplateIdentifier = template
        ds.ContentTemplateSequence = [t]
    ds.ContentSequence = children
    return ds


def _code_item(relationship: str, name: Code, value: Code) -> Dataset:
    ds = _item(relationship, "CODE", name)
    ds.ConceptCodeSequence = [_code(value)]
    return ds


def _text_item(relationship: str, name: Code, text: str) -> Dataset:
    ds = _item(relationship, "TEXT", name)
    ds.TextValue = text
    return ds


def _uidref_item(relationship: str, name: Code, uid: str) -> Dataset:
    ds = _item(relationship, "UIDREF", name)
    ds.UID = uid
    return ds


def _image_item(relationship: str, name: Code | None, img: ImageRef, *, with_frame: bool = True) -> Dataset:
    ds = _item(relationship, "IMAGE", name)
    ref = Dataset()
    ref.ReferencedSOPClassUID = img.sop_class_uid
    ref.ReferencedSOPInstanceUID = img.sop_instance_uid
    if with_frame and img.number_of_frames > 1:
        ref.ReferencedFrameNumber = img.frame
    ds.ReferencedSOPSequence = [ref]
    return ds


def _scoord_item(relationship: str, name: Code | None, m: Measurement) -> Dataset:
    graphic_type, pts = graphic_points(m)
    ds = _item(relationship, "SCOORD", name)
    ds.GraphicType = graphic_type
    ds.GraphicData = [float(x) for p in pts for x in p]
    ds.ContentSequence = [_image_item("SELECTED FROM", SOURCE_IMAGE, m.image)]
    return ds


def unit_code(unit: str) -> Code:
    code = ucum(unit)
    return Code(code, "UCUM", UNIT_MEANINGS.get(code, code))


def _num_item(name: Code, value: float, unit: str, children: list[Dataset]) -> Dataset:
    ds = _item("CONTAINS", "NUM", name)
    mv = Dataset()
    mv.MeasurementUnitsCodeSequence = [_code(unit_code(unit))]
    mv.NumericValue = format_number_as_ds(float(value))
    mv.FloatingPointValue = float(value)
    ds.MeasuredValueSequence = [mv]
    if children:
        ds.ContentSequence = children
    return ds


def quantity_for(unit: str, modality: str) -> Code:
    """The concept of an ROI statistic's NUM (TID 1419 row 5; CID 7180): what was measured."""
    code = ucum(unit)
    if code == HU:
        return ATTENUATION_COEFFICIENT
    if modality == "MR":
        return MR_SIGNAL_INTENSITY
    if modality in ("PT", "NM"):
        return STANDARDIZED_UPTAKE_VALUE if "SUV" in code else NM_TOMOGRAPHIC_ACTIVITY
    if modality == "US":
        return ECHOGENICITY
    return PIXEL_VALUE


def _group(m: Measurement, label: str, tracking_uid: str) -> Dataset:
    children = [
        _text_item("HAS OBS CONTEXT", TRACKING_IDENTIFIER, label),
        _uidref_item("HAS OBS CONTEXT", TRACKING_UNIQUE_IDENTIFIER, tracking_uid),
    ]
    if m.kind in ("length", "angle"):
        for v in m.values:
            children.append(_num_item(GEOMETRY_CONCEPTS[v.name], v.value, v.unit,
                                      [_scoord_item("INFERRED FROM", None, m)]))
        return _container("CONTAINS", MEASUREMENT_GROUP, children, template="1501")
    children.append(_scoord_item("CONTAINS", IMAGE_REGION, m))
    for v in m.values:
        if v.name in GEOMETRY_CONCEPTS:
            children.append(_num_item(GEOMETRY_CONCEPTS[v.name], v.value, v.unit, []))
        else:
            children.append(_num_item(quantity_for(v.unit, m.image.modality), v.value, v.unit,
                                      [_code_item("HAS CONCEPT MOD", DERIVATION, DERIVATIONS[v.name])]))
    return _container("CONTAINS", MEASUREMENT_GROUP, children, template="1410")


def _person_name(author: str) -> str:
    name = "".join(ch for ch in author if ch.isprintable()).replace("\\", "/").strip()
    if not name:
        raise MeasurementError("the report needs an author (the user's name)")
    return name[:64]


def _study_value(study: Mapping[str, Any] | Dataset, keyword: str) -> str:
    value = study.get(keyword, "")
    return "" if value is None else str(value)


def default_label(kind: str, index: int) -> str:
    return f"{kind.capitalize()} {index + 1}"


# -- the document ---------------------------------------------------------------------------------


def measurement_report(
    study: Mapping[str, Any] | Dataset,
    measurements: Sequence[Measurement],
    *,
    author: str,
    series_uid: str | None = None,
    sop_instance_uid: str | None = None,
    series_number: int = SERIES_NUMBER_BASE,
    instance_number: int = 1,
    now: datetime | None = None,
) -> Dataset:
    """The Comprehensive SR (TID 1500) of `measurements`, all on images of `study`.

    `study`: the patient and study attributes (keywords of PATIENT_STUDY_KEYWORDS) as the index
    keeps them (a StudyRecord's or an InstanceRecord's `attrs`) or as a referenced instance
    holds them (a pydicom Dataset); StudyInstanceUID is required. `author`: the user, written as
    the Person Observer. The result has file meta (explicit VR little endian): `to_part10` gives
    its bytes. Raises MeasurementError (with `.index`) for a measurement it cannot write.
    """
    study_uid = _study_value(study, "StudyInstanceUID")
    if not study_uid:
        raise MeasurementError("the study attributes hold no StudyInstanceUID")
    if not measurements:
        raise MeasurementError("a report needs at least one measurement")
    if len(measurements) > MAX_MEASUREMENTS:
        raise MeasurementError(f"{len(measurements)} measurements; at most {MAX_MEASUREMENTS} per report")
    labels = []
    for i, m in enumerate(measurements):
        try:
            check_measurement(m)
            labels.append(check_label(m.label) or default_label(m.kind, i))
        except MeasurementError as exc:
            raise MeasurementError(f"measurement {i}: {exc}", i) from None
    observer = _person_name(author)
    now = now or datetime.now().astimezone()
    date, time = now.strftime("%Y%m%d"), now.strftime("%H%M%S")
    series_uid = series_uid or generate_uid(prefix=None)
    sop_uid = sop_instance_uid or generate_uid(prefix=None)

    ds = Dataset()
    ds.SpecificCharacterSet = "ISO_IR 192"
    ds.SOPClassUID = COMPREHENSIVE_SR
    ds.SOPInstanceUID = sop_uid
    ds.InstanceCreationDate, ds.InstanceCreationTime = date, time
    if now.utcoffset() is not None:
        ds.TimezoneOffsetFromUTC = now.strftime("%z")
    # Patient, General Study
    for kw in PATIENT_STUDY_KEYWORDS:
        setattr(ds, kw, _study_value(study, kw))
    # SR Document Series, General Equipment
    ds.Modality = "SR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = SERIES_DESCRIPTION
    ds.SeriesDate, ds.SeriesTime = date, time
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.Manufacturer = MANUFACTURER
    ds.ManufacturerModelName = MANUFACTURER
    ds.SoftwareVersions = __version__
    # SR Document General
    ds.InstanceNumber = instance_number
    ds.CompletionFlag = "COMPLETE"
    # Saved measurements, not a signed report: nobody attests them (PS3.3 C.17.2.1).
    ds.VerificationFlag = "UNVERIFIED"
    ds.ContentDate, ds.ContentTime = date, time
    ds.PerformedProcedureCodeSequence = []
    ds.CurrentRequestedProcedureEvidenceSequence = [_evidence(study_uid, measurements)]

    images = _distinct_images(measurements)
    modalities = list(dict.fromkeys(img.modality for img in images))
    procedures = list(dict.fromkeys(PROCEDURES.get(mod, IMAGING_PROCEDURE) for mod in modalities))
    groups = [_group(m, labels[i], generate_uid(prefix=None)) for i, m in enumerate(measurements)]
    library = _container("CONTAINS", IMAGE_LIBRARY, [
        _container("CONTAINS", IMAGE_LIBRARY_GROUP,
                   [_image_item("CONTAINS", None, img, with_frame=False) for img in images])])
    root = _container(None, IMAGING_MEASUREMENT_REPORT, [
        _code_item("HAS CONCEPT MOD", LANGUAGE, ENGLISH_US),
        _code_item("HAS OBS CONTEXT", OBSERVER_TYPE, PERSON),
        _person_item(observer),
        *[_code_item("HAS CONCEPT MOD", PROCEDURE_REPORTED, p) for p in procedures],
        library,
        _container("CONTAINS", IMAGING_MEASUREMENTS, groups),
    ], template="1500")
    for kw in ("ValueType", "ConceptNameCodeSequence", "ContinuityOfContent", "ContentTemplateSequence",
               "ContentSequence"):
        setattr(ds, kw, getattr(root, kw))
    if _uses_local_codes(ds):
        scheme = Dataset()
        scheme.CodingSchemeDesignator = LOCAL_SCHEME
        scheme.CodingSchemeName = "dicomvault local codes"
        scheme.CodingSchemeResponsibleOrganization = "dicomvault"
        ds.CodingSchemeIdentificationSequence = [scheme]

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = COMPREHENSIVE_SR
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
    meta.ImplementationVersionName = IMPLEMENTATION_VERSION_NAME
    ds.file_meta = meta
    return ds


def _person_item(name: str) -> Dataset:
    ds = _item("HAS OBS CONTEXT", "PNAME", PERSON_OBSERVER_NAME)
    ds.PersonName = name
    return ds


def _distinct_images(measurements: Sequence[Measurement]) -> list[ImageRef]:
    seen: dict[str, ImageRef] = {}
    for m in measurements:
        seen.setdefault(m.image.sop_instance_uid, m.image)
    return list(seen.values())


def _evidence(study_uid: str, measurements: Sequence[Measurement]) -> Dataset:
    """Hierarchical SOP Instance Reference Macro (PS3.3 Table C.17-3) of every referenced image."""
    by_series: dict[str, list[ImageRef]] = {}
    for img in _distinct_images(measurements):
        by_series.setdefault(img.series_uid, []).append(img)
    series_items = []
    for series_uid, imgs in by_series.items():
        s = Dataset()
        s.SeriesInstanceUID = series_uid
        refs = []
        for img in imgs:
            r = Dataset()
            r.ReferencedSOPClassUID = img.sop_class_uid
            r.ReferencedSOPInstanceUID = img.sop_instance_uid
            refs.append(r)
        s.ReferencedSOPSequence = refs
        series_items.append(s)
    ev = Dataset()
    ev.StudyInstanceUID = study_uid
    ev.ReferencedSeriesSequence = series_items
    return ev


def _uses_local_codes(ds: Dataset) -> bool:
    def walk(items: Any) -> bool:
        for item in items or []:
            for seq in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
                if any(c.CodingSchemeDesignator == LOCAL_SCHEME for c in item.get(seq, [])):
                    return True
            if walk(item.get("ContentSequence")):
                return True
        return False

    return walk(ds.ContentSequence)


def to_part10(ds: Dataset) -> bytes:
    """The report as a Part-10 file (preamble, file meta, explicit VR little endian dataset)."""
    buf = BytesIO()
    dcmwrite(buf, ds, enforce_file_format=True)
    return buf.getvalue()
