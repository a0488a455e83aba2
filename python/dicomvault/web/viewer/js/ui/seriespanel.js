// The series panel of one study: a thumbnail per series (rendered by the server: the only
// place /rendered is used), click to show in the active viewport, drag onto any viewport.
import { TAG, formatDate, num, str } from "../data/dicomjson.js";
import { h } from "./dom.js";

export class SeriesPanel {
  constructor(root, { client, onPick }) {
    this.client = client;
    this.onPick = onPick;
    this.el = h("aside.seriespanel");
    root.append(this.el);
    this.thumbUrls = [];
  }

  /** Show the series of `studyUid` under a heading; `label` e.g. "Prior 2019-03-02". */
  addStudy(studyUid, seriesRows, label) {
    const section = h("section.study-series", { dataset: { study: studyUid } }, h("h3", {}, label));
    const sorted = [...seriesRows].sort((a, b) => num(a, TAG.SeriesNumber, 0) - num(b, TAG.SeriesNumber, 0));
    for (const row of sorted) {
      const seriesUid = str(row, TAG.SeriesInstanceUID);
      const modality = str(row, TAG.Modality);
      const img = h("img", { alt: "", loading: "lazy", width: 96, height: 96 });
      const item = h("div.series", {
        draggable: "true", tabIndex: 0, title: str(row, TAG.SeriesDescription),
        dataset: { series: seriesUid, study: studyUid, modality },
        onclick: () => this.onPick(studyUid, seriesUid),
        onkeydown: (e) => { if (e.key === "Enter") this.onPick(studyUid, seriesUid); },
        ondragstart: (e) => {
          e.dataTransfer.setData("application/x-dicomvault-series", JSON.stringify({ study: studyUid, series: seriesUid }));
          e.dataTransfer.effectAllowed = "copy";
        },
      }, img,
      h("div.series-text", {},
        h("b", {}, `${num(row, TAG.SeriesNumber, "")} ${modality}`),
        h("span", {}, str(row, TAG.SeriesDescription) || "(no description)"),
        h("small", {}, `${num(row, TAG.NumberOfSeriesRelatedInstances, "?")} inst`)));
      section.append(item);
      if (!["SR", "KO", "PR", "SEG", "RTSTRUCT"].includes(modality)) {
        this.client.thumbnail(studyUid, seriesUid).then((url) => { img.src = url; this.thumbUrls.push(url); })
          .catch(() => img.classList.add("none"));
      } else {
        img.classList.add("none");
      }
    }
    this.el.append(section);
    return section;
  }

  mark(seriesUid, on) {
    for (const el of this.el.querySelectorAll(".series")) {
      if (el.dataset.series === seriesUid) el.classList.toggle("shown", on);
    }
  }

  clear() {
    for (const u of this.thumbUrls) URL.revokeObjectURL(u);
    this.thumbUrls = [];
    this.el.replaceChildren();
  }
}

export function studyLabel(study) {
  return `${formatDate(str(study, TAG.StudyDate))} ${str(study, TAG.StudyDescription)}`.trim();
}
