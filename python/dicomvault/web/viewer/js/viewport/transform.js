// The image → canvas transform of a viewport: scale (zoom), pixel aspect, rotation, flips, pan.
// Image coordinates are DICOM SCOORD (column, row; pixel (i, j) covers [i, i+1) × [j, j+1)).

/** {L: 2x2 linear part [[a, c], [b, d]] as [a, b, c, d], t: [tx, ty]} for a view state. */
export function imageToCanvas(state, image, canvasW, canvasH) {
  const aspect = pixelAspect(image);
  const rad = (state.rotation * Math.PI) / 180;
  const cos = Math.round(Math.cos(rad) * 1e12) / 1e12;
  const sin = Math.round(Math.sin(rad) * 1e12) / 1e12;
  const fx = state.flipH ? -1 : 1;
  const fy = state.flipV ? -1 : 1;
  const s = state.scale;
  // L = S · R · F · A
  const a = s * cos * fx * aspect;
  const b = s * sin * fx * aspect;
  const c = s * -sin * fy;
  const d = s * cos * fy;
  const cx = image.columns / 2;
  const cy = image.rows / 2;
  // Whole device pixels: at 1:1 (or any whole zoom) each image pixel then covers whole canvas
  // pixels instead of straddling two, which would make edges look soft or shifted.
  const tx = Math.round(canvasW / 2 + state.pan[0] - (a * cx + c * cy));
  const ty = Math.round(canvasH / 2 + state.pan[1] - (b * cx + d * cy));
  return [a, b, c, d, tx, ty];
}

/** Width over height of one pixel as displayed (PixelSpacing is row spacing \ column spacing). */
export function pixelAspect(image) {
  const sp = image.pixelSpacing;
  if (!sp || !(sp[0] > 0) || !(sp[1] > 0)) return 1;
  const r = sp[1] / sp[0];
  return Math.abs(r - 1) < 1e-3 ? 1 : r;
}

export function apply(m, [x, y]) {
  return [m[0] * x + m[2] * y + m[4], m[1] * x + m[3] * y + m[5]];
}

export function invert(m) {
  const [a, b, c, d, e, f] = m;
  const det = a * d - b * c;
  const ia = d / det, ib = -b / det, ic = -c / det, id = a / det;
  return [ia, ib, ic, id, -(ia * e + ic * f), -(ib * e + id * f)];
}

/** Column-major mat3 for the shader: canvas → image coordinates at mip `level`. */
export function shaderMatrix(m, level = 0) {
  const k = 1 / (1 << level);
  const [a, b, c, d, e, f] = invert(m);
  return new Float32Array([a * k, b * k, 0, c * k, d * k, 0, e * k, f * k, 1]);
}

/** The scale that fits the whole image in the canvas. */
export function fitScale(image, canvasW, canvasH, rotation = 0) {
  const aspect = pixelAspect(image);
  let w = image.columns * aspect;
  let h = image.rows;
  if (rotation % 180 !== 0) [w, h] = [h, w];
  return Math.min(canvasW / w, canvasH / h);
}
