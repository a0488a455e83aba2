// One viewport: a series, the slice on screen, its display state, and the two canvases (the
// image, drawn by WebGL2 or Canvas 2D, and an overlay for text, measurements and crosshairs).
import { frameKey } from "../data/loader.js";
import { CanvasRenderer } from "../image/canvasrenderer.js";
import { GLRenderer } from "../image/glrenderer.js";
import { fullRangeWindow, histogramWindow, initialWindow, modalityValue } from "../image/lut.js";
import { mipLevel, mipOf } from "../image/mip.js";
import { drawCorners, drawMarkers, orientationMarkers } from "./overlay.js";
import { apply, fitScale, imageToCanvas, invert, shaderMatrix } from "./transform.js";

// "webgl" or "canvas" forces a renderer; by default WebGL2 unless the browser's WebGL is a
// software rasterizer (SwiftShader, llvmpipe: machines without a GPU), where Canvas 2D measured
// several times faster for the same pixels (bench/RESULTS.md, Viewer).
let rendererChoice = new URLSearchParams(location.search).get("renderer");

export function useRenderer(choice) { rendererChoice = choice; }

export class Viewport {
  constructor(container, { loader, id }) {
    this.id = id;
    this.loader = loader;
    this.el = document.createElement("div");
    this.el.className = "vp";
    this.el.tabIndex = 0;
    this.el.dataset.vp = String(id);
    this.canvas = document.createElement("canvas");
    this.canvas.className = "vp-image";
    this.overlay = document.createElement("canvas");
    this.overlay.className = "vp-overlay";
    this.scroll = document.createElement("input");
    this.scroll.type = "range";
    this.scroll.className = "vp-scroll";
    this.scroll.min = "0";
    this.scroll.step = "1";
    this.scroll.setAttribute("aria-label", "slice");
    this.status = document.createElement("div");
    this.status.className = "vp-status";
    this.el.append(this.canvas, this.overlay, this.scroll, this.status);
    container.append(this.el);
    try {
      if (rendererChoice === "canvas") throw new Error("canvas renderer requested");
      this.renderer = new GLRenderer(this.canvas);
      if (this.renderer.software && rendererChoice !== "webgl") {
        this.renderer.release();
        throw new Error(`software WebGL (${this.renderer.software}): Canvas 2D is faster here`);
      }
    } catch {
      // A 2D context cannot be taken on a canvas that already tried webgl2.
      const fresh = document.createElement("canvas");
      fresh.className = "vp-image";
      this.canvas.replaceWith(fresh);
      this.canvas = fresh;
      this.renderer = new CanvasRenderer(fresh);
    }
    this.series = null;
    this.index = 0;
    this.image = null;
    this.pixels = null;
    this.state = defaultState();
    this.listeners = new Set();
    this.overlays = [];        // (ctx, viewport) => void: measurements, crosshairs, fusion legend
    this.fusionProvider = null;
    this.cine = null;
    this.dirty = false;
    this.loadToken = 0;
    this.scroll.addEventListener("input", () => this.setIndex(Number(this.scroll.value)));
    this.resizeObserver = new ResizeObserver(() => this.resize());
    this.resizeObserver.observe(this.el);
    this.resize();
  }

  on(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }

  emit(what) { for (const fn of this.listeners) fn(what, this); }

  get dpr() { return window.devicePixelRatio || 1; }

  resize() {
    const w = Math.max(1, Math.round(this.el.clientWidth * this.dpr));
    const h = Math.max(1, Math.round(this.el.clientHeight * this.dpr));
    if (this.canvas.width === w && this.canvas.height === h) return;
    const wasFit = this.image && Math.abs(this.state.scale - this.fitScale()) < 1e-6;
    for (const c of [this.canvas, this.overlay]) { c.width = w; c.height = h; }
    if (wasFit || (this.image && !this.state.userZoomed)) this.state.scale = this.fitScale();
    this.invalidate();
  }

  fitScale() {
    return this.image ? fitScale(this.image, this.canvas.width, this.canvas.height, this.state.rotation) : 1;
  }

  /** Show `series` from `index`; the display state starts fresh unless `keepState`. */
  setSeries(series, index = 0, { keepState = false } = {}) {
    this.stopCine();
    this.series = series;
    this.el.dataset.series = series ? series.seriesUid : "";
    if (!keepState) this.state = defaultState();
    this.state.windowSet = keepState && this.state.windowSet;
    this.image = null;
    this.pixels = null;
    this.scroll.max = String(Math.max(0, (series?.images.length || 1) - 1));
    this.scroll.hidden = !series || series.images.length < 2;
    if (!series || !series.images.length) {
      this.status.textContent = series ? "No images in this series" : "";
      this.invalidate();
      this.emit("series");
      return Promise.resolve();
    }
    this.emit("series");
    return this.setIndex(Math.min(Math.max(index, 0), series.images.length - 1), { force: true });
  }

  /** Go to slice `i`; resolves once it is on screen. */
  async setIndex(i, { force = false } = {}) {
    if (!this.series) return;
    const n = this.series.images.length;
    i = Math.min(Math.max(Math.round(i), 0), n - 1);
    if (i === this.index && this.image && !force) return;
    this.index = i;
    this.scroll.value = String(i);
    const image = this.series.images[i];
    const token = ++this.loadToken;
    const hit = this.loader.cached(image);
    if (hit) {
      this.show(image, hit);
    } else {
      this.status.textContent = "Loading…";
      try {
        const pixels = await this.loader.get(image);
        if (token !== this.loadToken) return;   // the user has moved on
        this.show(image, pixels);
      } catch (err) {
        if (token === this.loadToken) this.status.textContent = `Cannot show image: ${err.message}`;
        return;
      }
    }
    this.loader.prefetch(this.series, i);
  }

  show(image, pixels) {
    const first = !this.image;
    this.image = image;
    this.pixels = pixels;
    this.status.textContent = "";
    if (first || !this.state.windowSet) {
      const photometricRgb = pixels.samples === 3;
      const w = photometricRgb ? { center: 127.5, width: 255, source: "identity" } : initialWindow(image, pixels);
      Object.assign(this.state, { center: w.center, width: w.width, windowSource: w.source, windowSet: true });
    }
    if (first && !this.state.userZoomed) this.state.scale = this.fitScale();
    this.el.dataset.index = String(this.index);
    this.invalidate();
    this.emit("image");
  }

  invalidate() {
    if (this.dirty) return;
    this.dirty = true;
    requestAnimationFrame(() => this.draw());
  }

  matrix() {
    return imageToCanvas(this.state, this.image, this.canvas.width, this.canvas.height);
  }

  draw() {
    this.dirty = false;
    const octx = this.overlay.getContext("2d");
    octx.setTransform(1, 0, 0, 1, 0, 0);
    octx.clearRect(0, 0, this.overlay.width, this.overlay.height);
    if (!this.image || !this.pixels) {
      this.renderer.draw({ pixels: null });
      return;
    }
    const m = this.matrix();
    let level = this.pixels.samples === 1 || this.renderer.kind === "webgl2" ? mipLevel(m) : 0;
    // An image larger than the GPU's largest texture is shown from the first level that fits:
    // the overlay says so, since it is no longer pixel-exact.
    const maxTex = this.renderer.maxTextureSize || Infinity;
    while (Math.max(this.pixels.width, this.pixels.height) >> level > maxTex) level++;
    this.reducedForGpu = level > mipLevel(m);
    const pixels = level ? mipOf(this.pixels, level) : this.pixels;
    const k = 1 << level;
    const view = {
      pixels, image: this.image,
      canvasToImage: shaderMatrix(m, level),
      imageToCanvas: level ? [m[0] * k, m[1] * k, m[2] * k, m[3] * k, m[4], m[5]] : m,
      center: this.state.center, width: this.state.width,
      invert: this.state.invert !== (this.image.photometric === "MONOCHROME1"),
      useVoiLut: this.state.useVoiLut,
      fusion: level === 0 && this.fusionProvider ? this.fusionProvider(this) : null,
    };
    if (level && this.image.modalityLut) { view.slope = 1; view.intercept = 0; }
    this.renderer.draw(view);
    drawMarkers(octx, orientationMarkers(this.image, m), this.dpr);
    drawCorners(octx, this, this.dpr);
    for (const draw of this.overlays) draw(octx, this);
    this.lastDraw = performance.now();
    this.emit("draw");
  }

  // --- coordinates --------------------------------------------------------------------------
  /** Image coordinates (SCOORD) of a client (CSS) point. */
  clientToImage(clientX, clientY) {
    const r = this.overlay.getBoundingClientRect();
    const p = [(clientX - r.left) * this.dpr, (clientY - r.top) * this.dpr];
    return apply(invert(this.matrix()), p);
  }

  /** Canvas (device pixel) coordinates of an image point. */
  imageToCanvasPoint(p) { return apply(this.matrix(), p); }

  /** The displayed RGBA at the centre of image pixel (col, row): what the tests read back. */
  readDisplayPixel(col, row) {
    const [x, y] = this.imageToCanvasPoint([col + 0.5, row + 0.5]);
    // The canvas pixel whose centre samples image pixel (col, row): at 1:1 with the image half a
    // pixel off the canvas grid (odd canvas, even image), (x, y) is a canvas pixel corner and the
    // pixel at floor(x, y) shows the next image pixel.
    const inv = invert(this.matrix());
    for (const [dx, dy] of [[0, 0], [-1, 0], [0, -1], [-1, -1]]) {
      const px = Math.floor(x) + dx, py = Math.floor(y) + dy;
      const [ix, iy] = apply(inv, [px + 0.5, py + 0.5]);
      if (Math.floor(ix) === col && Math.floor(iy) === row) return this.renderer.readPixel(px, py);
    }
    return this.renderer.readPixel(x, y);
  }

  /** The stored and modality value of image pixel (col, row). */
  valueAt(col, row) {
    if (!this.pixels || this.pixels.samples !== 1) return null;
    const { width, height, data } = this.pixels;
    const c = Math.floor(col), r = Math.floor(row);
    if (c < 0 || r < 0 || c >= width || r >= height) return null;
    const stored = data[r * width + c];
    return { stored, value: modalityValue(this.image, stored) };   // the Modality LUT when there is one
  }

  // --- display state ------------------------------------------------------------------------
  setWindow(center, width, source = "user") {
    Object.assign(this.state, { center, width: Math.max(1, width), windowSource: source, windowSet: true,
      useVoiLut: false });
    this.invalidate();
    this.emit("window");
  }

  autoWindow() {
    if (this.pixels) { const w = histogramWindow(this.image, this.pixels); this.setWindow(w.center, w.width, "auto"); }
  }

  fullWindow() {
    if (this.pixels) { const w = fullRangeWindow(this.image, this.pixels); this.setWindow(w.center, w.width, "full range"); }
  }

  fileWindow(i) {
    const w = this.image?.windows?.[i];
    if (w) this.setWindow(w.center, w.width, w.explanation);
  }

  setVoiLut(on) {
    this.state.useVoiLut = !!on && !!this.image?.voiLut;
    this.invalidate();
    this.emit("window");
  }

  setZoom(scale, anchorCanvas = null) {
    const max = Math.max(16, this.fitScale() * 16);
    scale = Math.min(Math.max(scale, this.fitScale() / 8), max);
    if (anchorCanvas && this.image) {
      // Keep the image point under the cursor where it is.
      const before = apply(invert(this.matrix()), anchorCanvas);
      this.state.scale = scale;
      const after = this.imageToCanvasPoint(before);
      this.state.pan[0] += anchorCanvas[0] - after[0];
      this.state.pan[1] += anchorCanvas[1] - after[1];
    } else {
      this.state.scale = scale;
    }
    this.state.userZoomed = true;
    this.invalidate();
    this.emit("zoom");
  }

  fit() { this.state.pan = [0, 0]; this.state.userZoomed = false; this.state.scale = this.fitScale(); this.invalidate(); this.emit("zoom"); }

  /** One image pixel per device pixel. */
  oneToOne() { this.state.pan = [0, 0]; this.setZoom(1); }

  panBy(dx, dy) { this.state.pan[0] += dx; this.state.pan[1] += dy; this.invalidate(); this.emit("pan"); }

  rotate(deg) { this.state.rotation = (((this.state.rotation + deg) % 360) + 360) % 360; if (!this.state.userZoomed) this.state.scale = this.fitScale(); this.invalidate(); this.emit("rotate"); }

  flip(horizontal) { if (horizontal) this.state.flipH = !this.state.flipH; else this.state.flipV = !this.state.flipV; this.invalidate(); this.emit("flip"); }

  toggleInvert() { this.state.invert = !this.state.invert; this.invalidate(); this.emit("window"); }

  reset() {
    this.stopCine();
    this.state = defaultState();
    if (this.image) this.show(this.image, this.pixels);
    this.fit();
  }

  scrollBy(n) { if (this.series) return this.setIndex(this.index + n); return Promise.resolve(); }

  // --- cine -------------------------------------------------------------------------------------
  defaultFps() {
    const im = this.image;
    if (im?.cineRate) return Math.round(im.cineRate);
    if (im?.frameTime) return Math.max(1, Math.round(1000 / im.frameTime));
    return 15;
  }

  startCine(fps = this.cine?.fps || this.defaultFps()) {
    this.stopCine();
    if (!this.series || this.series.images.length < 2) return;
    this.cine = { fps, timer: 0, last: performance.now() };
    const tick = (now) => {
      if (!this.cine) return;
      if (now - this.cine.last >= 1000 / this.cine.fps) {
        this.cine.last = now;
        // Cine never waits on the network: a frame not yet decoded is skipped this turn.
        const next = (this.index + 1) % this.series.images.length;
        if (this.loader.cached(this.series.images[next])) this.setIndex(next);
        else this.loader.get(this.series.images[next]);
      }
      this.cine.timer = requestAnimationFrame(tick);
    };
    this.cine.timer = requestAnimationFrame(tick);
    this.emit("cine");
  }

  setCineFps(fps) { if (this.cine) this.cine.fps = Math.max(1, Math.min(120, fps)); this.emit("cine"); }

  stopCine() {
    if (this.cine) cancelAnimationFrame(this.cine.timer);
    const was = !!this.cine;
    this.cine = null;
    if (was) this.emit("cine");
  }

  isResident() {
    return !!this.series && this.series.images.every((im) => this.loader.cache.has(frameKey(im)));
  }

  destroy() {
    this.stopCine();
    this.resizeObserver.disconnect();
    this.el.remove();
  }
}

function defaultState() {
  return { center: 0, width: 1, windowSource: "", windowSet: false, invert: false, scale: 1, pan: [0, 0],
    rotation: 0, flipH: false, flipV: false, useVoiLut: false, userZoomed: false };
}
