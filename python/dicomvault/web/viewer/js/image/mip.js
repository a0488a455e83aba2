// Box-filtered half-size levels for showing large images (mammography, 4k CR) below 1:1
// without aliasing; built once per image on first need and kept with its pixels.

/** The mip level for a transform: how many halvings before one texel is about one screen pixel. */
export function mipLevel(m) {
  const scale = Math.min(Math.hypot(m[0], m[1]), Math.hypot(m[2], m[3]));
  if (scale >= 0.75) return 0;
  return Math.min(6, Math.floor(Math.log2(1 / scale) + 0.42));
}

export function mipOf(pixels, level) {
  if (!pixels.mips) pixels.mips = [pixels];
  for (let l = pixels.mips.length; l <= level; l++) {
    const prev = pixels.mips[l - 1];
    if (prev.width < 2 || prev.height < 2) break;
    pixels.mips.push(halve(prev));
  }
  return pixels.mips[Math.min(level, pixels.mips.length - 1)];
}

function halve(p) {
  const w = p.width >> 1;
  const h = p.height >> 1;
  const s = p.samples;
  const src = p.data;
  // Averages of integers are kept in float so no value is rounded toward one side.
  const out = s === 3 ? new Uint8Array(w * h * 3) : new Float32Array(w * h);
  const W = p.width;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      for (let c = 0; c < s; c++) {
        const i = ((2 * y) * W + 2 * x) * s + c;
        const v = (src[i] + src[i + s] + src[i + W * s] + src[i + W * s + s]) / 4;
        out[(y * w + x) * s + c] = s === 3 ? Math.round(v) : v;
      }
    }
  }
  return { width: w, height: h, samples: s, data: out, min: p.min, max: p.max, level: (p.level || 0) + 1 };
}
