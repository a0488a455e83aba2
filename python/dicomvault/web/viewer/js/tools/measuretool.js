// Measurements on images: creating them with the mouse, drawing them on every viewport that
// shows their image, listing them per study, saving them as a TID 1500 SR and reading them back.
import { measurementsFromSR } from "../data/srmeasurements.js";
import { angleDeg, ellipseFromDrag, lengthMm, rectangleFromDrag, roiStats } from "./geometry.js";

export const MEASURE_TOOLS = ["length", "angle", "ellipse", "rectangle"];

let nextId = 1;

/** The values (SR contract: [{name, value, unit}]) of a measurement on its image. */
export function computeValues(kind, points, image, pixels) {
  if (kind === "length") {
    const l = lengthMm(points[0], points[1], image.pixelSpacing);
    return [{ name: "length", value: l.value, unit: l.unit }];
  }
  if (kind === "angle") return [{ name: "angle", value: angleDeg(points[0], points[1], points[2], image.pixelSpacing), unit: "deg" }];
  const s = roiStats(kind, points, image, pixels);
  const unit = s.unit || "1";
  const out = [{ name: "area", value: s.areaMm2, unit: s.areaUnit === "mm²" ? "mm2" : "px2" }];
  if (s.mean !== null) {
    out.push({ name: "mean", value: s.mean, unit }, { name: "sd", value: s.sd ?? 0, unit },
      { name: "min", value: s.min, unit }, { name: "max", value: s.max, unit });
  }
  return out;
}

export function formatValue(v) {
  const unit = { mm2: "mm²", px2: "px²", deg: "°", HU: "HU", 1: "" }[v.unit] ?? v.unit;
  const digits = v.name === "length" || v.name === "angle" ? 1 : Math.abs(v.value) >= 100 ? 0 : 1;
  return `${v.name} ${Number(v.value).toFixed(digits)}${unit ? ` ${unit}` : ""}`;
}

export class Measurements {
  constructor(app) {
    this.app = app;
    this.items = [];        // {id, kind, label, image: {series, instance, sop_class, frame, study}, points, values, saved}
    this.draft = null;      // the one being drawn
    this.listeners = new Set();
  }

  on(fn) { this.listeners.add(fn); }

  changed() { for (const fn of this.listeners) fn(this.items); this.app.redrawAll(); }

  clear() { this.items = []; this.draft = null; this.changed(); }

  /** Pointer events from a viewport while a measurement tool is active. */
  pointer(type, vp, p, e, tool) {
    if (!vp.image || !vp.pixels) return;
    if (type === "down") {
      if (this.draft && this.draft.kind === "angle" && this.draft.points.length === 2 && this.draft.vp === vp) {
        this.draft.points.push(p);   // the third click of an angle
        this.draft.phase = "third";
      } else {
        this.draft = { kind: tool, vp, points: [p, p], phase: "drag" };
      }
    } else if (type === "move" && this.draft) {
      const d = this.draft;
      d.points[d.points.length - 1] = p;
    } else if (type === "up" && this.draft) {
      const d = this.draft;
      d.points[d.points.length - 1] = p;
      if (d.kind === "angle" && d.points.length === 2) {
        // First arm drawn; the vertex is where the drag ended, the next click closes the angle.
        if (Math.hypot(d.points[1][0] - d.points[0][0], d.points[1][1] - d.points[0][1]) < 0.5) { this.draft = null; }
        vp.invalidate();
        return;
      }
      this.finish(vp);
    }
    vp.invalidate();
  }

  finish(vp) {
    const d = this.draft;
    this.draft = null;
    let points = d.points;
    if (d.kind === "ellipse") points = ellipseFromDrag(points[0], points[1]);
    if (d.kind === "rectangle") points = rectangleFromDrag(points[0], points[1]);
    const tiny = Math.hypot(d.points[1][0] - d.points[0][0], d.points[1][1] - d.points[0][1]) < 0.5;
    if (tiny || (d.kind === "angle" && Math.hypot(d.points[2][0] - d.points[1][0], d.points[2][1] - d.points[1][1]) < 0.5)) return;
    this.add({ kind: d.kind, points, imageOf: vp.image, pixels: vp.pixels });
  }

  /** Add a measurement (from the mouse or from the test API) on `imageOf`. */
  add({ kind, points, imageOf, pixels, label }) {
    // SCOORD points must lie on the image (PS3.3 C.18.6.1.1): a drag past the edge is clamped.
    points = points.map(([x, y]) => [Math.min(Math.max(x, 0), imageOf.columns), Math.min(Math.max(y, 0), imageOf.rows)]);
    const m = {
      id: nextId++, kind, label: label || `${kind} ${nextId - 1}`, points,
      image: { study: imageOf.studyUid, series: imageOf.seriesUid, instance: imageOf.sopInstanceUid,
        sop_class: imageOf.sopClassUid, frame: imageOf.frame },
      values: computeValues(kind, points, imageOf, pixels).filter((v) => Number.isFinite(v.value)),
      calibration: imageOf.spacingSource,
      saved: false,
    };
    this.items.push(m);
    this.changed();
    return m;
  }

  remove(id) { this.items = this.items.filter((m) => m.id !== id); this.changed(); }

  /** Save the unsaved measurements of `studyUid` as one SR in the archive. */
  async save(studyUid) {
    const todo = this.items.filter((m) => !m.saved && m.image.study === studyUid);
    if (!todo.length) return null;
    const body = { measurements: todo.map((m) => ({ kind: m.kind, label: m.label, points: m.points,
      image: { series: m.image.series, instance: m.image.instance, sop_class: m.image.sop_class, frame: m.image.frame },
      values: m.values.map((v) => ({ name: v.name, value: v.value, unit: v.unit })) })) };
    const rsp = await this.app.client.api(`/studies/${encodeURIComponent(studyUid)}/measurements`, { method: "POST", body });
    for (const m of todo) { m.saved = true; m.sr = rsp.instance; }
    this.changed();
    return rsp;
  }

  /** Read the measurements of SR instances (their DICOM JSON) into the list. */
  loadFromSR(studyUid, srInstances) {
    let n = 0;
    for (const inst of srInstances) {
      for (const m of measurementsFromSR([inst])) {
        this.items.push({ id: nextId++, kind: m.kind, label: m.label || m.kind, points: m.points,
          image: { study: studyUid, ...m.image }, values: m.values, saved: true,
          sr: inst["00080018"]?.Value?.[0] });
        n++;
      }
    }
    if (n) this.changed();
    return n;
  }

  /** Overlay drawing for one viewport. */
  draw(ctx, vp) {
    if (!vp.image) return;
    const on = (m) => m.image.instance === vp.image.sopInstanceUid && (m.image.frame || 1) === vp.image.frame;
    const dpr = vp.dpr;
    ctx.lineWidth = 1.5 * dpr;
    ctx.font = `${Math.round(12 * dpr)}px sans-serif`;
    ctx.textBaseline = "bottom";
    ctx.textAlign = "left";
    for (const m of this.items.filter(on)) drawShape(ctx, vp, m.kind, m.points, m.values, m.saved ? "#4fc3f7" : "#7CFC00", dpr, m.label);
    const d = this.draft;
    if (d && d.vp === vp) {
      let pts = d.points;
      if (d.kind === "ellipse") pts = ellipseFromDrag(pts[0], pts[1]);
      if (d.kind === "rectangle") pts = rectangleFromDrag(pts[0], pts[1]);
      const values = d.kind === "angle" && pts.length < 3 ? [] : computeValues(d.kind, pts, vp.image, vp.pixels);
      drawShape(ctx, vp, d.kind === "angle" && pts.length < 3 ? "length" : d.kind, pts, values, "#ffeb3b", dpr, "");
    }
  }
}

function drawShape(ctx, vp, kind, points, values, color, dpr, label) {
  const c = points.map((p) => vp.imageToCanvasPoint(p));
  ctx.strokeStyle = color;
  ctx.fillStyle = color;
  ctx.beginPath();
  if (kind === "ellipse") {
    const [a0, a1, b0, b1] = c;
    const cx = (a0[0] + a1[0]) / 2, cy = (a0[1] + a1[1]) / 2;
    const ra = Math.hypot(a1[0] - a0[0], a1[1] - a0[1]) / 2;
    const rb = Math.hypot(b1[0] - b0[0], b1[1] - b0[1]) / 2;
    ctx.ellipse(cx, cy, ra, rb, Math.atan2(a1[1] - a0[1], a1[0] - a0[0]), 0, 2 * Math.PI);
  } else {
    c.forEach((p, i) => (i ? ctx.lineTo(p[0], p[1]) : ctx.moveTo(p[0], p[1])));
    if (kind === "rectangle") ctx.closePath();
  }
  ctx.stroke();
  for (const p of c) { ctx.fillRect(p[0] - 2 * dpr, p[1] - 2 * dpr, 4 * dpr, 4 * dpr); }
  const text = [label, ...values.map(formatValue)].filter(Boolean);
  // The text block sits right of the shape, from its top down, so labels of neighbouring
  // shapes do not pile onto one corner.
  const right = Math.max(...c.map((p) => p[0])) + 8 * dpr;
  const top = Math.min(...c.map((p) => p[1]));
  ctx.strokeStyle = "rgba(0,0,0,0.85)";
  ctx.lineWidth = 3 * dpr;
  ctx.textBaseline = "top";
  text.forEach((t, i) => {
    const y = top + i * 14 * dpr;
    ctx.strokeText(t, right, y);
    ctx.fillText(t, right, y);
  });
  ctx.lineWidth = 1.5 * dpr;
}
