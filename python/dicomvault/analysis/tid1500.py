"""An analyzer's measurements as a DICOM Comprehensive 3D SR following PS3.16 TID 1500
"Measurement Report", written with highdicom:

  CONTAINER (126000, DCM, "Imaging Measurement Report")                       TID 1500
    language, observation context: a Device observer (TID 1004) named for the analyzer
    procedure reported (CID 100)
    Image Library: every source image                                          TID 1600
    Imaging Measurements
      per segment: Measurement Group, TID 1411 "Volumetric ROI Measurements":
        tracking identifier + UID, Referenced Segment (the SEG instance and segment number)
        with the source series, finding site (+ laterality), then the NUMs (TID 300) each with
        its algorithm identification (TID 4019)
      measurements of no single segment (both lungs together): TID 1501 group with its
        finding site

Concepts an analyzer names with a local code (scheme 99DVAULT, see concepts.py) are declared in
the Coding Scheme Identification Sequence."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import highdicom as hd
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from .. import __version__
from . import api
from .concepts import CT_UNSPECIFIED, LOCAL_SCHEME, LOCAL_SCHEME_NAME, from_tuple, unit

MANUFACTURER = "dicomvault"


@dataclass(frozen=True, slots=True)
class Group:
    """One measurement group. With `segment_number` it is a TID 1411 group on that segment of
    the SEG handed to `measurement_report`; without, a TID 1501 group."""

    tracking_id: str
    measurements: Sequence[api.Measurement]
    finding_site: Code | None = None
    laterality: Code | None = None
    segment_number: int | None = None


def _concept(m: api.Measurement) -> Code:
    # A measurement without a standard concept keeps its analyzer key as a local code.
    return from_tuple(m.concept) if m.concept else Code(m.key[:16], LOCAL_SCHEME, m.label)


def _group(g: Group, seg: Dataset | None, algo: hd.sr.AlgorithmIdentification) -> Dataset:
    tracking = hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=g.tracking_id)
    sites = [hd.sr.FindingSite(anatomic_location=g.finding_site, laterality=g.laterality)] \
        if g.finding_site is not None else None
    measurements = [hd.sr.Measurement(name=_concept(m), value=float(m.value), unit=unit(m.unit),
                                      algorithm_id=algo) for m in g.measurements]
    if g.segment_number is None:
        return hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=tracking, finding_sites=sites, measurements=measurements)
    if seg is None:
        raise ValueError(f"group {g.tracking_id!r} names segment {g.segment_number} but no SEG was given")
    segment = hd.sr.ReferencedSegment(
        sop_class_uid=seg.SOPClassUID, sop_instance_uid=seg.SOPInstanceUID, segment_number=g.segment_number,
        source_series=hd.sr.SourceSeriesForSegmentation(seg.ReferencedSeriesSequence[0].SeriesInstanceUID))
    return hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
        tracking_identifier=tracking, referenced_segment=segment, finding_sites=sites,
        measurements=measurements)


def _uses_local_scheme(items: Sequence[Dataset]) -> bool:
    for item in items:
        for seq in ("ConceptNameCodeSequence", "ConceptCodeSequence"):
            if any(c.CodingSchemeDesignator == LOCAL_SCHEME for c in item.get(seq, [])):
                return True
        if _uses_local_scheme(item.get("ContentSequence", [])):
            return True
    return False


def measurement_report(sources: Sequence[Dataset], groups: Sequence[Group], *, algorithm_name: str,
                       series_number: int, series_description: str, seg: Dataset | None = None,
                       procedure: Code = CT_UNSPECIFIED, series_uid: str | None = None,
                       instance_number: int = 1) -> Dataset:
    """The TID 1500 report of `groups`, measured on `sources` (one series) and `seg`."""
    if not sources or not groups:
        raise ValueError("a measurement report needs source images and at least one group")
    algo = hd.sr.AlgorithmIdentification(name=algorithm_name, version=__version__)
    device = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            # One observer UID per analyzer, the same in every report it writes.
            uid=generate_uid(entropy_srcs=["dicomvault analyzer", algorithm_name]),
            name=algorithm_name, manufacturer_name=MANUFACTURER, model_name=algorithm_name))
    report = hd.sr.MeasurementReport(
        observation_context=hd.sr.ObservationContext(observer_device_context=device),
        procedure_reported=procedure,
        imaging_measurements=[_group(g, seg, algo) for g in groups],
        referenced_images=list(sources))
    evidence = [*sources, *([seg] if seg is not None else [])]
    out = hd.sr.Comprehensive3DSR(
        evidence=evidence, content=report[0], series_instance_uid=series_uid or generate_uid(),
        series_number=series_number, sop_instance_uid=generate_uid(), instance_number=instance_number,
        manufacturer=MANUFACTURER, is_complete=True, is_final=False, is_verified=False)
    out.SeriesDescription = series_description[:64]
    if _uses_local_scheme(out.ContentSequence):
        scheme = Dataset()
        scheme.CodingSchemeDesignator = LOCAL_SCHEME
        scheme.CodingSchemeName = LOCAL_SCHEME_NAME
        scheme.CodingSchemeResponsibleOrganization = MANUFACTURER
        out.CodingSchemeIdentificationSequence = [scheme]
    return out
