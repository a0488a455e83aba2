// Measurement maths for the measurement tools: lengths, angles and ROI statistics, all in image
// coordinates as docs/viewer-internals.md fixes them (DICOM SCOORD: [column, row], the top left
// corner of the top left pixel is (0, 0), the centre of pixel (i, j) is (i + 0.5, j + 0.5)).
// Pure: no DOM, no state.

/**
 * A point in image coordinates: [x = column, y = row], SCOORD convention.
 * @typedef {[number, number]} Point
 */

/**
 * PixelSpacing order: [rowSpacing (mm between rows, i.e. along y), colSpacing (mm between
 * columns, i.e. along x)], or null when the image has no calibrated spacing.
 * @typedef {[number, number] | null} Spacing
 */

/**
 * @typedef {object} RoiStats
 * @property {number} count     pixels whose centre lies inside (or on) the shape, within the image
 * @property {number|null} mean modality values (stored * slope + intercept); null for colour or an empty ROI
 * @property {number|null} sd   SAMPLE standard deviation (divides by n - 1); null when count < 2 or colour
 * @property {number|null} min
 * @property {number|null} max
 * @property {number} areaMm2   geometric area of the shape (not a pixel count, not clipped to the image),
 *                              in mm² or, without spacing, in px² (see areaUnit)
 * @property {"mm²"|"px²"} areaUnit
 * @property {string} unit      image.units or ""
 */

/** A usable spacing has two finite positive numbers; anything else means "uncalibrated". */
function validSpacing(spacing) {
  return (
    Array.isArray(spacing) &&
    spacing.length >= 2 &&
    Number.isFinite(spacing[0]) &&
    Number.isFinite(spacing[1]) &&
    spacing[0] > 0 &&
    spacing[1] > 0
  );
}

/** [mm per x step, mm per y step]; x runs along a row, so it is scaled by the column spacing. */
function scales(spacing) {
  return validSpacing(spacing) ? [spacing[1], spacing[0]] : [1, 1];
}

/**
 * Distance between two image points.
 * @param {Point} p0
 * @param {Point} p1
 * @param {Spacing} spacing
 * @returns {{value: number, unit: "mm"|"px"}} mm when spacing is usable, else pixels
 */
export function lengthMm(p0, p1, spacing) {
  const [sx, sy] = scales(spacing);
  const dx = (p1[0] - p0[0]) * sx;
  const dy = (p1[1] - p0[1]) * sy;
  return { value: Math.hypot(dx, dy), unit: validSpacing(spacing) ? "mm" : "px" };
}

/**
 * The angle at `vertex` between the arms to `a` and `b`, in degrees in [0, 180]. The arms are
 * scaled to mm first: on an image with anisotropic spacing the angle on screen pixels is not the
 * angle in the patient.
 * @param {Point} a
 * @param {Point} vertex
 * @param {Point} b
 * @param {Spacing} spacing
 * @returns {number} degrees; NaN when an arm has zero length
 */
export function angleDeg(a, vertex, b, spacing) {
  const [sx, sy] = scales(spacing);
  const ux = (a[0] - vertex[0]) * sx;
  const uy = (a[1] - vertex[1]) * sy;
  const vx = (b[0] - vertex[0]) * sx;
  const vy = (b[1] - vertex[1]) * sy;
  if ((ux === 0 && uy === 0) || (vx === 0 && vy === 0)) return NaN;
  // atan2 of cross and dot stays accurate near 0° and 180°, where acos(dot/|u||v|) loses digits.
  const cross = ux * vy - uy * vx;
  const dot = ux * vx + uy * vy;
  return (Math.abs(Math.atan2(cross, dot)) * 180) / Math.PI;
}

/**
 * The axis-aligned ellipse inscribed in a drag box, as the 4 points of a DICOM SCOORD ELLIPSE:
 * major axis endpoints, then minor axis endpoints. A square box gives a circle whose "major" axis
 * is the horizontal one.
 * @param {Point} p0 one corner of the drag
 * @param {Point} p1 the opposite corner
 * @returns {[Point, Point, Point, Point]}
 */
export function ellipseFromDrag(p0, p1) {
  const x0 = Math.min(p0[0], p1[0]);
  const x1 = Math.max(p0[0], p1[0]);
  const y0 = Math.min(p0[1], p1[1]);
  const y1 = Math.max(p0[1], p1[1]);
  const cx = (x0 + x1) / 2;
  const cy = (y0 + y1) / 2;
  const horizontal = [[x0, cy], [x1, cy]];
  const vertical = [[cx, y0], [cx, y1]];
  // Major is the longer axis in image pixels; SCOORD is in image space, so mm do not matter here.
  return /** @type {[Point, Point, Point, Point]} */ (
    x1 - x0 >= y1 - y0 ? [...horizontal, ...vertical] : [...vertical, ...horizontal]
  );
}

/**
 * The 4 corners of the drag box, clockwise on screen from the top left: TL, TR, BR, BL.
 * @param {Point} p0
 * @param {Point} p1
 * @returns {[Point, Point, Point, Point]}
 */
export function rectangleFromDrag(p0, p1) {
  const x0 = Math.min(p0[0], p1[0]);
  const x1 = Math.max(p0[0], p1[0]);
  const y0 = Math.min(p0[1], p1[1]);
  const y1 = Math.max(p0[1], p1[1]);
  return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]];
}

/**
 * Which pixels an ellipse covers, as one [first, last] column span per row: an ellipse meets a
 * horizontal line in one interval, so each row needs one square root instead of a test per pixel.
 * The ellipse is the image of the unit disc under c + s*u + t*v (u, v the semi-axis vectors), which
 * also covers SCOORD ellipses whose axes are not exactly perpendicular.
 * @returns {{area: number, rows: [number, number], spans: Int32Array} | null} area in px²
 */
function ellipseSpans(points, width, height) {
  if (!Array.isArray(points) || points.length !== 4) {
    throw new RangeError("an ellipse needs 4 points: major axis endpoints, then minor axis endpoints");
  }
  const [m0, m1, n0, n1] = points;
  const cx = (m0[0] + m1[0]) / 2;
  const cy = (m0[1] + m1[1]) / 2;
  const ux = (m1[0] - m0[0]) / 2;
  const uy = (m1[1] - m0[1]) / 2;
  const vx = (n1[0] - n0[0]) / 2;
  const vy = (n1[1] - n0[1]) / 2;
  const det = ux * vy - uy * vx;
  const area = Math.PI * Math.abs(det);
  if (det === 0) return { area, rows: [0, -1], spans: new Int32Array(0) };
  // [s, t] = M^-1 [dx, dy] with M = [u v]; inside <=> s² + t² <= 1, a quadratic A dx² + B dx + C <= 0.
  const a11 = vy / det;
  const a12 = -vx / det;
  const a21 = -uy / det;
  const a22 = ux / det;
  const A = a11 * a11 + a21 * a21;
  const Bk = 2 * (a11 * a12 + a21 * a22);
  const Ck = a12 * a12 + a22 * a22;
  const ey = Math.hypot(uy, vy);
  const jFirst = Math.max(0, Math.ceil(cy - ey - 0.5));
  const jLast = Math.min(height - 1, Math.floor(cy + ey - 0.5));
  const spans = new Int32Array(Math.max(0, jLast - jFirst + 1) * 2);
  for (let j = jFirst; j <= jLast; j++) {
    const dy = j + 0.5 - cy;
    const B = Bk * dy;
    const C = Ck * dy * dy - 1;
    const disc = B * B - 4 * A * C;
    let i0 = 0;
    let i1 = -1;
    if (disc >= 0) {
      const root = Math.sqrt(disc);
      // A tiny slack so centres lying exactly on the outline (common for circles drawn on integer
      // coordinates) count as inside whatever the rounding of the square root.
      const eps = 1e-9 * (1 + Math.abs(cx));
      i0 = Math.max(0, Math.ceil(cx + (-B - root) / (2 * A) - 0.5 - eps));
      i1 = Math.min(width - 1, Math.floor(cx + (-B + root) / (2 * A) - 0.5 + eps));
    }
    spans[(j - jFirst) * 2] = i0;
    spans[(j - jFirst) * 2 + 1] = i1;
  }
  return { area, rows: [jFirst, jLast], spans };
}

/**
 * Rectangle spans. Accepts 2 opposite corners, 4 corners, or 5 (a closed polyline): SR and
 * presentation states store rectangles either way.
 */
function rectangleSpans(points, width, height) {
  if (!Array.isArray(points) || ![2, 4, 5].includes(points.length)) {
    throw new RangeError("a rectangle needs 2 opposite corners or its 4 corners");
  }
  const xs = points.map((p) => p[0]);
  const ys = points.map((p) => p[1]);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs);
  const y0 = Math.min(...ys);
  const y1 = Math.max(...ys);
  if (points.length > 2) {
    // Every corner must sit on the bounding box's corners, else it is a rotated shape and taking
    // its bounding box would silently measure a different region.
    const tol = 1e-6 * (1 + Math.max(Math.abs(x1), Math.abs(y1)));
    const near = (a, b) => Math.abs(a - b) <= tol;
    for (const [x, y] of points) {
      if (!((near(x, x0) || near(x, x1)) && (near(y, y0) || near(y, y1)))) {
        throw new RangeError("rectangle corners must be axis-aligned in image space");
      }
    }
  }
  const area = (x1 - x0) * (y1 - y0);
  // Centres at i + 0.5 inside [x0, x1] (edges inclusive): exact comparisons, no rounding involved.
  const i0 = Math.max(0, Math.ceil(x0 - 0.5));
  const i1 = Math.min(width - 1, Math.floor(x1 - 0.5));
  const jFirst = Math.max(0, Math.ceil(y0 - 0.5));
  const jLast = Math.min(height - 1, Math.floor(y1 - 0.5));
  const spans = new Int32Array(Math.max(0, jLast - jFirst + 1) * 2);
  for (let r = 0; r < spans.length; r += 2) {
    spans[r] = i0;
    spans[r + 1] = i1;
  }
  return { area, rows: [jFirst, jLast], spans };
}

/**
 * Statistics of the pixels whose centre (i + 0.5, j + 0.5) lies inside or on the shape.
 * Only the shape's bounding rows are visited, each over its inside span, so a large ROI on a
 * 4k×3k mammogram costs one pass over the ROI plus one for the deviation (two passes keep the
 * SD exact where a running sum of squares of 16-bit values over millions of pixels would not).
 * @param {"ellipse"|"rectangle"} kind
 * @param {Point[]} points ellipse: 4 SCOORD ELLIPSE points; rectangle: 2 opposite or 4 corners
 * @param {{slope?: number, intercept?: number, units?: string, pixelSpacing?: Spacing,
 *          samplesPerPixel?: number}} image
 * @param {{width: number, height: number, samples?: number, data: ArrayLike<number>}} pixels
 * @returns {RoiStats} statistics in modality units; mean/sd/min/max are null for colour images
 */
export function roiStats(kind, points, image, pixels) {
  const { width, height, data } = pixels;
  let shape;
  if (kind === "ellipse") shape = ellipseSpans(points, width, height);
  else if (kind === "rectangle") shape = rectangleSpans(points, width, height);
  else throw new RangeError(`unknown ROI kind ${kind}`);

  const spacing = image.pixelSpacing ?? null;
  const calibrated = validSpacing(spacing);
  const result = {
    count: 0,
    mean: null,
    sd: null,
    min: null,
    max: null,
    areaMm2: calibrated ? shape.area * spacing[0] * spacing[1] : shape.area,
    areaUnit: calibrated ? "mm²" : "px²",
    unit: image.units ?? "",
  };

  const { spans } = shape;
  const jFirst = shape.rows[0];
  const rowCount = spans.length / 2;
  let count = 0;
  for (let r = 0; r < rowCount; r++) {
    if (spans[2 * r + 1] >= spans[2 * r]) count += spans[2 * r + 1] - spans[2 * r] + 1;
  }
  result.count = count;
  const samples = pixels.samples ?? image.samplesPerPixel ?? 1;
  if (samples !== 1 || count === 0) return result;

  let sum = 0;
  let lo = Infinity;
  let hi = -Infinity;
  for (let r = 0; r < rowCount; r++) {
    const base = (jFirst + r) * width;
    const end = base + spans[2 * r + 1];
    for (let p = base + spans[2 * r]; p <= end; p++) {
      const v = data[p];
      sum += v;
      if (v < lo) lo = v;
      if (v > hi) hi = v;
    }
  }
  const meanStored = sum / count;
  let ss = 0;
  for (let r = 0; r < rowCount; r++) {
    const base = (jFirst + r) * width;
    const end = base + spans[2 * r + 1];
    for (let p = base + spans[2 * r]; p <= end; p++) {
      const d = data[p] - meanStored;
      ss += d * d;
    }
  }
  const slope = image.slope ?? 1;
  const intercept = image.intercept ?? 0;
  // The modality LUT is linear, so it maps the stored statistics; a negative slope swaps min/max.
  const a = lo * slope + intercept;
  const b = hi * slope + intercept;
  result.mean = meanStored * slope + intercept;
  result.sd = count > 1 ? Math.sqrt(ss / (count - 1)) * Math.abs(slope) : null;
  result.min = Math.min(a, b);
  result.max = Math.max(a, b);
  return result;
}
