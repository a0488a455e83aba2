// Value of interest: presets, the file's own windows, histogram windows, and the DICOM linear
// window function (PS3.3 C.11.2.1.2.1) the renderers implement.

// Centre/width in HU as radiology references give them (e.g. Radiopaedia "Windowing (CT)").
export const CT_PRESETS = [
  { key: "1", name: "Brain", center: 40, width: 80 },
  { key: "2", name: "Subdural", center: 75, width: 215 },
  { key: "3", name: "Stroke", center: 40, width: 40 },
  { key: "4", name: "Lung", center: -600, width: 1500 },
  { key: "5", name: "Mediastinum", center: 50, width: 350 },
  { key: "6", name: "Abdomen", center: 40, width: 400 },
  { key: "7", name: "Liver", center: 30, width: 150 },
  { key: "8", name: "Bone", center: 400, width: 1800 },
];

/** Modality value of a stored value (the modality LUT, when the image has one, or rescale). */
export function modalityValue(image, stored) {
  const lut = image.modalityLut;
  if (lut) {
    const k = Math.min(Math.max(Math.round(stored) - lut.first, 0), lut.data.length - 1);
    return lut.data[k];
  }
  return stored * image.slope + image.intercept;
}

/** The DICOM linear window function, output 0..255 (the Python tests compute the same). */
export function linearWindow(x, center, width) {
  const c = center - 0.5;
  const w = width - 1;
  if (x <= c - w / 2) return 0;
  if (x > c + w / 2) return 255;
  return ((x - c) / w + 0.5) * 255;
}

/** The window an image opens with: the file's first, else one from its histogram. */
export function initialWindow(image, pixels) {
  if (image.windows && image.windows.length) {
    const w = image.windows[0];
    return { center: w.center, width: w.width, source: w.explanation || "file" };
  }
  return histogramWindow(image, pixels);
}

/** A window over the 1st..99th percentile of the modality values (MR "auto"), ignoring the
 *  background mode at the minimum so a mostly-black MR slice still gets contrast. */
export function histogramWindow(image, pixels) {
  const { data } = pixels;
  if (pixels.samples !== 1 || !data.length) return { center: 127.5, width: 256, source: "auto" };
  const lo = modalityValue(image, pixels.min);
  const hi = modalityValue(image, pixels.max);
  if (hi <= lo) return { center: lo, width: 1, source: "auto" };
  const bins = 1024;
  const hist = new Uint32Array(bins);
  const scale = (bins - 1) / (pixels.max - pixels.min || 1);
  const step = Math.max(1, Math.floor(data.length / 262144));   // sample big images
  let total = 0;
  for (let i = 0; i < data.length; i += step) {
    hist[Math.floor((data[i] - pixels.min) * scale)]++;
    total++;
  }
  // Drop the background bin when it dominates (air around an MR head).
  if (hist[0] > total * 0.2) { total -= hist[0]; hist[0] = 0; }
  const at = (q) => {
    let acc = 0;
    for (let b = 0; b < bins; b++) { acc += hist[b]; if (acc >= q * total) return b; }
    return bins - 1;
  };
  const toValue = (b) => modalityValue(image, pixels.min + b / scale);
  const p1 = toValue(at(0.01));
  const p99 = toValue(at(0.99));
  const width = Math.max(1, p99 - p1);
  return { center: p1 + width / 2, width, source: "auto" };
}

/** The full range of the image as a window. */
export function fullRangeWindow(image, pixels) {
  const a = modalityValue(image, pixels.min);
  const b = modalityValue(image, pixels.max);
  const lo = Math.min(a, b);
  const width = Math.max(1, Math.abs(b - a));
  return { center: lo + width / 2, width, source: "full range" };
}
