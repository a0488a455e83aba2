"""Fixtures of the real-browser viewer tests (test_viewer_browser.py, test_viewer_access.py):
headless Chromium from the Debian package `chromium` driven by Playwright (no browser download),
against `dicomvault serve` child processes over data directories ingested with the CLI.

- `viewer_data`: the corpus of the browser tests (real files from pydicom-data and pydicom, and
  synthetic ones written here with known geometry and values), ingested into one data directory.
- `viewer_site`: `dicomvault serve` over it (anonymous access: the default `auto`, i.e. writer
  while no users exist), SIGTERM at the end of the session.
- `browser`: Chromium, once per session.
- `new_page()`: a page in a fresh browser context that records console errors and page errors;
  the test FAILS if any occurred (bar the known benign ones and those a test `allow()`s), and a
  screenshot of every page is saved to test-output/viewer/<test name>[-n].png at its end.
- `page` / `viewer`: the first such page, and a driver for the viewer on it.

Without /usr/bin/chromium or the playwright package, the browser test modules are skipped.
"""

from __future__ import annotations

import copy
import os
import re
import signal
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from dicomvault.bench.orthanc import free_port

ROOT = Path(__file__).resolve().parents[2]
CLI = str(Path(sys.executable).with_name("dicomvault"))
CHROMIUM = "/usr/bin/chromium"
OUTPUT = ROOT / "test-output" / "viewer"
BROWSER_MODULES = {"test_viewer_browser.py", "test_viewer_access.py"}

try:
    from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, sync_playwright
except ImportError:  # pragma: no cover - depends on the environment
    sync_playwright = None  # type: ignore[assignment]


def browser_missing() -> str | None:
    """Why the browser tests cannot run here, or None."""
    if sync_playwright is None:
        return "the playwright Python package is not installed (pip install playwright; no browser download)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"{CHROMIUM} is missing: install the Debian package `chromium`"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = browser_missing()
    if reason is None:
        return
    for item in items:
        if item.path.name in BROWSER_MODULES:
            item.add_marker(pytest.mark.skip(reason=f"real-browser viewer tests: {reason}"))


# --- the corpus ------------------------------------------------------------------------------------


def real_file(name: str) -> Path:
    """A file of pydicom-data (the clinical images) or, failing that, of pydicom's test files."""
    import data_store
    from pydicom.data import get_testdata_file

    p = Path(data_store.__file__).parent / "data" / name
    if p.exists():
        return p
    found = get_testdata_file(name)
    if found is None:
        raise FileNotFoundError(name)
    return Path(found)


# The real files the browser tests open (all decoded by pydicom here for the expected values).
REAL = {
    "ct_j2k": "693_J2KR.dcm",  # CT 512², J2K lossless, decoded server side
    "mr": "MR-SIEMENS-DICOM-WithOverlays.dcm",  # MR 484², two file windows
    "cr_mono1": "RG1_UNCI.dcm",  # CR MONOCHROME1 1841×1955
    "us_rgb": "US1_J2KR.dcm",  # US colour via J2K (YBR_RCT)
    "us_multiframe": "color3d_jpeg_baseline.dcm",  # US 120 frames YBR_FULL_422 JPEG baseline
    "sc_rgb": "SC_rgb.dcm",  # native RGB
    "palette": "OBXXXX1A.dcm",  # PALETTE COLOR
    "mr_multiframe": "emri_small.dcm",  # MR 10 frames
    "ct_small": "CT_small.dcm",  # CT 128², native
    "modality_lut": "mlut_18.dcm",  # Modality LUT Sequence, signed 12 bit
    "voi_lut": "vlut_04.dcm",  # VOI LUT Sequence, 16-bit output
}

XSS_NAME = "<script>window.__xss=1</script>^<img src=x onerror=window.__xss=2>"
XSS_DESCRIPTION = "<b>bold</b>"
# PN splits at "=" into component groups (PS3.5 6.2), so of XSS_NAME the Alphabetic group shown
# is "<script>window.__xss"; the <img onerror> markup also goes in a value that keeps it whole.
XSS_SERIES_DESCRIPTION = "<img src=x onerror=window.__xss=3>"


@dataclass
class Phantom:
    """The synthetic CT phantom: a disc of `disc_hu` in `background_hu`, known spacing."""

    study: str
    series: str
    rows: int = 200
    columns: int = 200
    spacing: tuple[float, float] = (0.5, 0.5)  # row spacing, column spacing (mm)
    center: tuple[float, float] = (100.0, 100.0)  # SCOORD (column, row)
    radius_px: float = 20.0
    disc_hu: int = 100
    background_hu: int = -1000


@dataclass
class Stack:
    """The synthetic 20-slice CT series; slice k (in position order) is at z = z0 + dz*k and
    holds the value 10*k HU everywhere; InstanceNumbers are shuffled."""

    study: str
    series: str
    n: int
    z0: float
    dz: float
    instance_numbers: list[int]  # of slice k


@dataclass
class ViewerData:
    data_dir: Path
    files: dict[str, Path]  # key -> the file as ingested (real or synthetic)
    study: dict[str, str]  # key -> StudyInstanceUID
    series: dict[str, str]  # key -> SeriesInstanceUID
    phantom: Phantom
    stack: Stack
    prior_study: str  # a second study of CT_small's patient (PatientID 1CT1)
    xss_study: str
    xss_name: str = XSS_NAME
    xss_description: str = XSS_DESCRIPTION
    xss_series_description: str = XSS_SERIES_DESCRIPTION


def _file_meta(sop_class: str, sop: str) -> FileMetaDataset:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    meta.ImplementationClassUID = generate_uid()
    return meta


def synthetic_ct(
    path: Path,
    pixels: np.ndarray,
    *,
    study: str,
    series: str,
    patient: str,
    patient_id: str,
    study_description: str,
    series_description: str,
    position: tuple[float, float, float],
    instance_number: int,
    spacing: tuple[float, float],
    frame_of_reference: str,
    study_date: str = "20240102",
    series_number: int = 1,
    window: tuple[int, int] = (40, 400),
) -> str:
    """Write a CT image (stored = HU + 1024, unsigned 16 bit, rescale 1 / -1024); its SOP UID."""
    ct = "1.2.840.10008.5.1.4.1.1.2"
    sop = generate_uid()
    ds = Dataset()
    ds.file_meta = _file_meta(ct, sop)
    ds.SOPClassUID, ds.SOPInstanceUID = ct, sop
    ds.PatientName, ds.PatientID = patient, patient_id
    ds.PatientBirthDate, ds.PatientSex = "19700101", "O"
    ds.StudyInstanceUID, ds.SeriesInstanceUID = study, series
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = study_date, "120000", "1", "ACC" + study[-6:]
    ds.StudyDescription, ds.SeriesDescription = study_description, series_description
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CT", series_number, instance_number
    ds.FrameOfReferenceUID = frame_of_reference
    ds.ImagePositionPatient = [float(v) for v in position]
    ds.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    ds.SliceLocation = float(position[2])
    ds.SliceThickness = 2.5
    ds.PixelSpacing = [float(spacing[0]), float(spacing[1])]
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, -1024, "HU"
    ds.WindowCenter, ds.WindowWidth = window
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)
    return sop


def phantom_pixels(p: Phantom) -> np.ndarray:
    """Stored values (HU + 1024): pixel (i, j) is in the disc when its centre is."""
    j, i = np.mgrid[0 : p.rows, 0 : p.columns]
    inside = (i + 0.5 - p.center[0]) ** 2 + (j + 0.5 - p.center[1]) ** 2 <= p.radius_px**2
    hu = np.where(inside, p.disc_hu, p.background_hu)
    return (hu + 1024).astype(np.uint16)


def _copy_with_new_uids(src: Path, dst: Path, **changes: Any) -> Dataset:
    ds = pydicom.dcmread(src)
    ds = copy.deepcopy(ds)
    for k, v in changes.items():
        setattr(ds, k, v)
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.save_as(dst, enforce_file_format=True)
    return ds


def write_synthetic(out: Path) -> tuple[dict[str, Path], Phantom, Stack, str, str]:
    out.mkdir(parents=True, exist_ok=True)
    files: dict[str, Path] = {}

    # The phantom: 200×200, 0.5 mm pixels, a 100 HU disc of radius 20 px in -1000 HU.
    ph = Phantom(study=generate_uid(), series=generate_uid())
    synthetic_ct(
        out / "phantom.dcm",
        phantom_pixels(ph),
        study=ph.study,
        series=ph.series,
        patient="Phantom^Disc",
        patient_id="PHANTOM1",
        study_description="Disc phantom",
        series_description="disc 100 HU",
        position=(-50.0, -50.0, 0.0),
        instance_number=1,
        spacing=ph.spacing,
        frame_of_reference=generate_uid(),
    )
    files["phantom"] = out / "phantom.dcm"

    # The stack: 20 slices, z = -50 + 2.5 k, InstanceNumbers shuffled (a fixed permutation).
    n = 20
    perm = [int(x) + 1 for x in np.random.default_rng(7).permutation(n)]
    st = Stack(study=generate_uid(), series=generate_uid(), n=n, z0=-50.0, dz=2.5, instance_numbers=perm)
    frame = generate_uid()
    # Written in instance-number order, so neither file order nor numbering is the slice order.
    for k in sorted(range(n), key=lambda k: perm[k]):
        z = st.z0 + st.dz * k
        synthetic_ct(
            out / f"stack{k:02d}.dcm",
            np.full((64, 64), 10 * k + 1024, np.uint16),
            study=st.study,
            series=st.series,
            patient="Stack^Twenty",
            patient_id="STACK20",
            study_description="Twenty slices",
            series_description="stack",
            position=(-16.0, -16.0, z),
            instance_number=perm[k],
            spacing=(0.5, 0.5),
            frame_of_reference=frame,
        )
    files["stack"] = out / "stack00.dcm"

    # A prior of CT_small's patient: same PatientID, another study (older date).
    prior = generate_uid()
    _copy_with_new_uids(
        real_file("CT_small.dcm"),
        out / "ct_small_prior.dcm",
        StudyInstanceUID=prior,
        StudyDate="20010203",
        StudyDescription="Prior CT",
    )
    files["ct_small_prior"] = out / "ct_small_prior.dcm"

    # The XSS study: markup in the patient name and the study description.
    xss = generate_uid()
    _copy_with_new_uids(
        real_file("CT_small.dcm"),
        out / "xss.dcm",
        StudyInstanceUID=xss,
        PatientName=XSS_NAME,
        PatientID="XSS1",
        StudyDescription=XSS_DESCRIPTION,
        StudyDate="20240301",
        SeriesDescription=XSS_SERIES_DESCRIPTION,
    )
    files["xss"] = out / "xss.dcm"
    return files, ph, st, prior, xss


def ingest(data_dir: Path, paths: list[Path]) -> None:
    proc = subprocess.run(
        [CLI, "ingest", "--data", str(data_dir), "--strict", *map(str, paths)],
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"dicomvault ingest exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"


@pytest.fixture(scope="package")
def viewer_data(tmp_path_factory: pytest.TempPathFactory) -> ViewerData:
    if (why := browser_missing()) is not None:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("viewer")
    synthetic, ph, st, prior, xss = write_synthetic(root / "synthetic")
    files = {k: real_file(v) for k, v in REAL.items()} | synthetic
    paths = [p for k, p in files.items() if k != "stack"] + sorted((root / "synthetic").glob("stack*.dcm"))
    data_dir = root / "data"
    ingest(data_dir, paths)
    study, series = {}, {}
    for k, p in files.items():
        ds = pydicom.dcmread(p, stop_before_pixels=True)
        study[k], series[k] = str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID)
    return ViewerData(data_dir, files, study, series, ph, st, prior, xss)


# --- the server ------------------------------------------------------------------------------------


class Server:
    """`dicomvault serve` as a child process; `url` once /healthz answers."""

    def __init__(self, data_dir: Path, log: Path, *extra: str, tls: tuple[Path, Path] | None = None) -> None:
        """tls: (certificate, key) to serve HTTPS; the health check trusts that certificate."""
        self.data_dir = data_dir
        self.http_port = free_port()
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.http_port}"
        self._verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=str(tls[0])) if tls else True
        if tls:
            extra = (*extra, "--tls-cert", str(tls[0]), "--tls-key", str(tls[1]))
        self.log = log
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [
                CLI,
                "serve",
                "--data",
                str(data_dir),
                "--dimse-port",
                str(free_port()),
                "--http-port",
                str(self.http_port),
                *extra,
            ],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def wait_healthy(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"dicomvault serve exited {self.proc.returncode}:\n{self.tail()}")
            try:
                if httpx.get(self.url + "/healthz", timeout=2, verify=self._verify).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"dicomvault serve: no /healthz after {timeout} s:\n{self.tail()}")

    def tail(self, n: int = 4000) -> str:
        self._log.flush()
        return self.log.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


def start_server(data_dir: Path, log: Path, *extra: str, tls: tuple[Path, Path] | None = None) -> Server:
    s = Server(data_dir, log, *extra, tls=tls)
    s.wait_healthy()
    return s


@pytest.fixture(scope="package")
def viewer_site(viewer_data: ViewerData) -> Iterator[Server]:
    s = start_server(viewer_data.data_dir, viewer_data.data_dir.parent / "serve.log")
    try:
        yield s
    finally:
        s.stop()


# --- the browser -----------------------------------------------------------------------------------


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    # Package scope (tests/viewer has an __init__.py for it), not session: playwright's sync API
    # keeps an event loop running in this thread while it is open, and later tests that call
    # asyncio.run() would fail beside it.
    if (why := browser_missing()) is not None:
        pytest.skip(why)
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=["--enable-unsafe-swiftshader"])
        try:
            yield b
        finally:
            b.close()


# Console messages that are no fault of the viewer.
BENIGN = [
    re.compile(r"favicon", re.I),
    re.compile(r"GPU stall due to ReadPixels", re.I),
    re.compile(r"Automatic fallback to software WebGL", re.I),
]


@dataclass
class PageLog:
    """Console errors and uncaught exceptions of one page; `allow(pattern)` accepts the console
    errors a test provokes on purpose (e.g. the browser's own 'status of 401' line)."""

    name: str
    errors: list[str] = field(default_factory=list)
    allowed: list[re.Pattern[str]] = field(default_factory=list)

    def allow(self, pattern: str) -> None:
        self.allowed.append(re.compile(pattern, re.I))

    def faults(self) -> list[str]:
        return [e for e in self.errors if not any(p.search(e) for p in BENIGN + self.allowed)]


@dataclass
class Pages:
    browser: Browser
    test_name: str
    contexts: list[BrowserContext] = field(default_factory=list)
    pages: list[tuple[Page, PageLog]] = field(default_factory=list)

    def new(self, name: str | None = None, **context_args: Any) -> Page:
        ctx = self.browser.new_context(
            viewport={"width": 1280, "height": 860}, device_scale_factor=1, **context_args
        )
        ctx.set_default_timeout(15_000)
        self.contexts.append(ctx)
        page = ctx.new_page()
        suffix = f"-{_safe_name(name)}" if name else f"-{len(self.pages) + 1}" if self.pages else ""
        log = PageLog(self.test_name + suffix)

        def on_console(msg: ConsoleMessage) -> None:
            if msg.type == "error":
                loc = msg.location or {}
                log.errors.append(
                    f"console.error: {msg.text} ({loc.get('url', '')}:{loc.get('lineNumber', '')})"
                )

        page.on("console", on_console)
        page.on("pageerror", lambda exc: log.errors.append(f"pageerror: {exc}"))
        page.log = log  # type: ignore[attr-defined]
        self.pages.append((page, log))
        return page

    def close(self) -> None:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        for page, log in self.pages:
            try:
                if not page.is_closed():
                    page.screenshot(path=str(OUTPUT / f"{log.name}.png"))
            except Exception as exc:  # noqa: BLE001 - a screenshot must not hide the test's outcome
                log.errors.append(f"(screenshot failed: {exc})")
        for ctx in self.contexts:
            ctx.close()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_")


@pytest.fixture
def new_page(browser: Browser, request: pytest.FixtureRequest) -> Iterator[Callable[..., Page]]:
    """new_page(name=None, **context_args): a page in a fresh context (own storage: a fresh browser, as far
    as the viewer can tell), its console watched, its screenshot saved at the end."""
    pages = Pages(browser, _safe_name(request.node.name))
    request.node._viewer_pages = pages
    try:
        yield pages.new
    finally:
        pages.close()


@pytest.fixture
def page(new_page: Callable[..., Page]) -> Page:
    return new_page()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Iterator[None]:
    """A test whose pages logged a console error or an uncaught exception fails."""
    result = yield
    pages: Pages | None = getattr(item, "_viewer_pages", None)
    if pages is not None:
        faults = [f"[{log.name}] {e}" for _, log in pages.pages for e in log.faults()]
        if faults:
            pytest.fail("the browser reported errors:\n" + "\n".join(faults), pytrace=False)
    return result


# --- driving the viewer ----------------------------------------------------------------------------

# Waits until viewport `i` shows a decoded image, drawn (not dirty), at `index` when given.
WAIT_IMAGE = """([i, index, series]) => {
  const app = window.dicomvault;
  const vp = app && app.grid && app.grid.viewports[i];
  return !!(vp && vp.image && vp.pixels && !vp.dirty && vp.lastDraw &&
    (index === null || vp.index === index) && (series === null || vp.series.seriesUid === series));
}"""

# The displayed RGBA at the centres of image pixels [[col, row], ...] of viewport i, with the
# canvas point each was read at (so a test can check it is on the canvas).
READ_PIXELS = """([i, points]) => {
  const vp = window.dicomvault.grid.viewports[i];
  return points.map(([c, r]) =>
    ({ at: vp.imageToCanvasPoint([c + 0.5, r + 0.5]), rgba: vp.readDisplayPixel(c, r) }));
}"""

# The image rectangle (SCOORD) on screen in viewport i: [x0, y0, x1, y1] clipped to the image.
VISIBLE = """(i) => {
  const vp = window.dicomvault.grid.viewports[i];
  const r = vp.overlay.getBoundingClientRect();
  const a = vp.clientToImage(r.left, r.top), b = vp.clientToImage(r.right, r.bottom);
  const x0 = Math.max(0, Math.min(a[0], b[0])), x1 = Math.min(vp.image.columns, Math.max(a[0], b[0]));
  const y0 = Math.max(0, Math.min(a[1], b[1])), y1 = Math.min(vp.image.rows, Math.max(a[1], b[1]));
  return [x0, y0, x1, y1];
}"""

# Client (CSS) coordinates of image point p in viewport i.
TO_CLIENT = """([i, p]) => {
  const vp = window.dicomvault.grid.viewports[i];
  const [x, y] = vp.imageToCanvasPoint(p);
  const r = vp.overlay.getBoundingClientRect();
  return [r.left + x / vp.dpr, r.top + y / vp.dpr];
}"""

VP_STATE = """(i) => {
  const vp = window.dicomvault.grid.viewports[i];
  const im = vp.image;
  return { index: vp.index, n: vp.series ? vp.series.images.length : 0, center: vp.state.center,
    width: vp.state.width, scale: vp.state.scale, invert: vp.state.invert,
    renderer: vp.renderer.kind, series: vp.series && vp.series.seriesUid,
    study: im && im.studyUid, sop: im && im.sopInstanceUid, frame: im && im.frame,
    position: im && im.position, instanceNumber: im && im.instanceNumber,
    photometric: im && im.photometric, samples: vp.pixels && vp.pixels.samples,
    rows: im && im.rows, columns: im && im.columns };
}"""


@dataclass
class Viewer:
    """Drives the viewer on one page (`window.dicomvault`, the App)."""

    page: Page
    base: str

    def goto(self, hash_: str = "#/studies", query: str = "?renderer=webgl") -> None:
        # WebGL2 unless a test asks otherwise: the viewer would pick Canvas 2D by itself on this
        # GPU-less machine (SwiftShader), and the shader path is the one a real GPU runs.
        self.page.goto(f"{self.base}/{query}{hash_}")
        self.page.wait_for_function("() => window.dicomvault !== undefined")

    def open_study(self, study: str, query: str = "?renderer=webgl", series: str | None = None
                   ) -> dict[str, Any]:
        self.goto(f"#/study/{study}", query)
        if series is not None:
            self.page.wait_for_function(WAIT_IMAGE, arg=[0, None, None])
            self.page.evaluate(
                "([s, se]) => window.dicomvault.showSeries(window.dicomvault.grid.viewports[0], s, se)",
                [study, series],
            )
        return self.wait_image(series=series)

    def wait_image(
        self, vp: int = 0, index: int | None = None, series: str | None = None, timeout: float = 20_000
    ) -> dict[str, Any]:
        self.page.wait_for_function(WAIT_IMAGE, arg=[vp, index, series], timeout=timeout)
        return self.state(vp)

    def state(self, vp: int = 0) -> dict[str, Any]:
        return self.page.evaluate(VP_STATE, vp)

    def settle(self, vp: int = 0) -> dict[str, Any]:
        """After a change of the display state: wait for the next draw."""
        self.page.wait_for_function("(i) => !window.dicomvault.grid.viewports[i].dirty", arg=vp)
        return self.state(vp)

    def call(self, js: str, vp: int = 0) -> Any:
        """Evaluate the JS expression `js` with `app` and `vp` (viewport number `vp`) bound."""
        fn = f"async (i) => {{ const app = window.dicomvault, vp = app.grid.viewports[i]; return ({js}); }}"
        return self.page.evaluate(fn, vp)

    def read(self, points: list[tuple[int, int]], vp: int = 0) -> list[list[int]]:
        out = self.page.evaluate(READ_PIXELS, [vp, [list(p) for p in points]])
        size = self.page.evaluate(
            "(i) => { const c = window.dicomvault.grid.viewports[i].canvas; return [c.width, c.height]; }", vp
        )
        for p, o in zip(points, out, strict=True):
            x, y = o["at"]
            assert 0 <= x < size[0] and 0 <= y < size[1], (
                f"image pixel {p} is off the canvas (at {x}, {y}; {size})"
            )
        return [o["rgba"] for o in out]

    def visible(self, vp: int = 0) -> list[float]:
        return self.page.evaluate(VISIBLE, vp)

    def grid(self, n: int = 5, vp: int = 0, margin: float = 0.1) -> list[tuple[int, int]]:
        """An n×n grid of image pixels inside what is on screen, away from the edges."""
        x0, y0, x1, y1 = self.visible(vp)
        mx, my = (x1 - x0) * margin, (y1 - y0) * margin
        cols = np.linspace(x0 + mx, x1 - mx - 1, n).astype(int)
        rows = np.linspace(y0 + my, y1 - my - 1, n).astype(int)
        return [(int(c), int(r)) for r in rows for c in cols]

    def to_client(self, p: tuple[float, float], vp: int = 0) -> tuple[float, float]:
        x, y = self.page.evaluate(TO_CLIENT, [vp, list(p)])
        return float(x), float(y)

    def shot(self, name: str) -> None:
        OUTPUT.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(OUTPUT / f"{_safe_name(name)}.png"))


@pytest.fixture
def viewer(page: Page, viewer_site: Server) -> Viewer:
    return Viewer(page, viewer_site.url)


@pytest.fixture
def make_viewer(new_page: Callable[..., Page], viewer_site: Server) -> Callable[..., Viewer]:
    """Another viewer, on a page of its own (fresh context)."""
    return lambda **context_args: Viewer(new_page(**context_args), viewer_site.url)


# --- the access tests' server ----------------------------------------------------------------------


@dataclass
class AccessSite:
    server: Server
    study_a: str
    study_b: str
    user: str
    password: str
    data_dir: Path


def add_user(data_dir: Path, name: str, role: str, password: str) -> None:
    proc = subprocess.run(
        [CLI, "users", "add", name, "--role", role, "--password", "--data", str(data_dir)],
        input=password + "\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 0, (
        f"dicomvault users add exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    )


@pytest.fixture(scope="package")
def access_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AccessSite]:
    """A server WITHOUT anonymous access over two studies (CT_small and MR_small), one writer."""
    if (why := browser_missing()) is not None:
        pytest.skip(why)
    root = tmp_path_factory.mktemp("viewer-access")
    data_dir = root / "data"
    a, b = real_file("CT_small.dcm"), real_file("MR_small.dcm")
    ingest(data_dir, [a, b])
    add_user(data_dir, "alice", "writer", "correct horse battery")
    s = start_server(data_dir, root / "serve.log", "--anonymous", "none")
    try:
        yield AccessSite(
            s,
            str(pydicom.dcmread(a, stop_before_pixels=True).StudyInstanceUID),
            str(pydicom.dcmread(b, stop_before_pixels=True).StudyInstanceUID),
            "alice",
            "correct horse battery",
            data_dir,
        )
    finally:
        s.stop()
