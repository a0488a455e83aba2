// Fusion: a second series of the same frame of reference (PET on CT, a parametric map on MR)
// drawn over the image of a viewport through a colour map.
//
// The overlay series is decoded into a volume (volume.js buildVolume); for each base image shown,
// its modality values are resampled onto the base image's pixel grid from the two geometries in
// patient coordinates (volume.js voxelToVoxelMatrix), NaN where the overlay has no data. The
// WebGL renderer windows those values, looks them up in the colour map and mixes them over the
// base gray (glrenderer.js u_fuse, u_colormap). The base needs no volume, only each image's
// position, orientation and pixel spacing, so fusion works on MPR reformats too.
//
// API: openFusionDialog(app) (the toolbar button), applyFusion(app, vp, options) and
// removeFusion(vp) (what the dialog calls; usable from tests), fusionCandidates(app, vp),
// resampleOnto(image, volume, interpolation), COLORMAPS / colormapTable(name).
import { TAG, num, str } from "../data/dicomjson.js";
import { frameKey } from "../data/loader.js";
import { initialWindow } from "../image/lut.js";
import { h, toast } from "../ui/dom.js";
import { buildVolume, voxelToVoxelMatrix } from "./volume.js";

const NO_PIXELS = new Set(["SR", "KO", "PR", "SEG", "RTSTRUCT", "RTPLAN", "RTDOSE_NOIMG", "REG", "DOC"]);

const clamp01 = (x) => Math.min(1, Math.max(0, x));

/** Colour map functions of x in [0, 1] → [r, g, b] in [0, 1]. */
const MAPS = {
  hot: (x) => [clamp01(3 * x), clamp01(3 * x - 1), clamp01(3 * x - 2)],
  jet: (x) => [clamp01(1.5 - Math.abs(4 * x - 3)), clamp01(1.5 - Math.abs(4 * x - 2)), clamp01(1.5 - Math.abs(4 * x - 1))],
  grayscale: (x) => [x, x, x],
};
export const COLORMAP_NAMES = { hot: "Hot (black-red-yellow-white)", jet: "Jet (rainbow)", grayscale: "Grayscale" };

/** A 256 × 1 RGBA colour table (256 × 4 bytes), entry n for x = n / 255. */
export function colormapTable(name) {
  const f = MAPS[name];
  if (!f) throw new RangeError(`unknown colour map ${name}`);
  const t = new Uint8Array(256 * 4);
  for (let n = 0; n < 256; n++) {
    const [r, g, b] = f(n / 255);
    t.set([Math.round(r * 255), Math.round(g * 255), Math.round(b * 255), 255], n * 4);
  }
  return t;
}

export const COLORMAPS = Object.fromEntries(Object.keys(MAPS).map((k) => [k, colormapTable(k)]));

const cross = (a, b) => [a[1] * b[2] - a[2] * b[1], a[2] * b[0] - a[0] * b[2], a[0] * b[1] - a[1] * b[0]];

/**
 * The overlay's modality values at the centres of the pixels of `image` (rows × columns, row-major),
 * NaN outside the overlay volume.
 * @param {object} image a base image (data model): position, orientation, pixelSpacing, rows, columns
 * @param {import("./volume.js").Volume} volume the overlay
 * @param {"nearest"|"trilinear"} interpolation
 * @returns {Float32Array|null} null when the image has no geometry
 */
export function resampleOnto(image, volume, interpolation = "trilinear") {
  const o = image.orientation;
  const sp = image.pixelSpacing;
  if (!image.position || !o || !sp) return null;
  const row = o.slice(0, 3);
  const col = o.slice(3, 6);
  // The base image as a one-slice volume: voxel [c, r, 0] is the centre of pixel (c, r).
  const plane = { spacing: [sp[1], sp[0], 1], origin: image.position, rowCosine: row, columnCosine: col,
    normal: cross(row, col) };
  const m = voxelToVoxelMatrix(plane, volume);
  const { width: W, height: H, depth: D, data } = volume;
  const slope = volume.slope ?? 1;
  const intercept = volume.intercept ?? 0;
  const cols = image.columns;
  const rows = image.rows;
  const out = new Float32Array(cols * rows);
  const WH = W * H;
  const nearest = interpolation === "nearest";
  for (let r = 0; r < rows; r++) {
    let x = m[1] * r + m[3];
    let y = m[5] * r + m[7];
    let z = m[9] * r + m[11];
    let p = r * cols;
    for (let c = 0; c < cols; c++, p++, x += m[0], y += m[4], z += m[8]) {
      // Inside the volume's voxels (each covers ±0.5 around its centre)?
      if (x < -0.5 || y < -0.5 || z < -0.5 || x > W - 0.5 || y > H - 0.5 || z > D - 0.5) { out[p] = NaN; continue; }
      if (nearest) {
        const i = Math.min(W - 1, Math.max(0, Math.round(x)));
        const j = Math.min(H - 1, Math.max(0, Math.round(y)));
        const k = Math.min(D - 1, Math.max(0, Math.round(z)));
        out[p] = data[k * WH + j * W + i] * slope + intercept;
        continue;
      }
      const xc = Math.min(Math.max(x, 0), W - 1);
      const yc = Math.min(Math.max(y, 0), H - 1);
      const zc = Math.min(Math.max(z, 0), D - 1);
      const i0 = Math.min(Math.floor(xc), W - 2 < 0 ? 0 : W - 2);
      const j0 = Math.min(Math.floor(yc), H - 2 < 0 ? 0 : H - 2);
      const k0 = Math.min(Math.floor(zc), D - 2 < 0 ? 0 : D - 2);
      const fx = W > 1 ? xc - i0 : 0;
      const fy = H > 1 ? yc - j0 : 0;
      const fz = D > 1 ? zc - k0 : 0;
      const di = W > 1 ? 1 : 0;
      const dj = H > 1 ? W : 0;
      const dk = D > 1 ? WH : 0;
      const b = k0 * WH + j0 * W + i0;
      const c00 = data[b] + (data[b + di] - data[b]) * fx;
      const c10 = data[b + dj] + (data[b + dj + di] - data[b + dj]) * fx;
      const c01 = data[b + dk] + (data[b + dk + di] - data[b + dk]) * fx;
      const c11 = data[b + dk + dj] + (data[b + dk + dj + di] - data[b + dk + dj]) * fx;
      const c0 = c00 + (c10 - c00) * fy;
      const c1 = c01 + (c11 - c01) * fy;
      out[p] = (c0 + (c1 - c0) * fz) * slope + intercept;
    }
  }
  return out;
}

/** One overlay on one viewport: its series, volume, display parameters and resampled slices. */
export class FusionLayer {
  constructor(app, { studyUid, seriesUid, colormap = "hot", opacity = 0.5, center = null, width = null,
    interpolation = "trilinear" }) {
    this.app = app;
    this.studyUid = studyUid;
    this.seriesUid = seriesUid;
    this.series = null;
    this.volume = null;
    this.error = null;
    this.progress = [0, 0];
    this.viewports = new Set();
    this.cache = new Map();   // base image key -> Float32Array, least recently used first
    this.maxCached = 48;
    this.set({ colormap, opacity, center, width, interpolation });
    this.ready = this.load();
  }

  /** Change display parameters (any of colormap, opacity, center, width, interpolation). */
  set({ colormap, opacity, center, width, interpolation }) {
    if (colormap !== undefined) {
      if (!COLORMAPS[colormap]) throw new RangeError(`unknown colour map ${colormap}`);
      this.colormapName = colormap;
      this.colormap = COLORMAPS[colormap];
    }
    if (opacity !== undefined && opacity !== null && Number.isFinite(Number(opacity))) this.opacity = clamp01(Number(opacity));
    if (center !== undefined && center !== null && Number.isFinite(Number(center))) this.center = Number(center);
    if (width !== undefined && width !== null && Number.isFinite(Number(width))) this.width = Math.max(1, Number(width));
    if (interpolation !== undefined && interpolation !== this.interpolation) {
      this.interpolation = interpolation === "nearest" ? "nearest" : "trilinear";
      this.cache.clear();
    }
    this.invalidate();
  }

  invalidate() { for (const vp of this.viewports ?? []) vp.invalidate(); }

  async load() {
    const { app } = this;
    try {
      this.series = await app.loadSeries(this.studyUid, this.seriesUid);
      const images = this.series.images;
      this.frameOfReferenceUid = images[0]?.frameOfReferenceUid || "";
      if (this.center === undefined || this.width === undefined) {
        const w = images[0]?.windows?.[0];
        if (w) { this.center ??= w.center; this.width ??= w.width; }
      }
      this.progress = [0, images.length];
      const off = app.loader.onFrame(() => {
        this.progress = [images.reduce((n, im) => n + (app.loader.cache.has(frameKey(im)) ? 1 : 0), 0), images.length];
        this.invalidate();
      });
      try {
        await app.loader.loadAll(this.series);
      } finally { off(); }
      const pixels = new Map();
      for (const im of images) pixels.set(im, app.loader.cached(im) || await app.loader.get(im));
      const volume = buildVolume(this.series, (im) => pixels.get(im));
      if (volume.error) throw new Error(volume.error);
      if (this.center === undefined || this.width === undefined) {
        const w = volumeWindow(volume, images[0]);
        this.center ??= w.center;
        this.width ??= w.width;
      }
      this.volume = volume;
    } catch (err) {
      this.error = err.message;
      toast(`Fusion: ${err.message}`, "error");
    }
    this.invalidate();
    return this;
  }

  /** The provider of a viewport: synchronous, null while loading or when the image cannot fuse. */
  provide(vp) {
    const im = vp.image;
    if (!this.volume || !im || !vp.pixels || vp.pixels.samples !== 1) return null;
    if (this.frameOfReferenceUid && im.frameOfReferenceUid && im.frameOfReferenceUid !== this.frameOfReferenceUid) return null;
    if (vp.pixels.width !== im.columns || vp.pixels.height !== im.rows) return null;
    const key = `${im.seriesUid}|${frameKey(im)}`;
    let values = this.cache.get(key);
    if (values) {
      this.cache.delete(key);
    } else {
      values = resampleOnto(im, this.volume, this.interpolation);
      if (!values) return null;
    }
    this.cache.set(key, values);
    while (this.cache.size > this.maxCached) this.cache.delete(this.cache.keys().next().value);
    return { values, center: this.center, width: this.width, opacity: this.opacity, colormap: this.colormap };
  }

  /** The colour bar: the overlay window's ends, the series, in the right middle of the viewport. */
  drawLegend(ctx, vp) {
    const dpr = vp.dpr;
    const W = ctx.canvas.width;
    const H = ctx.canvas.height;
    const barW = Math.round(10 * dpr);
    const barH = Math.round(Math.min(140 * dpr, H * 0.3));
    const x = W - Math.round(34 * dpr) - barW;
    const y = Math.round(H / 2 - 24 * dpr - barH);
    ctx.save();
    ctx.font = `${Math.round(11 * dpr)}px sans-serif`;
    ctx.lineWidth = Math.max(2, 2.5 * dpr);
    ctx.strokeStyle = "rgba(0,0,0,0.8)";
    ctx.fillStyle = "#e8e8e8";
    ctx.textAlign = "right";
    const text = (s, tx, ty, base) => { ctx.textBaseline = base; ctx.strokeText(s, tx, ty); ctx.fillText(s, tx, ty); };
    const name = `${this.series?.modality || "Fusion"} ${this.series?.description || ""}`.trim();
    if (!this.volume) {
      const [done, total] = this.progress;
      text(this.error ? `${name}: ${this.error}` : `${name}: loading ${done}/${total}`, W - Math.round(20 * dpr), y + barH, "bottom");
      ctx.restore();
      return;
    }
    const t = this.colormap;
    for (let py = 0; py < barH; py++) {
      const n = Math.round((1 - py / Math.max(1, barH - 1)) * 255);
      ctx.fillStyle = `rgb(${t[n * 4]},${t[n * 4 + 1]},${t[n * 4 + 2]})`;
      ctx.fillRect(x, y + py, barW, 1);
    }
    ctx.strokeStyle = "rgba(255,255,255,0.6)";
    ctx.lineWidth = 1;
    ctx.strokeRect(x - 0.5, y - 0.5, barW + 1, barH + 1);
    ctx.lineWidth = Math.max(2, 2.5 * dpr);
    ctx.strokeStyle = "rgba(0,0,0,0.8)";
    ctx.fillStyle = "#e8e8e8";
    const fmt = (v) => (Math.abs(v) >= 100 ? v.toFixed(0) : +v.toPrecision(3)).toString();
    const units = this.volume.units ? ` ${this.volume.units}` : "";
    text(`${fmt(this.center + this.width / 2)}${units}`, x - 4 * dpr, y, "top");
    text(`${fmt(this.center - this.width / 2)}${units}`, x - 4 * dpr, y + barH, "bottom");
    text(name, x + barW, y - 4 * dpr, "bottom");
    ctx.restore();
  }
}

/** The overlay's window: its file's first, else the 1st–99th percentile of the whole volume. */
function volumeWindow(volume, first) {
  const d = volume.data;
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < d.length; i++) { const v = d[i]; if (v < min) min = v; if (v > max) max = v; }
  const pixels = { data: d, samples: 1, width: volume.width, height: volume.height * volume.depth, min, max };
  const image = { slope: volume.slope, intercept: volume.intercept, windows: first?.windows || [],
    modalityLut: volume.slope === (first?.slope ?? 1) ? first?.modalityLut : null };
  const w = initialWindow(image, pixels);
  // A few-valued overlay (a mask, a binary map) has no spread between its percentiles: show its
  // full range instead of a window that hides it.
  const lo = min * volume.slope + volume.intercept;
  const hi = max * volume.slope + volume.intercept;
  if (w.width <= 1 && Math.abs(hi - lo) > 1) return { center: (lo + hi) / 2, width: Math.abs(hi - lo) };
  return w;
}

/**
 * Fuse a series over viewport `vp` (replacing any fusion there). Resolves once the overlay is
 * loaded (or failed: then no fusion is left on the viewport).
 * @param {object} app
 * @param {object} vp
 * @param {{studyUid: string, seriesUid: string, colormap?: string, opacity?: number, center?: number,
 *          width?: number, interpolation?: "nearest"|"trilinear"}} options
 * @returns {Promise<FusionLayer>}
 */
export async function applyFusion(app, vp, options) {
  removeFusion(vp);
  const layer = new FusionLayer(app, options);
  attach(vp, layer);
  await layer.ready;
  if (layer.error && vp.fusion === layer) removeFusion(vp);
  return layer;
}

function attach(vp, layer) {
  layer.viewports.add(vp);
  const legend = (ctx, v) => { if (v.fusion === layer) layer.drawLegend(ctx, v); };
  vp.overlays.push(legend);
  vp.fusion = layer;
  vp.fusionLegend = legend;
  vp.fusionProvider = (v) => layer.provide(v);
  vp.invalidate();
}

/** Take the fusion off `vp`. */
export function removeFusion(vp) {
  const layer = vp.fusion;
  if (!layer) return;
  layer.viewports.delete(vp);
  const i = vp.overlays.indexOf(vp.fusionLegend);
  if (i >= 0) vp.overlays.splice(i, 1);
  vp.fusion = null;
  vp.fusionLegend = null;
  vp.fusionProvider = null;
  vp.invalidate();
}

/**
 * The series that can fuse over `vp`'s image: every image series of the current study and of the
 * priors in the series panel with the same FrameOfReferenceUID (from QIDO when the archive gives
 * it, else from the series' own metadata).
 * @returns {Promise<{studyUid: string, seriesUid: string, modality: string, description: string,
 *          number: number|null, frameOfReferenceUid: string, prior: boolean}[]>}
 */
export async function fusionCandidates(app, vp, onProgress = () => {}) {
  const base = vp?.image;
  const want = base?.frameOfReferenceUid;
  if (!want) return [];
  const baseSeries = vp.series?.mprSource?.seriesUid || base.seriesUid;
  const studies = new Map([[app.study.uid, app.study.series || []]]);
  for (const section of app.panel?.el.querySelectorAll("section.study-series") || []) {
    const uid = section.dataset.study;
    if (uid && !studies.has(uid)) studies.set(uid, null);
  }
  const rows = [];
  for (const [studyUid, known] of studies) {
    let list = known;
    if (!list) {
      try { list = await app.client.seriesOf(studyUid); } catch { list = []; }
    }
    for (const row of list) rows.push({ studyUid, row });
  }
  const out = [];
  let checked = 0;
  for (const { studyUid, row } of rows) {
    onProgress(checked++, rows.length);
    const seriesUid = str(row, TAG.SeriesInstanceUID);
    const modality = str(row, TAG.Modality);
    if (!seriesUid || seriesUid === baseSeries || NO_PIXELS.has(modality)) continue;
    let fr = str(row, TAG.FrameOfReferenceUID);
    if (!fr) {
      try {
        const s = await app.loadSeries(studyUid, seriesUid);
        fr = s.images[0]?.frameOfReferenceUid || "";
      } catch { fr = ""; }
    }
    if (fr !== want) continue;
    out.push({ studyUid, seriesUid, modality, description: str(row, TAG.SeriesDescription),
      number: num(row, TAG.SeriesNumber, null), frameOfReferenceUid: fr, prior: studyUid !== app.study.uid });
  }
  onProgress(rows.length, rows.length);
  return out;
}

/** The Fusion dialog of the active viewport (toolbar "Fusion"). Resolves once it is open. */
export async function openFusionDialog(app) {
  const vp = app.activeVp;
  if (!vp?.image) { toast("Fusion: show a series first", "error"); return null; }
  if (!vp.image.frameOfReferenceUid) { toast("Fusion: this image has no FrameOfReferenceUID", "error"); return null; }
  document.querySelector("dialog.fusion")?.close();
  const layer = vp.fusion;
  const list = h("div.fusion-candidates", { role: "radiogroup" }, h("p.hint", {}, "Looking for series of the same frame of reference…"));
  const colormap = h("select", { name: "colormap" },
    ...Object.entries(COLORMAP_NAMES).map(([k, label]) => h("option", { value: k, selected: k === (layer?.colormapName || "hot") }, label)));
  const opacity = h("input", { name: "opacity", type: "range", min: 0, max: 1, step: 0.05, value: String(layer?.opacity ?? 0.5) });
  const opacityOut = h("output", {}, Number(opacity.value).toFixed(2));
  const center = h("input", { name: "center", type: "number", step: "any", value: layer?.center ?? "" });
  const width = h("input", { name: "width", type: "number", step: "any", min: 1, value: layer?.width ?? "" });
  for (const el of [center, width]) el.style.width = "7em";
  const interpolation = h("select", { name: "interpolation" },
    h("option", { value: "trilinear", selected: layer?.interpolation !== "nearest" }, "Trilinear"),
    h("option", { value: "nearest", selected: layer?.interpolation === "nearest" }, "Nearest"));
  const status = h("p.fusion-status");
  const params = () => ({ colormap: colormap.value, opacity: Number(opacity.value),
    center: center.value === "" ? null : Number(center.value), width: width.value === "" ? null : Number(width.value),
    interpolation: interpolation.value });
  const chosen = () => list.querySelector("input[name=overlay]:checked");
  const fill = (l) => {
    if (l.center !== undefined && l.center !== null) center.value = String(+l.center.toFixed(3));
    if (l.width !== undefined && l.width !== null) width.value = String(+l.width.toFixed(3));
  };
  // A live layer follows the controls.
  const live = () => {
    opacityOut.textContent = Number(opacity.value).toFixed(2);
    if (vp.fusion) vp.fusion.set(params());
  };
  for (const el of [colormap, opacity, center, width, interpolation]) el.addEventListener("input", live);
  const remove = h("button", { type: "button", value: "remove", disabled: !layer, onclick: () => {
    removeFusion(vp);
    remove.disabled = true;
    status.textContent = "Fusion removed.";
  } }, "Remove");
  const apply = h("button", { type: "button", value: "apply", disabled: true, onclick: async () => {
    const pick = chosen();
    if (!pick) return;
    const p = params();
    if (vp.fusion && vp.fusion.seriesUid === pick.value && !vp.fusion.error) {
      vp.fusion.set(p);
      return;
    }
    status.textContent = "Loading the overlay series…";
    const l = await applyFusion(app, vp, { studyUid: pick.dataset.study, seriesUid: pick.value, ...p });
    if (l.error) { status.textContent = `Cannot fuse: ${l.error}`; return; }
    fill(l);
    remove.disabled = false;
    status.textContent = `Fused: ${l.series.modality} ${l.series.description || ""}`.trim();
  } }, "Apply");
  const dialog = h("dialog.fusion", {},
    h("form", { method: "dialog" },
      h("h2", {}, "Fusion"),
      h("p", {}, `Over: ${vp.series?.modality || ""} ${vp.series?.description || ""}`.trim()),
      list,
      h("label", {}, "Colour map ", colormap),
      h("label", {}, "Opacity ", opacity, " ", opacityOut),
      h("label", {}, "Overlay window: centre ", center, " width ", width),
      h("label", {}, "Resampling ", interpolation),
      h("div.buttons", {}, apply, remove, h("button", { value: "close" }, "Close")),
      status));
  // Not modal, so in a corner over the side panel rather than in the page flow (CSSOM, which the
  // page's style-src CSP allows, unlike a style attribute).
  Object.assign(dialog.style, { position: "fixed", top: "88px", right: "12px", left: "auto", margin: "0",
    zIndex: "20", maxHeight: "calc(100vh - 120px)", overflow: "auto" });
  dialog.addEventListener("close", () => dialog.remove());
  dialog.addEventListener("keydown", (e) => { if (e.key === "Escape") dialog.close(); });
  document.body.append(dialog);
  dialog.show();   // not modal: the viewer stays usable (scroll, W/L) while the overlay is tuned

  let candidates;
  try {
    candidates = await fusionCandidates(app, vp, (n, total) => {
      list.firstChild.textContent = `Looking for series of the same frame of reference… ${n}/${total}`;
    });
  } catch (err) {
    list.replaceChildren(h("p.error", {}, `Cannot list series: ${err.message}`));
    return dialog;
  }
  if (!candidates.length) {
    list.replaceChildren(h("p.hint", {}, "No other series shares this image's frame of reference."));
    return dialog;
  }
  list.replaceChildren(...candidates.map((c) => h("label", {},
    h("input", { type: "radio", name: "overlay", value: c.seriesUid, dataset: { study: c.studyUid },
      checked: layer?.seriesUid === c.seriesUid || candidates.length === 1,
      onchange: async () => {
        apply.disabled = false;
        // The overlay's own window (its file's first) when it has one; else after loading.
        try {
          const s = await app.loadSeries(c.studyUid, c.seriesUid);
          const w = s.images[0]?.windows?.[0];
          if (w && (vp.fusion?.seriesUid !== c.seriesUid)) fill(w);
        } catch { /* shown when applied */ }
      } }),
    ` ${c.number ?? ""} ${c.modality} ${c.description || "(no description)"}${c.prior ? " (prior)" : ""}`)));
  if (chosen()) {
    apply.disabled = false;
    if (!layer) chosen().dispatchEvent(new Event("change"));
  }
  return dialog;
}
