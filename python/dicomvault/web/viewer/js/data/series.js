// The series model: one "image" per frame, with everything display and measurement need
// (docs/viewer-internals.md), sorted along the slice normal.
import { TAG, first, inlineBytes, items, num, nums, str, values } from "./dicomjson.js";

const ENCAPSULATED_NATIVE = new Set(["1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.2",
  "1.2.840.10008.1.2.1.99"]);

/** Build a series from the DICOM JSON of its instances. */
export function buildSeries(instances) {
  const images = [];
  for (const inst of instances) images.push(...imagesOf(inst));
  const any = instances[0] || {};
  const series = {
    studyUid: str(any, TAG.StudyInstanceUID),
    seriesUid: str(any, TAG.SeriesInstanceUID),
    modality: str(any, TAG.Modality),
    description: str(any, TAG.SeriesDescription),
    number: num(any, TAG.SeriesNumber),
    images: images.filter((im) => im.rows > 0 && im.columns > 0),
    others: instances.filter((i) => !first(i, TAG.Rows)),   // SR, KO, PR: no pixels
  };
  sortImages(series.images);
  series.images.forEach((im, i) => { im.index = i; });
  return series;
}

/** The images (frames) of one instance. */
export function imagesOf(inst) {
  const rows = num(inst, TAG.Rows, 0);
  const columns = num(inst, TAG.Columns, 0);
  if (!rows || !columns || !inst[TAG.PixelData] && !inst["7FE00008"] && !inst["7FE00009"]) return [];
  const nframes = Math.max(1, num(inst, TAG.NumberOfFrames, 1));
  const shared = items(inst, TAG.SharedFunctionalGroupsSequence)[0] || null;
  const perFrame = items(inst, TAG.PerFrameFunctionalGroupsSequence);
  const photometric = str(inst, TAG.PhotometricInterpretation, "MONOCHROME2").trim();
  const ts = str(inst, TAG.AvailableTransferSyntaxUID, "1.2.840.10008.1.2.1");
  const modality = str(inst, TAG.Modality);
  const base = {
    studyUid: str(inst, TAG.StudyInstanceUID),
    seriesUid: str(inst, TAG.SeriesInstanceUID),
    sopInstanceUid: str(inst, TAG.SOPInstanceUID),
    sopClassUid: str(inst, TAG.SOPClassUID),
    instanceNumber: num(inst, TAG.InstanceNumber, 0),
    numberOfFrames: nframes,
    rows, columns, modality,
    samplesPerPixel: num(inst, TAG.SamplesPerPixel, 1),
    photometric,
    // What the native frame bytes are: a compressed YBR image comes back decoded to RGB.
    decodedPhotometric: decodedPhotometric(photometric, ts),
    transferSyntax: ts,
    bitsAllocated: num(inst, TAG.BitsAllocated, 16),
    bitsStored: num(inst, TAG.BitsStored, num(inst, TAG.BitsAllocated, 16)),
    pixelRepresentation: num(inst, TAG.PixelRepresentation, 0),
    planarConfiguration: ENCAPSULATED_NATIVE.has(ts) ? num(inst, TAG.PlanarConfiguration, 0) : 0,
    floatPixels: inst["7FE00008"] ? 32 : inst["7FE00009"] ? 64 : 0,
    palette: paletteOf(inst),
    frameTime: num(inst, TAG.FrameTime, null),
    cineRate: num(inst, TAG.RecommendedDisplayFrameRate, null) ?? num(inst, TAG.CineRate, null),
    sliceThickness: num(inst, TAG.SliceThickness, null),
    sliceLocation: num(inst, TAG.SliceLocation, null),
    frameOfReferenceUid: str(inst, TAG.FrameOfReferenceUID),
    metadata: inst,
  };
  const out = [];
  for (let f = 1; f <= nframes; f++) {
    const groups = [perFrame[f - 1], shared].filter(Boolean);
    const pick = (seqTag, tag, reader = nums) => {
      for (const g of groups) {
        const item = items(g, seqTag)[0];
        const v = item && reader(item, tag);
        if (v !== null && v !== undefined) return v;
      }
      return reader(inst, tag);
    };
    const modalityLut = items(inst, TAG.ModalityLUTSequence)[0];
    const slope = pick(TAG.PixelValueTransformationSequence, TAG.RescaleSlope, (o, t) => num(o, t, null)) ?? 1;
    const intercept = pick(TAG.PixelValueTransformationSequence, TAG.RescaleIntercept, (o, t) => num(o, t, null)) ?? 0;
    const rescaleType = pick(TAG.PixelValueTransformationSequence, TAG.RescaleType, (o, t) => str(o, t, "") || null) || "";
    const imager = nums(inst, TAG.ImagerPixelSpacing);
    const spacing = pick(TAG.PixelMeasuresSequence, TAG.PixelSpacing);
    const region = spacing || imager ? null : ultrasoundSpacing(inst);
    const voiSource = groups.map((g) => items(g, TAG.FrameVOILUTSequence)[0]).find(Boolean) || inst;
    out.push({
      ...base,
      frame: f,
      slope: modalityLut ? 1 : slope,
      intercept: modalityLut ? 0 : intercept,
      modalityLut: modalityLut ? lutOf(modalityLut) : null,
      units: modality === "CT" && !modalityLut ? "HU" : (rescaleType === "US" ? "" : rescaleType),
      windows: windowsOf(voiSource),
      voiLut: voiLutOf(inst),
      pixelSpacing: spacing || imager || region,
      spacingSource: spacing ? "PixelSpacing" : imager ? "ImagerPixelSpacing" : region ? "UltrasoundRegion" : null,
      position: pick(TAG.PlanePositionSequence, TAG.ImagePositionPatient),
      orientation: pick(TAG.PlaneOrientationSequence, TAG.ImageOrientationPatient),
      sliceThickness: pick(TAG.PixelMeasuresSequence, TAG.SliceThickness, (o, t) => num(o, t, null)) ?? base.sliceThickness,
    });
  }
  return out;
}

/** Ultrasound calibration: the physical size of a pixel in the first region calibrated in cm
 *  (SequenceOfUltrasoundRegions, PS3.3 C.8.5.5; units code 3 = cm), as [row, column] mm. */
function ultrasoundSpacing(inst) {
  for (const r of items(inst, "00186011")) {
    const ux = num(r, "00186024"), uy = num(r, "00186026");
    const dx = num(r, "0018602C"), dy = num(r, "0018602E");
    if (ux === 3 && uy === 3 && dx > 0 && dy > 0) return [Math.abs(dy) * 10, Math.abs(dx) * 10];
  }
  return null;
}

function decodedPhotometric(photometric, ts) {
  if (!photometric.startsWith("YBR")) return photometric;
  if (ENCAPSULATED_NATIVE.has(ts)) return photometric;   // native bytes come as stored
  // JPEG/J2K decoders convert YCbCr to RGB; RLE keeps the stored photometric (PS3.5 G).
  return ts === "1.2.840.10008.1.2.5" ? photometric : "RGB";
}

function windowsOf(obj) {
  const centers = values(obj, TAG.WindowCenter).map(Number);
  const widths = values(obj, TAG.WindowWidth).map(Number);
  const expl = values(obj, TAG.WindowCenterWidthExplanation);
  const out = [];
  for (let i = 0; i < Math.min(centers.length, widths.length); i++) {
    if (Number.isFinite(centers[i]) && Number.isFinite(widths[i]) && widths[i] >= 1) {
      out.push({ center: centers[i], width: widths[i], explanation: String(expl[i] || `File ${i + 1}`) });
    }
  }
  return out;
}

/** A LUT item (Modality or VOI LUT Sequence): descriptor + data (US or OW). */
function lutOf(item) {
  const desc = values(item, TAG.LUTDescriptor).map(Number);
  if (desc.length < 3) return null;
  const n = desc[0] === 0 ? 65536 : desc[0];
  let data = values(item, TAG.LUTData).map(Number);
  if (!data.length) {
    const raw = inlineBytes(item, TAG.LUTData);
    if (raw) data = Array.from(new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength >> 1));
  }
  if (!data.length) return null;
  const first = desc[1] >= 32768 && n <= 65536 ? desc[1] - 65536 : desc[1];   // signed first value mapped
  return { first, bits: desc[2], data: Uint16Array.from(data.slice(0, n)), explanation: str(item, "00283003") };
}

function voiLutOf(inst) {
  const item = items(inst, TAG.VOILUTSequence)[0];
  return item ? lutOf(item) : null;
}

function paletteOf(inst) {
  if (str(inst, TAG.PhotometricInterpretation).trim() !== "PALETTE COLOR") return null;
  const read = (descTag, dataTag) => {
    const desc = values(inst, descTag).map(Number);
    let data = values(inst, dataTag).map(Number);
    if (!data.length) {
      const raw = inlineBytes(inst, dataTag);
      if (raw) data = Array.from(new Uint16Array(raw.buffer, raw.byteOffset, raw.byteLength >> 1));
    }
    return { desc, data: Uint16Array.from(data) };
  };
  const r = read(TAG.RedPaletteDescriptor, TAG.RedPaletteData);
  const g = read(TAG.GreenPaletteDescriptor, TAG.GreenPaletteData);
  const b = read(TAG.BluePaletteDescriptor, TAG.BluePaletteData);
  if (!r.data.length || !g.data.length || !b.data.length || r.desc.length < 3) return null;
  return { first: r.desc[1], bits: r.desc[2], red: r.data, green: g.data, blue: b.data };
}

/** The slice normal (row × column direction cosines). */
export function normalOf(orientation) {
  const [a, b, c, d, e, f] = orientation;
  return [b * f - c * e, c * d - a * f, a * e - b * d];
}

function sortImages(images) {
  const geometric = images.length > 1 && images.every((im) => im.position && im.orientation);
  if (geometric) {
    const n = normalOf(images[0].orientation);
    const sameNormal = images.every((im) => {
      const m = normalOf(im.orientation);
      return Math.abs(m[0] * n[0] + m[1] * n[1] + m[2] * n[2]) > 0.999;
    });
    if (sameNormal) {
      for (const im of images) im.sliceDistance = dot(im.position, n);
      const distinct = new Set(images.map((im) => im.sliceDistance.toFixed(3))).size;
      if (distinct > 1) {
        images.sort((a, b) => a.sliceDistance - b.sliceDistance ||
          a.instanceNumber - b.instanceNumber || a.frame - b.frame);
        return;
      }
    }
  }
  for (const im of images) im.sliceDistance = im.position && im.orientation ? dot(im.position, normalOf(im.orientation)) : null;
  images.sort((a, b) => a.instanceNumber - b.instanceNumber || a.frame - b.frame ||
    (a.sopInstanceUid < b.sopInstanceUid ? -1 : a.sopInstanceUid > b.sopInstanceUid ? 1 : 0));
}

export function dot(a, b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

/** The image of `series` closest to `distance` along the normal (for synchronised scrolling). */
export function nearestByPosition(series, distance) {
  let best = -1;
  let bestD = Infinity;
  for (const im of series.images) {
    if (im.sliceDistance === null || im.sliceDistance === undefined) continue;
    const d = Math.abs(im.sliceDistance - distance);
    if (d < bestD) { bestD = d; best = im.index; }
  }
  return best;
}
