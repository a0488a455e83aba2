// The viewport grid: 1×1, 1×2, 2×2 (and 1×3 for MPR), series dropped on a viewport, one active.
import { Viewport } from "../viewport/viewport.js";

export const LAYOUTS = { "1x1": [1, 1], "1x2": [1, 2], "2x2": [2, 2], "1x3": [1, 3] };

export class Grid {
  constructor(container, { loader, onCreate }) {
    this.container = container;
    this.loader = loader;
    this.onCreate = onCreate;
    this.viewports = [];
    this.layout = "1x1";
    this.maximized = null;
    this.nextId = 0;
  }

  setLayout(name) {
    const [rows, cols] = LAYOUTS[name] || LAYOUTS["1x1"];
    this.layout = name;
    this.maximized = null;
    const want = rows * cols;
    while (this.viewports.length > want) this.viewports.pop().destroy();
    while (this.viewports.length < want) {
      const vp = new Viewport(this.container, { loader: this.loader, id: this.nextId++ });
      this.acceptDrops(vp);
      this.viewports.push(vp);
      this.onCreate(vp);
    }
    this.container.style.gridTemplateRows = `repeat(${rows}, minmax(0, 1fr))`;
    this.container.style.gridTemplateColumns = `repeat(${cols}, minmax(0, 1fr))`;
    for (const vp of this.viewports) vp.el.hidden = false;
    this.container.dataset.layout = name;
  }

  toggleMaximize(vp) {
    if (this.maximized === vp) {
      this.setLayout(this.layout);
      return;
    }
    this.maximized = vp;
    for (const other of this.viewports) other.el.hidden = other !== vp;
    this.container.style.gridTemplateRows = "minmax(0, 1fr)";
    this.container.style.gridTemplateColumns = "minmax(0, 1fr)";
  }

  acceptDrops(vp) {
    vp.el.addEventListener("dragover", (e) => {
      if (e.dataTransfer.types.includes("application/x-dicomvault-series")) {
        e.preventDefault();
        vp.el.classList.add("drop");
      }
    });
    vp.el.addEventListener("dragleave", () => vp.el.classList.remove("drop"));
    vp.el.addEventListener("drop", (e) => {
      vp.el.classList.remove("drop");
      const data = e.dataTransfer.getData("application/x-dicomvault-series");
      if (!data) return;
      e.preventDefault();
      const { study, series } = JSON.parse(data);
      this.onDrop?.(vp, study, series);
    });
  }
}
