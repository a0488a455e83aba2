// A patient's page: every measurement the analyzers made across the patient's studies, as a
// table (latest value, change since the study before) and, per measurement, a small SVG chart
// over time with its values. From GET /api/patients/{id}/trends.
import { formatDate } from "../data/dicomjson.js";
import { h } from "./dom.js";
import { formatMeasurement } from "./analysispanel.js";

const SVG = "http://www.w3.org/2000/svg";
const W = 360, H = 140, PAD = { left: 52, right: 12, top: 12, bottom: 26 };

function svg(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  for (const c of children) el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return el;
}

function dayNumber(da) {
  if (!/^\d{8}$/.test(da || "")) return null;
  return Date.UTC(Number(da.slice(0, 4)), Number(da.slice(4, 6)) - 1, Number(da.slice(6, 8))) / 86400000;
}

export function formatChange(change, unit) {
  if (!change) return "";
  const sign = change.absolute > 0 ? "+" : "";
  const abs = `${sign}${formatMeasurement({ value: change.absolute, unit })}`;
  const rel = change.relative === null || change.relative === undefined ? "" : ` (${sign}${(change.relative * 100).toFixed(1)} %)`;
  return `${abs}${rel} since ${formatDate(change.since)}`;
}

/** The chart of one trend: x is the study date (or the study's rank when a date is missing). */
export function trendChart(trend) {
  const pts = trend.points;
  const days = pts.map((p) => dayNumber(p.study_date));
  const byDate = days.every((d) => d !== null) && new Set(days).size > 1;
  const xs = byDate ? days : pts.map((_, i) => i);
  const ys = pts.map((p) => p.value);
  const [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  const pad = (y1 - y0) * 0.1 || Math.abs(y0) * 0.1 || 1;
  y0 -= pad; y1 += pad;
  const px = (x) => PAD.left + (x1 === x0 ? (W - PAD.left - PAD.right) / 2 : ((x - x0) / (x1 - x0)) * (W - PAD.left - PAD.right));
  const py = (y) => H - PAD.bottom - ((y - y0) / (y1 - y0)) * (H - PAD.top - PAD.bottom);
  const coords = xs.map((x, i) => [px(x), py(ys[i])]);
  const chart = svg("svg", { class: "trend-chart", viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: "img",
    "aria-label": `${trend.label} over time` },
  svg("line", { x1: PAD.left, y1: H - PAD.bottom, x2: W - PAD.right, y2: H - PAD.bottom, class: "axis" }),
  svg("line", { x1: PAD.left, y1: PAD.top, x2: PAD.left, y2: H - PAD.bottom, class: "axis" }),
  svg("text", { x: PAD.left - 4, y: py(y1 - pad) + 4, "text-anchor": "end", class: "tick" }, formatMeasurement({ value: y1 - pad, unit: "1" })),
  svg("text", { x: PAD.left - 4, y: py(y0 + pad) + 4, "text-anchor": "end", class: "tick" }, formatMeasurement({ value: y0 + pad, unit: "1" })),
  svg("text", { x: px(x0), y: H - 8, "text-anchor": "start", class: "tick" }, formatDate(pts[0].study_date)),
  pts.length > 1 ? svg("text", { x: px(x1), y: H - 8, "text-anchor": "end", class: "tick" }, formatDate(pts[pts.length - 1].study_date)) : "",
  svg("polyline", { points: coords.map(([x, y]) => `${x.toFixed(1)},${y.toFixed(1)}`).join(" "), class: "trend-line" }));
  pts.forEach((p, i) => {
    chart.append(svg("circle", { cx: coords[i][0].toFixed(1), cy: coords[i][1].toFixed(1), r: 4, class: "trend-point",
      "data-study": p.study_uid, "data-value": p.value },
    svg("title", {}, `${formatDate(p.study_date)}: ${formatMeasurement({ value: p.value, unit: trend.unit })}`)));
  });
  return chart;
}

/** Fills `root` with the patient's trends. */
export async function showTrends(root, client, patientId) {
  root.replaceChildren(h("h2", {}, `Patient ${patientId}`), h("p.hint", {}, "Loading the trends…"));
  let data;
  try {
    data = await client.api(`/patients/${encodeURIComponent(patientId)}/trends`);
  } catch (err) {
    root.replaceChildren(h("h2", {}, `Patient ${patientId}`), h("p.error", {}, `Cannot load the trends: ${err.message}`));
    return null;
  }
  const studyLink = (p) => h("a", { href: `#/study/${encodeURIComponent(p.study_uid)}` }, formatDate(p.study_date) || p.study_uid);
  const trends = data.trends || [];
  const table = h("table.trends", {},
    h("thead", {}, h("tr", {}, ...["Measurement", "Analyzer", "Studies", "Latest", "Change"].map((c) => h("th", {}, c)))),
    h("tbody", {}, ...trends.map((t) => {
      const last = t.points[t.points.length - 1];
      return h("tr.trend", { dataset: { key: t.key, analyzer: t.analyzer } },
        h("td", {}, t.label), h("td", {}, t.analyzer), h("td.num", {}, String(t.points.length)),
        h("td.num", {}, last ? formatMeasurement({ value: last.value, unit: t.unit }) : ""),
        h("td.change", {}, formatChange(t.change, t.unit)));
    })));
  const charts = trends.map((t) => h("section.trend-card", { dataset: { key: t.key, analyzer: t.analyzer } },
    h("h3", {}, `${t.label} `, h("small", {}, `${t.unit === "1" ? "" : t.unit} · ${t.analyzer}`)),
    trendChart(t),
    h("div.change", {}, formatChange(t.change, t.unit) || "One study so far"),
    h("table.points", {}, h("tbody", {}, ...t.points.map((p) => h("tr", {}, h("td", {}, studyLink(p)),
      h("td.num", {}, formatMeasurement({ value: p.value, unit: t.unit }))))))));
  root.replaceChildren(h("h2", {}, `Patient ${patientId}`),
    trends.length ? table : h("p.hint", {}, "No measurements for this patient yet."),
    h("div.trend-cards", {}, ...charts));
  return data;
}
