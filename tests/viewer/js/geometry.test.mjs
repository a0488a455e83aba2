// Measurement maths (js/tools/geometry.js) against hand-computed values.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  angleDeg,
  ellipseFromDrag,
  lengthMm,
  rectangleFromDrag,
  roiStats,
} from "../../../python/dicomvault/web/viewer/js/tools/geometry.js";

const close = (actual, expected, tol, msg) =>
  assert.ok(Math.abs(actual - expected) <= tol, `${msg ?? ""} ${actual} != ${expected} ± ${tol}`);

test("length: 3-4-5 triangle at 0.5 mm is 2.5 mm", () => {
  assert.deepEqual(lengthMm([1, 1], [4, 5], [0.5, 0.5]), { value: 2.5, unit: "mm" });
});

test("length: spacing is [row, column], so dy uses the row spacing", () => {
  // dx = 3 columns * 1 mm, dy = 4 rows * 2 mm
  const { value, unit } = lengthMm([0, 0], [3, 4], [2, 1]);
  assert.equal(unit, "mm");
  close(value, Math.sqrt(9 + 64), 1e-12);
});

test("length: pixels without spacing", () => {
  assert.deepEqual(lengthMm([0, 0], [3, 4], null), { value: 5, unit: "px" });
  assert.deepEqual(lengthMm([0, 0], [3, 4], [0, 0]), { value: 5, unit: "px" });
});

test("angle: right angle, 45° and anisotropic spacing", () => {
  close(angleDeg([5, 0], [0, 0], [0, 7], [0.5, 0.5]), 90, 1e-12);
  close(angleDeg([1, 0], [0, 0], [1, 1], null), 45, 1e-12);
  // Rows 2 mm apart, columns 1 mm: the diagonal arm is (1 mm, 2 mm) in the patient.
  close(angleDeg([1, 0], [0, 0], [1, 1], [2, 1]), (Math.atan2(2, 1) * 180) / Math.PI, 1e-12);
  close(angleDeg([1, 0], [0, 0], [-1, 0], null), 180, 1e-12);
  close(angleDeg([3, 3], [1, 1], [5, 5], null), 0, 1e-12);
  assert.ok(Number.isNaN(angleDeg([0, 0], [0, 0], [1, 1], null)));
});

test("ellipseFromDrag: SCOORD major axis then minor axis of the inscribed ellipse", () => {
  assert.deepEqual(ellipseFromDrag([10, 20], [2, 4]), [[6, 4], [6, 20], [2, 12], [10, 12]]);
  assert.deepEqual(ellipseFromDrag([0, 0], [8, 2]), [[0, 1], [8, 1], [4, 0], [4, 2]]);
});

test("rectangleFromDrag: TL, TR, BR, BL", () => {
  assert.deepEqual(rectangleFromDrag([6, 8], [2, 3]), [[2, 3], [6, 3], [6, 8], [2, 8]]);
});

// 10×10 image: 1000 outside the expected ROI (so any pixel wrongly included shows in max), and
// the column index inside it.
function syntheticImage(inside) {
  const data = new Int16Array(100).fill(1000);
  for (const [i, j] of inside) data[j * 10 + i] = i;
  return { width: 10, height: 10, samples: 1, data, min: 0, max: 1000 };
}

// Ellipse centred (5, 5), semi-axes 3 (x) and 2 (y). Pixel centres (i + .5, j + .5):
// rows 4 and 5 (dy = ±0.5) hold columns 2..7; rows 3 and 6 (dy = ±1.5) columns 3..6;
// rows 2 and 7 (dy = ±2.5) none. 20 pixels.
const ELLIPSE_INSIDE = [];
for (const j of [4, 5]) for (let i = 2; i <= 7; i++) ELLIPSE_INSIDE.push([i, j]);
for (const j of [3, 6]) for (let i = 3; i <= 6; i++) ELLIPSE_INSIDE.push([i, j]);

test("ellipse ROI: exact count, mean, sample SD, min, max in modality units", () => {
  const image = { slope: 2, intercept: -10, units: "HU", pixelSpacing: [0.5, 0.25], samplesPerPixel: 1 };
  const pixels = syntheticImage(ELLIPSE_INSIDE);
  const s = roiStats("ellipse", [[2, 5], [8, 5], [5, 3], [5, 7]], image, pixels);
  assert.equal(s.count, 20);
  // stored: mean 90/20 = 4.5, squared deviations sum 45 -> sample variance 45/19
  assert.equal(s.mean, 4.5 * 2 - 10);
  close(s.sd, 2 * Math.sqrt(45 / 19), 1e-12);
  assert.equal(s.min, 2 * 2 - 10);
  assert.equal(s.max, 7 * 2 - 10);
  assert.equal(s.unit, "HU");
  assert.equal(s.areaUnit, "mm²");
  close(s.areaMm2, Math.PI * 3 * 2 * 0.5 * 0.25, 1e-12);
  // the same ellipse with the axes given minor-first in the other direction
  const t = roiStats("ellipse", [[5, 7], [5, 3], [8, 5], [2, 5]], image, pixels);
  assert.deepEqual(t, s);
});

test("negative slope swaps min and max; no spacing gives px²", () => {
  const s = roiStats("ellipse", [[2, 5], [8, 5], [5, 3], [5, 7]], { slope: -1, intercept: 0 }, syntheticImage(ELLIPSE_INSIDE));
  assert.equal(s.min, -7);
  assert.equal(s.max, -2);
  assert.equal(s.mean, -4.5);
  assert.equal(s.areaUnit, "px²");
  close(s.areaMm2, Math.PI * 6, 1e-12);
  assert.equal(s.unit, "");
});

test("rectangle ROI: 2 corners and 4 corners agree, centres inside the box", () => {
  // box x in [2, 6], y in [3, 8]: columns 2..5, rows 3..7 -> 20 pixels
  const inside = [];
  for (let j = 3; j <= 7; j++) for (let i = 2; i <= 5; i++) inside.push([i, j]);
  const pixels = syntheticImage(inside);
  const image = { slope: 1, intercept: 0, pixelSpacing: [2, 3] };
  const two = roiStats("rectangle", [[6, 8], [2, 3]], image, pixels);
  const four = roiStats("rectangle", rectangleFromDrag([2, 3], [6, 8]), image, pixels);
  assert.deepEqual(two, four);
  assert.equal(two.count, 20);
  assert.equal(two.mean, 3.5);
  assert.equal(two.min, 2);
  assert.equal(two.max, 5);
  close(two.sd, Math.sqrt((5 * (2.25 + 0.25 + 0.25 + 2.25)) / 19), 1e-12);
  assert.equal(two.areaMm2, 4 * 5 * 2 * 3);
  assert.throws(() => roiStats("rectangle", [[0, 0], [4, 1], [5, 5], [1, 4]], image, pixels), RangeError);
});

test("ROI partly outside the image is clipped; one pixel has no SD", () => {
  const pixels = syntheticImage([[0, 0]]);
  const s = roiStats("rectangle", [[-5, -5], [1, 1]], {}, pixels);
  assert.equal(s.count, 1);
  assert.equal(s.mean, 0);
  assert.equal(s.sd, null);
  assert.equal(s.areaMm2, 36);
  const none = roiStats("rectangle", [[20, 20], [30, 30]], {}, pixels);
  assert.equal(none.count, 0);
  assert.equal(none.mean, null);
});

test("ellipse pixel count and area match πab within 1 %, axis-aligned and rotated", () => {
  const width = 1000;
  const height = 800;
  const pixels = { width, height, samples: 1, data: new Uint16Array(width * height) };
  const a = 400;
  const b = 250;
  const image = { pixelSpacing: [0.2, 0.1] };
  const aligned = roiStats("ellipse", [[100, 400], [900, 400], [500, 150], [500, 650]], image, pixels);
  close(aligned.count / (Math.PI * a * b), 1, 0.01, "aligned count");
  close(aligned.areaMm2 / (Math.PI * a * b * 0.02), 1, 0.01, "aligned area");
  const c = Math.SQRT1_2;
  const [cx, cy, r1, r2] = [500, 400, 350, 200];
  const rotated = roiStats(
    "ellipse",
    [[cx - r1 * c, cy - r1 * c], [cx + r1 * c, cy + r1 * c], [cx + r2 * c, cy - r2 * c], [cx - r2 * c, cy + r2 * c]],
    image,
    pixels,
  );
  close(rotated.count / (Math.PI * r1 * r2), 1, 0.01, "rotated count");
  close(rotated.areaMm2 / (Math.PI * r1 * r2 * 0.02), 1, 1e-9, "rotated area");
  assert.equal(rotated.mean, 0);
});

test("colour images: area and count, no statistics", () => {
  const pixels = { width: 4, height: 4, samples: 3, data: new Uint8Array(48) };
  const s = roiStats("rectangle", [[0, 0], [2, 2]], { samplesPerPixel: 3, photometric: "RGB" }, pixels);
  assert.equal(s.count, 4);
  assert.equal(s.mean, null);
  assert.equal(s.sd, null);
  assert.equal(s.min, null);
  assert.equal(s.max, null);
  assert.equal(s.areaMm2, 4);
});

test("a 4k×3k mammogram-sized ellipse is fast", () => {
  const width = 4096;
  const height = 3328;
  const data = new Uint16Array(width * height);
  for (let p = 0; p < data.length; p++) data[p] = p & 4095;
  const pixels = { width, height, samples: 1, data };
  const points = ellipseFromDrag([0, 0], [width, height]);
  roiStats("ellipse", points, {}, pixels); // warm up the JIT
  let best = Infinity;
  for (let n = 0; n < 3; n++) {
    const t0 = performance.now();
    const s = roiStats("ellipse", points, {}, pixels);
    best = Math.min(best, performance.now() - t0);
    close(s.count / ((Math.PI * width * height) / 4), 1, 0.001);
  }
  assert.ok(best < 250, `roiStats took ${best.toFixed(1)} ms`);
});
