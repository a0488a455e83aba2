// Mouse, wheel and touch on a viewport. Left button: the active tool; right: zoom; middle: pan;
// wheel: slices (Ctrl+wheel: zoom). Measurement tools are handled by the measurement controller.

export const NAV_TOOLS = ["wl", "pan", "zoom", "scroll"];

export function attachInteraction(vp, app) {
  const el = vp.overlay;
  let drag = null;
  el.addEventListener("contextmenu", (e) => e.preventDefault());
  el.addEventListener("pointerdown", (e) => {
    app.activate(vp);
    if (!vp.image) return;
    const tool = e.button === 2 ? "zoom" : e.button === 1 ? "pan" : app.tool;
    const imagePoint = vp.clientToImage(e.clientX, e.clientY);
    if (!NAV_TOOLS.includes(tool)) {
      app.measure.pointer("down", vp, imagePoint, e, tool);
      el.setPointerCapture(e.pointerId);
      drag = { tool, measure: true };
      e.preventDefault();
      return;
    }
    el.setPointerCapture(e.pointerId);
    drag = { tool, x: e.clientX, y: e.clientY, startIndex: vp.index, acc: 0,
      center: vp.state.center, width: vp.state.width, scale: vp.state.scale,
      anchor: [(e.clientX - el.getBoundingClientRect().left) * vp.dpr, (e.clientY - el.getBoundingClientRect().top) * vp.dpr] };
    e.preventDefault();
  });
  el.addEventListener("pointermove", (e) => {
    if (vp.image && !drag) app.probe(vp, vp.clientToImage(e.clientX, e.clientY));
    if (!drag) return;
    if (drag.measure) {
      app.measure.pointer("move", vp, vp.clientToImage(e.clientX, e.clientY), e, drag.tool);
      return;
    }
    const dx = e.clientX - drag.x;
    const dy = e.clientY - drag.y;
    switch (drag.tool) {
      case "wl": {
        // Sensitivity follows the window: fine control of a 40 HU stroke window, fast sweeps
        // of a 4000-wide bone window.
        const k = Math.max(0.25, drag.width / 256);
        vp.setWindow(drag.center + dy * k, Math.max(1, drag.width + dx * k));
        break;
      }
      case "zoom":
        vp.setZoom(drag.scale * Math.pow(2, -dy / 120), drag.anchor);
        break;
      case "pan":
        vp.panBy((e.clientX - drag.x) * vp.dpr, (e.clientY - drag.y) * vp.dpr);
        drag.x = e.clientX;
        drag.y = e.clientY;
        break;
      case "scroll": {
        const step = Math.max(2, 200 / Math.max(1, vp.series.images.length));
        const target = drag.startIndex + Math.round(dy / step);
        if (target !== vp.index) vp.setIndex(target);
        break;
      }
    }
  });
  const end = (e) => {
    if (drag?.measure) app.measure.pointer("up", vp, vp.clientToImage(e.clientX, e.clientY), e, drag.tool);
    drag = null;
  };
  el.addEventListener("pointerup", end);
  el.addEventListener("pointercancel", end);
  el.addEventListener("wheel", (e) => {
    e.preventDefault();
    app.activate(vp);
    if (e.ctrlKey) {
      const r = el.getBoundingClientRect();
      vp.setZoom(vp.state.scale * Math.pow(2, -e.deltaY / 300), [(e.clientX - r.left) * vp.dpr, (e.clientY - r.top) * vp.dpr]);
      return;
    }
    // One slice per notch whatever the device's delta scale.
    vp.scrollBy(Math.sign(e.deltaY));
  }, { passive: false });
  el.addEventListener("dblclick", () => app.toggleMaximize(vp));
}
