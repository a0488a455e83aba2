"""Synthetic modality workloads for `dicomvault bench`: study plans, pixel-template pools, and a
cheap per-object assembly so that generating the data does not dominate what is measured.

How an object is made: every (modality, size) has a small pool of pixel templates built once
before the run (synth.py: anatomy-like structure + noise, so objects compress like real ones).
Each object takes one template, shifted by a random number of rows (a copy, memory speed), and a
per-series Part-10 header (pydicom, built once per series) whose per-object fields (SOP Instance
UID, Instance Number, slice position) are fixed-width and patched in place. Per object that is one
pixel copy, a few byte patches and one `bytes` copy, no pydicom call.

Everything is a function of the seed: the same seed gives the same bytes, object for object.
"""

from __future__ import annotations

import io
import itertools
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.filewriter import dcmwrite
from pydicom.uid import ExplicitVRLittleEndian

from . import synth
from .synth import UID_ROOT

WORKLOADS = ("ct", "mr", "cr", "mg", "us", "mixed")
SOP_CLASS = {
    "CT": "1.2.840.10008.5.1.4.1.1.2",  # CT Image Storage
    "MR": "1.2.840.10008.5.1.4.1.1.4",  # MR Image Storage
    "CR": "1.2.840.10008.5.1.4.1.1.1",  # Computed Radiography Image Storage
    "MG": "1.2.840.10008.5.1.4.1.1.1.2",  # Digital Mammography X-Ray Image Storage - For Presentation
    "US": "1.2.840.10008.5.1.4.1.1.6.1",  # Ultrasound Image Storage
    "US-MF": "1.2.840.10008.5.1.4.1.1.3.1",  # Ultrasound Multi-frame Image Storage
}
# A hospital day by number of *studies* (exams). An estimate, not a citation: see docs/bench.md
# ("Workloads") for the reasoning and how to replace it with a site's own figures.
MIXED_STUDY_SHARE = {"CR": 0.45, "US": 0.20, "CT": 0.17, "MR": 0.10, "MG": 0.08}
TEMPLATES_PER_POOL = {"CT": 6, "MR": 6, "CR": 2, "MG": 2, "US": 8}
_SURNAMES = (
    "SMITH JONES GARCIA MUELLER MARTIN ROSSI NOVAK SILVA KOWALSKI DUBOIS HANSEN TANAKA "
    "PETROV OKAFOR NGUYEN LARSEN FISCHER MORENO BIANCHI WEBER"
).split()
_GIVEN = "ANNA JOHN MARIA PETER LENA OMAR SARA DAVID EVA NOAH".split()
_INSTANCE_BASE = 100_000  # instance UID component = base + index: fixed width, no leading zero


@dataclass(frozen=True)
class SeriesPlan:
    modality: str
    rows: int
    cols: int
    count: int  # objects in the series
    frames: int = 1  # per object (US cine > 1)
    description: str = ""


@dataclass(frozen=True)
class StudyPlan:
    index: int
    modality: str
    patient_id: str
    patient_name: str
    study_date: str
    series: tuple[SeriesPlan, ...]

    @property
    def objects(self) -> int:
        return sum(s.count for s in self.series)


@dataclass(frozen=True)
class SynthObject:
    data: bytes
    modality: str
    study_uid: str
    series_uid: str
    sop_uid: str
    study_index: int


@dataclass
class StudyInfo:
    """What the query and retrieve phases know about a generated study."""

    uid: str
    patient_id: str
    patient_name: str
    study_date: str
    modality: str
    series_uids: list[str] = field(default_factory=list)
    objects: int = 0
    bytes: int = 0


def _dim(n: int, scale: float) -> int:
    return max(16, int(round(n * scale / 2)) * 2)  # even, so 16-bit rows stay aligned


def _count(n: int, scale: float) -> int:
    return max(2, int(round(n * scale)))


def plan_series(modality: str, rng: np.random.Generator, scale: float) -> tuple[SeriesPlan, ...]:
    """The series of one study of a modality (sizes at scale 1 are the issue's: CT 512x512 x
    hundreds of slices, MR 256/512, CR ~3000x3000, MG ~4000x3000 ~25 MB, US RGB cine)."""
    d, c = _dim, _count
    if modality == "CT":
        return (
            SeriesPlan(
                "CT",
                d(512, scale),
                d(512, scale),
                c(int(rng.integers(200, 401)), scale),
                description="AXIAL 1.0",
            ),
        )
    if modality == "MR":
        out = []
        for k in range(5):
            n = d(256, scale) if rng.random() < 0.6 else d(512, scale)
            out.append(
                SeriesPlan("MR", n, n, c(int(rng.integers(20, 41)), scale), description=f"SEQ {k + 1}")
            )
        return tuple(out)
    if modality == "CR":  # PA + lateral
        return (
            SeriesPlan("CR", d(3000, scale), d(3000, scale), 1, description="PA"),
            SeriesPlan("CR", d(3000, scale), d(2500, scale), 1, description="LAT"),
        )
    if modality == "MG":  # screening: RCC, LCC, RMLO, LMLO
        return (SeriesPlan("MG", d(4000, scale), d(3000, scale), 4, description="SCREENING"),)
    if modality == "US":  # stills + a few cine loops, each loop its own object
        loops = tuple(
            SeriesPlan(
                "US",
                d(480, scale),
                d(640, scale),
                1,
                frames=c(int(rng.integers(30, 61)), scale),
                description=f"CINE {k + 1}",
            )
            for k in range(3)
        )
        return (SeriesPlan("US", d(480, scale), d(640, scale), 12, description="STILLS"), *loops)
    raise ValueError(f"unknown modality {modality!r}")


def pool_keys(workload: str, scale: float) -> list[tuple[str, int, int]]:
    """Every (modality, rows, cols) template pool a workload can need."""
    mods = list(MIXED_STUDY_SHARE) if workload == "mixed" else [workload.upper()]
    keys = []
    for m in mods:
        sizes = {
            "CT": [(512, 512)],
            "MR": [(256, 256), (512, 512)],
            "CR": [(3000, 3000), (3000, 2500)],
            "MG": [(4000, 3000)],
            "US": [(480, 640)],
        }[m]
        keys += [(m, _dim(r, scale), _dim(cc, scale)) for r, cc in sizes]
    return keys


def _make_template(modality: str, rows: int, cols: int, k: int, rng: np.random.Generator) -> np.ndarray:
    if modality == "CT":
        return synth.ct_slice(rows, cols, k / 5.0, rng)
    if modality == "MR":
        return synth.mr_slice(rows, cols, k / 5.0, rng)
    if modality == "CR":
        return synth.cr_image(rows, cols, rng)
    if modality == "MG":
        return synth.mg_image(rows, cols, rng)
    if modality == "US":
        return synth.us_frame(rows, cols, rng, doppler=k % 2 == 1)
    raise ValueError(modality)


class _Header:
    """A Part-10 header (file meta + dataset without Pixel Data) built once per series, with
    fixed-width placeholders for the per-object fields, patched in place per object."""

    def __init__(self, ds: Dataset, series_uid: str, pixel_vr: bytes, pixel_len: int) -> None:
        placeholder_uid = f"{series_uid}.{_INSTANCE_BASE * 9 + 99_999}"  # same width as real ones
        ds.SOPInstanceUID = placeholder_uid
        ds.file_meta.MediaStorageSOPInstanceUID = placeholder_uid
        ds.InstanceNumber = "999999"
        if "ImagePositionPatient" in ds:
            ds.ImagePositionPatient = ["-250.0", "-250.0", "-99999.9"]
        buf = io.BytesIO()
        dcmwrite(buf, ds, enforce_file_format=True)
        body = buf.getvalue()
        self.bytes = body + b"\xe0\x7f\x10\x00" + pixel_vr + b"\x00\x00" + struct.pack("<I", pixel_len)
        # Offsets found by tag, not by searching for the placeholder text, which random UID
        # digits could contain.
        self.uid_at = [_value_at(body, 0x0002, 0x0003, b"UI"), _value_at(body, 0x0008, 0x0018, b"UI")]
        self.num_at = [_value_at(body, 0x0020, 0x0013, b"IS")]
        self.z_at = []
        if "ImagePositionPatient" in ds:
            self.z_at = [_value_at(body, 0x0020, 0x0032, b"DS") + len("-250.0\\-250.0\\")]
        self.series_uid = series_uid

    def sop_uid(self, i: int) -> str:
        return f"{self.series_uid}.{_INSTANCE_BASE + i}"

    def patch(self, out: np.ndarray, i: int, z: float) -> str:
        uid = self.sop_uid(i)
        ub = np.frombuffer(uid.encode(), dtype=np.uint8)
        for o in self.uid_at:
            out[o : o + len(ub)] = ub
        nb = np.frombuffer(f"{i + 1:>6}".encode(), dtype=np.uint8)
        for o in self.num_at:
            out[o : o + 6] = nb
        zb = np.frombuffer(f"{z:>8.1f}"[:8].encode(), dtype=np.uint8)
        for o in self.z_at:
            out[o : o + 8] = zb
        return uid


def _value_at(body: bytes, group: int, elem: int, vr: bytes) -> int:
    """Offset of the value of a short-form explicit-VR little-endian element in body."""
    at = body.find(struct.pack("<HH", group, elem) + vr)
    if at < 0:
        raise ValueError(f"({group:04X},{elem:04X}) not in header")
    return at + 8


class Workload:
    """A deterministic, endless (or byte-bounded) stream of synthetic studies for one workload."""

    def __init__(self, name: str, seed: int = 0, scale: float = 1.0) -> None:
        if name not in WORKLOADS:
            raise ValueError(f"workload must be one of {WORKLOADS}, got {name!r}")
        self.name, self.seed, self.scale = name, seed, scale
        self.pools: dict[tuple[str, int, int], list[np.ndarray]] = {}

    # -- templates (before the run) --------------------------------------------------------------
    def prepare(self) -> None:
        """Builds every pixel-template pool the workload can use (seconds at full size)."""
        for key in pool_keys(self.name, self.scale):
            if key in self.pools:
                continue
            m, rows, cols = key
            rng = np.random.default_rng([self.seed, rows, cols, ord(m[0]), ord(m[1])])
            self.pools[key] = [_make_template(m, rows, cols, k, rng) for k in range(TEMPLATES_PER_POOL[m])]

    @property
    def template_bytes(self) -> int:
        return sum(t.nbytes for pool in self.pools.values() for t in pool)

    # -- plans -----------------------------------------------------------------------------------
    def studies(self) -> Iterator[StudyPlan]:
        rng = np.random.default_rng([self.seed, 1])
        mods, weights = list(MIXED_STUDY_SHARE), np.array(list(MIXED_STUDY_SHARE.values()))
        weights = weights / weights.sum()
        patients: list[tuple[str, str]] = []
        i = 0
        while True:
            m = str(rng.choice(mods, p=weights)) if self.name == "mixed" else self.name.upper()
            # About one patient in four comes back for another study (follow-ups, multi-exam days).
            if patients and rng.random() < 0.25:
                pid, pname = patients[int(rng.integers(len(patients)))]
            else:
                pid = f"BENCH{self.seed % 1000:03d}{len(patients):06d}"
                pname = (
                    f"{_SURNAMES[int(rng.integers(len(_SURNAMES)))]}^{_GIVEN[int(rng.integers(len(_GIVEN)))]}"
                )
                patients.append((pid, pname))
            day = np.datetime64("2026-01-01") + int(rng.integers(0, 365))
            date = str(day).replace("-", "")
            yield StudyPlan(i, m, pid, pname, date, plan_series(m, rng, self.scale))
            i += 1

    def size_sample(self, n: int = 400, studies: int = 300) -> list[int]:
        """n object sizes (bytes, approximate: pixel data + ~1.5 KB header) drawn from the first
        `studies` planned studies, without generating pixels: the device's small-file test
        writes files of these sizes. Drawn across many studies so a mixed workload's sample has
        its proportions, not just those of the first study."""
        sizes: list[int] = []
        for study in itertools.islice(self.studies(), studies):
            for s in study.series:
                bpp = 3 if s.modality == "US" else 2
                sizes += [s.rows * s.cols * bpp * s.frames + 1500] * s.count
        rng = np.random.default_rng([self.seed, 3])
        return [int(x) for x in rng.choice(sizes, size=n)]

    # -- objects ---------------------------------------------------------------------------------
    def objects(self, catalog: list[StudyInfo] | None = None) -> Iterator[SynthObject]:
        """Endless stream of Part-10 objects; appends each study to `catalog` when it starts."""
        if not self.pools:
            self.prepare()
        rng = np.random.default_rng([self.seed, 2])
        for study in self.studies():
            study_uid = f"{UID_ROOT}2.{self.seed}.{study.index + 1}"  # short: room for two more components
            info = StudyInfo(
                study_uid, study.patient_id, study.patient_name, study.study_date, study.modality
            )
            if catalog is not None:
                catalog.append(info)
            for sn, series in enumerate(study.series):
                series_uid = f"{study_uid}.{sn + 1}"
                info.series_uids.append(series_uid)
                pool = self.pools[(series.modality, series.rows, series.cols)]
                header = _Header(
                    _dataset(study, series, sn, study_uid, series_uid),
                    series_uid,
                    b"OB" if series.modality == "US" else b"OW",
                    pool[0].nbytes * series.frames,
                )
                for i in range(series.count):
                    data = _assemble(header, pool, series, i, rng)
                    info.objects += 1
                    info.bytes += len(data)
                    yield SynthObject(
                        data, series.modality, study_uid, series_uid, header.sop_uid(i), study.index
                    )


def _assemble(
    header: _Header, pool: list[np.ndarray], series: SeriesPlan, i: int, rng: np.random.Generator
) -> bytes:
    """One object: header (patched) + pixel data = template(s) shifted down by a few rows."""
    hlen = len(header.bytes)
    frame_bytes = pool[0].nbytes
    out = np.empty(hlen + frame_bytes * series.frames, dtype=np.uint8)
    out[:hlen] = np.frombuffer(header.bytes, dtype=np.uint8)
    header.patch(out, i, -float(i))
    start = int(rng.integers(len(pool)))
    shift_max = max(1, series.rows // 16)
    for f in range(series.frames):
        tpl = pool[(start + f) % len(pool)]
        dy = int(rng.integers(0, shift_max))
        px = out[hlen + f * frame_bytes : hlen + (f + 1) * frame_bytes].view(tpl.dtype).reshape(tpl.shape)
        # A row shift (wrapping) makes every object's pixels distinct at memcpy speed.
        px[dy:] = tpl[: tpl.shape[0] - dy]
        px[:dy] = tpl[tpl.shape[0] - dy :]
    return out.tobytes()


def _dataset(study: StudyPlan, series: SeriesPlan, sn: int, study_uid: str, series_uid: str) -> Dataset:
    m = series.modality
    sop_class = SOP_CLASS["US-MF"] if m == "US" and series.frames > 1 else SOP_CLASS[m]
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"] if m in ("CT", "MR") else ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = sop_class
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = study.study_date
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = f"{8 + study.index % 10:02d}{study.index % 60:02d}00"
    ds.AccessionNumber = f"A{study.index:08d}"
    ds.Modality = m
    ds.Manufacturer = "DICOMVAULT SYNTHETIC"
    ds.InstitutionName = "BENCH HOSPITAL"
    ds.ReferringPhysicianName = "REFERRER^A"
    ds.StudyDescription = f"{m} BENCH"
    ds.SeriesDescription = series.description
    ds.PatientName = study.patient_name
    ds.PatientID = study.patient_id
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = str(study.index % 10**8)
    ds.SeriesNumber = sn + 1
    ds.Rows, ds.Columns = series.rows, series.cols
    if m == "US":
        ds.SamplesPerPixel = 3
        ds.PhotometricInterpretation = "RGB"
        ds.PlanarConfiguration = 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
        if series.frames > 1:
            ds.NumberOfFrames = series.frames
            ds.FrameTime = 33.3
            ds.FrameIncrementPointer = 0x00181063  # Frame Time
    else:
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 14 if m == "MG" else 12
        ds.HighBit = ds.BitsStored - 1
    ds.PixelRepresentation = 0
    if m in ("CT", "MR"):
        ds.ImagePositionPatient = ["-250.0", "-250.0", "0.0"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.SliceThickness = 1.0
        ds.PixelSpacing = [0.977, 0.977]
    if m == "CT":
        ds.RescaleIntercept, ds.RescaleSlope = -1024, 1
        ds.WindowCenter, ds.WindowWidth = 40, 400
    return ds
