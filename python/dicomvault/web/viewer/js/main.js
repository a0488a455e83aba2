// The application: routes (#/studies, #/study/UID, #/patient/ID, #/share/TOKEN, #/login), the viewer screen,
// and the wiring between data, viewports, tools and panels. Exposed as window.dicomvault for
// the browser tests and the benchmark.
import { DicomWebClient } from "./data/client.js";
import { TAG, formatDate, str } from "./data/dicomjson.js";
import { FrameLoader } from "./data/loader.js";
import { buildSeries } from "./data/series.js";
import { CT_PRESETS } from "./image/lut.js";
import { Grid } from "./layout/grid.js";
import { ScrollSync } from "./layout/sync.js";
import { MEASURE_TOOLS, Measurements, formatValue } from "./tools/measuretool.js";
import { renderAnalysis } from "./ui/analysispanel.js";
import { renderReports } from "./ui/reports.js";
import { clear, h, toast } from "./ui/dom.js";
import { flagBadge, flagOfAnalysis } from "./ui/flags.js";
import { showLogin, storeToken, storedToken } from "./ui/login.js";
import { renderMetadata } from "./ui/metadata.js";
import { SeriesPanel, studyLabel } from "./ui/seriespanel.js";
import { openShareDialog } from "./ui/share.js";
import { openResearchExport } from "./ui/research.js";
import { StudyList } from "./ui/studylist.js";
import { showTrends } from "./ui/trends.js";
import { attachInteraction } from "./viewport/interaction.js";
import { SegOverlay } from "./viewport/segoverlay.js";

const TOOLS = [
  ["wl", "W/L", "w"], ["pan", "Pan", "p"], ["zoom", "Zoom", "z"], ["scroll", "Scroll", "s"],
  ["length", "Length", "l"], ["angle", "Angle", "g"], ["ellipse", "Ellipse", "e"], ["rectangle", "Rect", "o"],
];

export class App {
  constructor(root) {
    this.root = root;
    this.client = new DicomWebClient({ root: "", token: storedToken() });
    this.client.onUnauthorized = () => { if (!this.loggingIn) this.route("#/login"); };
    this.loader = new FrameLoader(this.client);
    this.measure = new Measurements(this);
    // the study's segmentations over its images, and its analysis results (flags, measurements)
    this.segs = new SegOverlay(this.client, () => { this.redrawAll(); this.renderAnalysisPanel(); });
    this.analysis = null;
    this.sync = new ScrollSync();
    this.tool = "wl";
    this.session = null;
    this.seriesCache = new Map();     // series UID -> series model
    this.timings = [];                // click → first image, → all resident, per series opened
    this.study = null;
    window.addEventListener("hashchange", () => this.route(location.hash));
    document.addEventListener("keydown", (e) => this.key(e));
  }

  async start() {
    // A 401 here only says "nobody yet": route() shows the login page or opens a share link. Left to
    // onUnauthorized, it would start a second login route that never ends (loggingIn stuck true).
    this.loggingIn = true;
    try {
      this.session = await this.client.api("/session");
    } catch (err) {
      if (err.status !== 401) { toast(err.message, "error"); }
    }
    this.loggingIn = false;
    await this.route(location.hash || "#/studies");
  }

  async route(hash) {
    const [, view, arg] = /^#\/([^/]*)\/?(.*)$/.exec(hash) || [null, "studies", ""];
    if (view === "share" && arg) {
      // A share link: its token is the credential, scoped by the archive to one study.
      storeToken(decodeURIComponent(arg));
      this.client.setToken(decodeURIComponent(arg));
      try {
        this.session = await this.client.api("/session");
      } catch (err) {
        this.root.replaceChildren(h("div.message", {}, err.status === 401
          ? "This share link has expired or was revoked." : `Cannot open the link: ${err.message}`));
        storeToken(null);
        this.client.setToken(null);
        return;
      }
      history.replaceState(null, "", `#/study/${encodeURIComponent(this.session.study)}`);
      return this.openStudy(this.session.study);
    }
    if (view === "login" || !this.session) {
      this.loggingIn = true;
      this.session = await showLogin(this.root, this.client, view === "login" && this.session ? "" : "");
      this.session = await this.client.api("/session");
      this.loggingIn = false;
      if (view === "login") { history.replaceState(null, "", "#/studies"); return this.route("#/studies"); }
    }
    if (view === "study" && arg) return this.openStudy(decodeURIComponent(arg));
    if (view === "patient" && arg && !this.session?.study) return this.showPatient(decodeURIComponent(arg));
    if (this.session?.study) return this.openStudy(this.session.study);
    return this.showStudies();
  }

  can(action) { return !!this.session?.actions?.includes(action); }

  header(...extra) {
    const who = this.session ? `${this.session.name} (${this.session.role})` : "";
    return h("header.top", {},
      h("a.brand", { href: "#/studies" }, "dicomvault"),
      ...extra,
      h("span.spacer"),
      h("span.who", {}, who),
      this.session && this.session.method !== "anonymous" && !this.session.study
        ? h("button", { type: "button", onclick: () => this.logout() }, "Log out") : null);
  }

  async logout() {
    try { await this.client.api("/session", { method: "DELETE" }); } catch { /* gone already */ }
    storeToken(null);
    this.client.setToken(null);
    this.session = null;
    location.hash = "#/login";
  }

  showStudies() {
    this.teardownViewer();
    const main = h("main.studies-page");
    this.root.replaceChildren(this.header(), main);
    this.studies = new StudyList(main, { client: this.client,
      onOpen: (uid) => { location.hash = `#/study/${encodeURIComponent(uid)}`; },
      onTrends: (pid) => { location.hash = `#/patient/${encodeURIComponent(pid)}`; } });
    this.studies.search(0);
  }

  /** The patient's page: measurement trends across their studies. */
  async showPatient(patientId) {
    this.teardownViewer();
    const main = h("main.patient-page");
    this.root.replaceChildren(this.header(), main);
    this.trends = await showTrends(main, this.client, patientId);
  }

  teardownViewer() {
    if (this.grid) for (const vp of this.grid.viewports) vp.destroy();
    this.grid = null;
    this.mpr?.stop?.();
    this.mpr = null;
    this.measure.clear();
    this.segs.clear();
    this.analysis = null;
    this.analysisEl = null;
    this.analysisLoaded = false;
    this.reportEl = null;
    this.sync.disable();
  }

  // --- the viewer screen ------------------------------------------------------------------------
  async openStudy(studyUid) {
    this.teardownViewer();
    this.study = { uid: studyUid, series: [], priors: [] };
    const gridEl = h("div.grid");
    const side = h("aside.side");
    this.probeEl = h("span.probe");
    const left = h("div.left");
    this.toolbar = this.buildToolbar();
    this.flagsEl = h("span.study-flags");
    this.root.replaceChildren(this.header(this.flagsEl, this.toolbar), h("main.viewer-page", {}, left, gridEl, side),
      h("footer.status", {}, this.probeEl));
    this.panel = new SeriesPanel(left, { client: this.client, onPick: (s, se) => this.showSeries(this.activeVp, s, se) });
    this.grid = new Grid(gridEl, { loader: this.loader, onCreate: (vp) => this.setupViewport(vp) });
    this.grid.onDrop = (vp, s, se) => this.showSeries(vp, s, se);
    this.grid.setLayout("1x1");
    this.activeVp = this.grid.viewports[0];
    this.activate(this.activeVp);
    this.buildSide(side);
    let seriesRows;
    try {
      seriesRows = await this.client.seriesOf(studyUid);
    } catch (err) {
      toast(`Cannot open study ${studyUid}: ${err.message}`, "error");
      return;
    }
    this.study.series = seriesRows;
    this.panel.addStudy(studyUid, seriesRows, "This study");
    const images = seriesRows.filter((r) => !["SR", "KO", "PR", "SEG"].includes(str(r, TAG.Modality)));
    const first = images.sort((a, b) => Number(str(a, TAG.SeriesNumber, "0")) - Number(str(b, TAG.SeriesNumber, "0")))[0];
    const shown = first ? this.showSeries(this.activeVp, studyUid, str(first, TAG.SeriesInstanceUID)) : Promise.resolve();
    this.loadReports(studyUid, seriesRows);
    this.loadAnalysis(studyUid, seriesRows);
    this.loadHl7Reports(studyUid);
    await shown;
    this.findPriors();
  }

  async loadReports(studyUid, seriesRows) {
    for (const row of seriesRows.filter((r) => str(r, TAG.Modality) === "SR")) {
      try {
        const md = await this.client.seriesMetadata(studyUid, str(row, TAG.SeriesInstanceUID));
        this.measure.loadFromSR(studyUid, md);
      } catch (err) {
        toast(`Cannot read report series: ${err.message}`, "error");
      }
    }
  }

  /** The study's reports received over HL7 (ORU^R01) in the Report tab, shown when there are any. */
  async loadHl7Reports(studyUid) {
    let reports = [];
    try {
      reports = (await this.client.api(`/studies/${encodeURIComponent(studyUid)}`)).reports || [];
    } catch { reports = []; }   // a share link may not read the summary: no tab, nothing lost
    if (this.study?.uid !== studyUid || !this.reportEl) return;
    this.reportTab.hidden = renderReports(this.reportEl, reports) === 0;
  }

  /** The analysis results of the study (flags in the header, measurements and segmentations in
   *  the side panel), and its segmentations' frames for the overlay. */
  async loadAnalysis(studyUid, seriesRows) {
    const segRows = seriesRows.filter((r) => str(r, TAG.Modality) === "SEG");
    const segsLoaded = segRows.length ? this.segs.load(studyUid, segRows) : Promise.resolve();
    try {
      this.analysis = await this.client.api(`/studies/${encodeURIComponent(studyUid)}/analysis`);
    } catch (err) {
      this.analysis = { study_uid: studyUid, flags: [], measurements: [], objects: [], error: err.message };
    }
    if (this.study?.uid !== studyUid) return;
    const flag = flagOfAnalysis(this.analysis);
    this.flagsEl?.replaceChildren(...(flag ? [flagBadge(flag)] : []));
    if (this.analysis.flags.length || this.analysis.measurements.length || segRows.length) this.sideTab(this.analysisTab, "analysis");
    this.renderAnalysisPanel();
    await segsLoaded;
    this.analysisLoaded = true;
  }

  renderAnalysisPanel() {
    if (!this.analysisEl) return;
    renderAnalysis(this.analysisEl, { analysis: this.analysis, seriesRows: this.study?.series || [], segs: this.segs,
      onShowSeries: (uid) => this.showSeries(this.activeVp, this.study.uid, uid) });
  }

  async findPriors() {
    const vp = this.grid?.viewports[0];
    const md = vp?.image?.metadata;
    if (!md || this.session?.study) return;   // a share link sees its study only
    const pid = str(md, TAG.PatientID);
    if (!pid) return;
    try {
      const rows = await this.client.searchStudies({ PatientID: pid, includefield: ["StudyDescription", "ModalitiesInStudy"], limit: 50 });
      this.study.priors = rows.filter((r) => str(r, TAG.StudyInstanceUID) !== this.study.uid);
    } catch { this.study.priors = []; }
    this.flagsEl?.append(h("a.trends-link", { href: `#/patient/${encodeURIComponent(pid)}`, title: "This patient's measurements over time" }, "Trends"));
    const sel = this.toolbar.querySelector("select.priors");
    sel.replaceChildren(h("option", { value: "" }, this.study.priors.length ? `Compare with prior (${this.study.priors.length})` : "No priors"),
      ...this.study.priors.map((p) => h("option", { value: str(p, TAG.StudyInstanceUID) }, studyLabel(p))));
    sel.disabled = !this.study.priors.length;
  }

  async comparePrior(priorUid) {
    if (!priorUid) return;
    const prior = this.study.priors.find((p) => str(p, TAG.StudyInstanceUID) === priorUid);
    const rows = await this.client.seriesOf(priorUid);
    this.panel.addStudy(priorUid, rows, `Prior ${formatDate(str(prior, TAG.StudyDate))}`);
    this.setLayout("1x2");
    const current = this.grid.viewports[0];
    // The prior series most like the current one: same modality, then the closest description.
    const want = current.series;
    const candidates = rows.filter((r) => str(r, TAG.Modality) === want?.modality);
    const score = (r) => (str(r, TAG.SeriesDescription) === want?.description ? 0 : 1);
    const pick = (candidates.sort((a, b) => score(a) - score(b))[0]) || rows[0];
    if (pick) await this.showSeries(this.grid.viewports[1], priorUid, str(pick, TAG.SeriesInstanceUID));
    this.setSync(true);
  }

  async loadSeries(studyUid, seriesUid) {
    let s = this.seriesCache.get(seriesUid);
    if (!s) {
      const md = await this.client.seriesMetadata(studyUid, seriesUid);
      s = buildSeries(md);
      this.seriesCache.set(seriesUid, s);
    }
    return s;
  }

  /** Show a series in a viewport; the timing from this call to its first image is recorded. */
  async showSeries(vp, studyUid, seriesUid) {
    if (!vp) return;
    const t0 = performance.now();
    const timing = { series: seriesUid, firstImage: null, resident: null };
    this.timings.push(timing);
    vp.status.textContent = "Loading…";
    let series;
    try {
      series = await this.loadSeries(studyUid, seriesUid);
    } catch (err) {
      vp.status.textContent = `Cannot load series: ${err.message}`;
      return;
    }
    if (series.modality === "SEG") {
      // A segmentation is shown over the images it was made from, not as images of its own.
      this.sideTab(this.analysisTab, "analysis");
      vp.status.textContent = vp.image ? "" : "Segmentations are shown over their source images";
      return;
    }
    if (!series.images.length) {
      // A report or key-object series: show its measurements instead.
      this.loadReports(studyUid, [{ [TAG.Modality]: { Value: ["SR"] }, [TAG.SeriesInstanceUID]: { Value: [seriesUid] } }]);
      vp.status.textContent = `${series.modality || "This"} series has no images`;
      return;
    }
    this.panel.mark(vp.series?.seriesUid, false);
    await vp.setSeries(series, 0);
    timing.firstImage = performance.now() - t0;
    this.panel.mark(seriesUid, true);
    this.loader.loadAll(series).then(() => {
      timing.resident = performance.now() - t0;
      vp.emit("resident");
      this.prefetchNeighbours(studyUid, seriesUid);
    }).catch(() => { /* a frame that failed shows its error when it is on screen */ });
    if (this.sync.enabled) this.sync.enable(this.grid.viewports, this.activeVp);
    return timing;
  }

  /** Once a series is resident: the metadata and first image of the series next to it in the
   *  panel, so the reader's next click is served from memory. */
  async prefetchNeighbours(studyUid, seriesUid) {
    const rows = (this.study?.series || []).filter((r) => !["SR", "KO", "PR", "SEG"].includes(str(r, TAG.Modality)));
    const i = rows.findIndex((r) => str(r, TAG.SeriesInstanceUID) === seriesUid);
    for (const r of [rows[i + 1], rows[i - 1]].filter(Boolean)) {
      try {
        const s = await this.loadSeries(studyUid, str(r, TAG.SeriesInstanceUID));
        if (s.images.length) this.loader.request(s.images[0], 2);
      } catch { /* only a prefetch */ }
    }
  }

  setupViewport(vp) {
    attachInteraction(vp, this);
    vp.overlays.push((ctx, v) => this.segs.draw(ctx, v), (ctx, v) => this.measure.draw(ctx, v));
    vp.on((what) => {
      if (what === "image" && this.sync.enabled && vp === this.activeVp) this.sync.follow(vp, this.grid.viewports);
      if (vp === this.activeVp && ["image", "window", "series", "cine"].includes(what)) this.refreshToolbar();
      if (vp === this.activeVp && (what === "image" || what === "series")) this.refreshMetadata();
    });
    vp.el.addEventListener("pointerdown", () => this.activate(vp));
    vp.el.addEventListener("focus", () => this.activate(vp));
  }

  activate(vp) {
    if (!vp || this.activeVp === vp && vp.el.classList.contains("active")) return;
    this.activeVp = vp;
    for (const other of this.grid?.viewports || []) other.el.classList.toggle("active", other === vp);
    this.refreshToolbar();
    this.refreshMetadata();
  }

  toggleMaximize(vp) { this.grid.toggleMaximize(vp); }

  setLayout(name) {
    this.grid.setLayout(name);
    if (!this.grid.viewports.includes(this.activeVp)) this.activate(this.grid.viewports[0]);
    this.toolbar.querySelector("select.layout").value = name;
  }

  setTool(tool) {
    this.tool = tool;
    for (const b of this.toolbar.querySelectorAll("button[data-tool]")) b.classList.toggle("on", b.dataset.tool === tool);
  }

  setSync(on) {
    if (on) this.sync.enable(this.grid.viewports, this.activeVp); else this.sync.disable();
    const b = this.toolbar.querySelector("button.sync");
    if (b) b.classList.toggle("on", on);
  }

  redrawAll() { for (const vp of this.grid?.viewports || []) vp.invalidate(); }

  probe(vp, p) {
    const v = vp.valueAt(p[0], p[1]);
    if (!this.probeEl) return;
    this.probeEl.textContent = v ? `x ${Math.floor(p[0])} y ${Math.floor(p[1])}  value ${+v.value.toFixed(3)} ${vp.image.units || ""}` : "";
  }

  // --- toolbar and side panel -------------------------------------------------------------------
  buildToolbar() {
    const vp = () => this.activeVp;
    const btn = (label, title, fn, cls = "") => h(`button${cls}`, { type: "button", title, onclick: fn }, label);
    const presets = h("select.presets", { title: "Window presets (1–8), A auto, F file",
      onchange: (e) => { this.applyWindowChoice(e.target.value); e.target.value = ""; vp()?.el.focus(); } });
    const cineFps = h("input.cine-fps", { type: "number", min: 1, max: 120, value: 15, title: "Cine frames per second",
      onchange: (e) => vp()?.setCineFps(Number(e.target.value)) });
    const bar = h("nav.toolbar", {},
      ...TOOLS.map(([tool, label, key]) => h("button", { type: "button", dataset: { tool }, title: `${label} (${key.toUpperCase()})`,
        class: tool === this.tool ? "on" : undefined, onclick: () => this.setTool(tool) }, label)),
      presets,
      btn("Invert", "Invert (I)", () => vp()?.toggleInvert()),
      btn("⟲", "Rotate left ([)", () => vp()?.rotate(-90)),
      btn("⟳", "Rotate right (])", () => vp()?.rotate(90)),
      btn("⇋", "Flip horizontal (H)", () => vp()?.flip(true)),
      btn("⇵", "Flip vertical (V)", () => vp()?.flip(false)),
      btn("Fit", "Fit (F)", () => vp()?.fit()),
      btn("1:1", "One image pixel per screen pixel (0)", () => vp()?.oneToOne()),
      btn("Reset", "Reset (R)", () => vp()?.reset()),
      btn("▶", "Cine (C)", () => this.toggleCine(), ".cine"),
      cineFps,
      h("select.layout", { title: "Layout", onchange: (e) => this.setLayout(e.target.value) },
        ...["1x1", "1x2", "2x2"].map((l) => h("option", { value: l }, l.replace("x", "×")))),
      btn("Sync", "Synchronised scrolling by position (Y)", () => this.setSync(!this.sync.enabled), ".sync"),
      h("select.priors", { disabled: true, onchange: (e) => this.comparePrior(e.target.value) }, h("option", { value: "" }, "Priors…")),
      btn("MPR", "Reformat: axial, coronal, sagittal (M)", () => this.toggleMpr(), ".mpr"),
      btn("Fusion", "Fuse another series of the same frame of reference", () => this.openFusion(), ".fusion"),
      this.can("share") ? btn("Share", "Create a share link to this study", () => openShareDialog(this.client, this.study.uid)) : null,
      this.can("share") ? btn("Research", "Export this study de-identified for a research project", () => openResearchExport(this.client, this.study.uid)) : null,
    );
    return bar;
  }

  refreshToolbar() {
    const vp = this.activeVp;
    if (!this.toolbar || !vp) return;
    const presets = this.toolbar.querySelector("select.presets");
    const im = vp.image;
    const opts = [h("option", { value: "" }, vp.pixels?.samples === 3 ? "Colour" : `W ${Math.round(vp.state.width)} / L ${Math.round(vp.state.center)}`)];
    if (im && vp.pixels?.samples !== 3) {
      (im.windows || []).forEach((w, i) => opts.push(h("option", { value: `file:${i}` }, `File: ${w.explanation} (${w.width}/${w.center})`)));
      if (im.voiLut) opts.push(h("option", { value: "voilut" }, "File VOI LUT"));
      if (im.modality === "CT") for (const p of CT_PRESETS) opts.push(h("option", { value: `ct:${p.key}` }, `${p.key} ${p.name} (${p.width}/${p.center})`));
      opts.push(h("option", { value: "auto" }, "Auto (histogram)"), h("option", { value: "full" }, "Full range"));
    }
    presets.replaceChildren(...opts);
    const cine = this.toolbar.querySelector("button.cine");
    cine.textContent = vp.cine ? "❚❚" : "▶";
    if (vp.cine) this.toolbar.querySelector("input.cine-fps").value = String(vp.cine.fps);
  }

  applyWindowChoice(v) {
    const vp = this.activeVp;
    if (!vp || !v) return;
    if (v.startsWith("file:")) vp.fileWindow(Number(v.slice(5)));
    else if (v === "voilut") vp.setVoiLut(true);
    else if (v.startsWith("ct:")) { const p = CT_PRESETS.find((x) => x.key === v.slice(3)); vp.setWindow(p.center, p.width, p.name); }
    else if (v === "auto") vp.autoWindow();
    else if (v === "full") vp.fullWindow();
  }

  toggleCine() {
    const vp = this.activeVp;
    if (!vp) return;
    if (vp.cine) vp.stopCine(); else vp.startCine(Number(this.toolbar.querySelector("input.cine-fps").value) || vp.defaultFps());
  }

  buildSide(side) {
    this.measureList = h("div.measure-list");
    const save = h("button", { type: "button", onclick: async () => {
      try {
        const r = await this.measure.save(this.study.uid);
        toast(r ? "Measurements saved to the archive as a structured report" : "Nothing new to save");
      } catch (err) { toast(`Cannot save: ${err.message}`, "error"); }
    } }, "Save as report (SR)");
    save.hidden = !this.can("write");
    this.metaEl = h("div.metadata");
    this.analysisEl = h("div.analysis");
    this.analysisTab = h("button", { type: "button", dataset: { tab: "analysis" }, onclick: (e) => this.sideTab(e.target, "analysis") }, "Analysis");
    this.reportEl = h("div.reports");
    this.reportTab = h("button", { type: "button", hidden: true, dataset: { tab: "report" }, onclick: (e) => this.sideTab(e.target, "report") }, "Report");
    const tabs = h("div.tabs", {},
      h("button.on", { type: "button", dataset: { tab: "measure" }, onclick: (e) => this.sideTab(e.target, "measure") }, "Measurements"),
      this.analysisTab,
      this.reportTab,
      h("button", { type: "button", dataset: { tab: "meta" }, onclick: (e) => this.sideTab(e.target, "meta") }, "Metadata"));
    this.sidePanes = { measure: h("section.pane.measure", {}, this.measureList, save),
      analysis: h("section.pane.analysis-pane", { hidden: true }, this.analysisEl),
      report: h("section.pane.report-pane", { hidden: true }, this.reportEl),
      meta: h("section.pane.meta", { hidden: true }, this.metaEl) };
    side.append(tabs, this.sidePanes.measure, this.sidePanes.analysis, this.sidePanes.report, this.sidePanes.meta);
    this.measure.on(() => this.renderMeasurements());
    this.renderMeasurements();
  }

  sideTab(button, which) {
    for (const b of button.parentElement.children) b.classList.toggle("on", b === button);
    for (const [k, el] of Object.entries(this.sidePanes)) el.hidden = k !== which;
    if (which === "meta") this.refreshMetadata(true);
  }

  renderMeasurements() {
    if (!this.measureList) return;
    const rows = this.measure.items.filter((m) => !this.study || m.image.study === this.study.uid || !m.image.study);
    this.measureList.replaceChildren(...(rows.length ? rows.map((m) => h("div.measurement", { dataset: { id: m.id, kind: m.kind } },
      h("b", {}, m.label), m.saved ? h("small", {}, " saved") : null,
      h("ul", {}, ...m.values.map((v) => h("li", {}, formatValue(v)))),
      m.calibration === "ImagerPixelSpacing" ? h("small", {}, "calibrated by ImagerPixelSpacing (detector plane)") : null,
      h("button", { type: "button", title: "Go to image", onclick: () => this.goToMeasurement(m) }, "Show"),
      m.saved ? null : h("button", { type: "button", onclick: () => this.measure.remove(m.id) }, "Delete")))
      : [h("p.hint", {}, "No measurements. Tools: Length (L), Angle (G), Ellipse (E), Rectangle (O).")]));
  }

  async goToMeasurement(m) {
    const vp = this.activeVp;
    const series = await this.loadSeries(this.study.uid, m.image.series);
    if (vp.series !== series) await vp.setSeries(series, 0);
    const i = series.images.findIndex((im) => im.sopInstanceUid === m.image.instance && im.frame === (m.image.frame || 1));
    if (i >= 0) await vp.setIndex(i);
  }

  refreshMetadata(force = false) {
    if (!this.metaEl || (this.sidePanes?.meta.hidden && !force)) return;
    const md = this.activeVp?.image?.metadata;
    if (md && this.metaEl.dataset.sop !== md[TAG.SOPInstanceUID]?.Value?.[0]) {
      this.metaEl.dataset.sop = md[TAG.SOPInstanceUID]?.Value?.[0] || "";
      clear(this.metaEl);
      renderMetadata(this.metaEl, md);
    }
  }

  async toggleMpr() {
    const { toggleMpr } = await import("./mpr/mprview.js");
    await toggleMpr(this);
  }

  async openFusion() {
    const { openFusionDialog } = await import("./mpr/fusion.js");
    await openFusionDialog(this);
  }

  // --- keyboard -------------------------------------------------------------------------------
  key(e) {
    if (!this.grid || e.target.closest?.("input, select, textarea, dialog")) return;
    const vp = this.activeVp;
    if (!vp) return;
    const k = e.key;
    const preset = CT_PRESETS.find((p) => p.key === k);
    const tool = TOOLS.find(([, , key]) => key === k.toLowerCase());
    const actions = {
      ArrowDown: () => vp.scrollBy(1), ArrowUp: () => vp.scrollBy(-1),
      ArrowRight: () => vp.scrollBy(1), ArrowLeft: () => vp.scrollBy(-1),
      PageDown: () => vp.scrollBy(10), PageUp: () => vp.scrollBy(-10),
      Home: () => vp.setIndex(0), End: () => vp.setIndex(vp.series ? vp.series.images.length - 1 : 0),
      i: () => vp.toggleInvert(), r: () => vp.reset(), f: () => vp.fit(), 0: () => vp.oneToOne(),
      a: () => vp.autoWindow(), h: () => vp.flip(true), v: () => vp.flip(false),
      "[": () => vp.rotate(-90), "]": () => vp.rotate(90), c: () => this.toggleCine(),
      y: () => this.setSync(!this.sync.enabled), m: () => this.toggleMpr(),
      "+": () => vp.setZoom(vp.state.scale * 1.25), "-": () => vp.setZoom(vp.state.scale / 1.25),
      Escape: () => { this.measure.draft = null; this.redrawAll(); },
    };
    let fn = actions[k] || actions[k.toLowerCase()];
    if (!fn && preset && vp.image?.modality === "CT") fn = () => vp.setWindow(preset.center, preset.width, preset.name);
    if (!fn && tool && !e.ctrlKey && !e.metaKey) fn = () => this.setTool(tool[0]);
    if (!fn) return;
    e.preventDefault();
    fn();
  }
}

export { MEASURE_TOOLS };

const app = new App(document.getElementById("app"));
window.dicomvault = app;
app.start();
