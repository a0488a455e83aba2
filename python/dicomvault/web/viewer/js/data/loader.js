// Getting frames to the screen fast: a bounded cache of decoded frames, a priority queue that
// serves the image on screen first, then its neighbours, then the rest of the series, and
// several requests in flight (the browser keeps 6 connections per origin on HTTP/1.1).
import { decodeFrame } from "../image/decode.js";

export class FrameCache {
  constructor(maxBytes = 1024 * 1024 * 1024) {
    this.maxBytes = maxBytes;
    this.bytes = 0;
    this.map = new Map();   // key -> pixels, in least-recently-used order
  }

  get(key) {
    const v = this.map.get(key);
    if (v) { this.map.delete(key); this.map.set(key, v); }
    return v;
  }

  has(key) { return this.map.has(key); }

  put(key, pixels) {
    if (this.map.has(key)) return;
    this.map.set(key, pixels);
    this.bytes += pixels.data.byteLength;
    for (const [k, v] of this.map) {
      if (this.bytes <= this.maxBytes) break;
      this.map.delete(k);
      this.bytes -= v.data.byteLength;
    }
  }
}

export function frameKey(image) { return `${image.sopInstanceUid}/${image.frame}`; }

const URGENT = 0;      // on screen now
const NEAR = 1;        // the neighbours of what is on screen
const BACKGROUND = 2;  // the rest of the series

export class FrameLoader {
  constructor(client, { cache = new FrameCache(), concurrency = 6, batchFrames = 8 } = {}) {
    this.client = client;
    this.cache = cache;
    this.concurrency = concurrency;
    this.batchFrames = batchFrames;
    this.queue = [];              // {image, priority, seq}
    this.pending = new Map();     // key -> {promise, resolve, reject, priority}
    this.active = 0;
    this.seq = 0;
    this.listeners = new Set();   // (image, pixels) on each arrival
  }

  onFrame(fn) { this.listeners.add(fn); return () => this.listeners.delete(fn); }

  cached(image) { return this.cache.get(frameKey(image)) || null; }

  /** The decoded pixels of `image`, fetched first of all. */
  get(image) { return this.request(image, URGENT); }

  /** Queue the images around `index`: the nearest first, then the rest of the series. */
  prefetch(series, index, near = 8) {
    const n = series.images.length;
    // Newest requests are served first inside a priority, so queue from the farthest inwards.
    for (let d = n - 1; d >= 1; d--) {
      const priority = d <= near ? NEAR : BACKGROUND;
      for (const i of [index + d, index - d]) if (i >= 0 && i < n) this.request(series.images[i], priority);
    }
  }

  /** Resolves once every image of the series is decoded and cached. */
  async loadAll(series) {
    await Promise.all(series.images.map((im) => this.request(im, BACKGROUND)));
  }

  request(image, priority) {
    const key = frameKey(image);
    const hit = this.cache.get(key);
    if (hit) return Promise.resolve(hit);
    let p = this.pending.get(key);
    if (p) {
      if (priority < p.priority) {
        p.priority = priority;
        const q = this.queue.find((e) => e.key === key);
        if (q) { q.priority = priority; q.seq = this.seq++; this.sorted = false; }
      }
      return p.promise;
    }
    let resolve, reject;
    const promise = new Promise((res, rej) => { resolve = res; reject = rej; });
    // Prefetches nobody awaits must not surface as unhandled rejections; awaiting callers still
    // get the error.
    promise.catch(() => {});
    p = { promise, resolve, reject, priority };
    this.pending.set(key, p);
    this.queue.push({ key, image, priority, seq: this.seq++ });
    this.sorted = false;
    this.pump();
    return promise;
  }

  pump() {
    while (this.active < this.concurrency && this.queue.length) {
      if (!this.sorted) {
        // Highest priority first; inside one priority the newest request first (the user's
        // latest position matters more than where they were a second ago).
        this.queue.sort((a, b) => b.priority - a.priority || a.seq - b.seq);
        this.sorted = true;
      }
      const head = this.queue.pop();
      const batch = [head];
      // Frames of one multi-frame instance travel together: one request, one read on the server.
      if (head.image.numberOfFrames > 1) {
        for (let i = this.queue.length - 1; i >= 0 && batch.length < this.batchFrames; i--) {
          const e = this.queue[i];
          if (e.image.sopInstanceUid === head.image.sopInstanceUid) {
            batch.push(e);
            this.queue.splice(i, 1);
          }
        }
      }
      this.active++;
      this.fetchBatch(batch).finally(() => { this.active--; this.pump(); });
    }
  }

  async fetchBatch(batch) {
    const im = batch[0].image;
    try {
      const parts = await this.client.frames(im.studyUid, im.seriesUid, im.sopInstanceUid,
        batch.map((e) => e.image.frame));
      batch.forEach((e, i) => {
        if (!parts[i]) throw new Error(`frame ${e.image.frame} of ${e.image.sopInstanceUid} missing from the response`);
        const pixels = decodeFrame(parts[i], e.image);
        this.cache.put(e.key, pixels);
        this.settle(e.key, (p) => p.resolve(pixels));
        for (const fn of this.listeners) fn(e.image, pixels);
      });
    } catch (err) {
      for (const e of batch) this.settle(e.key, (p) => p.reject(err));
    }
  }

  settle(key, fn) {
    const p = this.pending.get(key);
    if (!p) return;
    this.pending.delete(key);
    fn(p);
  }
}
