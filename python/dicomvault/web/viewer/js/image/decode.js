// Native little-endian frame bytes → typed arrays of stored values (grayscale) or RGB bytes.
// Nothing here applies the modality LUT or a window: the renderer does, per draw.

/** Decode one frame's bytes for `image` (docs/viewer-internals.md) into pixels. */
export function decodeFrame(buffer, image) {
  const { rows, columns } = image;
  const n = rows * columns;
  const photometric = image.decodedPhotometric || image.photometric;
  if (image.samplesPerPixel === 3 || photometric === "PALETTE COLOR") {
    return { width: columns, height: rows, samples: 3, data: toRgb(buffer, image, photometric), min: 0, max: 255 };
  }
  if (image.bitsAllocated === 16 && image.pixelRepresentation !== 1 && !image.floatPixels) {
    return { width: columns, height: rows, samples: 1, ...unsigned16(buffer, n, image.bitsStored) };
  }
  const data = grayscale(buffer, image, n);
  let min = Infinity;
  let max = -Infinity;
  for (let i = 0; i < data.length; i++) {
    const v = data[i];
    if (v < min) min = v;
    if (v > max) max = v;
  }
  return { width: columns, height: rows, samples: 1, data, min, max };
}

function grayscale(buffer, image, n) {
  const bits = image.bitsAllocated;
  const signed = image.pixelRepresentation === 1;
  if (image.floatPixels === 32) return new Float32Array(buffer, 0, n);
  if (image.floatPixels === 64) return Float32Array.from(new Float64Array(buffer, 0, n));
  if (bits === 8) {
    const u = new Uint8Array(buffer, 0, n);
    return signed ? Int16Array.from(new Int8Array(buffer, 0, n)) : u;
  }
  if (bits === 16) {
    const stored = image.bitsStored;
    if (signed) {
      const a = new Int16Array(buffer, 0, n);
      if (stored < 16) {
        // Sign-extend from BitsStored: a 12-bit -1 is 0x0FFF in the file. JS shifts 32-bit ints.
        const shift = 32 - stored;
        for (let i = 0; i < n; i++) a[i] = (a[i] << shift) >> shift;
      }
      return a;
    }
    return unsigned16(buffer, n, stored).data;
  }
  if (bits === 32) {
    return Float32Array.from(signed ? new Int32Array(buffer, 0, n) : new Uint32Array(buffer, 0, n));
  }
  if (bits === 1) {
    const src = new Uint8Array(buffer);
    const out = new Uint8Array(n);
    for (let i = 0; i < n; i++) out[i] = (src[i >> 3] >> (i & 7)) & 1;
    return out;
  }
  throw new Error(`BitsAllocated ${bits} of ${image.sopInstanceUid} is not displayable`);
}

/** Unsigned 16-bit stored values (most CT, MR, CR, DX) and their range, in one integer pass: bits
 *  above BitsStored (overlays or garbage, not part of the value) are cleared by a second pass only
 *  in the frames that have any. Two passes with a float min/max cost three times as much. */
function unsigned16(buffer, n, stored) {
  const data = new Uint16Array(buffer, 0, n);
  const mask = stored > 0 && stored < 16 ? (1 << stored) - 1 : 0xffff;
  let high = 0;
  let min = 0xffff;
  let max = 0;
  for (let i = 0; i < n; i++) {
    const v = data[i];
    high |= v;
    if (v < min) min = v;
    if (v > max) max = v;
  }
  if (high & ~mask) {
    min = 0xffff;
    max = 0;
    for (let i = 0; i < n; i++) {
      const v = data[i] & mask;
      data[i] = v;
      if (v < min) min = v;
      if (v > max) max = v;
    }
  }
  return { data, min, max };
}

function clamp8(v) { return v < 0 ? 0 : v > 255 ? 255 : v; }

function toRgb(buffer, image, photometric) {
  const { rows, columns } = image;
  const n = rows * columns;
  const out = new Uint8Array(n * 3);
  if (photometric === "PALETTE COLOR") {
    const p = image.palette;
    if (!p) throw new Error(`PALETTE COLOR without a usable palette in ${image.sopInstanceUid}`);
    const idx = image.bitsAllocated === 16 ? new Uint16Array(buffer, 0, n) : new Uint8Array(buffer, 0, n);
    // Palette entries are 16 or 8 bits (descriptor); shift to 8 for display.
    const shift = p.bits === 16 || Math.max(...p.red.slice(0, 64)) > 255 ? 8 : 0;
    const last = p.red.length - 1;
    for (let i = 0; i < n; i++) {
      let k = idx[i] - p.first;
      k = k < 0 ? 0 : k > last ? last : k;
      out[3 * i] = p.red[k] >> shift;
      out[3 * i + 1] = p.green[k] >> shift;
      out[3 * i + 2] = p.blue[k] >> shift;
    }
    return out;
  }
  let src;
  if (image.bitsAllocated === 16) {
    const s16 = new Uint16Array(buffer, 0, Math.min(buffer.byteLength >> 1, n * 3));
    const shift = Math.max(0, image.bitsStored - 8);
    src = new Uint8Array(s16.length);
    for (let i = 0; i < s16.length; i++) src[i] = s16[i] >> shift;
  } else {
    src = new Uint8Array(buffer);
  }
  if (photometric === "YBR_FULL_422") {
    // Native 4:2:2: Y1 Y2 Cb Cr per horizontal pixel pair (PS3.3 C.7.6.3.1.2).
    for (let p = 0, o = 0; p < n / 2; p++) {
      const cb = src[4 * p + 2], cr = src[4 * p + 3];
      o = ybr(src[4 * p], cb, cr, out, o);
      o = ybr(src[4 * p + 1], cb, cr, out, o);
    }
    return out;
  }
  const planar = image.planarConfiguration === 1;
  const get = planar ? (i, c) => src[c * n + i] : (i, c) => src[3 * i + c];
  if (photometric === "YBR_FULL") {
    for (let i = 0, o = 0; i < n; i++) o = ybr(get(i, 0), get(i, 1), get(i, 2), out, o);
    return out;
  }
  if (!planar && image.bitsAllocated === 8) {
    out.set(src.subarray(0, n * 3));
    return out;
  }
  for (let i = 0; i < n; i++) {
    out[3 * i] = get(i, 0);
    out[3 * i + 1] = get(i, 1);
    out[3 * i + 2] = get(i, 2);
  }
  return out;
}

// YCbCr (full range, ITU-R BT.601 as PS3.3 C.7.6.3.1.2 defines YBR_FULL) to RGB.
function ybr(y, cb, cr, out, o) {
  out[o] = clamp8(Math.round(y + 1.402 * (cr - 128)));
  out[o + 1] = clamp8(Math.round(y - 0.344136 * (cb - 128) - 0.714136 * (cr - 128)));
  out[o + 2] = clamp8(Math.round(y + 1.772 * (cb - 128)));
  return o + 3;
}
