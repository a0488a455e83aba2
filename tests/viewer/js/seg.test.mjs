// SEG parsing for the overlay (js/data/seg.js): bit unpacking (PS3.5 8.1.1, first pixel in the low
// bit), FRACTIONAL frames, the frame → source image mapping by derivation and, without one, by
// position along the slice normal in the same frame of reference; DICOM CIELab to sRGB.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  dicomLabToRgb,
  parseSeg,
  sourceImageIndex,
  unpackFrame,
} from "../../../python/dicomvault/web/viewer/js/data/seg.js";

const v = (vr, ...Value) => ({ vr, Value });

test("binary frames unpack low bit first, across byte boundaries", () => {
  // 3 rows x 5 columns = 15 pixels, set: 0, 7, 8, 14 -> bytes 0b10000001, 0b01000001
  const mask = unpackFrame(new Uint8Array([0x81, 0x41]).buffer, { rows: 3, columns: 5, fractional: false });
  assert.deepEqual([...mask].map((x, i) => (x ? i : -1)).filter((i) => i >= 0), [0, 7, 8, 14]);
  assert.equal(mask.length, 15);
});

test("fractional frames show where the fraction is at least half", () => {
  const seg = { rows: 1, columns: 4, fractional: true, maxFraction: 200 };
  assert.deepEqual([...unpackFrame(new Uint8Array([0, 99, 100, 200]).buffer, seg)], [0, 0, 1, 1]);
});

function segJson() {
  const frame = (extra) => ({
    "0062000A": v("SQ", { "0062000B": v("US", 2) }),
    ...extra,
  });
  return {
    "00080016": v("UI", "1.2.840.10008.5.1.4.1.1.66.4"),
    "00080018": v("UI", "9.9.1"),
    "0020000D": v("UI", "1.1"),
    "0020000E": v("UI", "9.9"),
    "00200052": v("UI", "7.7"),
    "00280008": v("IS", 3),
    "00280010": v("US", 2),
    "00280011": v("US", 2),
    "00620001": v("CS", "BINARY"),
    "00620002": v("SQ",
      { "00620004": v("US", 1), "00620005": v("LO", "left") },
      { "00620004": v("US", 2), "00620005": v("LO", "right"), "0062000D": v("US", 65535, 32896, 32896) }),
    "52009230": v("SQ",
      // frame 1: derived from instance 1.3 (frame 1)
      frame({ "00089124": v("SQ", { "00082112": v("SQ", { "00081155": v("UI", "1.3"), "00081160": v("IS", 1) }) }) }),
      // frame 2: no derivation, a position 0.4 mm off slice z = 4
      frame({ "00209113": v("SQ", { "00200032": v("DS", 0, 0, 4.4) }) }),
      // frame 3: between slices, farther than half a slice thickness from any
      frame({ "00209113": v("SQ", { "00200032": v("DS", 0, 0, 7.1) }) })),
  };
}

function series(frameOfReferenceUid = "7.7") {
  const images = [0, 2, 4, 6, 9].map((z, i) => ({
    sopInstanceUid: `1.${i + 1}`, frame: 1, position: [0, 0, z], orientation: [1, 0, 0, 0, 1, 0],
    sliceThickness: 1.5, frameOfReferenceUid,
  }));
  return { seriesUid: "1.2", images };
}

test("frames map to their source image by derivation, else by position", () => {
  const seg = parseSeg(segJson());
  assert.equal(seg.frames.length, 3);
  assert.deepEqual(seg.frames.map((f) => f.segment), [2, 2, 2]);
  assert.equal(seg.frames[0].sourceSop, "1.3");
  const s = series();
  assert.equal(sourceImageIndex(seg.frames[0], s, seg.frameOfReferenceUid), 2);  // by derivation
  assert.equal(sourceImageIndex(seg.frames[1], s, seg.frameOfReferenceUid), 2);  // z 4.4 -> slice z 4
  assert.equal(sourceImageIndex(seg.frames[2], s, seg.frameOfReferenceUid), -1); // 1.1 mm from z 6
  // another frame of reference: positions mean nothing there
  assert.equal(sourceImageIndex(seg.frames[1], series("8.8"), seg.frameOfReferenceUid), -1);
});

test("segment colours: the recommended CIELab, else the palette", () => {
  const seg = parseSeg(segJson());
  assert.deepEqual(seg.segments.get(2).color, [255, 255, 255]);  // L 100, a 0, b 0 is white
  assert.equal(seg.segments.get(1).label, "left");
  assert.equal(seg.segments.get(1).color.length, 3);
  assert.deepEqual(dicomLabToRgb([0, 32896, 32896]), [0, 0, 0]);
});
