// Volume building and reformatting (js/mpr/volume.js) on synthetic series whose voxel values
// encode their own indexes, so every sampled voxel can be checked exactly.
import assert from "node:assert/strict";
import { test } from "node:test";

import {
  anatomicalPlane,
  applyAffine,
  buildVolume,
  crosshair,
  patientToVoxel,
  pointToVoxel,
  reformat,
  voxelToPatient,
  voxelToPoint,
  voxelToVoxelMatrix,
} from "../../../python/dicomvault/web/viewer/js/mpr/volume.js";

const W = 5; // columns (i)
const H = 4; // rows (j)
const D = 6; // slices (k)
const encode = (i, j, k) => i + 10 * j + 100 * k;

const sub = (a, b) => a.map((v, n) => v - b[n]);
const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const closeVec = (a, b, tol, msg) =>
  a.forEach((v, n) => assert.ok(Math.abs(v - b[n]) <= tol, `${msg ?? ""} [${a}] != [${b}]`));

/**
 * A series as data/series.js builds it: `order` lists the slice numbers k in the order the images
 * come (sorted by position along the normal), `pos(k)` the position of slice k.
 */
function makeSeries({
  width = W,
  height = H,
  depth = D,
  orientation = [1, 0, 0, 0, 1, 0],
  pixelSpacing = [0.8, 0.6],
  pos = (k) => [-100, -120, 10 + 2.5 * k],
  slope = () => 1,
  intercept = () => -1024,
} = {}) {
  const images = [];
  for (let k = 0; k < depth; k++) {
    const data = new Int16Array(width * height);
    for (let j = 0; j < height; j++) for (let i = 0; i < width; i++) data[j * width + i] = encode(i, j, k);
    images.push({
      rows: height,
      columns: width,
      samplesPerPixel: 1,
      photometric: "MONOCHROME2",
      slope: slope(k),
      intercept: intercept(k),
      units: "HU",
      pixelSpacing,
      position: pos(k),
      orientation,
      frameOfReferenceUid: "1.2.3",
      _pixels: { width, height, samples: 1, data, min: 0, max: 0 },
    });
  }
  return { modality: "CT", images };
}
const getPixels = (image) => image._pixels;

test("buildVolume keeps the stored type and geometry", () => {
  const v = buildVolume(makeSeries(), getPixels);
  assert.equal(v.error, undefined, v.error);
  assert.equal(v.width, W);
  assert.equal(v.height, H);
  assert.equal(v.depth, D);
  assert.ok(v.data instanceof Int16Array);
  assert.deepEqual(v.spacing, [0.6, 0.8, 2.5]);
  assert.deepEqual(v.origin, [-100, -120, 10]);
  assert.deepEqual(v.rowCosine, [1, 0, 0]);
  assert.deepEqual(v.columnCosine, [0, 1, 0]);
  assert.deepEqual(v.normal, [0, 0, 1]);
  assert.equal(v.slope, 1);
  assert.equal(v.intercept, -1024);
  assert.equal(v.frameOfReferenceUid, "1.2.3");
  for (let k = 0; k < D; k++)
    for (let j = 0; j < H; j++) for (let i = 0; i < W; i++) assert.equal(v.data[(k * H + j) * W + i], encode(i, j, k));
});

test("buildVolume stores Float32 modality values when the rescale differs per slice", () => {
  const v = buildVolume(makeSeries({ slope: (k) => 1 + k, intercept: (k) => k * 3 }), getPixels);
  assert.ok(v.data instanceof Float32Array);
  assert.equal(v.slope, 1);
  assert.equal(v.intercept, 0);
  assert.equal(v.data[(4 * H + 2) * W + 3], encode(3, 2, 4) * 5 + 12);
});

test("slice spacing is the median of the position steps, not SliceThickness", () => {
  // steps 2.5 except one of 2.6 (4 % off): accepted, median 2.5
  const v = buildVolume(makeSeries({ pos: (k) => [0, 0, 2.5 * k + (k >= 3 ? 0.1 : 0)] }), getPixels);
  assert.equal(v.error, undefined);
  assert.equal(v.spacing[2], 2.5);
});

test("buildVolume explains why a series cannot form a volume, without decoding", () => {
  let decoded = 0;
  const counting = (im) => {
    decoded++;
    return im._pixels;
  };
  const cases = [
    [makeSeries({ depth: 2 }), /fewer than 3 slices/],
    [
      (() => {
        const s = makeSeries();
        s.images[2].orientation = [0, 1, 0, 0, 0, -1];
        return s;
      })(),
      /mixed orientation/,
    ],
    [makeSeries({ pos: (k) => [0, 0, k < 3 ? 2 * k : 2 * k + 2] }), /non-uniform slice spacing/],
    [
      (() => {
        const s = makeSeries();
        s.images[1].rows = 8;
        return s;
      })(),
      /different sizes/,
    ],
    [
      (() => {
        const s = makeSeries();
        s.images[4].position = null;
        return s;
      })(),
      /missing ImagePositionPatient/,
    ],
    [makeSeries({ pos: (k) => [0, 0, [0, 2, 1, 3, 4, 5][k]] }), /not sorted/],
    [makeSeries({ pos: (k) => [k * 3, 0, k * 2.5] }), /gantry tilt/],
  ];
  for (const [series, reason] of cases) {
    const v = buildVolume(series, counting);
    assert.equal(typeof v.error, "string");
    assert.ok(Array.isArray(v.reasons));
    assert.ok(v.reasons.some((r) => reason.test(r)), `${reason} not in ${JSON.stringify(v.reasons)}`);
  }
  assert.equal(decoded, 0);
});

test("reformat: exact voxels in every plane, superior up for a feet-to-head axial series", () => {
  const v = buildVolume(makeSeries(), getPixels);
  for (let k = 0; k < D; k++) {
    const ax = reformat(v, "axial", k);
    assert.equal(ax.width, W);
    assert.equal(ax.height, H);
    assert.deepEqual(ax.pixelSpacing, [0.8, 0.6]);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) assert.equal(ax.data[y * W + x], encode(x, y, k));
  }
  for (let j = 0; j < H; j++) {
    const co = reformat(v, "coronal", j);
    assert.ok(co.data instanceof Int16Array);
    assert.equal(co.width, W);
    assert.equal(co.height, D);
    assert.deepEqual(co.pixelSpacing, [2.5, 0.6]);
    assert.equal(co.aspect, 2.5 / 0.6);
    // normal is +z (k grows toward the head), so row 0 is the last slice
    for (let y = 0; y < D; y++) for (let x = 0; x < W; x++) assert.equal(co.data[y * W + x], encode(x, j, D - 1 - y));
  }
  for (let i = 0; i < W; i++) {
    const sa = reformat(v, "sagittal", i);
    assert.equal(sa.width, H);
    assert.equal(sa.height, D);
    assert.deepEqual(sa.pixelSpacing, [2.5, 0.8]);
    for (let y = 0; y < D; y++) for (let x = 0; x < H; x++) assert.equal(sa.data[y * H + x], encode(i, x, D - 1 - y));
  }
  assert.throws(() => reformat(v, "coronal", H), RangeError);
  assert.throws(() => reformat(v, "oblique", 0), RangeError);
});

test("reformat: a head-to-feet series is not flipped, superior stays up", () => {
  for (const pos of [(k) => [0, 0, 10 + 2.5 * k], (k) => [0, 0, 10 - 2.5 * k]]) {
    const v = buildVolume(makeSeries({ pos }), getPixels);
    const co = reformat(v, "coronal", 1);
    const zTop = voxelToPatient(v, pointToVoxel(v, "coronal", 1, [0.5, 0.5]))[2];
    const zBottom = voxelToPatient(v, pointToVoxel(v, "coronal", 1, [0.5, D - 0.5]))[2];
    assert.ok(zTop > zBottom, `top z ${zTop} bottom z ${zBottom}`);
    // and the pixel drawn at the top really is the voxel pointToVoxel names
    const [i, j, k] = pointToVoxel(v, "coronal", 1, [2.5, 0.5]);
    assert.equal(co.data[2], encode(i, j, k));
  }
  const down = buildVolume(makeSeries({ pos: (k) => [0, 0, 10 - 2.5 * k] }), getPixels);
  assert.deepEqual(down.normal, [0, 0, -1]);
  assert.equal(reformat(down, "sagittal", 0).data[0], encode(0, 0, 0));
});

test("anatomical names of the planes of a coronal acquisition", () => {
  const v = buildVolume(makeSeries({ orientation: [1, 0, 0, 0, 0, -1], pos: (k) => [0, 2 * k, 0] }), getPixels);
  assert.equal(anatomicalPlane(v, "axial"), "coronal");
  assert.equal(anatomicalPlane(v, "coronal"), "axial");
  assert.equal(anatomicalPlane(v, "sagittal"), "sagittal");
});

test("pointToVoxel / voxelToPoint / crosshair agree in every plane", () => {
  const v = buildVolume(makeSeries(), getPixels);
  const voxel = [3, 1, 4];
  for (const plane of ["axial", "coronal", "sagittal"]) {
    const { point, index, inside } = voxelToPoint(v, plane, voxel);
    assert.ok(inside);
    assert.deepEqual(pointToVoxel(v, plane, index, point), voxel);
    // the reformatted pixel under that point holds that voxel
    const img = reformat(v, plane, index);
    assert.equal(img.data[Math.floor(point[1]) * img.width + Math.floor(point[0])], encode(...voxel));
  }
  const ch = crosshair(v, "sagittal", 3, voxelToPoint(v, "sagittal", voxel).point);
  assert.deepEqual(ch.voxel, voxel);
  assert.equal(ch.axial.index, 4);
  assert.equal(ch.coronal.index, 1);
  assert.equal(ch.sagittal.index, 3);
  assert.deepEqual(ch.patient, [-100 + 3 * 0.6, -120 + 1 * 0.8, 10 + 4 * 2.5]);
  assert.equal(voxelToPoint(v, "axial", [0, 0, D]).inside, false);
});

test("patientToVoxel / voxelToPatient round trip on an oblique series", () => {
  // rotate the axial frame 30° about z, then tilt 20° about the new row axis
  const rad = Math.PI / 180;
  const row = [Math.cos(30 * rad), Math.sin(30 * rad), 0];
  const col0 = [-Math.sin(30 * rad), Math.cos(30 * rad), 0];
  const n0 = cross(row, col0);
  const col = col0.map((c, a) => c * Math.cos(20 * rad) + n0[a] * Math.sin(20 * rad));
  const normal = cross(row, col);
  const origin = [12.5, -40, 88];
  const step = 1.7;
  const series = makeSeries({
    orientation: [...row, ...col],
    pixelSpacing: [0.9, 0.45],
    pos: (k) => origin.map((o, a) => o + normal[a] * step * k),
  });
  const v = buildVolume(series, getPixels);
  assert.equal(v.error, undefined, v.error);
  closeVec(v.spacing, [0.45, 0.9, step], 1e-9);
  // every slice's position is its k, and one column / row step moves by the spacing along the cosines
  series.images.forEach((im, k) => closeVec(voxelToPatient(v, [0, 0, k]), im.position, 1e-9));
  closeVec(sub(voxelToPatient(v, [1, 0, 0]), origin), row.map((c) => c * 0.45), 1e-9);
  closeVec(sub(voxelToPatient(v, [0, 1, 0]), origin), col.map((c) => c * 0.9), 1e-9);
  for (const p of [[0, 0, 0], [3.25, 1.5, 4.75], [-2, 7, 11], [4, 3, 5]]) {
    closeVec(patientToVoxel(v, voxelToPatient(v, p)), p, 1e-9, "voxel round trip");
  }
  for (const x of [[0, 0, 0], [10, -20, 30], [-55.5, 3.25, 120]]) {
    closeVec(voxelToPatient(v, patientToVoxel(v, x)), x, 1e-9, "patient round trip");
  }
  // a point 2 mm along the normal from the origin is 2 / step slices in
  closeVec(patientToVoxel(v, origin.map((o, a) => o + 2 * normal[a])), [0, 0, 2 / step], 1e-9);
  // fusion: an axial series in the same frame maps through the same patient points
  const axial = buildVolume(makeSeries({ pixelSpacing: [1, 1], pos: (k) => [0, 0, 3 * k] }), getPixels);
  const m = voxelToVoxelMatrix(axial, v);
  for (const p of [[1, 2, 3], [0, 0, 0], [4.5, 0.5, 2]]) {
    closeVec(applyAffine(m, p), patientToVoxel(v, voxelToPatient(axial, p)), 1e-9, "fusion");
  }
  assert.ok(Math.abs(dot(v.normal, normal) - 1) < 1e-12);
});

test("a coronal slice of a 512×512×300 volume takes well under 20 ms", () => {
  const size = 512;
  const depth = 300;
  const slice = new Int16Array(size * size);
  for (let p = 0; p < slice.length; p++) slice[p] = p & 2047;
  const images = [];
  for (let k = 0; k < depth; k++) {
    images.push({
      rows: size,
      columns: size,
      samplesPerPixel: 1,
      slope: 1,
      intercept: -1024,
      pixelSpacing: [0.7, 0.7],
      position: [0, 0, k * 0.625],
      orientation: [1, 0, 0, 0, 1, 0],
    });
  }
  const v = buildVolume({ images }, () => ({ width: size, height: size, samples: 1, data: slice }));
  assert.equal(v.error, undefined, v.error);
  for (const plane of ["coronal", "sagittal"]) {
    reformat(v, plane, 10); // warm up
    let best = Infinity;
    for (let n = 0; n < 5; n++) {
      const t0 = performance.now();
      const out = reformat(v, plane, 100 + n);
      best = Math.min(best, performance.now() - t0);
      assert.equal(out.height, depth);
    }
    assert.ok(best < 20, `${plane} reformat took ${best.toFixed(2)} ms`);
  }
});
