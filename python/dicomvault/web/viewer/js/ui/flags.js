// Analysis flags as badges: the highest severity as a coloured label, the reasons on hover
// (title), in the study list (from QIDO's private block, qido_flags.py) and the study header
// (from /api/studies/{uid}/analysis).
import { values } from "../data/dicomjson.js";
import { h } from "./dom.js";

export const SEVERITY_RANK = { info: 1, warning: 2, urgent: 3 };
// The study-level QIDO attributes of our own (docs/analysis.md): severity (CS), reasons (UC).
export const FLAG_TAG = Object.freeze({ severity: "00991001", reasons: "00991002" });

/** {severity, reasons} of a QIDO study row, or null when it is not flagged. */
export function flagOfRow(row) {
  const severity = String(values(row, FLAG_TAG.severity)[0] || "").toLowerCase();
  if (!severity) return null;
  return { severity, reasons: values(row, FLAG_TAG.reasons).map(String) };
}

/** {severity, reasons} of an analysis API answer's flags (most severe first), or null. */
export function flagOfAnalysis(analysis) {
  const flags = [...(analysis?.flags || [])].sort((a, b) => (SEVERITY_RANK[b.severity] || 0) - (SEVERITY_RANK[a.severity] || 0));
  if (!flags.length) return null;
  return { severity: flags[0].severity, reasons: flags.map((f) => f.reason) };
}

export function flagBadge(flag) {
  if (!flag) return null;
  const sev = SEVERITY_RANK[flag.severity] ? flag.severity : "info";
  return h(`span.flag.sev-${sev}`, { title: flag.reasons.join("\n"), dataset: { severity: sev } }, sev.toUpperCase());
}
