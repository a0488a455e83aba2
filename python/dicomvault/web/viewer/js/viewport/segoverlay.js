// Segmentations (SEG) of the study drawn over the images they were derived from: one colour per
// segment, one opacity for all, each SEG shown or hidden. Drawn on the viewport's overlay canvas
// through the same image → canvas transform as the image, so zoom, pan, rotation and flips apply.
import { TAG, str } from "../data/dicomjson.js";
import { parseSeg, sourceImageIndex, unpackFrame } from "../data/seg.js";

const FRAMES_PER_REQUEST = 64;

export class SegOverlay {
  constructor(client, onChange) {
    this.client = client;
    this.onChange = onChange;
    // {seg, masks: Map(frame number -> the frame's bytes as fetched), visible, error}: kept packed
    // (a 512² binary frame is 32 KiB, 256 KiB unpacked) and unpacked when an image is first drawn.
    this.segs = [];
    this.opacity = 0.5;
    this.generation = 0;     // bumped by clear(): a load still running for the previous study is dropped
    this.layers = new Map(); // `${seriesUid}|${index}` -> canvas of every visible SEG on that image
    this.placement = new Map();  // `${segSop}|${seriesUid}` -> Map(image index -> [frames])
  }

  clear() { this.segs = []; this.placement.clear(); this.resetCache(); this.generation++; }

  resetCache() { this.layers.clear(); }

  /** Loads the SEG instances of `segRows` (QIDO series rows of modality SEG) of a study. */
  async load(studyUid, segRows) {
    const generation = this.generation;
    const segs = [];
    for (const row of segRows) {
      const seriesUid = str(row, TAG.SeriesInstanceUID);
      let instances;
      try {
        instances = await this.client.seriesMetadata(studyUid, seriesUid);
      } catch (err) {
        segs.push({ seg: { seriesUid, description: str(row, TAG.SeriesDescription), segments: new Map() },
          masks: new Map(), visible: false, error: err.message });
        continue;
      }
      for (const inst of instances) {
        const seg = parseSeg(inst);
        const entry = { seg, masks: new Map(), visible: true, error: null };
        segs.push(entry);
        try {
          const numbers = seg.frames.map((f) => f.frame);
          for (let i = 0; i < numbers.length; i += FRAMES_PER_REQUEST) {
            const chunk = numbers.slice(i, i + FRAMES_PER_REQUEST);
            const parts = await this.client.frames(studyUid, seg.seriesUid, seg.sopInstanceUid, chunk);
            chunk.forEach((n, k) => entry.masks.set(n, parts[k]));
          }
        } catch (err) {
          entry.error = `Cannot read segmentation ${seg.sopInstanceUid}: ${err.message}`;
          entry.visible = false;
        }
      }
    }
    if (generation !== this.generation) return [];   // another study was opened meanwhile
    this.segs.push(...segs);
    this.resetCache();
    this.onChange?.();
    return this.segs;
  }

  setOpacity(value) { this.opacity = Math.min(1, Math.max(0, value)); this.onChange?.(); }

  setVisible(entry, on) { entry.visible = !!on; this.resetCache(); this.onChange?.(); }

  /** The frames of `entry` on each image of `series`, by image index. */
  framesOn(entry, series) {
    const key = `${entry.seg.sopInstanceUid}|${series.seriesUid}`;
    let map = this.placement.get(key);
    if (!map) {
      map = new Map();
      for (const f of entry.seg.frames) {
        const i = sourceImageIndex(f, series, entry.seg.frameOfReferenceUid);
        if (i < 0) continue;
        if (!map.has(i)) map.set(i, []);
        map.get(i).push(f);
      }
      this.placement.set(key, map);
    }
    return map;
  }

  /** A canvas of the segments on image `index` of `series` (null: none there). */
  layer(series, index) {
    const key = `${series.seriesUid}|${index}`;
    if (this.layers.has(key)) return this.layers.get(key);
    let canvas = null;
    for (const entry of this.segs) {
      if (!entry.visible || entry.error) continue;
      const frames = this.framesOn(entry, series).get(index);
      if (!frames) continue;
      const { rows, columns } = entry.seg;
      const image = series.images[index];
      // A SEG's frames have its source images' matrix (PS3.3 C.8.20.2); another one is not ours to place.
      if (image.rows !== rows || image.columns !== columns) continue;
      if (!canvas) {
        canvas = document.createElement("canvas");
        canvas.width = columns;
        canvas.height = rows;
      }
      const ctx = canvas.getContext("2d");
      const img = ctx.getImageData(0, 0, columns, rows);
      for (const f of frames) {
        const raw = entry.masks.get(f.frame);
        const color = entry.seg.segments.get(f.segment)?.color || [255, 64, 64];
        if (!raw) continue;
        const mask = unpackFrame(raw, entry.seg);
        for (let p = 0; p < mask.length; p++) {
          if (!mask[p]) continue;
          const o = p * 4;
          img.data[o] = color[0]; img.data[o + 1] = color[1]; img.data[o + 2] = color[2]; img.data[o + 3] = 255;
        }
      }
      ctx.putImageData(img, 0, 0);
    }
    this.layers.set(key, canvas);
    return canvas;
  }

  /** The viewport overlay hook. */
  draw(ctx, vp) {
    if (!this.segs.length || !vp.series || !vp.image || this.opacity <= 0) return;
    if (vp.series.seriesUid.startsWith("mpr:")) return;   // reformats: no source images to map to
    const canvas = this.layer(vp.series, vp.index);
    if (!canvas) return;
    const m = vp.matrix();
    ctx.save();
    ctx.setTransform(m[0], m[1], m[2], m[3], m[4], m[5]);
    ctx.imageSmoothingEnabled = false;
    ctx.globalAlpha = this.opacity;
    ctx.drawImage(canvas, 0, 0, vp.image.columns, vp.image.rows);
    ctx.restore();
  }
}
