// MPR: the active viewport's volume shown as three linked views (axial, coronal, sagittal) in a
// 1×3 grid, with crosshairs.
//
// Interaction. Shift + left button (click or drag) in any of the three views puts the crosshair at
// that point: the other two views go to the slices through it and all three draw its lines. The
// active tool is left alone, so W/L, pan, zoom and scroll keep working without Shift. Wheel, arrow
// keys and the slice slider scroll each view through its own plane and the crosshair follows.
// Measurement tools work on the acquired (axial) view only: a reformatted image is not an
// instance of the archive, so a measurement on it could not be saved as a report.
//
// The acquired view shows the source series itself (real instances, pixels from the app's
// loader); the coronal and sagittal views show virtual series whose images are computed by a
// ReformatSource from the volume on demand.
import { frameKey } from "../data/loader.js";
import { normalOf } from "../data/series.js";
import { h, toast } from "../ui/dom.js";
import { anatomicalPlane, buildVolume, reformat, sliceAxisDown, voxelToPatient, voxelToPoint } from "./volume.js";

export const PLANES = ["axial", "coronal", "sagittal"];
/** Crosshair line colours, by the plane a line stands for. */
export const PLANE_COLOURS = { axial: "#ff5a5a", coronal: "#5ae07a", sagittal: "#4ab4ff" };
const VOLUME_MODALITIES = new Set(["CT", "MR", "PT"]);
const PRECHECK = Symbol("geometry ok");

/**
 * Turn MPR on for the active viewport's series, or off (restoring the layout and series that were
 * shown before). Resolves once the views are on screen (or MPR refused, with a toast).
 * @param {import("../main.js").App} app
 */
export async function toggleMpr(app) {
  if (app.mpr) {
    await app.mpr.stop();
    return;
  }
  const vp = app.activeVp;
  const series = vp?.series;
  if (!series || !vp.image) { toast("MPR: show a CT or MR series first", "error"); return; }
  if (series.mprPlane) { toast("MPR: this view is already a reformat", "error"); return; }
  if (series.modality && !VOLUME_MODALITIES.has(series.modality)) {
    toast(`MPR needs a CT, MR or PET volume, not ${series.modality}`, "error");
    return;
  }
  // The geometry checks of buildVolume need no pixels: run them before loading the whole series.
  try {
    const pre = buildVolume(series, () => { throw PRECHECK; });
    if (pre.error) { toast(`MPR: ${pre.error}`, "error"); return; }
  } catch (err) {
    if (err !== PRECHECK) throw err;
  }
  const session = new MprSession(app, vp, series);
  app.mpr = session;
  await session.start();
}

/** What MPR needs from a viewport's series: the volume of its slices, decoded. */
async function loadVolume(app, series, onProgress) {
  const total = series.images.length;
  const count = () => series.images.reduce((n, im) => n + (app.loader.cache.has(frameKey(im)) ? 1 : 0), 0);
  const off = app.loader.onFrame?.(() => onProgress(count(), total));
  onProgress(count(), total);
  try {
    await app.loader.loadAll(series);
  } finally {
    off?.();
  }
  // loadAll resolves with every frame decoded; one evicted since (a huge series against the cache
  // bound) is fetched again.
  const pixels = new Map();
  for (const im of series.images) pixels.set(im, app.loader.cached(im) || await app.loader.get(im));
  return buildVolume(series, (im) => pixels.get(im));
}

/**
 * The pixels of MPR images, with the loader interface a Viewport reads through (cached, get,
 * prefetch, cache.has). Reformatted images (those with `mprPlane`) are computed from the volume on
 * demand (synchronously: one slice costs a copy of width × height voxels) and kept in a bounded
 * LRU; any other image is delegated to `fallback` (the app's FrameLoader), so a series dropped on
 * an MPR viewport still shows.
 */
export class ReformatSource {
  constructor(volume, fallback, { maxSlices = 96 } = {}) {
    this.volume = volume;
    this.fallback = fallback;
    this.maxSlices = maxSlices;
    this.slices = new Map();   // key -> pixels, least recently used first
    this.cache = {
      has: (key) => this.slices.has(key) || (key.startsWith("mpr:") ? false : !!fallback?.cache.has(key)),
    };
    this.idle = 0;
  }

  /** The pixels of `image`, computed now when it is a reformat not in the cache. */
  cached(image) {
    if (!image.mprPlane) return this.fallback ? this.fallback.cached(image) : null;
    const key = frameKey(image);
    let p = this.slices.get(key);
    if (p) {
      this.slices.delete(key);
      this.slices.set(key, p);
      return p;
    }
    p = this.compute(image.mprPlane, image.mprIndex);
    this.slices.set(key, p);
    while (this.slices.size > this.maxSlices) this.slices.delete(this.slices.keys().next().value);
    return p;
  }

  get(image) {
    if (!image.mprPlane) return this.fallback.get(image);
    try {
      return Promise.resolve(this.cached(image));
    } catch (err) {
      return Promise.reject(err);
    }
  }

  /** Reformat the neighbours of `index` when the browser is idle (scrolling then hits the cache). */
  prefetch(series, index, near = 2) {
    if (!series.images[index]?.mprPlane) { this.fallback?.prefetch(series, index); return; }
    clearTimeout(this.idle);
    this.idle = setTimeout(() => {
      for (let d = 1; d <= near; d++) {
        for (const i of [index + d, index - d]) {
          const im = series.images[i];
          if (im && !this.slices.has(frameKey(im))) this.cached(im);
        }
      }
    }, 0);
  }

  /** Decoded-pixels shape of one plane: {width, height, samples, data, min, max}. */
  compute(plane, index) {
    const r = reformat(this.volume, plane, index);
    let min = Infinity;
    let max = -Infinity;
    const d = r.data;
    for (let i = 0; i < d.length; i++) {
      const v = d[i];
      if (v < min) min = v;
      if (v > max) max = v;
    }
    if (!d.length) min = max = 0;
    return { width: r.width, height: r.height, samples: 1, data: d, min, max, pixelSpacing: r.pixelSpacing };
  }

  dispose() { clearTimeout(this.idle); this.slices.clear(); }
}

/**
 * A virtual series of one reformatted plane, its images in the data-model shape (rows/columns of
 * the plane, pixelSpacing, orientation and position of the plane, the source's rescale, units and
 * windows) so that the viewport's aspect ratio, orientation markers and corner text are right.
 */
export function reformatSeries(volume, source, plane) {
  const first = source.images[0];
  const { width: W, height: H, depth: D, spacing } = volume;
  const down = sliceAxisDown(volume);
  const slice = down ? volume.normal : volume.normal.map((x) => -x + 0);
  const kTop = down ? 0 : D - 1;
  const anatomical = anatomicalPlane(volume, plane);
  const label = anatomical.charAt(0).toUpperCase() + anatomical.slice(1);
  const seriesUid = `mpr:${plane}:${source.seriesUid}`;
  // The volume holds stored values with the source's one rescale (then a modality LUT of the
  // source applies too), or float modality values when the slices' rescales differ.
  const uniform = source.images.every((im) => (im.slope ?? 1) === volume.slope && (im.intercept ?? 0) === volume.intercept);
  let n;
  let geometry;
  if (plane === "axial") {
    n = D;
    geometry = (i) => ({ rows: H, columns: W, pixelSpacing: [spacing[1], spacing[0]], thickness: spacing[2],
      orientation: [...volume.rowCosine, ...volume.columnCosine], voxel: [0, 0, i] });
  } else if (plane === "coronal") {
    n = H;
    geometry = (j) => ({ rows: D, columns: W, pixelSpacing: [spacing[2], spacing[0]], thickness: spacing[1],
      orientation: [...volume.rowCosine, ...slice], voxel: [0, j, kTop] });
  } else {
    n = W;
    geometry = (i) => ({ rows: D, columns: H, pixelSpacing: [spacing[2], spacing[1]], thickness: spacing[0],
      orientation: [...volume.columnCosine, ...slice], voxel: [i, 0, kTop] });
  }
  const images = [];
  for (let index = 0; index < n; index++) {
    const g = geometry(index);
    const position = voxelToPatient(volume, g.voxel);
    const nrm = normalOf(g.orientation);
    images.push({
      studyUid: source.studyUid,
      seriesUid,
      sopInstanceUid: `mpr:${plane}:${index}`,
      sopClassUid: first.sopClassUid,
      frame: 1,
      numberOfFrames: 1,
      instanceNumber: index + 1,
      index,
      rows: g.rows,
      columns: g.columns,
      samplesPerPixel: 1,
      modality: first.modality,
      photometric: first.photometric === "MONOCHROME1" ? "MONOCHROME1" : "MONOCHROME2",
      decodedPhotometric: first.photometric === "MONOCHROME1" ? "MONOCHROME1" : "MONOCHROME2",
      bitsAllocated: first.bitsAllocated,
      bitsStored: first.bitsStored,
      pixelRepresentation: first.pixelRepresentation,
      planarConfiguration: 0,
      slope: volume.slope,
      intercept: volume.intercept,
      modalityLut: uniform ? first.modalityLut || null : null,
      units: first.units || volume.units || "",
      windows: first.windows || [],
      voiLut: first.voiLut || null,
      palette: null,
      pixelSpacing: g.pixelSpacing,
      spacingSource: "PixelSpacing",
      position,
      orientation: g.orientation,
      sliceThickness: g.thickness,
      sliceLocation: null,
      sliceDistance: position[0] * nrm[0] + position[1] * nrm[1] + position[2] * nrm[2],
      frameOfReferenceUid: first.frameOfReferenceUid || volume.frameOfReferenceUid || "",
      metadata: first.metadata,
      mprPlane: plane,
      mprIndex: index,
    });
  }
  return {
    studyUid: source.studyUid,
    seriesUid,
    modality: source.modality,
    description: `${label} MPR`,
    number: source.number,
    images,
    others: [],
    mprPlane: plane,
    mprSource: source,
  };
}

/** One MPR session: app.mpr while MPR is on (or loading). */
export class MprSession {
  constructor(app, vp, series) {
    this.app = app;
    this.sourceVp = vp;
    this.series = series;
    this.volume = null;
    this.source = null;
    this.views = [];            // {vp, plane, series, off: [() => void]}
    this.voxel = null;          // the crosshair, continuous [i, j, k]
    this.loading = true;
    this.stopped = false;
    this.cleanups = [];
    const grid = app.grid;
    this.saved = {
      layout: grid.layout,
      active: grid.viewports.indexOf(vp),
      viewports: grid.viewports.map((v) => ({ series: v.series, index: v.index, state: copyState(v.state) })),
    };
  }

  async start() {
    const { app, sourceVp: vp, series } = this;
    this.setButton(true);
    let volume;
    try {
      volume = await loadVolume(app, series, (done, total) => {
        if (!this.stopped && vp.series === series) vp.status.textContent = `MPR: loading slices ${done}/${total}…`;
      });
    } catch (err) {
      volume = { error: `cannot load the series: ${err.message}` };
    }
    if (this.stopped) return;   // turned off (or the study closed) while loading
    if (vp.series === series) vp.status.textContent = "";
    if (volume.error) {
      toast(`MPR: ${volume.error}`, "error");
      this.stopped = true;
      this.setButton(false);
      if (app.mpr === this) app.mpr = null;
      return;
    }
    this.loading = false;
    this.volume = volume;
    this.source = new ReformatSource(volume, app.loader);
    const win = { center: vp.state.center, width: vp.state.width, source: vp.state.windowSource,
      voiLut: vp.state.useVoiLut, invert: vp.state.invert };
    const k0 = Math.min(Math.max(vp.index, 0), volume.depth - 1);
    this.voxel = [Math.round((volume.width - 1) / 2), Math.round((volume.height - 1) / 2), k0];

    this.setLayout("1x3");
    const grid = app.grid;
    const planes = PLANES.map((plane) => ({
      plane,
      series: plane === "axial" ? series : reformatSeries(volume, series, plane),
    }));
    const shown = [];
    planes.forEach(({ plane, series: s }, n) => {
      const view = { vp: grid.viewports[n], plane, series: s, off: [] };
      this.views.push(view);
      view.vp.loader = this.source;
      view.vp.el.dataset.mpr = plane;
      shown.push(this.showView(view, win));
    });
    await Promise.all(shown);
    if (this.stopped) return;
    app.activate(this.views[0].vp);
    this.redraw();
    toast("MPR: Shift+click or Shift+drag to move the crosshair; scroll each view through its plane");
  }

  async showView(view, win) {
    const { vp, plane, series } = view;
    // Hooks first, so that a stop() during the first draw still finds them all in view.off.
    const draw = (ctx, v) => this.drawCrosshair(ctx, v, view);
    vp.overlays.push(draw);
    view.off.push(() => { const i = vp.overlays.indexOf(draw); if (i >= 0) vp.overlays.splice(i, 1); });
    view.off.push(vp.on((what) => {
      if (what === "image" && vp.series === series) this.follow(view);
    }));
    // Shift + left button: the crosshair (before the tool handlers on the overlay canvas).
    let dragging = null;
    const down = (e) => {
      if (e.button !== 0 || vp.series !== series || !vp.image) return;
      if (e.shiftKey) {
        e.stopPropagation();
        e.preventDefault();
        this.app.activate(vp);
        vp.el.focus({ preventScroll: true });
        vp.overlay.setPointerCapture?.(e.pointerId);
        dragging = e.pointerId;
        this.pick(view, vp.clientToImage(e.clientX, e.clientY));
      } else if (plane !== "axial" && !["wl", "pan", "zoom", "scroll"].includes(this.app.tool)) {
        e.stopPropagation();
        e.preventDefault();
        this.app.activate(vp);
        toast("Measure on the acquired (axial) view: a reformatted image cannot be saved in a report", "error");
      }
    };
    const move = (e) => {
      if (dragging === null || e.pointerId !== dragging) return;
      e.stopPropagation();
      this.pick(view, vp.clientToImage(e.clientX, e.clientY));
    };
    const up = (e) => {
      if (dragging === null || e.pointerId !== dragging) return;
      e.stopPropagation();
      dragging = null;
    };
    vp.el.addEventListener("pointerdown", down, true);
    vp.el.addEventListener("pointermove", move, true);
    vp.el.addEventListener("pointerup", up, true);
    vp.el.addEventListener("pointercancel", up, true);
    view.off.push(() => {
      vp.el.removeEventListener("pointerdown", down, true);
      vp.el.removeEventListener("pointermove", move, true);
      vp.el.removeEventListener("pointerup", up, true);
      vp.el.removeEventListener("pointercancel", up, true);
    });
    await vp.setSeries(series, this.indexFor(plane));
    if (this.stopped) return;
    vp.setWindow(win.center, win.width, win.source || "source");
    if (win.voiLut) vp.setVoiLut(true);
    if (win.invert !== vp.state.invert) vp.toggleInvert();
  }

  /** The slice index of `plane` through the crosshair. */
  indexFor(plane) {
    const v = this.volume;
    const [i, j, k] = this.voxel;
    const clamp = (x, n) => Math.min(Math.max(Math.round(x), 0), n - 1);
    if (plane === "axial") return clamp(k, v.depth);
    if (plane === "coronal") return clamp(j, v.height);
    return clamp(i, v.width);
  }

  /** Put the crosshair at image point `p` of `view` and move the other views there. */
  pick(view, p) {
    const v = this.volume;
    const im = view.vp.image;
    if (!im) return;
    const x = Math.min(Math.max(p[0], 0), im.columns - 1e-6);
    const y = Math.min(Math.max(p[1], 0), im.rows - 1e-6);
    // Centre of the pixel under the pointer: the crosshair sits on voxel centres.
    const centre = [Math.floor(x) + 0.5, Math.floor(y) + 0.5];
    const c = centre[0] - 0.5;
    const r = centre[1] - 0.5;
    const down = sliceAxisDown(v);
    const kOf = (row) => (down ? row : v.depth - 1 - row);
    const idx = view.vp.index;
    if (view.plane === "axial") this.voxel = [c, r, idx];
    else if (view.plane === "coronal") this.voxel = [c, idx, kOf(r)];
    else this.voxel = [idx, c, kOf(r)];
    for (const other of this.views) {
      if (other === view || other.vp.series !== other.series) continue;
      const want = this.indexFor(other.plane);
      if (other.vp.index !== want) other.vp.setIndex(want);
    }
    this.redraw();
    this.emitCrosshair();
  }

  /** A view scrolled (wheel, keys, slider, or a pick): the crosshair follows its slice. */
  follow(view) {
    const idx = view.vp.index;
    const a = view.plane === "axial" ? 2 : view.plane === "coronal" ? 1 : 0;
    if (this.voxel[a] !== idx) {
      this.voxel = [...this.voxel];
      this.voxel[a] = idx;
      this.emitCrosshair();
    }
    this.redraw();
  }

  emitCrosshair() {
    for (const view of this.views) view.vp.el.dispatchEvent(new CustomEvent("mpr-crosshair", { detail: this.voxel }));
  }

  redraw() { for (const view of this.views) view.vp.invalidate(); }

  /** The crosshair of `view`: one line per other plane, in that plane's colour, with a gap. */
  drawCrosshair(ctx, vp, view) {
    if (!this.volume || vp.series !== view.series || !vp.image) return;
    const { point } = voxelToPoint(this.volume, view.plane, this.voxel);
    const im = vp.image;
    const dpr = vp.dpr;
    const gap = 10 * dpr;
    const others = PLANES.filter((p) => p !== view.plane);
    // Vertical line (fixed x) = the plane whose fixed axis runs along x in this view, and so on.
    const vertical = view.plane === "sagittal" ? "coronal" : "sagittal";
    const horizontal = others.find((p) => p !== vertical);
    const centre = vp.imageToCanvasPoint(point);
    const segment = (a, b, colour) => {
      const pa = vp.imageToCanvasPoint(a);
      const pb = vp.imageToCanvasPoint(b);
      ctx.strokeStyle = colour;
      ctx.beginPath();
      for (const [from, to] of [[pa, centre], [pb, centre]]) {
        const dx = to[0] - from[0];
        const dy = to[1] - from[1];
        const len = Math.hypot(dx, dy);
        if (len <= gap) continue;
        const t = (len - gap) / len;
        ctx.moveTo(from[0], from[1]);
        ctx.lineTo(from[0] + dx * t, from[1] + dy * t);
      }
      ctx.stroke();
    };
    ctx.save();
    ctx.lineWidth = Math.max(1, dpr);
    ctx.setLineDash([]);
    segment([point[0], 0], [point[0], im.rows], PLANE_COLOURS[vertical]);
    segment([0, point[1]], [im.columns, point[1]], PLANE_COLOURS[horizontal]);
    // This view's own colour: a frame, so the line colours read as "that view".
    ctx.strokeStyle = PLANE_COLOURS[view.plane];
    ctx.lineWidth = 2 * dpr;
    ctx.strokeRect(dpr, dpr, ctx.canvas.width - 2 * dpr, ctx.canvas.height - 2 * dpr);
    ctx.restore();
  }

  setButton(on) {
    this.app.toolbar?.querySelector("button.mpr")?.classList.toggle("on", on);
  }

  /** app.setLayout, with a "1×3 MPR" entry in the layout select while MPR is on. */
  setLayout(name) {
    const sel = this.app.toolbar?.querySelector("select.layout");
    if (sel && name === "1x3" && !sel.querySelector('option[value="1x3"]')) {
      sel.append(h("option", { value: "1x3", dataset: { mpr: "1" } }, "1×3 MPR"));
      // Choosing another layout while MPR is on ends MPR (the grid has already changed).
      const onChange = () => { if (sel.value !== "1x3" && !this.stopped) this.stop({ keepLayout: true }); };
      sel.addEventListener("change", onChange);
      this.cleanups.push(() => sel.removeEventListener("change", onChange));
    }
    this.app.setLayout(name);
  }

  /** MPR off: the previous layout, series, indexes and display state come back. */
  async stop({ keepLayout = false } = {}) {
    if (this.stopped) return;
    this.stopped = true;
    if (this.app.mpr === this) this.app.mpr = null;
    for (const view of this.views) {
      for (const off of view.off) off();
      if (view.vp.loader === this.source) view.vp.loader = this.app.loader;
      delete view.vp.el.dataset.mpr;
    }
    for (const fn of this.cleanups) fn();
    this.source?.dispose();
    this.setButton(false);
    this.app.toolbar?.querySelector('select.layout option[value="1x3"]')?.remove();
    const grid = this.app.grid;
    if (!grid) return;   // the viewer was torn down
    if (this.loading) {
      if (this.sourceVp.series === this.series) this.sourceVp.status.textContent = "";
      return;
    }
    const mprViews = new Set(this.views.map((v) => v.vp));
    if (!keepLayout) this.app.setLayout(this.saved.layout);
    const restores = [];
    grid.viewports.forEach((vp, n) => {
      const was = this.saved.viewports[n];
      // A reformat (or the source in an MPR view) gives way to what was there before; a series
      // the user dropped on an MPR view since stays; a viewport the layout change created gets
      // its old series back.
      const restore = !!vp.series?.mprPlane || (mprViews.has(vp) && vp.series === this.series) ||
        (!keepLayout && !mprViews.has(vp));
      if (!restore) return;
      if (!was?.series) { vp.setSeries(null); return; }
      restores.push(vp.setSeries(was.series, was.index).then(() => {
        Object.assign(vp.state, copyState(was.state));
        if (!vp.state.userZoomed) vp.state.scale = vp.fitScale();
        vp.invalidate();
        vp.emit("window");
      }));
    });
    const active = grid.viewports[this.saved.active] || grid.viewports[0];
    this.app.activate(active);
    await Promise.all(restores);
  }
}

function copyState(s) { return { ...s, pan: [...(s.pan || [0, 0])] }; }
