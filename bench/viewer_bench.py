"""`make bench-viewer`: the browser viewer's speed against the issue's targets, and the Orthanc Web
Viewer plugin (Debian orthanc-webviewer 2.8 on Orthanc 1.10) side by side, in one run, on the same
machine and the same 300-slice 512x512 16-bit CT.

    .venv/bin/python bench/viewer_bench.py              # ~4 minutes
    .venv/bin/python bench/viewer_bench.py --quick      # 20 slices, fewer repeats: a smoke run (~1 min)

The browser is Debian's chromium driven by playwright (no browser download), headless, one
1280x900 window, device pixel ratio 1. Its WebGL2 runs on SwiftShader, a software GPU on the same 2
CPUs as everything else (the viewer then picks its Canvas 2D renderer; the WebGL2 one is measured
too, forced by `?renderer=webgl`): frame rates are a lower bound of what a real GPU gives.

Figures (method of each in the report's notes, written into bench/RESULTS.md):
1. click -> first image: the study page `#/study/UID` loaded and settled (modules, series list,
   thumbnails, its first series shown), the clock starts at the click on the CT's `.series` item
   (the click event's timeStamp) and stops at the viewport's first "draw" of that series (metadata
   fetch + first frame fetch + decode + draw); fresh browser context per repeat; the server's
   metadata cache cold (server restarted, cache removed) and warm. p50/p95.
2. click -> all slices resident: the same clicks, until the app's "resident" event.
3. scroll: the series resident, one setIndex per requestAnimationFrame through every slice; fps
   from the rAF timestamps of the frames that drew a new slice; also real mouse-wheel input; with
   the renderer the viewer picks, then with the other one forced.
4. window/level: a rAF loop calling setWindow with new values for 2 s; also a real mouse drag.
5. navigation -> first image and -> all slices, dicomvault and the Orthanc Web Viewer on the same
   series, measured the same way (an rAF poll of the viewer's image canvas until it is not black);
   Orthanc's viewer loads a slice only when it is displayed (synchronous XHR, no prefetch), so its
   "all slices" is driven by wheel notches sent back to back until 300 `/web-viewer/instances/`
   responses have arrived.
6. ceilings: the raw fetch of every frame by a plain JS loop in the page (6 concurrent fetches,
   no decode or draw), the same with the viewer's split + decode, curl from 6 processes (the
   server alone), and each renderer's draw of an uploaded image (no upload), of a new image, and
   the whole viewport draw, timed to the end of the GPU/raster work, and paced by animation frames.
"""

from __future__ import annotations

import argparse
import bisect
import contextlib
import datetime as dt
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dicomweb_compare import publish
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from dicomvault.bench.dimse import dicomvault_command
from dicomvault.bench.orthanc import ORTHANC_BIN, Orthanc, OrthancError, free_port, start_orthanc
from dicomvault.bench.procs import terminate
from dicomvault.bench.synth import UID_ROOT, SeriesSpec, ct_series

ROOT = Path(__file__).resolve().parent
SECTION = "## Viewer (make bench-viewer)"
CHROMIUM = "/usr/bin/chromium"
WEBVIEWER_PLUGIN = "/usr/share/orthanc/plugins/libOrthancWebViewer.so"
DV, ORTHANC = "dicomvault", "Orthanc Web Viewer"
FRAME_ACCEPT = 'multipart/related; type="application/octet-stream"; transfer-syntax=1.2.840.10008.1.2.1'
WINDOW = {"width": 1280, "height": 900}
DV_CANVAS = "canvas.vp-image"
ORTHANC_CANVAS = "#dicomImage canvas"


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# -- arithmetic (unit-tested in tests/bench/test_viewer_bench.py) -------------------------------------

def p50_p95(samples_ms: Sequence[float]) -> tuple[float | None, float | None]:
    """(median, 95th percentile by nearest rank) of milliseconds; (None, None) without samples."""
    if not samples_ms:
        return None, None
    ms = sorted(samples_ms)
    rank = max(0, min(len(ms) - 1, -(-95 * len(ms) // 100) - 1))
    return statistics.median(ms), ms[rank]


@dataclass(frozen=True)
class Fps:
    """Frames that put something new on screen, per second of animation frames."""

    fps: float
    frames: int  # frames that drew something new
    missed: int  # frames inside the span that did not
    span_ms: float


def fps_from_frames(frame_ts: Sequence[float], draws: Iterable[tuple[float, Any]]) -> Fps | None:
    """`frame_ts`: the requestAnimationFrame timestamps of consecutive frames (ms); `draws`:
    (performance.now() of a draw, what it showed). Each draw is credited to the frame whose
    timestamp is the last one at or before it; a frame counts once when it drew something other
    than the previous draw. fps = (counted frames - 1) / (time from the first counted frame's
    timestamp to the last one's): frames per second at which new images reached the screen."""
    ts = sorted(frame_ts)
    counted: list[int] = []
    last: Any = object()
    for t, key in sorted(draws, key=lambda d: d[0]):
        k = bisect.bisect_right(ts, t) - 1
        if k < 0 or key == last:
            continue
        last = key
        if not counted or counted[-1] != k:
            counted.append(k)
    if len(counted) < 2:
        return None
    span = ts[counted[-1]] - ts[counted[0]]
    if span <= 0:
        return None
    return Fps((len(counted) - 1) * 1000.0 / span, len(counted),
               counted[-1] - counted[0] + 1 - len(counted), span)


def events_per_s(times_ms: Sequence[float]) -> float | None:
    """Rate of events stamped `times_ms`: (n - 1) / (last - first)."""
    if len(times_ms) < 2:
        return None
    span = max(times_ms) - min(times_ms)
    return (len(times_ms) - 1) * 1000.0 / span if span > 0 else None


def ratio(orthanc: float | None, dv: float | None) -> float | None:
    """Orthanc's time over ours (> 1: dicomvault is faster)."""
    if not orthanc or not dv:
        return None
    return orthanc / dv


def fmt(x: float | None, digits: int = 0) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


def fmt_pair(p: tuple[float | None, float | None], digits: int = 0) -> str:
    return "-" if p[0] is None else f"{fmt(p[0], digits)} / {fmt(p[1], digits)}"


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    lines = [list(header), ["---"] * len(header), *(list(r) for r in rows)]
    return "\n".join("| " + " | ".join(r) + " |" for r in lines)


def check_target(value: float | None, op: str, limit: float) -> str:
    """"ok" / "MISSED" against a target (op "<=" or ">="), "-" without a value."""
    if value is None:
        return "-"
    good = value <= limit if op == "<=" else value >= limit
    return f"{op} {limit:g}: {'ok' if good else 'MISSED'}"


# -- inputs -------------------------------------------------------------------------------------------

@dataclass
class Inputs:
    view_dir: Path  # study V: the CT alone, stored in both archives
    view: tuple[str, str]  # (study, series) UIDs
    click_dir: Path  # study C: a CT twin (series 1) ...
    localizer_dir: Path  # ... and a one-slice localizer (series 0)
    click: tuple[str, str, str]  # (study, CT series, localizer series)
    slices: int


def _write_series(folder: Path, files: Iterable[bytes]) -> None:
    marker = folder.parent / f"{folder.name}.done"
    if marker.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i, data in enumerate(files):
        (folder / f"{i:05d}.dcm").write_bytes(data)
    marker.touch()


def _uids(folder: Path) -> tuple[str, str]:
    from pydicom import dcmread

    ds = dcmread(sorted(folder.glob("*.dcm"))[0], stop_before_pixels=True)
    return str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)


def localizer(study_uid: str, patient_id: str) -> bytes:
    """A one-slice 512x512 localizer of `study_uid`: series number 0, so the study page shows it
    first and the CT has to be clicked."""
    import io

    from pydicom import dcmread
    from pydicom.uid import generate_uid

    ds = dcmread(io.BytesIO(next(ct_series(SeriesSpec(slices=1, seed=77, patient_id=patient_id)))))
    sop = generate_uid(UID_ROOT, [patient_id, "localizer", "0"])
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid(UID_ROOT, [patient_id, "localizer"])
    ds.SOPInstanceUID = sop
    ds.file_meta.MediaStorageSOPInstanceUID = sop
    ds.SeriesNumber = 0
    ds.SeriesDescription = "LOCALIZER"
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def make_inputs(scratch: Path, slices: int) -> Inputs:
    view_dir = scratch / f"view-{slices}"
    _write_series(view_dir, ct_series(SeriesSpec(slices=slices, seed=9301, patient_id="BENCHVIEW")))
    click_ct = scratch / f"click-{slices}"
    _write_series(click_ct, ct_series(SeriesSpec(slices=slices, seed=9302, patient_id="BENCHVIEWC")))
    study_c, series_c = _uids(click_ct)
    loc = scratch / f"click-{slices}-localizer"
    _write_series(loc, [localizer(study_c, "BENCHVIEWC")])
    _, series_loc = _uids(loc)
    return Inputs(view_dir, _uids(view_dir), click_ct, loc, (study_c, series_c, series_loc), slices)


# -- servers ------------------------------------------------------------------------------------------

class DvServer:
    """`dicomvault serve` on a fixed HTTP port, restartable with its metadata cache removed."""

    def __init__(self, data: Path, log_path: Path) -> None:
        self.data = data
        self.log_path = log_path
        self.http_port = free_port()
        self.dimse_port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout: float = 60) -> None:
        before = self._starts()
        cmd = [*dicomvault_command(), "serve", "--data", str(self.data), "--accept-unknown-callers",
               "--dimse-port", str(self.dimse_port),
               "--http-port", str(self.http_port)]
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._starts() > before:
                return
            if self.proc.poll() is not None:
                break
            time.sleep(0.05)
        self.stop()
        tail = self.log_path.read_text(errors="replace")[-1500:]
        raise RuntimeError(f"dicomvault serve did not start: {tail}")

    def _starts(self) -> int:
        text = self.log_path.read_text(errors="replace") if self.log_path.exists() else ""
        return len(re.findall(r"dicomvault serving HTTP", text))

    def stop(self) -> None:
        if self.proc is not None:
            terminate(self.proc, 60)
            self.proc = None

    def restart(self, cold: bool) -> None:
        """Stopped and started again; `cold`: its metadata cache removed in between (the process's
        own memory is new either way; the OS page cache keeps the stored files)."""
        self.stop()
        if cold:
            shutil.rmtree(self.data / "cache" / "metadata", ignore_errors=True)
        self.start()

    def get(self, path: str, accept: str = "application/dicom+json") -> bytes:
        req = urllib.request.Request(self.url + path, headers={"Accept": accept})
        with urllib.request.urlopen(req, timeout=120) as rsp:
            return bytes(rsp.read())


def ingest(data: Path, folders: Sequence[Path], log_dir: Path) -> None:
    r = subprocess.run([*dicomvault_command(), "ingest", "--data", str(data), *map(str, folders)],
                       capture_output=True, text=True, check=False)
    (log_dir / "dv-ingest.log").write_text(r.stdout + r.stderr)
    if r.returncode != 0:
        raise RuntimeError(f"dicomvault ingest exited {r.returncode}: {(r.stdout + r.stderr)[-1500:]}")


class OrthancViewer:
    """Orthanc 1.10 with the Web Viewer plugin (its cache under the run's directory, large enough
    for the whole series), restartable with the plugin's cache removed."""

    def __init__(self, root: Path) -> None:
        if not Path(WEBVIEWER_PLUGIN).exists():
            raise OrthancError(f"{WEBVIEWER_PLUGIN} not found (apt-get install orthanc-webviewer)")
        self.cache = root / "webviewer-cache"
        self.orth = start_orthanc(root, extra={
            "Plugins": [WEBVIEWER_PLUGIN],
            "WebViewer": {"CachePath": str(self.cache), "CacheSize": 2000},
        })
        self._wait_plugin()

    @property
    def url(self) -> str:
        return self.orth.url

    def _wait_plugin(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.orth.request("GET", "/web-viewer/app/viewer.html")
                return
            except OrthancError:
                if time.monotonic() > deadline or self.orth.proc.poll() is not None:
                    raise
                time.sleep(0.1)

    def store(self, folder: Path) -> None:
        for f in sorted(folder.glob("*.dcm")):
            self.orth.upload(f.read_bytes())

    def series_id(self, series_uid: str) -> str:
        hits = json.loads(self.orth.request("POST", "/tools/lookup", series_uid.encode()))
        for h in hits:
            if h.get("Type") == "Series":
                return str(h["ID"])
        raise OrthancError(f"Orthanc does not know series {series_uid}")

    def restart(self, cold: bool, timeout: float = 30) -> None:
        o = self.orth
        o.stop(60)
        if cold:
            shutil.rmtree(self.cache, ignore_errors=True)
        with o.log_path.open("ab") as out:
            proc = subprocess.Popen([ORTHANC_BIN, "--no-jobs", str(o.root / "orthanc.json")], stdout=out,
                                    stderr=subprocess.STDOUT, cwd=o.root,
                                    env={**os.environ, "MALLOC_ARENA_MAX": "2", "TCP_NODELAY": "1"})
        self.orth = Orthanc(o.root, proc, o.dicom_port, o.http_port, o.log_path, o.config)
        deadline = time.monotonic() + timeout
        while True:
            try:
                self.orth.get_json("/system")
                break
            except OrthancError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise
                time.sleep(0.1)
        self._wait_plugin()

    def stop(self) -> None:
        self.orth.stop(60)


def curl_ceiling(base: str, study: str, series: str, sops: Sequence[str], procs: int = 6) -> float:
    """Wall ms for `procs` curl processes (keep-alive each) to fetch every frame, bodies dropped:
    what the server alone delivers to a client that costs nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        cfgs = []
        for k in range(procs):
            p = Path(tmp) / f"c{k}.cfg"
            p.write_text("".join(
                f'url = "{base}/dicom-web/studies/{study}/series/{series}/instances/{s}/frames/1"\n'
                'output = "/dev/null"\n' for s in sops[k::procs]))
            cfgs.append(p)
        t0 = time.perf_counter()
        ps = [subprocess.Popen(["curl", "-s", "-f", "-H", f"Accept: {FRAME_ACCEPT}", "-K", str(c)])
              for c in cfgs]
        codes = [p.wait() for p in ps]
        ms = (time.perf_counter() - t0) * 1e3
    if any(codes):
        raise RuntimeError(f"curl exited {codes}")
    return ms


# -- in-page code -------------------------------------------------------------------------------------

def js(template: str, **subs: str) -> str:
    """`template` with each __NAME__ replaced by subs[name] (JS braces need no escaping)."""
    for k, v in subs.items():
        template = template.replace(f"__{k.upper()}__", v)
    return template


# Every page: a resource timing buffer large enough for every frame request.
INIT_BUFFER = "performance.setResourceTimingBufferSize(10000);"

# Navigation pages: from the first animation frame on, the image canvas is sampled (16x16) once a
# frame until it is not black; dicomvault's page also until its first series is resident.
INIT_POLL = """
(() => {
  const SEL = __SELECTOR__;
  window.__nav = { first: null, resident: null };
  const probe = document.createElement('canvas');
  probe.width = probe.height = 16;
  let ctx = null;
  const lit = (c) => {
    ctx = ctx || probe.getContext('2d', { willReadFrequently: true });
    ctx.clearRect(0, 0, 16, 16);
    ctx.drawImage(c, 0, 0, 16, 16);
    const d = ctx.getImageData(0, 0, 16, 16).data;
    for (let i = 0; i < d.length; i += 4) if (d[i] > 40) return true;
    return false;
  };
  const poll = () => {
    const n = window.__nav;
    if (n.first === null) {
      const c = document.querySelector(SEL);
      if (c && c.width > 1 && lit(c)) n.first = performance.now();
    }
    const app = window.dicomvault;
    if (n.resident === null && app?.timings?.[0]?.resident != null) n.resident = performance.now();
    if (n.first === null || (app && n.resident === null)) requestAnimationFrame(poll);
  };
  requestAnimationFrame(poll);
})();
"""

# The click's full path: the app prefetches the metadata and first frame of the series next to the one
# it shows (main.js prefetchNeighbours), which would serve the click from memory; for the full-path
# figure that prefetch is replaced by a no-op on the App instance as main.js publishes it.
INIT_NO_NEIGHBOUR_PREFETCH = """
(() => {
  let app;
  window.__prefetchDisabled = false;
  Object.defineProperty(window, 'dicomvault', { configurable: true, get: () => app, set: (v) => {
    app = v;
    if (v && typeof v.prefetchNeighbours === 'function') {
      v.prefetchNeighbours = async () => {};
      window.__prefetchDisabled = true;
    }
  } });
})();
"""

JS_PREFETCHED = """(series) => {
  const res = performance.getEntriesByType('resource');
  return res.some((e) => e.name.includes(`/series/${series}/metadata`)) &&
    res.some((e) => e.name.includes(`/series/${series}/instances/`));
}"""

JS_SETTLED = """([ct, localizer]) => {
  const app = window.dicomvault;
  const t = app?.timings?.find((x) => x.series === localizer);
  const thumbs = [...document.querySelectorAll('.series img')];
  return !!t && t.resident != null && !!document.querySelector(`.series[data-series="${ct}"]`) &&
    thumbs.length > 0 &&
    thumbs.every((i) => i.classList.contains('none') || (i.complete && i.naturalWidth > 0));
}"""

JS_CLICK_HOOK = """(series) => {
  const vp = window.dicomvault.grid.viewports[0];
  const b = window.__bench = { click: null, draw: null, painted: null, resident: null };
  document.addEventListener('click', (e) => {
    if (b.click === null && e.target.closest?.(`.series[data-series="${series}"]`)) b.click = e.timeStamp;
  }, true);
  vp.on((what, v) => {
    if (v.series?.seriesUid !== series) return;
    if (what === 'draw' && b.draw === null && v.pixels && v.image?.seriesUid === series) {
      b.draw = performance.now();
      requestAnimationFrame(() => { b.painted = performance.now(); });
    }
    if (what === 'resident' && b.resident === null) b.resident = performance.now();
  });
}"""

JS_CLICK_RESULT = """(series) => {
  const b = window.__bench;
  const res = performance.getEntriesByType('resource').filter((e) => e.startTime >= b.click);
  const md = res.find((e) => e.name.includes(`/series/${series}/metadata`));
  const frames = res
    .filter((e) => e.name.includes(`/series/${series}/instances/`) && e.name.includes('/frames/'))
    .sort((x, y) => x.startTime - y.startTime);
  const span = (e) => e && [e.startTime - b.click, e.responseStart - b.click, e.responseEnd - b.click];
  return { draw: b.draw - b.click, painted: b.painted - b.click, resident: b.resident - b.click,
    app: window.dicomvault.timings.find((x) => x.series === series),
    metadata: span(md), frame: span(frames[0]), frames: frames.length,
    lastFrameEnd: frames.length ? Math.max(...frames.map((e) => e.responseEnd)) - b.click : null,
    prefetchDisabled: window.__prefetchDisabled };
}"""

JS_RESOURCES = """(part) => performance.getEntriesByType('resource').filter((e) => e.name.includes(part))
  .map((e) => [e.startTime, e.responseEnd, e.transferSize || e.encodedBodySize || 0])"""

JS_LAST_RESPONSE = """(part) => {
  const e = performance.getEntriesByType('resource').filter((x) => x.name.includes(part));
  return { n: e.length, end: e.length ? Math.max(...e.map((x) => x.responseEnd)) : null };
}"""

RAF = "const raf = () => new Promise((r) => requestAnimationFrame(r));"

JS_SCROLL_RAF = js("""async () => {
  __RAF__
  const vp = window.dicomvault.grid.viewports[0];
  const n = vp.series.images.length;
  await vp.setIndex(0); await raf(); await raf();
  const draws = [], frames = [];
  const off = vp.on((what, v) => { if (what === 'draw') draws.push([performance.now(), v.index]); });
  let i = 1;
  await new Promise((done) => {
    const tick = (ts) => {
      frames.push(ts);
      if (i >= n) { requestAnimationFrame((t) => { frames.push(t); done(); }); return; }
      vp.setIndex(i++);
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  off();
  return { frames, draws, last: vp.index, n, kind: vp.renderer.kind };
}""", raf=RAF)

JS_WL_RAF = js("""async (ms) => {
  __RAF__
  const vp = window.dicomvault.grid.viewports[0];
  const c0 = vp.state.center, w0 = vp.state.width;
  await raf();
  const draws = [], frames = [];
  const off = vp.on((what, v) => {
    if (what === 'draw') draws.push([performance.now(), `${v.state.center}/${v.state.width}`]);
  });
  let k = 0;
  const t0 = performance.now();
  await new Promise((done) => {
    const tick = (ts) => {
      frames.push(ts);
      if (performance.now() - t0 >= ms) { requestAnimationFrame((t) => { frames.push(t); done(); }); return; }
      k++;
      vp.setWindow(c0 + 100 * Math.sin(k / 7), w0 + 60 + 50 * Math.cos(k / 5));
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  off();
  vp.setWindow(c0, w0);
  await raf();
  return { frames, draws, kind: vp.renderer.kind };
}""", raf=RAF)

# A recorder for input-driven runs (wheel, drag): draws, input events and every frame's timestamp.
JS_RECORD_START = """(kind) => {
  const vp = window.dicomvault.grid.viewports[0];
  const r = window.__rec = { draws: [], events: [], frames: [], on: true };
  const key = (v) => kind === 'wheel' ? v.index : `${v.state.center}/${v.state.width}`;
  r.off = vp.on((what, v) => { if (what === 'draw') r.draws.push([performance.now(), key(v)]); });
  r.type = kind === 'wheel' ? 'wheel' : 'pointermove';
  r.listener = () => r.events.push(performance.now());
  vp.overlay.addEventListener(r.type, r.listener, true);
  const tick = (ts) => { r.frames.push(ts); if (r.on) requestAnimationFrame(tick); };
  requestAnimationFrame(tick);
}"""

JS_RECORD_STOP = js("""async () => {
  __RAF__
  await raf(); await raf();
  const r = window.__rec;
  const vp = window.dicomvault.grid.viewports[0];
  r.on = false;
  r.off();
  vp.overlay.removeEventListener(r.type, r.listener, true);
  return { draws: r.draws, events: r.events, frames: r.frames, index: vp.index };
}""", raf=RAF)

FRAME_URL = ("`/dicom-web/studies/${im.studyUid}/series/${im.seriesUid}"
             "/instances/${im.sopInstanceUid}/frames/1`")

JS_FETCH_CEILING = js("""async ({ concurrency, decode }) => {
  const { splitMultipart } = await import('/viewer/js/data/client.js');
  const { decodeFrame } = await import('/viewer/js/image/decode.js');
  const images = window.dicomvault.grid.viewports[0].series.images;
  let next = 0, bytes = 0;
  const t0 = performance.now();
  const worker = async () => {
    while (next < images.length) {
      const im = images[next++];
      const rsp = await fetch(__URL__, { headers: { Accept: __ACCEPT__ } });
      const body = await rsp.arrayBuffer();
      bytes += body.byteLength;
      if (decode) decodeFrame(splitMultipart(body, rsp.headers.get('content-type') || '')[0], im);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  return { ms: performance.now() - t0, bytes, n: images.length };
}""", url=FRAME_URL, accept=json.dumps(FRAME_ACCEPT))

JS_DECODE_COST = js("""async (reps) => {
  const { splitMultipart } = await import('/viewer/js/data/client.js');
  const { decodeFrame } = await import('/viewer/js/image/decode.js');
  const vp = window.dicomvault.grid.viewports[0];
  const im = vp.series.images[Math.floor(vp.series.images.length / 2)];
  const rsp = await fetch(__URL__, { headers: { Accept: __ACCEPT__ } });
  const body = await rsp.arrayBuffer();
  const type = rsp.headers.get('content-type') || '';
  let parts;
  let t0 = performance.now();
  for (let k = 0; k < reps; k++) parts = splitMultipart(body, type);
  const split = (performance.now() - t0) / reps;
  const copies = Array.from({ length: reps }, () => parts[0].slice(0));
  t0 = performance.now();
  for (let k = 0; k < reps; k++) decodeFrame(copies[k], im);
  const decode = (performance.now() - t0) / reps;
  return { split, decode };
}""", url=FRAME_URL, accept=json.dumps(FRAME_ACCEPT))

JS_RENDER_CEILING = js("""async ({ reps, ms }) => {
  __RAF__
  const vp = window.dicomvault.grid.viewports[0];
  const r = vp.renderer;
  const gl = r.gl;
  // Chrome's gl.finish() does not wait for the GPU process; a one-pixel read does (either renderer).
  const px = new Uint8Array(4);
  const sync = gl ? () => gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px)
    : () => r.ctx.getImageData(0, 0, 1, 1);
  const fresh = gl ? () => { r.uploaded = null; } : () => { r.key = null; };
  let view = null;
  const orig = r.draw;
  r.draw = function (v) { view = v; return orig.call(this, v); };
  vp.invalidate(); await raf(); await raf();
  r.draw = orig;
  const c0 = view.center;
  const timed = (fn) => {
    sync();
    const t = performance.now();
    for (let k = 0; k < reps; k++) fn(k);
    sync();
    return (performance.now() - t) / reps;
  };
  const roundtrip = timed(() => sync());
  const draw = timed((k) => { view.center = c0 + (k % 2 ? 1 : -1); r.draw(view); });
  const upload = timed((k) => { fresh(); view.center = c0 + (k % 2 ? 1 : -1); r.draw(view); });
  const whole = timed(() => { fresh(); vp.draw(); });
  await raf(); await raf();
  // frames per second of: nothing drawn; one renderer draw per frame (the image canvas changes);
  // one whole viewport draw per frame (the image and the overlay canvas change)
  const paced = (fn) => new Promise((done) => {
    const frames = [], draws = [];
    let k = 0;
    const t0 = performance.now();
    const tick = (ts) => {
      frames.push(ts);
      if (performance.now() - t0 >= ms) { done({ frames, draws }); return; }
      k++;
      if (fn) { fn(k); draws.push([performance.now(), k]); }
      requestAnimationFrame(tick);
    };
    requestAnimationFrame(tick);
  });
  const idle = await paced(null);
  const rendererOnly = await paced((k) => { view.center = c0 + (k % 2 ? 1 : -1); r.draw(view); });
  const wholePaced = await paced((k) => { vp.state.center = c0 + (k % 2 ? 1 : -1); vp.draw(); });
  vp.state.center = c0;
  view.center = c0;
  vp.invalidate();
  await raf();
  return { kind: r.kind, roundtrip, draw, upload, whole, idle, rendererOnly, wholePaced,
    canvas: [vp.canvas.width, vp.canvas.height] };
}""", raf=RAF)

JS_GL_INFO = """() => {
  const gl = document.createElement('canvas').getContext('webgl2');
  if (!gl) return 'no WebGL2';
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  return info ? gl.getParameter(info.UNMASKED_RENDERER_WEBGL) : gl.getParameter(gl.RENDERER);
}"""

JS_KIND = "() => window.dicomvault.grid.viewports[0].renderer.kind"

JS_SERIES_RESIDENT = "(s) => window.dicomvault?.timings?.find((x) => x.series === s)?.resident != null"


# -- measurements -------------------------------------------------------------------------------------

@dataclass
class Results:
    # "warm"/"cold": the full path (neighbour prefetch off), metadata cache warm/cold; "shipped": as the
    # app behaves (the CT's metadata and first frame prefetched while the localizer was on screen)
    click: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {"warm": [], "cold": [], "shipped": []})
    nav: dict[tuple[str, str], list[dict[str, Any]]] = field(default_factory=dict)  # (viewer, cache)
    fps: dict[str, Any] = field(default_factory=dict)
    ceiling: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


class Bench:
    def __init__(self, browser: Any, inp: Inputs, dv: DvServer, orthanc: OrthancViewer | None,
                 orthanc_series: str | None, res: Results) -> None:
        self.browser = browser
        self.inp = inp
        self.dv = dv
        self.orthanc = orthanc
        self.orthanc_series = orthanc_series
        self.res = res

    def context(self, init: str = "") -> Any:
        ctx = self.browser.new_context(viewport=WINDOW, device_scale_factor=1)
        ctx.add_init_script(INIT_BUFFER + init)
        return ctx

    # 1 + 2: click -> first image, click -> resident
    def click_once(self, full_path: bool) -> dict[str, Any]:
        study, ct, loc = self.inp.click
        ctx = self.context(INIT_NO_NEIGHBOUR_PREFETCH if full_path else "")
        try:
            page = ctx.new_page()
            page.goto(f"{self.dv.url}/#/study/{study}")
            page.wait_for_function(JS_SETTLED, arg=[ct, loc], timeout=60_000)
            if not full_path:
                with contextlib.suppress(PlaywrightTimeout):
                    page.wait_for_function(JS_PREFETCHED, arg=ct, timeout=10_000)
            page.wait_for_timeout(300)  # the priors query and the thumbnails' decoding settle
            page.evaluate(JS_CLICK_HOOK, ct)
            page.click(f'.series[data-series="{ct}"]')
            page.wait_for_function("() => window.__bench.resident !== null && "
                                   "window.__bench.painted !== null", timeout=120_000)
            return dict(page.evaluate(JS_CLICK_RESULT, ct))
        finally:
            ctx.close()

    def click_round(self, cold: int, warm: int, shipped: int) -> None:
        study, ct, _ = self.inp.click
        for kind, n, full in (("cold", cold, True), ("warm", warm, True), ("shipped", shipped, False)):
            if kind == "warm":
                # what the archive's background warmer leaves after an ingest (or any earlier view)
                self.dv.get(f"/dicom-web/studies/{study}/series/{ct}/metadata")
            for i in range(n):
                if kind == "cold":
                    self.dv.restart(cold=True)
                r = self.click_once(full)
                self.res.click[kind].append(r)
                early = " (metadata in memory before the click!)" if full and not r["metadata"] else ""
                log(f"click {kind} {i + 1}/{n}: first image {r['draw']:.0f} ms (painted {r['painted']:.0f}), "
                    f"resident {r['resident']:.0f} ms{early}")
        if any(not r["metadata"] for r in self.res.click["warm"] + self.res.click["cold"]):
            self.res.notes.append("some full-path clicks found the CT's metadata already in memory (the "
                                  "app's neighbour prefetch could not be turned off): not full-path figures")

    # 5: navigation, both viewers
    def nav_dv(self) -> dict[str, Any]:
        study, series = self.inp.view
        ctx = self.context(js(INIT_POLL, selector=json.dumps(DV_CANVAS)))
        try:
            page = ctx.new_page()
            page.goto(f"{self.dv.url}/#/study/{study}")
            page.wait_for_function("() => window.__nav.first !== null && window.__nav.resident !== null",
                                   timeout=120_000)
            nav = page.evaluate("() => window.__nav")
            t = page.evaluate("(s) => window.dicomvault.timings.find((x) => x.series === s)", series)
            frames = page.evaluate(JS_LAST_RESPONSE, f"/series/{series}/instances/")
            return {"first": nav["first"], "all": nav["resident"], "app": t, "requests": frames["n"]}
        finally:
            ctx.close()

    def nav_orthanc(self, wheel_through: bool) -> dict[str, Any]:
        assert self.orthanc is not None
        ctx = self.context(js(INIT_POLL, selector=json.dumps(ORTHANC_CANVAS)))
        seen = {"n": 0}

        def on_response(r: Any) -> None:
            if "/web-viewer/instances/" in r.url:
                seen["n"] += 1

        try:
            page = ctx.new_page()
            page.on("response", on_response)
            page.goto(f"{self.orthanc.url}/web-viewer/app/viewer.html?series={self.orthanc_series}")
            page.wait_for_function("() => window.__nav.first !== null", timeout=120_000)
            out: dict[str, Any] = {"first": page.evaluate("() => window.__nav.first")}
            if wheel_through:
                n = self.inp.slices
                box = page.locator("#dicomImage").bounding_box()
                page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
                t0 = page.evaluate("() => performance.now()")
                for _ in range(n - 1):
                    page.mouse.wheel(0, 100)
                page.wait_for_function("(n) => performance.getEntriesByType('resource').filter((e) => "
                                       "e.name.includes('/web-viewer/instances/')).length >= n", arg=n,
                                       timeout=300_000)
                last = page.evaluate(JS_LAST_RESPONSE, "/web-viewer/instances/")
                ents = page.evaluate(JS_RESOURCES, "/web-viewer/instances/")
                page.wait_for_timeout(100)
                out.update(all=last["end"], requests=last["n"], responses=seen["n"], wheel_start=t0,
                           request_ms=[e[1] - e[0] for e in ents], bytes=sum(e[2] for e in ents))
            return out
        finally:
            ctx.close()

    def nav_round(self, cold: int, warm: int, wheel_warm: int) -> None:
        """Cold rounds (both servers restarted, their caches removed), then warm ones; the two
        viewers alternate, the order swapped every round."""
        viewers = [DV] + ([ORTHANC] if self.orthanc is not None else [])
        for cache, n in (("cold", cold), ("warm", warm)):
            for i in range(n):
                order = viewers if i % 2 == 0 else viewers[::-1]
                if cache == "cold":
                    self.dv.restart(cold=True)
                    if self.orthanc is not None:
                        self.orthanc.restart(cold=True)
                for v in order:
                    if v == DV:
                        r = self.nav_dv()
                    else:
                        wheel = (cache == "cold" and i == 0) or (cache == "warm" and i < wheel_warm)
                        r = self.nav_orthanc(wheel_through=wheel)
                    self.res.nav.setdefault((v, cache), []).append(r)
                    log(f"navigation {cache} {i + 1}/{n} {v}: first image {r['first']:.0f} ms"
                        + (f", all slices {r['all']:.0f} ms" if r.get("all") is not None else ""))

    def resident_page(self, query: str = "") -> tuple[Any, Any]:
        """(context, page) of study V with its series resident."""
        study, series = self.inp.view
        ctx = self.context()
        page = ctx.new_page()
        page.goto(f"{self.dv.url}/{query}#/study/{study}")
        page.wait_for_function(JS_SERIES_RESIDENT, arg=series, timeout=120_000)
        page.wait_for_timeout(300)
        return ctx, page

    # 3 + 4 + 6: one page with the series resident, the renderer the viewer picks; then the other one
    def fps_and_ceilings(self, wl_ms: int, drag_steps: int) -> None:
        study, series = self.inp.view
        f, c = self.res.fps, self.res.ceiling
        f["wl_ms"], f["drag_steps"] = wl_ms, drag_steps
        ctx, page = self.resident_page()
        try:
            f["kind"] = page.evaluate(JS_KIND)
            f["gl"] = page.evaluate(JS_GL_INFO)
            f["scroll_raf"] = [page.evaluate(JS_SCROLL_RAF) for _ in range(2)]
            log(f"scroll (rAF, {f['kind']}): " + ", ".join(fmt(_fps(r)) for r in f["scroll_raf"]) + " fps")
            f["wl_raf"] = [page.evaluate(JS_WL_RAF, wl_ms) for _ in range(2)]
            log("W/L (rAF): " + ", ".join(fmt(_fps(r)) for r in f["wl_raf"]) + " fps")
            f["wheel"] = self.wheel(page)
            log(f"scroll (wheel): {fmt(_fps(f['wheel']))} fps, "
                f"{fmt(events_per_s(f['wheel']['events']))} wheel events/s")
            f["drag"] = self.drag(page, drag_steps)
            log(f"W/L (mouse drag): {fmt(_fps(f['drag']))} fps, "
                f"{fmt(events_per_s(f['drag']['events']))} pointermoves/s")
            c["fetch"] = [page.evaluate(JS_FETCH_CEILING, {"concurrency": 6, "decode": False})
                          for _ in range(3)]
            c["fetch_decode"] = [page.evaluate(JS_FETCH_CEILING, {"concurrency": 6, "decode": True})
                                 for _ in range(3)]
            c["decode"] = page.evaluate(JS_DECODE_COST, 20)
            c["render"] = page.evaluate(JS_RENDER_CEILING, {"reps": 30, "ms": min(1500, wl_ms)})
            sops = page.evaluate("() => window.dicomvault.grid.viewports[0].series.images"
                                 ".map((i) => i.sopInstanceUid)")
            c["curl"] = [curl_ceiling(self.dv.url, study, series, sops) for _ in range(3)]
            log(f"ceilings: fetch {statistics.median(r['ms'] for r in c['fetch']):.0f} ms, fetch+decode "
                f"{statistics.median(r['ms'] for r in c['fetch_decode']):.0f} ms, "
                f"curl {statistics.median(c['curl']):.0f} ms")
        finally:
            ctx.close()
        # the same with the other renderer forced: WebGL2 where the viewer picked Canvas 2D (a software
        # GPU), Canvas 2D where it picked WebGL2
        other = "webgl" if f["kind"] == "canvas2d" else "canvas"
        ctx, page = self.resident_page(f"?renderer={other}")
        try:
            f["other_query"], f["other_kind"] = f"?renderer={other}", page.evaluate(JS_KIND)
            f["scroll_other"] = [page.evaluate(JS_SCROLL_RAF)]
            f["wl_other"] = [page.evaluate(JS_WL_RAF, wl_ms)]
            f["wheel_other"] = self.wheel(page)
            c["render_other"] = page.evaluate(JS_RENDER_CEILING, {"reps": 30, "ms": min(1500, wl_ms)})
            log(f"{f['other_kind']} renderer: scroll {fmt(_fps(f['scroll_other'][0]))} fps, "
                f"W/L {fmt(_fps(f['wl_other'][0]))} fps, wheel {fmt(_fps(f['wheel_other']))} fps")
        finally:
            ctx.close()

    def _center(self, page: Any) -> tuple[float, float]:
        box = page.locator(DV_CANVAS).first.bounding_box()
        return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2

    def wheel(self, page: Any) -> dict[str, Any]:
        """Wheel notches sent back to back from slice 0 through the last one (the series resident)."""
        x, y = self._center(page)
        page.mouse.move(x, y)
        page.evaluate("async () => { await window.dicomvault.grid.viewports[0].setIndex(0); }")
        page.wait_for_timeout(100)
        page.evaluate(JS_RECORD_START, "wheel")
        n = self.inp.slices
        for _ in range(n - 1):
            page.mouse.wheel(0, 100)
        page.wait_for_function("(n) => window.dicomvault.grid.viewports[0].index === n - 1", arg=n,
                               timeout=60_000)
        return dict(page.evaluate(JS_RECORD_STOP))

    def drag(self, page: Any, steps: int = 150) -> dict[str, Any]:
        """A window/level drag with the left button (the W/L tool), `steps` mouse moves."""
        page.evaluate("() => window.dicomvault.setTool('wl')")
        x, y = self._center(page)
        page.mouse.move(x, y)
        page.evaluate(JS_RECORD_START, "drag")
        page.mouse.down()
        for k in range(1, steps + 1):
            page.mouse.move(x + 120 * ((k % 40) / 40 - 0.5), y + 0.8 * k - 60)
        page.mouse.up()
        return dict(page.evaluate(JS_RECORD_STOP))


def _fps(r: dict[str, Any] | None) -> float | None:
    if not r:
        return None
    f = fps_from_frames(r["frames"], [tuple(d) for d in r["draws"]])
    return f.fps if f else None


# -- report -------------------------------------------------------------------------------------------

def _vals(rows: Sequence[dict[str, Any]], key: str) -> list[float]:
    return [r[key] for r in rows if r.get(key) is not None]


def _span(rows: Sequence[dict[str, Any]], key: str, i: int) -> list[float]:
    return [r[key][i] for r in rows if r.get(key)]


def _row(name: str, samples: Sequence[float], target: tuple[str, float] | None = None, digits: int = 0,
         worst: bool = False) -> list[str]:
    """[figure, p50, p95, samples, target check]; for frame rates (`worst`) the third column is the
    worst sample and the target is checked against it."""
    if worst:
        w = min(samples) if samples else None
        return [name, fmt(statistics.median(samples), digits) if samples else "-", fmt(w, digits),
                str(len(samples)), check_target(w, *target) if target else "-"]
    p50, p95 = p50_p95(samples)
    return [name, fmt(p50, digits), fmt(p95, digits), str(len(samples)),
            check_target(p95, *target) if target else "-"]


def _rates(runs: Sequence[dict[str, Any]]) -> list[float]:
    return [x for x in (_fps(r) for r in runs) if x is not None]


def input_bound(drawn: float | None, events: float | None, target: tuple[str, float]) -> str:
    """The target cell of an input-driven rate: when the viewer drew (nearly) every event the browser
    delivered, the rate is the harness's input rate, not the viewer's limit."""
    if drawn is not None and events and drawn >= 0.95 * events:
        return f"input-bound: {100 * min(drawn / events, 1):.0f}% of the events drawn"
    return check_target(drawn, *target)


def _input_row(name: str, run: dict[str, Any], target: tuple[str, float]) -> list[str]:
    drawn, events = _fps(run), events_per_s(run["events"])
    row = _row(f"{name} (events delivered/s: {fmt(events, 1)})", [drawn] if drawn else [], None, 1,
               worst=True)
    row[-1] = input_bound(drawn, events, target)
    return row


PAINTED = "  the same, to the next animation frame (painted), ms"


def target_rows(res: Results, n: int) -> list[list[str]]:
    full = n >= 300  # the targets are for a 300-slice series
    t_first = ("<=", 300.0) if full else None
    t_resident = ("<=", 3000.0) if full else None
    rows: list[list[str]] = []
    c = res.click
    if c["warm"]:
        rows.append(_row("click -> first image drawn, full path, metadata cache warm, ms",
                         _vals(c["warm"], "draw"), t_first))
        rows.append(_row(PAINTED, _vals(c["warm"], "painted"),
                         t_first))
    if c["cold"]:
        rows.append(_row("click -> first image drawn, full path, metadata cache cold, ms",
                         _vals(c["cold"], "draw")))
        rows.append(_row(PAINTED, _vals(c["cold"], "painted")))
    if c["shipped"]:
        rows.append(_row("click -> first image drawn as shipped (metadata + first frame prefetched), ms",
                         _vals(c["shipped"], "draw"), t_first))
        rows.append(_row(PAINTED, _vals(c["shipped"], "painted"),
                         t_first))
    for kind, label in (("warm", "metadata cache warm"), ("cold", "metadata cache cold"),
                        ("shipped", "as shipped")):
        if c[kind]:
            rows.append(_row(f"click -> all {n} slices resident, {label}, ms", _vals(c[kind], "resident"),
                             t_resident if kind == "warm" else None))
    f = res.fps
    kind = f.get("kind", "?")
    if f.get("scroll_raf"):
        rows.append(_row(f"scroll {n} resident slices, one setIndex per animation frame, fps ({kind}, the "
                         "viewer's choice here)", _rates(f["scroll_raf"]), (">=", 30.0), 1, worst=True))
    if f.get("wheel"):
        rows.append(_input_row(f"scroll by mouse wheel, {n - 1} notches back to back, new slices drawn/s",
                               f["wheel"], (">=", 30.0)))
    if f.get("wl_raf"):
        wl_s = f"{f.get('wl_ms', 2000) / 1e3:g}"
        rows.append(_row(f"W/L, one setWindow per animation frame for {wl_s} s, fps ({kind})",
                         _rates(f["wl_raf"]), (">=", 50.0), 1, worst=True))
    if f.get("drag"):
        rows.append(_input_row("W/L by mouse drag (left button), new windows drawn/s", f["drag"],
                               (">=", 50.0)))
    other = f"{f.get('other_kind', '?')} renderer forced (`{f.get('other_query', '')}`)"
    if f.get("scroll_other"):
        rows.append(_row(f"scroll as above, {other}, fps", _rates(f["scroll_other"]), (">=", 30.0), 1,
                         worst=True))
    if f.get("wheel_other"):
        rows.append(_input_row(f"scroll by mouse wheel as above, {other}, new slices drawn/s",
                               f["wheel_other"], (">=", 30.0)))
    if f.get("wl_other"):
        rows.append(_row(f"W/L as above, {other}, fps", _rates(f["wl_other"]), (">=", 50.0), 1, worst=True))
    return rows


def side_rows(res: Results, n: int) -> list[list[str]]:
    rows: list[list[str]] = []
    for cache in ("warm", "cold"):
        a, b = res.nav.get((DV, cache), []), res.nav.get((ORTHANC, cache), [])
        if not a and not b:
            continue
        fa, fb = p50_p95(_vals(a, "first")), p50_p95(_vals(b, "first"))
        rows.append([f"navigation -> first image, {cache}, p50 / p95 ms", fmt_pair(fa), fmt_pair(fb),
                     _fmt_ratio(ratio(fb[0], fa[0])), f"{len(a)} / {len(b)}"])
        aa, ab = p50_p95(_vals(a, "all")), p50_p95(_vals(b, "all"))
        rows.append([f"navigation -> all {n} slices, {cache}, p50 / p95 ms", fmt_pair(aa), fmt_pair(ab),
                     _fmt_ratio(ratio(ab[0], aa[0])), f"{len(_vals(a, 'all'))} / {len(_vals(b, 'all'))}"])
    orth_wheel = [r for r in res.nav.get((ORTHANC, "warm"), []) if r.get("all") is not None]
    o_ms = statistics.median(r["all"] - r["wheel_start"] for r in orth_wheel) if orth_wheel else None
    for key, kind in (("wheel", "kind"), ("wheel_other", "other_kind")):
        if res.fps.get(key) and o_ms is not None:
            dv_ms = _wheel_through_ms(res.fps[key])
            rows.append([f"wheel through {n} slices from the first, ms (dicomvault: resident, "
                         f"{res.fps.get(kind, '?')} renderer; Orthanc: warm cache)", fmt(dv_ms), fmt(o_ms),
                         _fmt_ratio(ratio(o_ms, dv_ms)), f"1 / {len(orth_wheel)}"])
    return rows


def ceiling_rows(res: Results, n: int) -> list[list[str]]:
    rows: list[list[str]] = []
    c = res.ceiling
    if c.get("fetch"):
        ms = statistics.median(r["ms"] for r in c["fetch"])
        mb = c["fetch"][0]["bytes"] / 1e6
        rows.append([f"raw fetch of the {n} frames ({mb:,.0f} MB) in the page, 6 concurrent, `arrayBuffer()` "
                     f"only, median of {len(c['fetch'])}", f"{ms:,.0f} ms = {mb / ms * 1e3:,.0f} MB/s"])
    if c.get("fetch_decode"):
        ms = statistics.median(r["ms"] for r in c["fetch_decode"])
        rows.append(["the same + the viewer's multipart split and decode, no draw", f"{ms:,.0f} ms"])
    if c.get("curl"):
        rows.append([f"curl, 6 processes (keep-alive), the same {n} frames, bodies dropped: the server alone",
                     f"{statistics.median(c['curl']):,.0f} ms"])
    if c.get("decode"):
        rows.append(["multipart split / decode (12-bit mask + range) of one 512x512 frame, main thread",
                     f"{c['decode']['split']:.2f} ms / {c['decode']['decode']:.2f} ms"])
    for key in ("render", "render_other"):
        rows += _render_rows(c.get(key) or {})
    return rows


def _render_rows(r: dict[str, Any]) -> list[list[str]]:
    if r.get("draw") is None:
        return []
    w, h = r["canvas"]
    k = r["kind"]
    gl = k == "webgl2"
    how = ("between two 1-pixel readPixels" if gl else "between two 1-pixel getImageData") + \
        f" (round trip alone {r['roundtrip']:.2f} ms)"
    work = "GPU" if gl else "raster"
    new = "texImage2D 512x512 R16UI + draw" if gl else "JS window/level remap of 512x512 + drawImage"
    rows = [[f"{k}: renderer draw after a window change, {w}x{h} canvas, {work} work included, 30 draws "
             f"{how}", f"{r['draw']:.2f} ms"],
            [f"{k}: renderer draw of a new image ({new}), the same way", f"{r['upload']:.2f} ms"],
            [f"{k}: whole viewport draw of a new image (renderer + overlay canvas: corner text, markers)",
             f"{r['whole']:.2f} ms"]]
    for key, what in (("idle", "nothing drawn (the page's own frame rate)"),
                      ("rendererOnly", "one renderer draw per frame (image canvas changes, overlay not)"),
                      ("wholePaced", "one whole viewport draw per frame (image + overlay canvases)")):
        if r.get(key):
            ff = fps_from_frames(r[key]["frames"], [tuple(d) for d in r[key]["draws"]])
            rate = ff.fps if ff else events_per_s(r[key]["frames"])
            rows.append([f"{k}: animation frames/s, {what}", f"{fmt(rate, 1)} fps"])
    return rows


def figures(res: Results, slices: int) -> tuple[list[list[str]], list[list[str]], list[list[str]]]:
    """(viewer rows vs the targets, side-by-side rows, ceiling rows) of the report."""
    return target_rows(res, slices), side_rows(res, slices), ceiling_rows(res, slices)


def _wheel_through_ms(r: dict[str, Any]) -> float | None:
    if not r["draws"] or not r["events"]:
        return None
    return float(max(d[0] for d in r["draws"]) - min(r["events"]))


def _fmt_ratio(x: float | None) -> str:
    return "-" if x is None else f"{x:.2f}x"


def breakdown(rows: Sequence[dict[str, Any]]) -> str:
    """Where the click -> first image time goes (p50 of each step), from resource timing."""
    md_start, md_end = _span(rows, "metadata", 0), _span(rows, "metadata", 2)
    fr_start, fr_end = _span(rows, "frame", 0), _span(rows, "frame", 2)
    draw, painted = _vals(rows, "draw"), _vals(rows, "painted")
    if not rows or not (md_start and len(md_start) == len(fr_start) == len(draw) == len(painted)):
        return "-"
    def med(a: Sequence[float], b: Sequence[float]) -> float:
        return statistics.median(x - y for x, y in zip(a, b, strict=True))

    return (f"click to metadata request {statistics.median(md_start):.0f} ms, metadata request "
            f"{med(md_end, md_start):.0f} ms, JSON parse + series model to the first frame request "
            f"{med(fr_start, md_end):.0f} ms, first frame request {med(fr_end, fr_start):.0f} ms, split + "
            f"decode + upload + draw call {med(draw, fr_end):.0f} ms, to the next frame "
            f"{med(painted, draw):.0f} ms")


METHOD = """
- Data: `dicomvault.bench.synth.ct_series`, 512x512 16-bit (12 stored bits) CT. Study V (the CT
  alone) is in both archives (dicomvault by `dicomvault ingest`, Orthanc by REST upload); study C (a
  one-slice localizer as series 0 and a CT twin as series 1) is in dicomvault only, for the click:
  the study page shows the localizer, so the CT has to be clicked.
- Click: a fresh browser context per repeat (empty HTTP cache); `#/study/C` loaded until the
  localizer is resident and every thumbnail decoded, +300 ms; the clock starts at the `click`
  event's timeStamp on the CT's `.series` item (playwright `page.click`, real mouse input) and stops
  at the viewport's first `draw` event of that series (after its renderer's draw call); painted = the
  next animation frame; resident = the app's `resident` event (every frame decoded in the loader's
  cache). Full path: the app's neighbour prefetch (main.js `prefetchNeighbours`: once a series is
  resident, the metadata and first frame of the series next to it) replaced by a no-op through an
  init script, so the clock covers metadata fetch + first frame fetch + decode + draw; as shipped:
  that prefetch on, the click served from memory. Cold: `dicomvault serve` restarted with
  `<data>/cache/metadata` removed before the repeat; warm: the cache holds the series (what the
  background warmer leaves after an ingest).
- Click, full path, warm, p50 of each step (resource timing): __WARM__.
- Click, full path, cold: __COLD__.
- Navigation: a fresh browser context per repeat (both viewers load their scripts), `page.goto` of
  `/#/study/V` (dicomvault) or `/web-viewer/app/viewer.html?series=<Orthanc id>` (Orthanc, id from
  `/tools/lookup`); the clock is the page's own (`performance.now()`, 0 = navigation start). First
  image: an init script samples the image canvas (16x16 `drawImage`) once per animation frame and
  stops at the first frame with a lit pixel (red > 40): the same probe for both viewers, at most one
  frame late. All slices: dicomvault's app `resident` (polled per frame; no input needed, the loader
  prefetches the series); Orthanc's viewer fetches one slice per displayed image by synchronous XHR
  and prefetches nothing, so after its first image __N1__ wheel notches are sent back to back
  (`page.mouse.wheel`, each waits for the page) and the figure is the last `responseEnd` of its __N__
  `/web-viewer/instances/` requests (resource timing; also counted by `page.on("response")`).
  Orthanc's default quality (`jpeg95`: lossy 8-bit JPEG made by the plugin) as shipped; dicomvault
  sends the lossless 16-bit stored values. Cold: both servers restarted, dicomvault's metadata cache
  and the plugin's image cache removed; warm: an earlier view filled them. The viewers alternate,
  the order swapped every round.
- Scroll (rAF): the series resident, `setIndex(i)` from a requestAnimationFrame callback for
  i = 1..n-1, one per frame; the viewport's `draw` events (time, slice) are credited to the frame
  whose rAF timestamp precedes them; fps = (frames that drew a new slice - 1) / (rAF time from the
  first such frame to the last). Wheel: one `page.mouse.wheel(0, 100)` per slice back to back, new
  slices drawn per second by the same rule (an rAF recorder runs alongside); each notch waits for
  the page to take it (a non-passive listener, dispatched with the next frame), so when new slices/s
  equals wheel events/s the viewer drew every notch and the figure is the input rate. Canvas 2D
  rows: the same page with `?renderer=canvas` (the viewer's fallback renderer: window/level in JS,
  then a 2D canvas `drawImage`).
- W/L (rAF): `setWindow(c, w)` with new values in every animation frame for __WL_S__ s; fps as
  above over distinct (center, width) draws. Drag: the W/L tool, left button down, __STEPS__
  `page.mouse.move`
  steps, distinct windows drawn per second; pointermoves/s is the input rate the browser delivered
  (each `mouse.move` waits for the page, as the wheel's notches do).
- Ceilings: in the same page, a plain JS loop with 6 concurrent `fetch`es (the loader's
  concurrency) of every frame with the viewer's Accept header, `arrayBuffer()` only, then with the
  viewer's `splitMultipart` + `decodeFrame`; curl: 6 processes with 1/6 of the URLs each
  (keep-alive), bodies to /dev/null, wall time; renderers: the viewport's own renderer (each kind)
  with the view of its last draw, 30 draws between two 1-pixel reads (`readPixels` for WebGL2, as
  Chrome's `gl.finish()` does not wait for the GPU process; `getImageData` for Canvas 2D): window
  changed, a new image (texture uploaded / image remapped), `Viewport.draw()` with its overlays;
  then __PACED_S__ s of animation frames with nothing, one renderer draw, one whole viewport draw per
  frame.
- Orthanc 1.10.1 + orthanc-webviewer 2.8 (Debian), configured by
  `python/dicomvault/bench/orthanc.py` (no other plugin) plus `"Plugins": [libOrthancWebViewer.so]`
  and `"WebViewer": {"CachePath": <run dir>, "CacheSize": 2000}` (the whole series fits; its decoding
  threads at the default).
"""


def unwrap(text: str) -> str:
    """Markdown bullets hard-wrapped in the source as one line each."""
    out: list[str] = []
    for line in text.strip().splitlines():
        if line.startswith("- ") or not out:
            out.append(line)
        else:
            out[-1] += " " + line.strip()
    return "\n".join(out)


def report(args: argparse.Namespace, res: Results, minutes: float, env: dict[str, str]) -> str:
    n = args.slices
    cmd = "python bench/viewer_bench.py" + (" --quick" if args.quick else "") + (
        f" --slices {n}" if not args.quick and n != 300 else "")
    lines = [
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} (UTC), `{cmd}` (`make bench-viewer`), {minutes:.1f} "
        f"minutes; load average at the end {' / '.join(f'{x:.2f}' for x in os.getloadavg())}. "
        f"{env.get('machine', '')} Shared machine: other sessions' builds and browser tests may run "
        "alongside; read the ratios.",
        "",
        f"Browser: {env.get('browser', 'chromium')} headless via playwright, "
        f"{WINDOW['width']}x{WINDOW['height']} window, device pixel ratio 1. Its WebGL2 is "
        f"{env.get('gl', '?')}" + (
            ": a software GPU on the same CPUs (the viewer then draws with Canvas 2D unless "
            "`?renderer=webgl`), so every frame rate below is a lower bound of what a machine with a GPU "
            "gives." if re.search(r"SwiftShader|llvmpipe|softpipe|Software", env.get("gl", "")) else "."),
        "",
        f"### The viewer against the issue's targets ({n}-slice 512x512 16-bit CT)",
        "",
        markdown_table(["figure", "p50", "p95 (fps: worst)", "samples", "target"], target_rows(res, n)),
        "",
        "### Side by side with the Orthanc Web Viewer plugin (same series in both archives)",
        "",
        markdown_table(["figure", DV, "Orthanc Web Viewer 2.8", "Orthanc / dicomvault (time)", "samples"],
                       side_rows(res, n)),
        "",
        "### Ceilings of this machine for the same work (where the time goes)",
        "",
        markdown_table(["what", "figure"], ceiling_rows(res, n)),
        "",
        "How each figure was measured:",
        "",
        unwrap(js(METHOD, n=str(n), n1=str(n - 1), warm=breakdown(res.click["warm"]),
                  cold=breakdown(res.click["cold"]), wl_s=f"{res.fps.get('wl_ms', 2000) / 1e3:g}",
                  steps=str(res.fps.get("drag_steps", 150)),
                  paced_s=f"{min(1500, res.fps.get('wl_ms', 2000)) / 1e3:g}")),
    ]
    counts = [(r.get("requests"), r.get("responses")) for rs in (res.nav.get((ORTHANC, c), []) for c in
              ("cold", "warm")) for r in rs if r.get("all") is not None]
    if counts:
        seen = ", ".join(f"{a} / {b}" for a, b in counts)
        lines.append("- Orthanc wheel-throughs: `/web-viewer/instances/` requests in resource timing / "
                     f"responses seen by `page.on(\"response\")`: {seen}.")
    lines += [f"- Note: {x}" for x in res.notes]
    return "\n".join(lines)


def environment(browser: Any, gl: str) -> dict[str, str]:
    try:
        cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                    if ln.startswith("model name")), "?")
    except OSError:
        cpu = "?"
    return {"machine": f"Machine: {os.cpu_count()} CPUs ({cpu}).", "browser": f"Chromium {browser.version}",
            "gl": gl}


# -- the run ------------------------------------------------------------------------------------------

def run(args: argparse.Namespace) -> int:
    from playwright.sync_api import sync_playwright

    t_start = time.monotonic()
    scratch: Path = args.scratch
    scratch.mkdir(parents=True, exist_ok=True)
    work = scratch / f"run-{os.getpid()}"
    work.mkdir(parents=True)
    res = Results()
    with contextlib.ExitStack() as stack:
        stack.callback(shutil.rmtree, work, True)
        inp = make_inputs(scratch, args.slices)
        log(f"inputs ready ({time.monotonic() - t_start:.0f} s)")
        data = work / "dv-data"
        ingest(data, [inp.view_dir, inp.click_dir, inp.localizer_dir], work)
        dv = DvServer(data, work / "dv-serve.log")
        dv.start()
        stack.callback(dv.stop)
        orthanc, orthanc_series = None, None
        if not args.no_orthanc:
            try:
                orthanc = OrthancViewer(work / "orthanc")
                stack.callback(lambda: orthanc.stop() if orthanc else None)
                orthanc.store(inp.view_dir)
                orthanc_series = orthanc.series_id(inp.view[1])
            except (OrthancError, OSError) as exc:
                res.notes.append(f"Orthanc Web Viewer not measured: {exc}"[:600])
                log(f"Orthanc FAILED: {exc}")
                orthanc = None
        log(f"servers ready ({time.monotonic() - t_start:.0f} s)")
        pw = stack.enter_context(sync_playwright())
        browser = pw.chromium.launch(executable_path=CHROMIUM)
        stack.callback(browser.close)
        bench = Bench(browser, inp, dv, orthanc, orthanc_series, res)
        bench.click_round(args.cold, args.warm, args.shipped)
        bench.nav_round(args.nav_cold, args.nav_warm, args.wheel_warm)
        bench.fps_and_ceilings(args.wl_ms, args.drag_steps)
        env = environment(browser, res.fps.get("gl", "?"))
        if any("Orthanc" in n for n in res.notes) or args.keep_logs:
            keep = ROOT / ".results" / f"viewer-logs-{dt.datetime.now(dt.UTC):%Y%m%d-%H%M}"
            keep.mkdir(parents=True, exist_ok=True)
            for p in (work / "dv-serve.log", work / "orthanc" / "orthanc.log"):
                if p.exists():
                    shutil.copy(p, keep / p.name)
    text = report(args, res, (time.monotonic() - t_start) / 60, env)
    out = publish(SECTION, text, "viewer", args.results)
    out.with_suffix(".json").write_text(json.dumps(
        {"click": res.click, "nav": {f"{k[0]}/{k[1]}": v for k, v in res.nav.items()},
         "fps": res.fps, "ceiling": res.ceiling, "notes": res.notes}, default=str))
    return 0


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    ap.add_argument("--quick", action="store_true", help="20 slices, 2 repeats of each kind (~1 min)")
    ap.add_argument("--slices", type=int, help="slices of the CT (default 300; quick 20)")
    ap.add_argument("--warm", type=int, help="click repeats, metadata cache warm (default 10)")
    ap.add_argument("--cold", type=int, help="click repeats, metadata cache cold (default 4)")
    ap.add_argument("--shipped", type=int,
                    help="click repeats with the app's neighbour prefetch on (default 5)")
    ap.add_argument("--nav-warm", type=int, help="navigation repeats per viewer, caches warm (default 4)")
    ap.add_argument("--nav-cold", type=int, help="navigation repeats per viewer, caches cold (default 2)")
    ap.add_argument("--no-orthanc", action="store_true", help="dicomvault only")
    ap.add_argument("--scratch", type=Path, default=ROOT / ".scratch" / "viewer",
                    help="cached inputs and the run's work directory (default %(default)s)")
    ap.add_argument("--results", type=Path, default=ROOT / "RESULTS.md",
                    help="markdown file whose viewer section is replaced (default %(default)s)")
    ap.add_argument("--no-results", dest="results", action="store_const", const=None,
                    help="print and keep bench/.results/ only")
    ap.add_argument("--keep-logs", action="store_true", help="copy the servers' logs to bench/.results/")
    a = ap.parse_args(argv)
    q = a.quick
    a.slices = a.slices or (20 if q else 300)
    a.warm = a.warm if a.warm is not None else (2 if q else 10)
    a.cold = a.cold if a.cold is not None else (1 if q else 4)
    a.shipped = a.shipped if a.shipped is not None else (1 if q else 5)
    a.nav_warm = a.nav_warm if a.nav_warm is not None else (2 if q else 4)
    a.nav_cold = a.nav_cold if a.nav_cold is not None else (1 if q else 2)
    a.wheel_warm = 1 if q else 2
    a.wl_ms = 500 if q else 2000
    a.drag_steps = 40 if q else 150
    return a


def main(argv: Sequence[str] | None = None) -> int:
    return run(parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
