// The study's analysis results in the side panel: its flags with their reasons, the analyzers'
// measurements listed under the series they were measured on, and the segmentations shown over
// the images (each on or off, one opacity).
import { TAG, num, str } from "../data/dicomjson.js";
import { h } from "./dom.js";
import { flagBadge } from "./flags.js";

function formatNumber(v) {
  const a = Math.abs(v);
  return a >= 1000 ? v.toFixed(0) : a >= 10 ? v.toFixed(1) : a >= 0.1 ? v.toFixed(2) : v.toPrecision(3);
}

export function formatMeasurement(m) {
  const unit = m.unit === "1" ? "" : ` ${m.unit}`;
  return `${formatNumber(Number(m.value))}${unit}`;
}

function seriesLabel(rows, uid) {
  const row = rows.find((r) => str(r, TAG.SeriesInstanceUID) === uid);
  if (!row) return uid ? `Series ${uid}` : "Study";
  return `Series ${num(row, TAG.SeriesNumber, "")} ${str(row, TAG.SeriesDescription)}`.trim();
}

/** Fills `el` with the analysis of a study. `segs`: the SegOverlay. */
export function renderAnalysis(el, { analysis, seriesRows, segs, onShowSeries }) {
  const out = [];
  const flags = analysis?.flags || [];
  if (flags.length) {
    out.push(h("h4", {}, "Flags"), h("ul.analysis-flags", {}, ...flags.map((f) => h("li.analysis-flag", { dataset: { code: f.code } },
      flagBadge({ severity: f.severity, reasons: [f.reason] }), " ", f.reason, h("small", {}, ` ${f.analyzer}`)))));
  }
  const measurements = analysis?.measurements || [];
  if (measurements.length) {
    const bySeries = new Map();
    for (const m of measurements) {
      if (!bySeries.has(m.series_uid)) bySeries.set(m.series_uid, []);
      bySeries.get(m.series_uid).push(m);
    }
    out.push(h("h4", {}, "Measurements"));
    for (const [uid, list] of bySeries) {
      out.push(h("section.analysis-series", { dataset: { series: uid } },
        h("button.link", { type: "button", title: "Show this series", onclick: () => uid && onShowSeries(uid) }, seriesLabel(seriesRows, uid)),
        h("table.analysis-measurements", {}, h("tbody", {}, ...list.map((m) => h("tr", { dataset: { key: m.key, analyzer: m.analyzer } },
          h("td", {}, m.label), h("td.num", {}, formatMeasurement(m)), h("td", {}, h("small", {}, m.analyzer))))))));
    }
  }
  if (segs.segs.length) {
    out.push(h("h4", {}, "Segmentations"));
    for (const entry of segs.segs) {
      const swatches = [...entry.seg.segments.values()].map((s) => {
        const el = h("span.swatch", { title: s.label });
        el.style.background = `rgb(${s.color.join(",")})`;   // CSSOM: the page's CSP refuses style attributes
        return el;
      });
      out.push(h("label.seg-toggle", { dataset: { series: entry.seg.seriesUid } },
        h("input", { type: "checkbox", checked: entry.visible, disabled: !!entry.error, onchange: (e) => segs.setVisible(entry, e.target.checked) }),
        ...swatches, " ", entry.seg.description || "Segmentation",
        entry.error ? h("small.error", {}, ` ${entry.error}`) : null));
    }
    out.push(h("label.seg-opacity", {}, "Opacity ",
      h("input", { type: "range", min: 0, max: 100, value: Math.round(segs.opacity * 100), "aria-label": "segmentation opacity",
        oninput: (e) => segs.setOpacity(Number(e.target.value) / 100) })));
  }
  if (!out.length) out.push(h("p.hint", {}, analysis ? "No analysis results for this study." : "Loading the analysis…"));
  el.replaceChildren(...out);
}
