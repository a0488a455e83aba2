// DICOM Segmentation (SEG) objects for the overlay: the segments (number, label, colour), and
// per frame its segment and the source image it lies on, from the instance's DICOM JSON metadata;
// frames fetched as native bytes (BitsAllocated 1: bit-packed, first pixel in the low bit of the
// first byte, PS3.5 8.1.1; FRACTIONAL: one byte per pixel) and unpacked to one byte per pixel.
import { TAG, items, num, nums, str } from "./dicomjson.js";

export const SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4";

const SEG_TAG = Object.freeze({
  SegmentationType: "00620001",
  SegmentSequence: "00620002",
  SegmentNumber: "00620004",
  SegmentLabel: "00620005",
  RecommendedDisplayCIELabValue: "0062000D",
  SegmentIdentificationSequence: "0062000A",
  ReferencedSegmentNumber: "0062000B",
  MaximumFractionalValue: "0062000E",
  DerivationImageSequence: "00089124",
  SourceImageSequence: "00082112",
  ReferencedSOPInstanceUID: "00081155",
  ReferencedFrameNumber: "00081160",
  ReferencedSeriesSequence: "00081115",
  ReferencedInstanceSequence: "0008114A",
});

// When a segment names no colour: distinct, saturated, readable on grey.
const PALETTE = [[255, 64, 64], [64, 200, 255], [255, 200, 0], [120, 255, 90], [230, 90, 255], [255, 140, 40]];

export function isSeg(inst) { return str(inst, TAG.SOPClassUID) === SEG_SOP_CLASS; }

/** The segments and frame map of one SEG instance's metadata. */
export function parseSeg(inst) {
  const shared = items(inst, TAG.SharedFunctionalGroupsSequence)[0] || null;
  const perFrame = items(inst, TAG.PerFrameFunctionalGroupsSequence);
  const segments = new Map();
  items(inst, SEG_TAG.SegmentSequence).forEach((s, i) => {
    const number = num(s, SEG_TAG.SegmentNumber, i + 1);
    const lab = nums(s, SEG_TAG.RecommendedDisplayCIELabValue);
    segments.set(number, { number, label: str(s, SEG_TAG.SegmentLabel, `Segment ${number}`),
      color: lab ? dicomLabToRgb(lab) : PALETTE[(number - 1) % PALETTE.length] });
  });
  const nframes = Math.max(1, num(inst, TAG.NumberOfFrames, 1));
  const frames = [];
  for (let f = 1; f <= nframes; f++) {
    const groups = [perFrame[f - 1], shared].filter(Boolean);
    const seq = (tag) => { for (const g of groups) { const it = items(g, tag)[0]; if (it) return it; } return null; };
    const segment = num(seq(SEG_TAG.SegmentIdentificationSequence), SEG_TAG.ReferencedSegmentNumber, 1);
    const source = items(seq(SEG_TAG.DerivationImageSequence), SEG_TAG.SourceImageSequence)[0] || null;
    frames.push({
      frame: f,
      segment,
      sourceSop: source ? str(source, SEG_TAG.ReferencedSOPInstanceUID) : "",
      sourceFrame: source ? num(source, SEG_TAG.ReferencedFrameNumber, 1) : 1,
      position: nums(seq(TAG.PlanePositionSequence), TAG.ImagePositionPatient),
    });
  }
  return {
    studyUid: str(inst, TAG.StudyInstanceUID),
    seriesUid: str(inst, TAG.SeriesInstanceUID),
    sopInstanceUid: str(inst, TAG.SOPInstanceUID),
    frameOfReferenceUid: str(inst, TAG.FrameOfReferenceUID),
    description: str(inst, TAG.SeriesDescription),
    rows: num(inst, TAG.Rows, 0),
    columns: num(inst, TAG.Columns, 0),
    fractional: str(inst, SEG_TAG.SegmentationType) === "FRACTIONAL",
    maxFraction: num(inst, SEG_TAG.MaximumFractionalValue, 255),
    referencedSeries: items(inst, SEG_TAG.ReferencedSeriesSequence).map((s) => str(s, TAG.SeriesInstanceUID)),
    segments,
    frames,
  };
}

/** One frame's bytes as one byte per pixel, 1 inside the segment, 0 outside. */
export function unpackFrame(buffer, seg) {
  const n = seg.rows * seg.columns;
  const src = new Uint8Array(buffer);
  const out = new Uint8Array(n);
  if (seg.fractional) {
    // A fraction of the pixel in the segment: shown where it is at least half.
    const half = seg.maxFraction / 2;
    for (let i = 0; i < n && i < src.length; i++) out[i] = src[i] >= half && src[i] > 0 ? 1 : 0;
    return out;
  }
  for (let i = 0; i < n; i++) out[i] = (src[i >> 3] >> (i & 7)) & 1;
  return out;
}

/** Which image of `series` a SEG frame lies on: the source image its derivation names, else the
 *  image of the same frame of reference at its position (within half a slice). */
export function sourceImageIndex(frame, series, frameOfReferenceUid) {
  if (frame.sourceSop) {
    const i = series.images.findIndex((im) => im.sopInstanceUid === frame.sourceSop && im.frame === frame.sourceFrame);
    if (i >= 0) return i;
  }
  if (!frame.position) return -1;
  let best = -1;
  let bestDist = Infinity;
  series.images.forEach((im, i) => {
    if (!im.position || !im.orientation) return;
    if (frameOfReferenceUid && im.frameOfReferenceUid && im.frameOfReferenceUid !== frameOfReferenceUid) return;
    const o = im.orientation;
    const normal = [o[1] * o[5] - o[2] * o[4], o[2] * o[3] - o[0] * o[5], o[0] * o[4] - o[1] * o[3]];
    const d = Math.abs(normal.reduce((acc, v, k) => acc + v * (frame.position[k] - im.position[k]), 0));
    if (d < bestDist) { bestDist = d; best = i; }
  });
  const half = (series.images[best]?.sliceThickness || 1) / 2;
  return bestDist <= half + 1e-3 ? best : -1;
}

/** DICOM's scaled CIELab (PS3.3 C.10.7.1.1: L 0..100, a and b -128..127, each scaled to
 *  0..65535) to sRGB bytes. */
export function dicomLabToRgb([l16, a16, b16]) {
  const L = (l16 / 65535) * 100, A = (a16 / 65535) * 255 - 128, B = (b16 / 65535) * 255 - 128;
  const fy = (L + 16) / 116, fx = fy + A / 500, fz = fy - B / 200;
  const inv = (t) => (t ** 3 > 0.008856 ? t ** 3 : (t - 16 / 116) / 7.787);
  const [X, Y, Z] = [0.95047 * inv(fx), 1.0 * inv(fy), 1.08883 * inv(fz)];
  const lin = [3.2406 * X - 1.5372 * Y - 0.4986 * Z, -0.9689 * X + 1.8758 * Y + 0.0415 * Z, 0.0557 * X - 0.204 * Y + 1.057 * Z];
  return lin.map((c) => {
    const v = c <= 0.0031308 ? 12.92 * c : 1.055 * c ** (1 / 2.4) - 0.055;
    return Math.round(Math.min(1, Math.max(0, v)) * 255);
  });
}
