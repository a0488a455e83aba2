"""A model's masks as a DICOM Segmentation (binary, one segment per label) over the source
images, written with highdicom: a new series in the analysed study that references the images it
was computed on and leaves them untouched.

Shareable with the CT chest analyzer's writer: everything here but the algorithm identification
takes plain masks, labels and codes (see `segmentation`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import generate_uid

from .. import __version__
from .api import Code

MANUFACTURER = "dicomvault"


@dataclass(frozen=True, slots=True)
class Segment:
    label: str
    category: Code
    type: Code


def _concept(code: Code) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(value=code[0], scheme_designator=code[1], meaning=code[2])


def segmentation(source: Sequence[Dataset], masks: np.ndarray, segments: Sequence[Segment], *,
                 algorithm: str, algorithm_version: str, series_number: int,
                 series_description: str, manufacturer_model: str) -> Dataset:
    """A binary SEG of ``masks`` (bool [frames, rows, cols, segments], frames in the order of
    ``source``, single-frame images of one series); segments with no voxel are left out, and the
    caller must not ask for a SEG with no voxel at all (highdicom cannot write one)."""
    algo = hd.AlgorithmIdentificationSequence(
        name=algorithm[:64], family=codes.cid7162.ArtificialIntelligence, version=algorithm_version[:64])
    keep = [i for i in range(masks.shape[-1]) if masks[..., i].any()]
    if not keep:
        raise ValueError(f"series {source[0].SeriesInstanceUID}: no segment has a voxel; no SEG to write")
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=n, segment_label=segments[i].label[:64],
            segmented_property_category=_concept(segments[i].category),
            segmented_property_type=_concept(segments[i].type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=algo)
        for n, i in enumerate(keep, start=1)
    ]
    seg = hd.seg.Segmentation(
        source_images=list(source),
        pixel_array=masks[..., keep].astype(np.uint8),
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=generate_uid(),
        series_number=series_number,
        sop_instance_uid=generate_uid(),
        instance_number=1,
        manufacturer=MANUFACTURER,
        manufacturer_model_name=manufacturer_model[:64],
        software_versions=__version__,
        device_serial_number="0",
        content_label="MODEL",
        content_description=series_description[:64],
    )
    seg.SeriesDescription = series_description[:64]
    return seg
