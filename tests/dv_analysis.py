"""Test data of the analysis results tests (tests/analysis/test_results*.py,
tests/viewer/test_analysis_viewer.py): a small CT series with a bright block in it, a SEG of that
block written by highdicom, a TID 1500 SR of its volume, and the analysis Result an analyzer
would return for them. The pipeline that produces such results in production is built
elsewhere; these tests write them through `results.record` as the pipeline does."""

from __future__ import annotations

from dataclasses import dataclass, field

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomvault.analysis.api import URGENT, WARNING, Flag, Measurement, Result

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
SIZE = 64
# The block the SEG marks: slices, rows, columns (numpy slices of the volume).
BLOCK = (slice(2, 5), slice(20, 40), slice(10, 30))
BLOCK_HU, BACKGROUND_HU = 60, -800


@dataclass
class Study:
    study_uid: str
    patient_id: str
    study_date: str
    ct: list[Dataset]
    seg: Dataset | None = None
    sr: Dataset | None = None
    extra: list[Dataset] = field(default_factory=list)

    @property
    def ct_series(self) -> str:
        return str(self.ct[0].SeriesInstanceUID)

    def objects(self) -> list[Dataset]:
        return [*self.ct, *(o for o in (self.seg, self.sr) if o is not None), *self.extra]

    def stored(self) -> list[tuple[str, str, str]]:
        """(SOP instance UID, series UID, SOP class UID) of the analysis objects."""
        return [(str(o.SOPInstanceUID), str(o.SeriesInstanceUID), str(o.SOPClassUID))
                for o in (self.seg, self.sr) if o is not None]


def ct_series(*, patient_id: str, patient_name: str, study_date: str, slices: int = 6,
              study_uid: str | None = None) -> list[Dataset]:
    """`slices` CT images of SIZE x SIZE, 1 mm pixels, 2 mm apart, -800 HU with a 60 HU block
    (BLOCK); stored values HU + 1024."""
    study = study_uid or generate_uid()
    series, frame = generate_uid(), generate_uid()
    vol = np.full((slices, SIZE, SIZE), BACKGROUND_HU, np.int32)
    vol[BLOCK] = BLOCK_HU
    out = []
    for k in range(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID, ds.SOPInstanceUID = CT_IMAGE, generate_uid()
        ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientName, ds.PatientID = patient_name, patient_id
        ds.PatientBirthDate, ds.PatientSex = "19600101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
        ds.StudyDate, ds.StudyTime, ds.StudyID = study_date, "101500", "1"
        ds.AccessionNumber, ds.ReferringPhysicianName = "ACC" + study[-8:], ""
        ds.StudyDescription, ds.SeriesDescription = "CT chest", "chest 2 mm"
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", 1, k + 1
        ds.Manufacturer = "synthetic"
        ds.FrameOfReferenceUID, ds.PositionReferenceIndicator = frame, ""
        ds.ImagePositionPatient = [-32.0, -32.0, 2.0 * k]
        ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
        ds.PixelSpacing, ds.SliceThickness = [1.0, 1.0], 2.0
        ds.Rows = ds.Columns = SIZE
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
        ds.WindowCenter, ds.WindowWidth = -400, 1200
        ds.PixelData = (vol[k] + 1024).astype("<u2").tobytes()
        out.append(ds)
    return out


def segmentation(ct: list[Dataset]) -> Dataset:
    """A binary SEG of BLOCK over `ct` (one segment), as the pipeline stores one: series 9001."""
    mask = np.zeros((len(ct), SIZE, SIZE), bool)
    mask[BLOCK] = True
    desc = hd.seg.SegmentDescription(
        segment_number=1, segment_label="block",
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Nodule,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=hd.AlgorithmIdentificationSequence(
            name="test-analyzer", version="1", family=codes.DCM.ArtificialIntelligence))
    return hd.seg.Segmentation(
        source_images=ct, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[desc], series_instance_uid=generate_uid(), series_number=9001,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="dicomvault",
        manufacturer_model_name="test-analyzer", software_versions="1", device_serial_number="1",
        series_description="dicomvault test-analyzer segmentation")


def report(ct: list[Dataset], volume_ml: float) -> Dataset:
    """A TID 1500 SR of one volume measurement over `ct`: series 9000."""
    group = hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(uid=hd.UID(), identifier="block"),
        measurements=[hd.sr.Measurement(name=codes.SCT.Volume, value=volume_ml,
                                        unit=hd.sr.CodedConcept("mL", "UCUM", "milliliter"))])
    content = hd.sr.MeasurementReport(observation_context=hd.sr.ObservationContext(),
                                      procedure_reported=codes.LN.CTUnspecifiedBodyRegion,
                                      imaging_measurements=[group])
    return hd.sr.Comprehensive3DSR(
        evidence=ct, content=content[0], series_instance_uid=generate_uid(), series_number=9000,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="dicomvault",
        series_description="dicomvault test-analyzer measurements")


def analysed_study(*, patient_id: str, patient_name: str, study_date: str, with_objects: bool = True
                   ) -> Study:
    ct = ct_series(patient_id=patient_id, patient_name=patient_name, study_date=study_date)
    s = Study(str(ct[0].StudyInstanceUID), patient_id, study_date, ct)
    if with_objects:
        s.seg = segmentation(ct)
        s.sr = report(ct, block_volume_ml())
    return s


def block_volume_ml() -> float:
    n = np.zeros((6, SIZE, SIZE), bool)
    n[BLOCK] = True
    return float(n.sum()) * 1.0 * 1.0 * 2.0 / 1000.0


def result(analyzer: str, series_uid: str, *, volume: float, emphysema: float | None = None,
           flags: list[tuple[str, str, str]] = ()) -> Result:  # type: ignore[assignment]
    """What an analyzer would return: a volume (and an emphysema index), flags (code, severity,
    reason)."""
    ms = [Measurement("block_volume", "Block volume", volume, "mL", series_uid=series_uid)]
    if emphysema is not None:
        ms.append(Measurement("emphysema_index", "Emphysema index", emphysema, "%", series_uid=series_uid))
    return Result(analyzer=analyzer, measurements=ms,
                  flags=[Flag(code, reason, severity, score=0.9, series_uid=series_uid)
                         for code, severity, reason in flags],
                  summary=f"{len(ms)} measurements")


__all__ = ["BLOCK", "URGENT", "WARNING", "Study", "analysed_study", "ct_series", "report", "result",
           "segmentation"]
