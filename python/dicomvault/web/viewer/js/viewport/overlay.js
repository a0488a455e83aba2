// What is drawn over the image: corner text and orientation markers. Canvas fillText never
// interprets markup, so file values (a name holding "<script>") are drawn as the text they are.
import { TAG, formatDate, num, str } from "../data/dicomjson.js";
import { invert } from "./transform.js";

export function cornerText(vp) {
  const im = vp.image;
  if (!im) return null;
  const md = im.metadata;
  const n = vp.series.images.length;
  const tl = [
    str(md, TAG.PatientName),
    `ID ${str(md, TAG.PatientID)}`,
    [formatDate(str(md, TAG.PatientBirthDate)), str(md, TAG.PatientSex)].filter(Boolean).join(" "),
  ];
  const tr = [
    str(md, TAG.StudyDescription),
    formatDate(str(md, TAG.StudyDate)),
    `Se ${vp.series.number ?? ""} ${vp.series.description || ""}`.trim(),
    str(md, TAG.InstitutionName),
  ];
  const loc = im.sliceLocation ?? (im.sliceDistance !== null && im.sliceDistance !== undefined ? im.sliceDistance : null);
  const bl = [
    `Im ${vp.index + 1}/${n}` + (im.numberOfFrames > 1 ? ` (frame ${im.frame})` : "") + `  #${im.instanceNumber}`,
    loc !== null ? `Loc ${loc.toFixed(2)} mm` : "",
    im.sliceThickness ? `Thk ${Number(im.sliceThickness).toFixed(2)} mm` : "",
    `${im.columns}×${im.rows}  ${im.modality}`,
  ];
  const wl = vp.pixels && vp.pixels.samples === 3 ? "" : `W ${Math.round(vp.state.width)} L ${Math.round(vp.state.center)}`;
  const br = [
    vp.state.useVoiLut && im.voiLut ? "VOI LUT" : wl,
    `Zoom ${(vp.state.scale * 100).toFixed(0)}%` + (vp.state.invert ? "  INV" : ""),
    vp.reducedForGpu ? "Reduced: larger than this GPU's textures" : "",
    im.spacingSource === "ImagerPixelSpacing" ? "Calibration: ImagerPixelSpacing (detector)" :
      im.spacingSource === "UltrasoundRegion" ? "Calibration: ultrasound region" :
      im.spacingSource ? "" : "No pixel spacing: px",
    num(md, TAG.NumberOfFrames, 1) > 1 && vp.cine ? `Cine ${vp.cine.fps} fps` : "",
  ];
  return { tl, tr, bl, br };
}

function drawCorner(ctx, lines, x, y, alignRight, fromBottom, lineH) {
  ctx.textAlign = alignRight ? "right" : "left";
  const list = lines.filter(Boolean);
  list.forEach((text, i) => {
    const yy = fromBottom ? y - (list.length - 1 - i) * lineH : y + i * lineH;
    ctx.strokeText(text, x, yy);
    ctx.fillText(text, x, yy);
  });
}

export function drawCorners(ctx, vp, dpr) {
  const t = cornerText(vp);
  if (!t) return;
  const W = ctx.canvas.width;
  const H = ctx.canvas.height;
  const size = Math.round(12 * dpr);
  const lineH = Math.round(size * 1.3);
  const pad = Math.round(6 * dpr);
  ctx.font = `${size}px sans-serif`;
  ctx.textBaseline = "top";
  ctx.lineWidth = Math.max(2, dpr * 2.5);
  ctx.strokeStyle = "rgba(0,0,0,0.8)";
  ctx.fillStyle = "#e8e8e8";
  drawCorner(ctx, t.tl, pad, pad, false, false, lineH);
  drawCorner(ctx, t.tr, W - pad - Math.round(14 * dpr), pad, true, false, lineH);
  ctx.textBaseline = "bottom";
  drawCorner(ctx, t.bl, pad, H - pad, false, true, lineH);
  drawCorner(ctx, t.br, W - pad - Math.round(14 * dpr), H - pad, true, true, lineH);
}

/** Patient-direction letters (PS3.3 C.7.6.1.1.1) of a patient-space vector: L/R, P/A, H/F. */
export function directionLabel(v) {
  const names = [["R", "L"], ["A", "P"], ["F", "H"]];
  const order = [0, 1, 2].sort((a, b) => Math.abs(v[b]) - Math.abs(v[a]));
  let out = "";
  for (const axis of order) {
    if (Math.abs(v[axis]) < 0.25) break;   // obliques get a second letter, noise none
    out += names[axis][v[axis] > 0 ? 1 : 0];
    if (out.length === 2) break;
  }
  return out;
}

/** The letters at the right, left, top and bottom edges of the viewport. */
export function orientationMarkers(image, m) {
  const o = image.orientation;
  if (!o) return null;
  const inv = invert(m);
  // A canvas direction in image space (column, row), then in patient space.
  const toPatient = ([dx, dy]) => {
    const ix = inv[0] * dx + inv[2] * dy;
    const iy = inv[1] * dx + inv[3] * dy;
    const sp = image.pixelSpacing || [1, 1];
    const cx = ix * sp[1];
    const cy = iy * sp[0];
    const v = [o[0] * cx + o[3] * cy, o[1] * cx + o[4] * cy, o[2] * cx + o[5] * cy];
    // A direction, whatever the zoom: one canvas pixel is a tiny fraction of a mm at 16x.
    const n = Math.hypot(v[0], v[1], v[2]) || 1;
    return v.map((x) => x / n);
  };
  const neg = (v) => v.map((x) => -x);
  const right = toPatient([1, 0]);
  const down = toPatient([0, 1]);
  return { right: directionLabel(right), left: directionLabel(neg(right)),
    bottom: directionLabel(down), top: directionLabel(neg(down)) };
}

export function drawMarkers(ctx, markers, dpr) {
  if (!markers) return;
  const W = ctx.canvas.width;
  const H = ctx.canvas.height;
  ctx.font = `bold ${Math.round(14 * dpr)}px sans-serif`;
  ctx.fillStyle = "#ffd54a";
  ctx.strokeStyle = "rgba(0,0,0,0.8)";
  ctx.lineWidth = Math.max(2, dpr * 2.5);
  const put = (text, x, y, align, base) => {
    ctx.textAlign = align;
    ctx.textBaseline = base;
    ctx.strokeText(text, x, y);
    ctx.fillText(text, x, y);
  };
  const pad = 4 * dpr;
  put(markers.top, W / 2, pad, "center", "top");
  put(markers.bottom, W / 2, H - pad, "center", "bottom");
  put(markers.left, pad, H / 2, "left", "middle");
  put(markers.right, W - pad - 14 * dpr, H / 2, "right", "middle");
}
