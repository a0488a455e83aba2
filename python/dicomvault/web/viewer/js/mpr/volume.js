// Volume building and reformatting for MPR, and the voxel <-> patient mappings that linked
// crosshairs and fusion need. Pure: no DOM, no state.
//
// Index space. A voxel is [i, j, k]: i the column (along ImageOrientationPatient's row direction),
// j the row (along its column direction), k the slice (in the series' sorted order). Integer
// indexes are voxel CENTRES, because ImagePositionPatient is the centre of the first pixel; the
// 2-D planes below use SCOORD image coordinates like the rest of the viewer (pixel centre at
// c + 0.5), so a plane point [x, y] and a voxel differ by that half pixel.
//
// Plane names are index-space names: "axial" fixes k (the acquired slices), "coronal" fixes j
// (a row), "sagittal" fixes i (a column). They are anatomically right for an axial acquisition;
// anatomicalPlane() tells the real orientation of each for any other acquisition.
//
// Slice axis on screen. In the coronal and sagittal planes the output rows step along the slice
// axis. The direction is chosen so that the patient axis the slice axis mostly follows reads the
// usual way: superior up when it is mostly head-feet, anterior up when mostly front-back, patient
// right up when mostly left-right. (Patient coordinates are LPS: +x left, +y posterior, +z head.)
// For an axial CT stacked feet to head this puts row 0 at the last (most superior) slice.

/**
 * @typedef {object} Volume
 * @property {number} width   columns (i)
 * @property {number} height  rows (j)
 * @property {number} depth   slices (k)
 * @property {Int16Array|Uint16Array|Uint8Array|Int8Array|Int32Array|Uint32Array|Float32Array} data
 *           voxel (i, j, k) at data[(k * height + j) * width + i]; stored values when every slice shares
 *           one slope/intercept and one array type (apply slope/intercept to get modality values), else
 *           Float32 modality values with slope 1 and intercept 0
 * @property {[number, number, number]} spacing  [column spacing (mm along i), row spacing (mm along j),
 *           slice spacing (mm along k, from the positions: median of successive distances)]
 * @property {[number, number, number]} origin   patient position of voxel [0, 0, 0]'s centre (mm, LPS)
 * @property {[number, number, number]} rowCosine     direction of increasing i
 * @property {[number, number, number]} columnCosine  direction of increasing j
 * @property {[number, number, number]} normal        direction of increasing k (unit; ±rowCosine×columnCosine)
 * @property {number} slope
 * @property {number} intercept
 * @property {string} units
 * @property {string|null} frameOfReferenceUid
 */

/**
 * @typedef {object} Plane
 * @property {number} width
 * @property {number} height
 * @property {Volume["data"]} data   row-major, same array type (and slope/intercept) as the volume
 * @property {[number, number]} pixelSpacing  [rowSpacing, colSpacing] in mm, as PixelSpacing
 * @property {number} aspect  pixel height / pixel width: draw each pixel this many times taller than wide
 */

/** @typedef {"axial"|"coronal"|"sagittal"} PlaneName */

const PLANES = ["axial", "coronal", "sagittal"];
// The same orientation within about 0.8°: files round their cosines, a real tilt is much larger.
const ORIENTATION_TOLERANCE = 1e-4;
const SPACING_TOLERANCE = 0.1;

const dot = (a, b) => a[0] * b[0] + a[1] * b[1] + a[2] * b[2];
const sub = (a, b) => [a[0] - b[0], a[1] - b[1], a[2] - b[2]];
const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];
const norm = (a) => Math.hypot(a[0], a[1], a[2]);
const unit = (a) => {
  const n = norm(a);
  return [a[0] / n, a[1] / n, a[2] / n];
};
const isVec = (a, n) => Array.isArray(a) && a.length === n && a.every(Number.isFinite);

function median(values) {
  const s = [...values].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Everything that stops the images forming a volume, cheapest checks first, without decoding. */
function geometryProblems(images) {
  const reasons = [];
  if (images.length < 3) reasons.push(`fewer than 3 slices (${images.length})`);
  if (images.length === 0) return { reasons };
  const first = images[0];
  if (images.some((im) => im.samplesPerPixel != null && im.samplesPerPixel !== 1)) {
    reasons.push("not grayscale (colour images cannot form a volume)");
  }
  if (images.some((im) => im.rows !== first.rows || im.columns !== first.columns)) {
    reasons.push("slices have different sizes (rows × columns)");
  }
  if (images.some((im) => !isVec(im.position, 3))) reasons.push("missing ImagePositionPatient");
  if (images.some((im) => !isVec(im.orientation, 6))) reasons.push("missing ImageOrientationPatient");
  if (images.some((im) => !isVec(im.pixelSpacing, 2) || !(im.pixelSpacing[0] > 0 && im.pixelSpacing[1] > 0))) {
    reasons.push("missing PixelSpacing");
  } else if (
    images.some(
      (im) =>
        Math.abs(im.pixelSpacing[0] - first.pixelSpacing[0]) > 1e-4 * first.pixelSpacing[0] ||
        Math.abs(im.pixelSpacing[1] - first.pixelSpacing[1]) > 1e-4 * first.pixelSpacing[1],
    )
  ) {
    reasons.push("slices have different PixelSpacing");
  }
  const fors = new Set(images.map((im) => im.frameOfReferenceUid).filter(Boolean));
  if (fors.size > 1) reasons.push("mixed FrameOfReferenceUID");
  if (reasons.length || images.length < 3) return { reasons };

  const row = unit(first.orientation.slice(0, 3));
  const col = unit(first.orientation.slice(3, 6));
  for (const im of images) {
    const r = unit(im.orientation.slice(0, 3));
    const c = unit(im.orientation.slice(3, 6));
    if (1 - dot(r, row) > ORIENTATION_TOLERANCE || 1 - dot(c, col) > ORIENTATION_TOLERANCE) {
      reasons.push("mixed orientation (ImageOrientationPatient differs between slices)");
      return { reasons };
    }
  }
  const n = unit(cross(row, col));
  const steps = [];
  for (let k = 1; k < images.length; k++) steps.push(dot(sub(images[k].position, images[k - 1].position), n));
  if (steps.some((d) => d === 0)) reasons.push("duplicate slice positions");
  else if (!(steps.every((d) => d > 0) || steps.every((d) => d < 0))) reasons.push("slices are not sorted by position");
  if (reasons.length) return { reasons };

  const sign = steps[0] > 0 ? 1 : -1;
  const distances = steps.map(Math.abs);
  const sliceSpacing = median(distances);
  const lo = Math.min(...distances);
  const hi = Math.max(...distances);
  if (hi - sliceSpacing > SPACING_TOLERANCE * sliceSpacing || sliceSpacing - lo > SPACING_TOLERANCE * sliceSpacing) {
    reasons.push(
      `non-uniform slice spacing (${lo.toFixed(3)} to ${hi.toFixed(3)} mm, median ${sliceSpacing.toFixed(3)} mm)`,
    );
  }
  // Slices shifted within their plane (gantry tilt) would land in the wrong place when stacked
  // straight: allow half a pixel of drift.
  const [rs, cs] = first.pixelSpacing;
  const p0 = first.position;
  for (let k = 1; k < images.length; k++) {
    const d = sub(images[k].position, p0);
    if (Math.abs(dot(d, row)) > cs / 2 || Math.abs(dot(d, col)) > rs / 2) {
      reasons.push("slice positions are not along the slice normal (gantry tilt or sheared series)");
      break;
    }
  }
  // + 0 turns -0 into 0: a flipped axis component of zero should print and compare as 0.
  const normal = [n[0] * sign + 0, n[1] * sign + 0, n[2] * sign + 0];
  return { reasons, row, col, normal, sliceSpacing };
}

/**
 * Stack a series' sorted slices into a volume.
 * @param {{images: object[], modality?: string}} series images as data/series.js builds them, sorted
 * @param {(image: object) => {width: number, height: number, samples?: number, data: ArrayLike<number>}} getPixels
 *        the decoded pixels of one image (synchronous: decode the series before building)
 * @returns {Volume | {error: string, reasons: string[]}} an error object instead of throwing, so the
 *          UI can say why MPR is unavailable for this series
 */
export function buildVolume(series, getPixels) {
  const images = series?.images ?? [];
  const geo = geometryProblems(images);
  const fail = (reasons) => ({ error: `cannot form a volume: ${reasons.join("; ")}`, reasons });
  if (geo.reasons.length) return fail(geo.reasons);

  const first = images[0];
  const width = first.columns;
  const height = first.rows;
  const depth = images.length;
  const sliceSize = width * height;
  const slices = images.map((im) => getPixels(im));
  const reasons = [];
  if (slices.some((p) => !p || p.width !== width || p.height !== height || p.data.length < sliceSize)) {
    reasons.push("decoded pixels do not match Rows × Columns");
  }
  if (slices.some((p) => p && (p.samples ?? 1) !== 1)) reasons.push("not grayscale (decoded colour pixels)");
  if (reasons.length) return fail(reasons);

  const slope0 = first.slope ?? 1;
  const intercept0 = first.intercept ?? 0;
  const Ctor = slices[0].data.constructor;
  const uniform = images.every(
    (im, k) => (im.slope ?? 1) === slope0 && (im.intercept ?? 0) === intercept0 && slices[k].data.constructor === Ctor,
  );
  let data;
  if (uniform && ArrayBuffer.isView(slices[0].data)) {
    data = new Ctor(sliceSize * depth);
    for (let k = 0; k < depth; k++) {
      const src = slices[k].data;
      data.set(src.length === sliceSize ? src : src.subarray(0, sliceSize), k * sliceSize);
    }
  } else {
    // Per-slice rescale (PET, some MR) cannot share one slope: store modality values instead.
    data = new Float32Array(sliceSize * depth);
    for (let k = 0; k < depth; k++) {
      const src = slices[k].data;
      const slope = images[k].slope ?? 1;
      const intercept = images[k].intercept ?? 0;
      const off = k * sliceSize;
      for (let p = 0; p < sliceSize; p++) data[off + p] = src[p] * slope + intercept;
    }
  }
  return {
    width,
    height,
    depth,
    data,
    spacing: [first.pixelSpacing[1], first.pixelSpacing[0], geo.sliceSpacing],
    origin: [...first.position],
    rowCosine: geo.row,
    columnCosine: geo.col,
    normal: geo.normal,
    slope: uniform ? slope0 : 1,
    intercept: uniform ? intercept0 : 0,
    units: first.units ?? "",
    frameOfReferenceUid: first.frameOfReferenceUid ?? null,
  };
}

/**
 * True when output rows of the coronal/sagittal planes run with increasing k (k = row), false when
 * they run against it (k = depth - 1 - row). See the header comment for the rule.
 * @param {Volume} volume
 * @returns {boolean}
 */
export function sliceAxisDown(volume) {
  const n = volume.normal;
  const ax = Math.abs(n[0]);
  const ay = Math.abs(n[1]);
  const az = Math.abs(n[2]);
  // Down the screen should go to the feet (-z), posterior (+y) or patient left (+x).
  if (az >= ax && az >= ay) return n[2] < 0;
  if (ay >= ax) return n[1] > 0;
  return n[0] > 0;
}

/**
 * The anatomical plane a named plane really shows, from the dominant component of its normal.
 * @param {Volume} volume
 * @param {PlaneName} plane
 * @returns {PlaneName}
 */
export function anatomicalPlane(volume, plane) {
  const n = plane === "axial" ? volume.normal : plane === "coronal" ? volume.columnCosine : volume.rowCosine;
  const a = n.map(Math.abs);
  if (a[2] >= a[0] && a[2] >= a[1]) return "axial";
  return a[1] >= a[0] ? "coronal" : "sagittal";
}

function planeExtent(volume, plane) {
  if (plane === "axial") return volume.depth;
  if (plane === "coronal") return volume.height;
  if (plane === "sagittal") return volume.width;
  throw new RangeError(`unknown plane ${plane}`);
}

/**
 * The 2-D slice of `volume` at `index` along `plane`, nearest neighbour: one output pixel per voxel,
 * so nothing is interpolated and the renderer stretches by `aspect`.
 *   axial:    fixed k; x = i, y = j;            width = columns, height = rows
 *   coronal:  fixed j; x = i, y = slice axis;   width = columns, height = slices
 *   sagittal: fixed i; x = j, y = slice axis;   width = rows,    height = slices
 * @param {Volume} volume
 * @param {PlaneName} plane
 * @param {number} index integer in [0, number of planes of that kind)
 * @returns {Plane}
 */
export function reformat(volume, plane, index) {
  const extent = planeExtent(volume, plane);
  if (!Number.isInteger(index) || index < 0 || index >= extent) {
    throw new RangeError(`${plane} index ${index} outside [0, ${extent - 1}]`);
  }
  const { width: W, height: H, depth: D, data, spacing } = volume;
  const Ctor = /** @type {any} */ (data.constructor);
  const down = sliceAxisDown(volume);
  const WH = W * H;
  let out;
  let width;
  let height;
  let pixelSpacing;
  if (plane === "axial") {
    width = W;
    height = H;
    out = data.slice(index * WH, (index + 1) * WH);
    pixelSpacing = [spacing[1], spacing[0]];
  } else if (plane === "coronal") {
    width = W;
    height = D;
    out = new Ctor(W * D);
    // Each output row is one contiguous row of one slice: a block copy per slice.
    for (let r = 0; r < D; r++) {
      const k = down ? r : D - 1 - r;
      const src = k * WH + index * W;
      out.set(data.subarray(src, src + W), r * W);
    }
    pixelSpacing = [spacing[2], spacing[0]];
  } else {
    width = H;
    height = D;
    out = new Ctor(H * D);
    for (let r = 0; r < D; r++) {
      const k = down ? r : D - 1 - r;
      let src = k * WH + index;
      const dst = r * H;
      for (let c = 0; c < H; c++, src += W) out[dst + c] = data[src];
    }
    pixelSpacing = [spacing[2], spacing[1]];
  }
  return { width, height, data: out, pixelSpacing, aspect: pixelSpacing[0] / pixelSpacing[1] };
}

/**
 * A point of a plane (SCOORD [x, y] in that plane's image) to continuous voxel indexes.
 * @param {Volume} volume
 * @param {PlaneName} plane
 * @param {number} index the plane's slice index
 * @param {[number, number]} point
 * @returns {[number, number, number]} [i, j, k], integers at voxel centres
 */
export function pointToVoxel(volume, plane, index, point) {
  const c = point[0] - 0.5;
  const r = point[1] - 0.5;
  if (plane === "axial") return [c, r, index];
  const k = sliceAxisDown(volume) ? r : volume.depth - 1 - r;
  if (plane === "coronal") return [c, index, k];
  if (plane === "sagittal") return [index, c, k];
  throw new RangeError(`unknown plane ${plane}`);
}

/**
 * Where a voxel appears in a plane, and which slice of that plane holds it.
 * @param {Volume} volume
 * @param {PlaneName} plane
 * @param {[number, number, number]} voxel continuous [i, j, k]
 * @returns {{point: [number, number], index: number, inside: boolean}} point in SCOORD of the plane's
 *          image; index = the nearest slice (rounded, not clamped: `inside` says whether it exists)
 */
export function voxelToPoint(volume, plane, voxel) {
  const [i, j, k] = voxel;
  const row = sliceAxisDown(volume) ? k : volume.depth - 1 - k;
  let point;
  let fixed;
  if (plane === "axial") [point, fixed] = [[i + 0.5, j + 0.5], k];
  else if (plane === "coronal") [point, fixed] = [[i + 0.5, row + 0.5], j];
  else if (plane === "sagittal") [point, fixed] = [[j + 0.5, row + 0.5], i];
  else throw new RangeError(`unknown plane ${plane}`);
  const index = Math.round(fixed);
  return { point, index, inside: index >= 0 && index < planeExtent(volume, plane) };
}

/**
 * Linked crosshairs: a point picked in one plane, seen from all three.
 * @param {Volume} volume
 * @param {PlaneName} plane the plane the point was picked in
 * @param {number} index its slice index
 * @param {[number, number]} point SCOORD in that plane
 * @returns {{voxel: [number, number, number], patient: [number, number, number],
 *           axial: {point: [number, number], index: number, inside: boolean},
 *           coronal: {point: [number, number], index: number, inside: boolean},
 *           sagittal: {point: [number, number], index: number, inside: boolean}}}
 */
export function crosshair(volume, plane, index, point) {
  const voxel = pointToVoxel(volume, plane, index, point);
  const out = { voxel, patient: voxelToPatient(volume, voxel) };
  for (const p of PLANES) out[p] = voxelToPoint(volume, p, voxel);
  return /** @type {any} */ (out);
}

/**
 * The affine map voxel [i, j, k] -> patient [x, y, z], as 12 numbers, row-major 3×4
 * ([m0 m1 m2 m3] gives x = m0 i + m1 j + m2 k + m3, and so on).
 * @param {Volume} volume
 * @returns {Float64Array}
 */
export function voxelToPatientMatrix(volume) {
  const [cs, rs, ss] = volume.spacing;
  const r = volume.rowCosine;
  const c = volume.columnCosine;
  const n = volume.normal;
  const o = volume.origin;
  const m = new Float64Array(12);
  for (let a = 0; a < 3; a++) {
    m[a * 4] = r[a] * cs;
    m[a * 4 + 1] = c[a] * rs;
    m[a * 4 + 2] = n[a] * ss;
    m[a * 4 + 3] = o[a];
  }
  return m;
}

/**
 * The inverse map, patient -> voxel. A general 3×3 inverse rather than a transpose: the cosines in
 * files are rounded and not exactly orthonormal, and the round trip should still be exact.
 * @param {Volume} volume
 * @returns {Float64Array} row-major 3×4
 */
export function patientToVoxelMatrix(volume) {
  return invertAffine(voxelToPatientMatrix(volume));
}

function invertAffine(m) {
  const [a, b, c, tx, d, e, f, ty, g, h, i, tz] = m;
  const A = e * i - f * h;
  const B = -(d * i - f * g);
  const C = d * h - e * g;
  const det = a * A + b * B + c * C;
  if (!det) throw new RangeError("singular voxel geometry");
  const inv = [
    A / det, -(b * i - c * h) / det, (b * f - c * e) / det,
    B / det, (a * i - c * g) / det, -(a * f - c * d) / det,
    C / det, -(a * h - b * g) / det, (a * e - b * d) / det,
  ];
  const out = new Float64Array(12);
  for (let r = 0; r < 3; r++) {
    out[r * 4] = inv[r * 3];
    out[r * 4 + 1] = inv[r * 3 + 1];
    out[r * 4 + 2] = inv[r * 3 + 2];
    out[r * 4 + 3] = -(inv[r * 3] * tx + inv[r * 3 + 1] * ty + inv[r * 3 + 2] * tz);
  }
  return out;
}

/**
 * Apply a row-major 3×4 affine to a point.
 * @param {ArrayLike<number>} m
 * @param {ArrayLike<number>} p
 * @returns {[number, number, number]}
 */
export function applyAffine(m, p) {
  return [
    m[0] * p[0] + m[1] * p[1] + m[2] * p[2] + m[3],
    m[4] * p[0] + m[5] * p[1] + m[6] * p[2] + m[7],
    m[8] * p[0] + m[9] * p[1] + m[10] * p[2] + m[11],
  ];
}

/**
 * Fusion: the affine taking a voxel of `from` to the (continuous) voxel of `to` at the same patient
 * position, so an overlay series is resampled at the base's voxels with one matrix product per
 * voxel. Only meaningful when both share a FrameOfReferenceUID (not checked here).
 * @param {Volume} from
 * @param {Volume} to
 * @returns {Float64Array} row-major 3×4
 */
export function voxelToVoxelMatrix(from, to) {
  const a = patientToVoxelMatrix(to);
  const b = voxelToPatientMatrix(from);
  const out = new Float64Array(12);
  for (let r = 0; r < 3; r++) {
    for (let c = 0; c < 4; c++) {
      let v = a[r * 4] * b[c] + a[r * 4 + 1] * b[4 + c] + a[r * 4 + 2] * b[8 + c];
      if (c === 3) v += a[r * 4 + 3];
      out[r * 4 + c] = v;
    }
  }
  return out;
}

/**
 * @param {Volume} volume
 * @param {[number, number, number]} voxel continuous [i, j, k]
 * @returns {[number, number, number]} patient position (mm, LPS)
 */
export function voxelToPatient(volume, voxel) {
  return applyAffine(voxelToPatientMatrix(volume), voxel);
}

/**
 * @param {Volume} volume
 * @param {[number, number, number]} point patient position (mm, LPS)
 * @returns {[number, number, number]} continuous [i, j, k]; round for the nearest voxel
 */
export function patientToVoxel(volume, point) {
  return applyAffine(patientToVoxelMatrix(volume), point);
}
