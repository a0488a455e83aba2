// Reading DICOM JSON (PS3.18 F.2): objects keyed by 8-hex-digit tags, each {vr, Value}.

/** The first value of `tag` in `obj`, or `fallback`. */
export function first(obj, tag, fallback = undefined) {
  const el = obj?.[tag];
  return el?.Value?.length ? el.Value[0] : fallback;
}

/** Every value of `tag` (an empty array when absent). */
export function values(obj, tag) {
  return obj?.[tag]?.Value ?? [];
}

export function str(obj, tag, fallback = "") {
  const v = first(obj, tag);
  if (v === undefined || v === null) return fallback;
  if (typeof v === "object") return personName(v);
  return String(v);
}

/** A number (DS/IS come as numbers or, from some servers, strings). */
export function num(obj, tag, fallback = null) {
  const v = first(obj, tag);
  if (v === undefined || v === null || v === "") return fallback;
  const n = Number(v);
  return Number.isFinite(n) ? n : fallback;
}

export function nums(obj, tag) {
  const out = values(obj, tag).map(Number);
  return out.length && out.every(Number.isFinite) ? out : null;
}

/** A PN value as display text: "Family, Given Middle" from the alphabetic group. */
export function personName(v) {
  const alpha = typeof v === "string" ? v : (v?.Alphabetic ?? v?.Ideographic ?? "");
  const [family = "", given = "", middle = "", prefix = "", suffix = ""] = alpha.split("^");
  const rest = [prefix, given, middle, suffix].filter(Boolean).join(" ");
  return family && rest ? `${family}, ${rest}` : (family || rest);
}

/** Items of a sequence. */
export function items(obj, tag) {
  return values(obj, tag).filter((x) => x && typeof x === "object");
}

/** DA "YYYYMMDD" as "YYYY-MM-DD" (unchanged when not a date). */
export function formatDate(da) {
  return /^\d{8}$/.test(da || "") ? `${da.slice(0, 4)}-${da.slice(4, 6)}-${da.slice(6, 8)}` : (da || "");
}

export function formatTime(tm) {
  return /^\d{4}/.test(tm || "") ? `${tm.slice(0, 2)}:${tm.slice(2, 4)}` : (tm || "");
}

/** A bulk or inline binary value as bytes (InlineBinary is base64). */
export function inlineBytes(obj, tag) {
  const b64 = obj?.[tag]?.InlineBinary;
  if (!b64) return null;
  const bin = atob(b64);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

export const TAG = Object.freeze({
  SpecificCharacterSet: "00080005",
  ImageType: "00080008",
  SOPClassUID: "00080016",
  SOPInstanceUID: "00080018",
  StudyDate: "00080020",
  SeriesDate: "00080021",
  StudyTime: "00080030",
  AccessionNumber: "00080050",
  Modality: "00080060",
  ModalitiesInStudy: "00080061",
  ReferringPhysicianName: "00080090",
  StudyDescription: "00081030",
  SeriesDescription: "0008103E",
  InstitutionName: "00080080",
  AvailableTransferSyntaxUID: "00083002",
  PatientName: "00100010",
  PatientID: "00100020",
  PatientBirthDate: "00100030",
  PatientSex: "00100040",
  PatientAge: "00101010",
  SliceThickness: "00180050",
  StudyInstanceUID: "0020000D",
  SeriesInstanceUID: "0020000E",
  StudyID: "00200010",
  SeriesNumber: "00200011",
  InstanceNumber: "00200013",
  ImagePositionPatient: "00200032",
  ImageOrientationPatient: "00200037",
  FrameOfReferenceUID: "00200052",
  SliceLocation: "00201041",
  NumberOfStudyRelatedSeries: "00201206",
  NumberOfStudyRelatedInstances: "00201208",
  NumberOfSeriesRelatedInstances: "00201209",
  SamplesPerPixel: "00280002",
  PhotometricInterpretation: "00280004",
  PlanarConfiguration: "00280006",
  NumberOfFrames: "00280008",
  FrameIncrementPointer: "00280009",
  Rows: "00280010",
  Columns: "00280011",
  PixelSpacing: "00280030",
  ImagerPixelSpacing: "00181164",
  FrameTime: "00181063",
  CineRate: "00180040",
  RecommendedDisplayFrameRate: "00082144",
  BitsAllocated: "00280100",
  BitsStored: "00280101",
  HighBit: "00280102",
  PixelRepresentation: "00280103",
  WindowCenter: "00281050",
  WindowWidth: "00281051",
  RescaleIntercept: "00281052",
  RescaleSlope: "00281053",
  RescaleType: "00281054",
  WindowCenterWidthExplanation: "00281055",
  RedPaletteDescriptor: "00281101",
  GreenPaletteDescriptor: "00281102",
  BluePaletteDescriptor: "00281103",
  RedPaletteData: "00281201",
  GreenPaletteData: "00281202",
  BluePaletteData: "00281203",
  ModalityLUTSequence: "00283000",
  VOILUTSequence: "00283010",
  LUTDescriptor: "00283002",
  LUTData: "00283006",
  SharedFunctionalGroupsSequence: "52009229",
  PerFrameFunctionalGroupsSequence: "52009230",
  PlanePositionSequence: "00209113",
  PlaneOrientationSequence: "00209116",
  PixelMeasuresSequence: "00289110",
  FrameVOILUTSequence: "00289132",
  PixelValueTransformationSequence: "00289145",
  FrameContentSequence: "00209111",
  PixelData: "7FE00010",
});
