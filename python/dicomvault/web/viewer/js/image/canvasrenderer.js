// Canvas 2D fallback for browsers without WebGL2: the same mapping as the shader, computed in
// JS into an 8-bit image, then drawn with the viewport transform and no smoothing. Slower on a
// drag (the whole image is remapped), but shows exactly the same values.
import { linearWindow, modalityValue } from "./lut.js";

export class CanvasRenderer {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d", { alpha: false });
    this.kind = "canvas2d";
    this.scratch = document.createElement("canvas");
    this.key = null;
  }

  render8(view) {
    const { pixels, image } = view;
    const key = [pixels, view.center, view.width, view.invert, view.useVoiLut, view.fusion?.values].join("|");
    if (this.key === key && this.lastPixels === pixels) return;
    this.key = key;
    this.lastPixels = pixels;
    const { width, height, data } = pixels;
    this.scratch.width = width;
    this.scratch.height = height;
    const sctx = this.scratch.getContext("2d");
    const out = sctx.createImageData(width, height);
    const o = out.data;
    const n = width * height;
    const voi = view.useVoiLut && image.voiLut;
    const slope = view.slope ?? image.slope;
    const intercept = view.intercept ?? image.intercept;
    const map = (stored) => {
      const v = image.modalityLut && !voi ? modalityValue(image, stored) : stored * slope + intercept;
      if (voi) {
        const k = Math.min(Math.max(Math.floor(v - voi.first), 0), voi.data.length - 1);
        return (voi.data[k] / ((1 << voi.bits) - 1)) * 255;
      }
      return linearWindow(v, view.center, view.width);
    };
    if (pixels.samples === 3) {
      const lo = view.center - view.width / 2;
      for (let i = 0; i < n; i++) {
        for (let c = 0; c < 3; c++) {
          let g = Math.min(255, Math.max(0, ((data[3 * i + c] - lo) / view.width) * 255));
          if (view.invert) g = 255 - g;
          o[4 * i + c] = Math.floor(g + 0.5);
        }
        o[4 * i + 3] = 255;
      }
    } else {
      // Integer images: one table lookup per pixel instead of the window maths.
      const integer = !(data instanceof Float32Array);
      let table = null;
      let lo = 0;
      if (integer && pixels.max - pixels.min < 1 << 17) {
        lo = pixels.min;
        table = new Uint8Array(pixels.max - pixels.min + 1);
        for (let s = pixels.min; s <= pixels.max; s++) {
          const g = map(s);
          table[s - lo] = Math.floor((view.invert ? 255 - g : g) + 0.5);
        }
      }
      for (let i = 0; i < n; i++) {
        let g;
        if (table) g = table[data[i] - lo];
        else { g = map(data[i]); g = Math.floor((view.invert ? 255 - g : g) + 0.5); }
        o[4 * i] = o[4 * i + 1] = o[4 * i + 2] = g;
        o[4 * i + 3] = 255;
      }
    }
    const f = view.fusion;
    if (f && f.values && f.values.length === n) {
      // The shader's fusion blend, per pixel: overlay window → colour map → mix by opacity.
      for (let i = 0; i < n; i++) {
        const v = f.values[i];
        if (v !== v) continue;   // NaN: no overlay here
        const k = linearWindow(v, f.center, f.width) / 255;
        if (k < 0.001) continue;
        const ci = Math.min(255, Math.floor(k * 255)) * 4;
        for (let c = 0; c < 3; c++) {
          const g = o[4 * i + c] / 255;
          o[4 * i + c] = Math.floor(((1 - f.opacity) * g + f.opacity * (f.colormap[ci + c] / 255)) * 255 + 0.5);
        }
      }
    }
    sctx.putImageData(out, 0, 0);
  }

  draw(view) {
    const ctx = this.ctx;
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, this.canvas.width, this.canvas.height);
    if (!view.pixels) return;
    this.render8(view);
    const m = view.imageToCanvas;   // [a, b, c, d, e, f]
    ctx.imageSmoothingEnabled = false;
    ctx.setTransform(m[0], m[1], m[2], m[3], m[4], m[5]);
    ctx.drawImage(this.scratch, 0, 0);
    ctx.setTransform(1, 0, 0, 1, 0, 0);
  }

  readPixel(x, y) {
    return Array.from(this.ctx.getImageData(Math.floor(x), Math.floor(y), 1, 1).data);
  }
}
