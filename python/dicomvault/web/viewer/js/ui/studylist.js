// The study list: QIDO-RS search by patient name (fuzzy), ID, accession, date range,
// modality and description; paged on the server (newest first), sortable within a page;
// a patient's other studies (priors) and measurement trends one click away; studies the analysis
// flagged carry a badge (reasons on hover) and can be listed first ("Flagged first": orderby=flag).
import { TAG, formatDate, num, personName, str, values } from "../data/dicomjson.js";
import { clear, debounce, h, toast } from "./dom.js";
import { SEVERITY_RANK, flagBadge, flagOfRow } from "./flags.js";

const PAGE = 50;
const INCLUDE = ["StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedSeries",
  "NumberOfStudyRelatedInstances", "PatientBirthDate", "PatientSex", "AccessionNumber", "StudyTime"];
const MODALITIES = ["", "CT", "MR", "CR", "DX", "US", "MG", "PT", "NM", "XA", "RF", "OT", "SR", "SEG"];

const COLUMNS = [
  { key: "name", label: "Patient", get: (s) => personName(s[TAG.PatientName]?.Value?.[0] ?? "") },
  { key: "pid", label: "Patient ID", get: (s) => str(s, TAG.PatientID) },
  { key: "date", label: "Date", get: (s) => str(s, TAG.StudyDate) + str(s, TAG.StudyTime), show: (s) => formatDate(str(s, TAG.StudyDate)) },
  { key: "mod", label: "Modality", get: (s) => values(s, TAG.ModalitiesInStudy).join("/") },
  { key: "desc", label: "Description", get: (s) => str(s, TAG.StudyDescription) },
  { key: "acc", label: "Accession", get: (s) => str(s, TAG.AccessionNumber) },
  { key: "n", label: "Images", get: (s) => num(s, TAG.NumberOfStudyRelatedInstances, 0), numeric: true },
  { key: "flag", label: "Flag", get: (s) => SEVERITY_RANK[flagOfRow(s)?.severity] || 0, show: (s) => flagBadge(flagOfRow(s)), numeric: true },
];

export class StudyList {
  constructor(root, { client, onOpen, onTrends = null }) {
    this.client = client;
    this.onOpen = onOpen;
    this.onTrends = onTrends;
    this.offset = 0;
    this.rows = [];
    this.sort = { key: null, dir: 1 };
    this.abort = null;
    const field = (name, label, type = "text", extra = {}) =>
      h("label", {}, label, h("input", { name, type, autocomplete: "off", ...extra }));
    this.form = h("form.search", { onsubmit: (e) => { e.preventDefault(); this.search(0); } },
      field("name", "Patient name", "search", { placeholder: "e.g. smi joh" }),
      field("pid", "Patient ID"),
      field("acc", "Accession"),
      field("from", "From", "date"),
      field("to", "To", "date"),
      h("label", {}, "Modality", h("select", { name: "mod" }, ...MODALITIES.map((m) => h("option", { value: m }, m || "any")))),
      field("desc", "Description"),
      h("label.check", { title: "Studies the analysis flagged first, most urgent first" },
        h("input", { name: "flagfirst", type: "checkbox" }), "Flagged first"),
      h("button", { type: "submit" }, "Search"),
      h("button", { type: "button", onclick: () => { this.form.reset(); this.search(0); } }, "Clear"));
    const live = debounce(() => this.search(0), 250);
    this.form.addEventListener("input", live);
    this.table = h("table.studies");
    this.info = h("div.pager-info");
    this.pager = h("div.pager", {},
      h("button", { type: "button", onclick: () => this.search(Math.max(0, this.offset - PAGE)) }, "‹ Previous"),
      this.info,
      h("button", { type: "button", onclick: () => this.search(this.offset + PAGE) }, "Next ›"));
    this.el = h("section.studylist", {}, this.form, h("div.table-wrap", {}, this.table), this.pager);
    root.append(this.el);
  }

  params() {
    const f = Object.fromEntries(new FormData(this.form));
    const day = (d) => (d || "").replaceAll("-", "");
    const range = f.from || f.to ? `${day(f.from)}-${day(f.to)}` : undefined;
    const wild = (v) => (v ? (/[*?]/.test(v) ? v : `*${v}*`) : undefined);
    return {
      PatientName: f.name ? f.name : undefined,
      fuzzymatching: f.name ? "true" : undefined,
      PatientID: wild(f.pid),
      AccessionNumber: wild(f.acc),
      StudyDate: range,
      ModalitiesInStudy: f.mod || undefined,
      StudyDescription: wild(f.desc),
      orderby: f.flagfirst ? "flag" : undefined,
      includefield: INCLUDE,
      limit: PAGE + 1,   // one more than shown tells whether there is a next page
      offset: this.offset,
    };
  }

  async search(offset = this.offset, extra = null) {
    this.offset = offset;
    this.abort?.abort();
    this.abort = new AbortController();
    const t0 = performance.now();
    try {
      const params = { ...this.params(), ...(extra || {}) };
      const rows = await this.client.searchStudies(params, { signal: this.abort.signal });
      this.more = rows.length > PAGE;
      this.rows = rows.slice(0, PAGE);
      this.elapsed = performance.now() - t0;
      this.render();
    } catch (err) {
      if (err.name !== "AbortError") toast(`Search failed: ${err.message}`, "error");
    }
  }

  /** The other studies of a patient (newest first). */
  showPriors(patientId) {
    this.form.reset();
    this.form.elements.pid.value = patientId;
    this.search(0, { PatientID: patientId });
  }

  render() {
    const rows = [...this.rows];
    if (this.sort.key) {
      const col = COLUMNS.find((c) => c.key === this.sort.key);
      rows.sort((a, b) => {
        const x = col.get(a), y = col.get(b);
        return (col.numeric ? x - y : String(x).localeCompare(String(y))) * this.sort.dir;
      });
    }
    const head = h("tr", {}, ...COLUMNS.map((c) => h("th", {
      tabIndex: 0, dataset: { key: c.key },
      class: this.sort.key === c.key ? (this.sort.dir > 0 ? "asc" : "desc") : undefined,
      onclick: () => { this.sort = { key: c.key, dir: this.sort.key === c.key ? -this.sort.dir : 1 }; this.render(); },
    }, c.label)), h("th", {}, ""));
    const body = rows.map((s) => {
      const uid = str(s, TAG.StudyInstanceUID);
      const pid = str(s, TAG.PatientID);
      return h("tr.study", { dataset: { study: uid, severity: flagOfRow(s)?.severity || "" }, tabIndex: 0,
        onclick: () => this.onOpen(uid), onkeydown: (e) => { if (e.key === "Enter") this.onOpen(uid); } },
      ...COLUMNS.map((c) => h("td", {}, c.show ? c.show(s) : String(c.get(s)))),
      h("td", {}, h("button.priors", { type: "button", title: "Other studies of this patient",
        onclick: (e) => { e.stopPropagation(); this.showPriors(pid); } }, "Priors"),
      this.onTrends && pid ? h("button.trends", { type: "button", title: "This patient's measurements over time",
        onclick: (e) => { e.stopPropagation(); this.onTrends(pid); } }, "Trends") : null));
    });
    clear(this.table).append(h("thead", {}, head), h("tbody", {}, ...body));
    const last = this.offset + rows.length;
    this.info.textContent = rows.length ? `${this.offset + 1}–${last}${this.more ? "+" : ""} · ${this.elapsed.toFixed(0)} ms` : "No studies match";
    this.pager.firstChild.disabled = this.offset === 0;
    this.pager.lastChild.disabled = !this.more;
  }
}
