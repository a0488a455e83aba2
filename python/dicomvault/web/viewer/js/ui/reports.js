// The radiology reports of a study received over HL7 (ORU^R01, integration/hl7/results.py), read
// from /api/studies/{uid} and shown as plain text in the side panel: textContent only, since a
// report is free text from another system.
import { formatDate } from "../data/dicomjson.js";
import { h } from "./dom.js";

const STATUS = { F: "final", P: "preliminary", C: "corrected", X: "cannot be obtained" };

function observed(v) {
  const s = String(v || "");
  return s.length >= 8 ? `${formatDate(s.slice(0, 8))}${s.length >= 12 ? ` ${s.slice(8, 10)}:${s.slice(10, 12)}` : ""}` : s;
}

/** Fills `el` with the reports (oldest first); returns how many there are. */
export function renderReports(el, reports) {
  const list = reports || [];
  el.replaceChildren(...(list.length ? list.map((r) => h("article.report", { dataset: { control: r.control_id || "", status: r.status || "" } },
    h("header", {},
      h("b", {}, r.procedure || "Report"), " ",
      h("span.report-status", {}, STATUS[r.status] || r.status || ""),
      h("small", {}, [observed(r.observed), r.author ? `by ${r.author}` : "", r.sender ? `from ${r.sender}` : ""].filter(Boolean).join(" "))),
    h("pre.report-text", {}, r.text || "")))
    : [h("p.hint", {}, "No report received for this study.")]));
  return list.length;
}
