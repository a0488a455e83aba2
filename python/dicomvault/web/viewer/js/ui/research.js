// Export for research: the study de-identified for one of the archive's research projects
// (PS3.15 Annex E, done by the archive: POST /api/studies/{uid}/export-research), downloaded
// as a ZIP. The archive decides who may and audits it; this is only the dialog.
import { h, toast } from "./dom.js";

const RETAIN = [
  ["dates", "Dates, shifted per patient"],
  ["full-dates", "Full dates"],
  ["patient", "Patient characteristics (age, sex, size, weight)"],
  ["device", "Device identity"],
  ["institution", "Institution identity"],
  ["private", "Safe private attributes"],
];

export async function openResearchExport(client, studyUid) {
  const out = h("div.research-result");
  let projects = [];
  try {
    projects = await client.api("/research-projects");
  } catch (err) {
    toast(err.status === 403 ? "Your role may not export studies." : err.message, "error");
    return null;
  }
  if (!projects.length) {
    toast("No research projects are configured on this archive ([deidentify]).", "error");
    return null;
  }
  const boxes = RETAIN.map(([name, label]) =>
    h("label", {}, h("input", { type: "checkbox", name: "retain", value: name }), ` ${label}`));
  const pick = (name) => {
    const p = projects.find((x) => x.name === name);
    for (const label of boxes) {
      const box = label.querySelector("input");
      box.checked = p.retain.includes(box.value);
    }
  };
  const select = h("select", { name: "project", onchange: (e) => pick(e.target.value) },
    ...projects.map((p) => h("option", { value: p.name }, p.name)));
  const dialog = h("dialog.research", {},
    h("form", { method: "dialog", onsubmit: async (e) => {
      if (e.submitter?.value !== "export") return;
      e.preventDefault();
      const form = new FormData(e.target);
      const body = { project: form.get("project"), retain: form.getAll("retain"),
        allow_burned_in: form.get("burned") === "on" };
      out.replaceChildren(h("p", {}, "De-identifying…"));
      try {
        const rsp = await client.request(`/api/studies/${encodeURIComponent(studyUid)}/export-research`, {
          method: "POST", accept: "application/zip", body: JSON.stringify(body), type: "application/json" });
        const name = /filename="([^"]+)"/.exec(rsp.headers.get("content-disposition") || "")?.[1] || "research.zip";
        const url = URL.createObjectURL(await rsp.blob());
        const a = h("a", { href: url, download: name }, name);
        a.click();
        out.replaceChildren(h("p", {}, "Downloaded ", a, ". Its deid-report.json lists what was held back."));
      } catch (err) {
        out.replaceChildren(h("p.error", {}, err.status === 403 ? "Your role may not export studies." : err.message));
      }
    } },
    h("h2", {}, "Export for research"),
    h("p", {}, "The study, de-identified by the archive for the project (PS3.15 Annex E), as a ZIP."),
    h("label", {}, "Project ", select),
    h("fieldset", {}, h("legend", {}, "Retain"), ...boxes),
    h("label", {}, h("input", { type: "checkbox", name: "burned" }),
      " Include images that may have burned-in text (ultrasound, screen captures…)"),
    h("div.buttons", {}, h("button", { value: "export" }, "Export"), h("button", { value: "close" }, "Close")),
    out));
  pick(projects[0].name);
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
  return dialog;
}
