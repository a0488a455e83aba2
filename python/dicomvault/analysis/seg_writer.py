"""Binary DICOM Segmentation (PS3.3 A.51) of masks computed on a series, written with highdicom:
one frame per source slice a segment covers, each frame naming its source image (Derivation
Image Sequence), so a viewer overlays it on the images it came from."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from .. import __version__

MANUFACTURER = "dicomvault"


class SegError(ValueError):
    """The masks cannot be written as a SEG of the given series; the message names the series."""


@dataclass(frozen=True, slots=True)
class Segment:
    """One segment: `mask[z, y, x]` is aligned with the `sources` handed to `binary_seg` (mask
    slice k lies on sources[k])."""

    label: str
    category: Code
    property_type: Code
    mask: np.ndarray
    modifier: Code | None = None  # e.g. the laterality of a paired organ
    rgb: tuple[int, int, int] | None = None


# Algorithm Family (CID 7162 "Algorithm Families"): thresholds, connected components and
# morphology, not a trained model.
MORPHOLOGICAL_OPERATIONS = codes.cid7162.MorphologicalOperations


def algorithm(name: str, family: Code = MORPHOLOGICAL_OPERATIONS,
              version: str = __version__) -> hd.AlgorithmIdentificationSequence:
    return hd.AlgorithmIdentificationSequence(name=name, family=family, version=version)


def _description(number: int, seg: Segment,
                 algo: hd.AlgorithmIdentificationSequence) -> hd.seg.SegmentDescription:
    desc = hd.seg.SegmentDescription(
        segment_number=number, segment_label=seg.label, segmented_property_category=seg.category,
        segmented_property_type=seg.property_type, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algo, tracking_uid=generate_uid(), tracking_id=seg.label,
        display_color=hd.color.CIELabColor.from_rgb(*(c / 255.0 for c in seg.rgb)) if seg.rgb else None)
    if seg.modifier is not None:
        # PS3.3 C.8.20.2: the modifier sits inside the property type's code item.
        desc.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept.from_code(seg.modifier)]
    return desc


def binary_seg(sources: Sequence[Dataset], segments: Sequence[Segment], *, algorithm_name: str,
               series_number: int, series_description: str,
               algorithm_family: Code = MORPHOLOGICAL_OPERATIONS, series_uid: str | None = None,
               instance_number: int = 1, extra: Mapping[str, object] | None = None) -> Dataset:
    """The SEG of `segments` on `sources` (single-frame images of one series, in mask order).
    Raises SegError when a mask does not match the sources or every mask is empty."""
    if not sources or not segments:
        raise SegError("a SEG needs source images and at least one segment")
    series = sources[0].get("SeriesInstanceUID", "?")
    shape = (len(sources), int(sources[0].Rows), int(sources[0].Columns))
    for seg in segments:
        if seg.mask.shape != shape:
            raise SegError(f"series {series}: mask of {seg.label!r} is {seg.mask.shape}, the images {shape}")
    if not any(seg.mask.any() for seg in segments):
        raise SegError(f"series {series}: every segment is empty")
    algo = algorithm(algorithm_name, algorithm_family)
    # Segments that do not overlap go in as one label map (segment number per voxel), which
    # highdicom checks far faster than a stack of binary masks (segment axis last).
    pixels = np.zeros(shape, dtype=np.uint8 if len(segments) < 256 else np.uint16)
    overlap = False
    for number, seg in enumerate(segments, start=1):
        overlap = overlap or bool(np.any(pixels[seg.mask]))
        pixels[seg.mask] = number
    if overlap:
        pixels = np.stack([seg.mask for seg in segments], axis=-1).astype(np.uint8)
    out = hd.seg.Segmentation(
        source_images=list(sources), pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[_description(i, seg, algo) for i, seg in enumerate(segments, start=1)],
        series_instance_uid=series_uid or generate_uid(), series_number=series_number,
        sop_instance_uid=generate_uid(), instance_number=instance_number, manufacturer=MANUFACTURER,
        manufacturer_model_name=algorithm_name, software_versions=__version__,
        device_serial_number="0", content_description=series_description[:64],
        content_label="SEGMENTATION", omit_empty_frames=True)
    out.SeriesDescription = series_description[:64]
    for keyword, value in (extra or {}).items():
        setattr(out, keyword, value)
    return out
