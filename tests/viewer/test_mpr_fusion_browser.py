"""MPR and fusion in the real viewer: Debian's chromium (playwright) against `dicomvault serve`.

The data are synthetic, so every displayed pixel has a known value:

* a CT volume, 64 × 64 × 40, 1 mm pixels, 2 mm slices, axial, stacked feet to head, whose voxel
  (i, j, k) holds HU = ((37 i + 101 j + 53 k) mod 97) · 20 − 900: one voxel off in any direction
  changes the value by a multiple of 20 HU, a few gray levels in the test window;
* a "PT" series of the same FrameOfReferenceUID on another grid (28 × 32 × 20, 2 mm pixels, 4 mm
  slices, covering less than the CT in x) with a 1000-valued sphere and per-slice rescale slopes;
* a two-image "scout" of another frame of reference (not a volume; not a fusion candidate).

Pixels are read back with Viewport.readDisplayPixel and compared with the DICOM linear window
(lut.js linearWindow, out = floor(g · 255 + 0.5)) to ±1.
"""

from __future__ import annotations

import math
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from .conftest import ingest, start_server

ROOT = Path(__file__).resolve().parents[2]
DV = str(ROOT / ".venv" / "bin" / "dicomvault")
CHROMIUM = "/usr/bin/chromium"
SHOTS = ROOT / "test-output" / "viewer"

pytest.importorskip("pydicom")
pytest.importorskip("playwright.sync_api")
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists() or not Path(DV).exists(),
                                reason="needs /usr/bin/chromium and .venv/bin/dicomvault")

# --- the synthetic study --------------------------------------------------------------------------
STUDY = "1.2.826.0.1.3680043.8.498.7001"
CT_SERIES = "1.2.826.0.1.3680043.8.498.7001.1"
PT_SERIES = "1.2.826.0.1.3680043.8.498.7001.2"
SCOUT_SERIES = "1.2.826.0.1.3680043.8.498.7001.3"
FOR = "1.2.826.0.1.3680043.8.498.7001.100"
OTHER_FOR = "1.2.826.0.1.3680043.8.498.7001.200"

CT_SHAPE = (64, 64, 40)            # columns (i), rows (j), slices (k)
CT_ORIGIN = (-32.0, -32.0, -40.0)  # patient position of voxel (0, 0, 0)
CT_SPACING = (1.0, 1.0, 2.0)       # mm along i, j, k

PT_SHAPE = (28, 32, 20)
PT_ORIGIN = (-31.5, -31.5, -39.0)
PT_SPACING = (2.0, 2.0, 4.0)
PT_SLOPES = (0.5, 1.0, 2.0)        # per slice, k mod 3: the overlay volume is float modality values
SPHERE = ((8.0, -6.0, 4.0), 7.0)   # centre (mm, LPS), radius
SPHERE_VALUE = 1000.0


def ct_hu(i, j, k):
    return ((37 * i + 101 * j + 53 * k) % 97) * 20 - 900


def linear_window(x: float, center: float, width: float) -> int:
    """lut.js linearWindow + the renderer's quantisation: the gray level of modality value x."""
    c, w = center - 0.5, width - 1
    g = 0.0 if x <= c - w / 2 else 1.0 if x > c + w / 2 else (x - c) / w + 0.5
    return math.floor(g * 255 + 0.5)


def hot(index: int) -> tuple[int, int, int]:
    x = index / 255
    return tuple(round(min(1.0, max(0.0, 3 * x - o)) * 255) for o in (0, 1, 2))  # type: ignore[return-value]


def colormap_index(x: float, center: float, width: float) -> int:
    c, w = center - 0.5, max(width - 1, 1e-6)
    k = 0.0 if x <= c - w / 2 else 1.0 if x > c + w / 2 else (x - c) / w + 0.5
    return int(k * 255)


def pt_volume() -> np.ndarray:
    """The PET's modality values, [k, j, i]."""
    pi, pj, pk = PT_SHAPE
    (cx, cy, cz), radius = SPHERE
    k, j, i = np.mgrid[0:pk, 0:pj, 0:pi]
    x = PT_ORIGIN[0] + i * PT_SPACING[0]
    y = PT_ORIGIN[1] + j * PT_SPACING[1]
    z = PT_ORIGIN[2] + k * PT_SPACING[2]
    return np.where((x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius ** 2, SPHERE_VALUE, 0.0)


def expected_fusion(k: int) -> np.ndarray:
    """The PET trilinearly resampled at the pixel centres of CT slice k, NaN outside its voxels."""
    vol = pt_volume()
    pi, pj, pk = PT_SHAPE
    jj, ii = np.mgrid[0:CT_SHAPE[1], 0:CT_SHAPE[0]]
    x = (CT_ORIGIN[0] + ii * CT_SPACING[0] - PT_ORIGIN[0]) / PT_SPACING[0]
    y = (CT_ORIGIN[1] + jj * CT_SPACING[1] - PT_ORIGIN[1]) / PT_SPACING[1]
    z = np.full(x.shape, (CT_ORIGIN[2] + k * CT_SPACING[2] - PT_ORIGIN[2]) / PT_SPACING[2])
    out = np.full(x.shape, np.nan)
    ok = (x >= -0.5) & (y >= -0.5) & (z >= -0.5) & (x <= pi - 0.5) & (y <= pj - 0.5) & (z <= pk - 0.5)
    xc, yc, zc = np.clip(x, 0, pi - 1), np.clip(y, 0, pj - 1), np.clip(z, 0, pk - 1)
    i0 = np.minimum(np.floor(xc).astype(int), pi - 2)
    j0 = np.minimum(np.floor(yc).astype(int), pj - 2)
    k0 = np.minimum(np.floor(zc).astype(int), pk - 2)
    fx, fy, fz = xc - i0, yc - j0, zc - k0
    acc = np.zeros(x.shape)
    for dk in (0, 1):
        for dj in (0, 1):
            for di in (0, 1):
                w = (fx if di else 1 - fx) * (fy if dj else 1 - fy) * (fz if dk else 1 - fz)
                acc += w * vol[k0 + dk, j0 + dj, i0 + di]
    out[ok] = acc[ok]
    return out


def _uid(suffix: str) -> str:
    return f"{STUDY}.9.{suffix}"


def _write(path: Path, *, series: str, number: int, modality: str, sop_class: str, inst: int,
           pixels: np.ndarray, position, orientation, spacing, thickness, frame_of_ref: str,
           description: str, slope: float = 1.0, intercept: float = 0.0, window=None) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    sop = _uid(f"{number}.{inst}")
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = sop
    ds.StudyInstanceUID = STUDY
    ds.SeriesInstanceUID = series
    ds.FrameOfReferenceUID = frame_of_ref
    ds.PatientName = "MPR^Fusion"
    ds.PatientID = "MPRFUSION1"
    ds.PatientBirthDate = "19700101"
    ds.PatientSex = "O"
    ds.StudyDate = "20240102"
    ds.StudyTime = "101500"
    ds.StudyID = "1"
    ds.AccessionNumber = "MPR1"
    ds.StudyDescription = "Synthetic MPR and fusion"
    ds.Modality = modality
    ds.SeriesNumber = number
    ds.SeriesDescription = description
    ds.InstanceNumber = inst
    ds.ImagePositionPatient = [f"{v:g}" for v in position]
    ds.ImageOrientationPatient = [f"{v:g}" for v in orientation]
    ds.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    ds.SliceThickness = f"{thickness:g}"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    if window:
        ds.WindowCenter = f"{window[0]:g}"
        ds.WindowWidth = f"{window[1]:g}"
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds.save_as(path, enforce_file_format=True)


def make_study(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    axial = (1, 0, 0, 0, 1, 0)
    ni, nj, nk = CT_SHAPE
    jj, ii = np.mgrid[0:nj, 0:ni]
    for k in range(nk):
        hu = ct_hu(ii, jj, k)
        pos = (CT_ORIGIN[0], CT_ORIGIN[1], CT_ORIGIN[2] + k * CT_SPACING[2])
        # Instance numbers against the stacking order: the viewer must sort by position.
        _write(out / f"ct{k:03d}.dcm", series=CT_SERIES, number=1, modality="CT",
               sop_class="1.2.840.10008.5.1.4.1.1.2", inst=nk - k, pixels=hu + 1024, position=pos,
               orientation=axial, spacing=(CT_SPACING[1], CT_SPACING[0]), thickness=CT_SPACING[2],
               frame_of_ref=FOR, description="CT volume", intercept=-1024, window=(40, 400))
    pi, pj, pk = PT_SHAPE
    jj, ii = np.mgrid[0:pj, 0:pi]
    (cx, cy, cz), radius = SPHERE
    for k in range(pk):
        x = PT_ORIGIN[0] + ii * PT_SPACING[0]
        y = PT_ORIGIN[1] + jj * PT_SPACING[1]
        z = PT_ORIGIN[2] + k * PT_SPACING[2]
        inside = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius ** 2
        slope = PT_SLOPES[k % 3]
        stored = np.where(inside, SPHERE_VALUE / slope, 0)
        _write(out / f"pt{k:03d}.dcm", series=PT_SERIES, number=2, modality="PT",
               sop_class="1.2.840.10008.5.1.4.1.1.128", inst=k + 1, pixels=stored,
               position=(PT_ORIGIN[0], PT_ORIGIN[1], z), orientation=axial,
               spacing=(PT_SPACING[1], PT_SPACING[0]), thickness=PT_SPACING[2], frame_of_ref=FOR,
               description="Synthetic PET sphere", slope=slope)
    for k in range(2):
        _write(out / f"scout{k}.dcm", series=SCOUT_SERIES, number=3, modality="CT",
               sop_class="1.2.840.10008.5.1.4.1.1.2", inst=k + 1, pixels=np.full((32, 32), 1024 + 100 * k),
               position=(0, 0, 10 * k), orientation=axial, spacing=(1, 1), thickness=1,
               frame_of_ref=OTHER_FOR, description="Scout (two images)", intercept=-1024)


# --- the server and the browser ---------------------------------------------------------------------
@pytest.fixture(scope="module")
def mpr_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    base = tmp_path_factory.mktemp("mpr-fusion")
    make_study(base / "dicom")
    data = base / "data"
    ingest(data, [base / "dicom"])
    server = start_server(data, base / "serve.log")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="module")
def mpr_browser(browser):  # noqa: ANN001, ANN201 - the package's Chromium (tests/viewer/conftest.py)
    return browser


@pytest.fixture
def mpr_page(mpr_browser, mpr_server: str):
    ctx = mpr_browser.new_context(viewport={"width": 1500, "height": 800}, device_scale_factor=1)
    pg = ctx.new_page()
    errors: list[str] = []
    pg.on("pageerror", lambda e: errors.append(str(e)))
    pg.goto(f"{mpr_server}/?renderer=webgl#/study/{STUDY}")
    pg.wait_for_function(
        "() => { const vp = window.dicomvault?.grid?.viewports[0];"
        " return vp && vp.image && vp.series && vp.series.seriesUid === '" + CT_SERIES + "' && !vp.dirty; }",
        timeout=15000)
    yield pg
    ctx.close()
    assert not errors, f"uncaught errors in the page: {errors}"


def shot(pg, tmp_path: Path, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    pg.screenshot(path=str(tmp_path / name))
    shutil.copy(tmp_path / name, SHOTS / name)


# JS helpers: wait until a viewport has drawn what is asked.
DRAWN = """async ([n]) => {
  const vp = window.dicomvault.grid.viewports[n];
  for (let t = 0; t < 200 && (vp.dirty || !vp.image || !vp.pixels); t++) {
    await new Promise((r) => setTimeout(r, 10));
  }
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
}"""

READ = """async ([n, points]) => {
  const vp = window.dicomvault.grid.viewports[n];
  await new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
  return points.map(([c, r]) => vp.readDisplayPixel(c, r));
}"""


def set_window(pg, n: int, center: float, width: float) -> None:
    pg.evaluate("([n, c, w]) => window.dicomvault.grid.viewports[n].setWindow(c, w)", [n, center, width])
    pg.evaluate(DRAWN, [n])


def wait_mpr(pg) -> None:
    pg.wait_for_function(
        "() => { const m = window.dicomvault.mpr; return m && !m.loading && m.views.length === 3 &&"
        " m.views.every((v) => v.vp.image && v.vp.series === v.series && !v.vp.dirty); }", timeout=20000)


def wait_indexes(pg, want: dict[int, int]) -> None:
    """Wait until viewport n shows slice want[n], for each n."""
    pg.wait_for_function("""(want) => { const v = window.dicomvault.grid.viewports;
      return Object.entries(want).every(([n, i]) => v[Number(n)].index === i); }""",
                         arg={str(k): v for k, v in want.items()}, timeout=5000)


def state(pg) -> dict:
    return pg.evaluate("""() => { const a = window.dicomvault; return {
      layout: a.grid.layout, select: a.toolbar.querySelector('select.layout').value,
      options: [...a.toolbar.querySelectorAll('select.layout option')].map((o) => o.value),
      indexes: a.grid.viewports.map((v) => v.index),
      series: a.grid.viewports.map((v) => v.series?.seriesUid ?? null),
      voxel: a.mpr ? [...a.mpr.voxel] : null,
      planes: a.mpr ? a.mpr.views.map((v) => v.plane) : null,
    }; }""")


def check_view(pg, n: int, expected, points, center: float, width: float) -> None:
    """Displayed gray of image pixels `points` of viewport n against expected(col, row) (HU)."""
    got = pg.evaluate(READ, [n, points])
    bad = []
    for (c, r), rgba in zip(points, got, strict=True):
        want = linear_window(expected(c, r), center, width)
        if any(abs(v - want) > 1 for v in rgba[:3]):
            bad.append(((c, r), rgba, want, expected(c, r)))
    assert not bad, f"viewport {n}: (pixel, displayed RGBA, expected gray, HU): {bad[:6]}"


def click_image(pg, n: int, col: float, row: float, shift: bool = True) -> None:
    """A mouse click at the centre of image pixel (col, row) of viewport n."""
    x, y = pg.evaluate("""([n, c, r]) => {
      const vp = window.dicomvault.grid.viewports[n];
      const [x, y] = vp.imageToCanvasPoint([c + 0.5, r + 0.5]);
      const box = vp.overlay.getBoundingClientRect();
      return [box.left + x / vp.dpr, box.top + y / vp.dpr];
    }""", [n, col, row])
    if shift:
        pg.keyboard.down("Shift")
    pg.mouse.click(x, y)
    if shift:
        pg.keyboard.up("Shift")


# --- tests ------------------------------------------------------------------------------------------
WC, WW = 60.0, 2001.0   # covers -900..1020 HU: 20 HU is 2.5 gray levels
NI, NJ, NK = CT_SHAPE


def coronal_hu(j):
    # Coronal of an axial stack feet to head: x = i, row 0 = the most superior slice.
    return lambda c, r: ct_hu(c, j, NK - 1 - r)


def sagittal_hu(i):
    return lambda c, r: ct_hu(i, c, NK - 1 - r)


def axial_hu(k):
    return lambda c, r: ct_hu(c, r, k)


GRID_IN_PLANE = [(c, r) for c in (0, 1, 17, 31, 32, 50, 63) for r in (0, 1, 9, 30, 63)]
GRID_REFORMAT = [(c, r) for c in (0, 1, 17, 31, 32, 50, 63) for r in (0, 1, 9, 20, 38, 39)]


def test_mpr_shows_the_right_voxels_and_links_the_crosshairs(mpr_page, tmp_path: Path) -> None:
    pg = mpr_page
    pg.evaluate("() => window.dicomvault.grid.viewports[0].setIndex(5)")
    pg.evaluate(DRAWN, [0])
    pg.locator(".vp").first.focus()
    pg.keyboard.press("m")   # the shortcut, as a user would
    wait_mpr(pg)
    s = state(pg)
    assert s["layout"] == "1x3" and s["select"] == "1x3", s
    assert s["planes"] == ["axial", "coronal", "sagittal"]
    # The crosshair starts at the middle of the slice the source showed.
    assert s["voxel"] == [32, 32, 5], s
    assert s["indexes"] == [5, 32, 32], s
    # All three start with the source viewport's window (the file's 40/400).
    wins = pg.evaluate("() => window.dicomvault.grid.viewports.map((v) => [v.state.center, v.state.width])")
    assert wins == [[40, 400]] * 3, wins

    # Geometry of the reformats: sizes, spacing (2 mm slices: pixels twice as tall as wide),
    # orientation markers, the same frame of reference.
    geo = pg.evaluate("""async () => {
      const { orientationMarkers } = await import('/viewer/js/viewport/overlay.js');
      return window.dicomvault.grid.viewports.map((vp) => { const m = vp.matrix();
        // At scale 1: directionLabel drops components under 0.25 (mm per canvas pixel), so the
        // letters of a zoomed-in view are not what this checks.
        const s = Math.hypot(m[0], m[1]); const m1 = [m[0] / s, m[1] / s, m[2] / s, m[3] / s, m[4], m[5]];
        return {
        size: [vp.image.columns, vp.image.rows], spacing: vp.image.pixelSpacing,
        orientation: vp.image.orientation,
        aspect: Math.hypot(m[2], m[3]) / Math.hypot(m[0], m[1]), markers: orientationMarkers(vp.image, m1),
        for: vp.image.frameOfReferenceUid, desc: vp.series.description, sop: vp.image.sopInstanceUid,
        n: vp.series.images.length }; });
    }""")
    assert [g["size"] for g in geo] == [[64, 64], [64, 40], [64, 40]], geo
    assert [g["n"] for g in geo] == [40, 64, 64]
    assert geo[1]["spacing"] == [2, 1] and geo[2]["spacing"] == [2, 1], geo
    assert [round(g["aspect"], 6) for g in geo] == [1, 2, 2], geo
    assert geo[1]["orientation"] == [1, 0, 0, 0, 0, -1] and geo[2]["orientation"] == [0, 1, 0, 0, 0, -1], geo
    assert geo[0]["markers"] == {"right": "L", "left": "R", "bottom": "P", "top": "A"}, geo[0]
    assert geo[1]["markers"] == {"right": "L", "left": "R", "bottom": "F", "top": "H"}, geo[1]
    assert geo[2]["markers"] == {"right": "P", "left": "A", "bottom": "F", "top": "H"}, geo[2]
    assert all(g["for"] == FOR for g in geo)
    assert geo[1]["desc"] == "Coronal MPR" and geo[2]["desc"] == "Sagittal MPR"
    assert geo[1]["sop"] == "mpr:coronal:32" and geo[2]["sop"] == "mpr:sagittal:32"

    for n in range(3):
        set_window(pg, n, WC, WW)
    check_view(pg, 0, axial_hu(5), GRID_IN_PLANE, WC, WW)
    check_view(pg, 1, coronal_hu(32), GRID_REFORMAT, WC, WW)
    check_view(pg, 2, sagittal_hu(32), GRID_REFORMAT, WC, WW)
    # The probe reads the same values (modality values of the reformat).
    probe = pg.evaluate("() => window.dicomvault.grid.viewports[1].valueAt(7, 3).value")
    assert probe == ct_hu(7, 32, NK - 1 - 3)

    # Shift+click in the axial view: the coronal and sagittal views go to that voxel.
    click_image(pg, 0, 20, 45)
    wait_indexes(pg, {1: 45, 2: 20})
    s = state(pg)
    assert s["indexes"] == [5, 45, 20] and s["voxel"] == [20, 45, 5], s
    check_view(pg, 1, coronal_hu(45), GRID_REFORMAT, WC, WW)
    check_view(pg, 2, sagittal_hu(20), GRID_REFORMAT, WC, WW)
    # The crosshair lines are drawn through that point (overlay canvas, away from the centre gap).
    lines = pg.evaluate("""() => window.dicomvault.grid.viewports.map((vp, n) => {
      const m = window.dicomvault.mpr; const ctx = vp.overlay.getContext('2d');
      const pts = { 0: [[20.5, 10.5], [50.5, 45.5]], 1: [[20.5, 5.5], [50.5, 34.5]],
                    2: [[45.5, 5.5], [10.5, 34.5]] }[n];
      return pts.map((p) => { const [x, y] = vp.imageToCanvasPoint(p);
        return Array.from(ctx.getImageData(Math.floor(x), Math.floor(y), 1, 1).data); });
    })""")
    for n, pair in enumerate(lines):
        for rgba in pair:
            assert rgba[3] > 0 and max(rgba[:3]) > 60, f"no crosshair line in viewport {n}: {lines}"

    # Shift+click in the coronal view: axial goes to the slice (row 5 = k 34), sagittal to column 10.
    click_image(pg, 1, 10, 5)
    wait_indexes(pg, {0: 34, 2: 10})
    s = state(pg)
    assert s["indexes"] == [34, 45, 10] and s["voxel"] == [10, 45, 34], s
    check_view(pg, 0, axial_hu(34), GRID_IN_PLANE, WC, WW)
    check_view(pg, 2, sagittal_hu(10), GRID_REFORMAT, WC, WW)

    # A Shift+drag in the sagittal view moves the crosshair continuously.
    box = pg.evaluate("""() => { const vp = window.dicomvault.grid.viewports[2];
      const b = vp.overlay.getBoundingClientRect();
      const p = (c, r) => vp.imageToCanvasPoint([c + 0.5, r + 0.5]);
      return [b.left, b.top, vp.dpr, p(30, 20), p(40, 10)]; }""")
    left, top, dpr, a, b = box
    pg.keyboard.down("Shift")
    pg.mouse.move(left + a[0] / dpr, top + a[1] / dpr)
    pg.mouse.down()
    pg.mouse.move(left + b[0] / dpr, top + b[1] / dpr, steps=4)
    pg.mouse.up()
    pg.keyboard.up("Shift")
    wait_indexes(pg, {0: 29, 1: 40})
    assert state(pg)["voxel"] == [10, 40, 29]

    # Scrolling a view moves through its plane and the crosshair follows.
    pg.locator(".vp").nth(1).focus()
    pg.keyboard.press("ArrowDown")
    pg.wait_for_function("() => window.dicomvault.grid.viewports[1].index === 41", timeout=5000)
    assert state(pg)["voxel"] == [10, 41, 29]
    box = pg.locator(".vp").nth(2).bounding_box()
    pg.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    pg.mouse.wheel(0, 100)
    pg.wait_for_function("() => window.dicomvault.grid.viewports[2].index === 11", timeout=5000)
    s = state(pg)
    assert s["voxel"] == [11, 41, 29] and s["indexes"] == [29, 41, 11], s
    check_view(pg, 1, coronal_hu(41), GRID_REFORMAT, WC, WW)
    check_view(pg, 2, sagittal_hu(11), GRID_REFORMAT, WC, WW)
    # Window/level is per viewport.
    set_window(pg, 1, 500, 800)
    assert pg.evaluate("() => window.dicomvault.grid.viewports.map((v) => v.state.center)") == [WC, 500, WC]
    check_view(pg, 1, coronal_hu(41), GRID_REFORMAT[:12], 500, 800)
    for n in range(3):
        pg.evaluate(DRAWN, [n])
    shot(pg, tmp_path, "mpr-crosshair.png")

    # Measurement tools stay on the acquired view: a reformat is no instance a report can cite.
    pg.evaluate("() => window.dicomvault.setTool('length')")
    click_image(pg, 1, 5, 5, shift=False)
    pg.locator(".toast.error", has_text="acquired (axial) view").wait_for(timeout=5000)
    measured = pg.evaluate("() => window.dicomvault.measure.items.length + !!window.dicomvault.measure.draft")
    assert measured == 0
    pg.evaluate("() => window.dicomvault.setTool('wl')")

    # Off: the previous layout and series come back, the 1×3 entry leaves the layout select.
    pg.evaluate("() => window.dicomvault.toggleMpr()")
    pg.wait_for_function("() => !window.dicomvault.mpr && window.dicomvault.grid.viewports.length === 1",
                         timeout=5000)
    s = state(pg)
    assert s["layout"] == "1x1" and s["select"] == "1x1" and "1x3" not in s["options"], s
    assert s["series"] == [CT_SERIES] and s["indexes"] == [5], s
    loader_back = pg.evaluate("() => window.dicomvault.grid.viewports[0].loader === window.dicomvault.loader")
    assert loader_back


def test_mpr_refuses_a_series_that_is_not_a_volume(mpr_page) -> None:
    pg = mpr_page
    pg.evaluate("([s, se]) => window.dicomvault.showSeries(window.dicomvault.activeVp, s, se)",
                [STUDY, SCOUT_SERIES])
    pg.evaluate(DRAWN, [0])
    pg.evaluate("() => window.dicomvault.toggleMpr()")
    toast = pg.locator(".toast.error").first
    toast.wait_for(timeout=5000)
    assert "fewer than 3 slices" in toast.text_content()
    s = state(pg)
    assert s["layout"] == "1x1" and s["voxel"] is None and s["series"] == [SCOUT_SERIES], s
    assert pg.evaluate("() => window.dicomvault.mpr") is None


def test_fusion_overlays_the_pet_sphere_in_colour(mpr_page, tmp_path: Path) -> None:
    pg = mpr_page
    (cx, cy, cz), _ = SPHERE
    k = round((cz - CT_ORIGIN[2]) / CT_SPACING[2])                      # 22: z = 4 mm
    inside = (round(cx - CT_ORIGIN[0]), round(cy - CT_ORIGIN[1]))     # (40, 26): the sphere's centre
    outside = (10, 10)                                                # in the PET volume, value 0
    beyond = (60, 20)                                                 # x = 28 mm: past the PET's edge
    pg.evaluate(f"() => window.dicomvault.grid.viewports[0].setIndex({k})")
    set_window(pg, 0, WC, WW)

    pg.evaluate("() => window.dicomvault.openFusion()")
    dialog = pg.locator("dialog.fusion")
    dialog.wait_for(timeout=5000)
    radio = dialog.locator("input[name=overlay]")
    radio.first.wait_for(timeout=10000)
    # The PET series only: the scout has another frame of reference, the CT is the base.
    assert radio.count() == 1 and radio.first.get_attribute("value") == PT_SERIES
    radio.first.check()
    dialog.locator("select[name=colormap]").select_option("hot")
    dialog.locator("input[name=opacity]").evaluate(
        "(el) => { el.value = '1'; el.dispatchEvent(new Event('input')); }")
    dialog.locator("input[name=center]").fill("1000")
    dialog.locator("input[name=width]").fill("1000")
    dialog.locator("button[value=apply]").click()
    pg.wait_for_function(
        "() => document.querySelector('dialog.fusion .fusion-status').textContent.startsWith('Fused')",
        timeout=15000)
    pg.evaluate(DRAWN, [0])

    fused = pg.evaluate("""([pts]) => {
      const vp = window.dicomvault.grid.viewports[0]; const f = vp.fusionProvider(vp);
      return { opacity: f.opacity, center: f.center, width: f.width, n: f.values.length,
               values: pts.map(([c, r]) => f.values[r * vp.image.columns + c]),
               table: Array.from(f.colormap.slice(127 * 4, 127 * 4 + 4)) }; }""", [[inside, outside, beyond]])
    assert fused["opacity"] == 1 and fused["center"] == 1000 and fused["width"] == 1000, fused
    assert fused["n"] == NI * NJ
    assert fused["values"][0] == pytest.approx(SPHERE_VALUE) and fused["values"][1] == 0, fused
    assert math.isnan(fused["values"][2]), fused   # NaN: no overlay data there
    # The whole resampled slice against the same resampling done here.
    values = np.array(pg.evaluate("() => { const vp = window.dicomvault.grid.viewports[0];"
                                  " return Array.from(vp.fusionProvider(vp).values); }"), dtype=float)
    want = expected_fusion(k).ravel()
    assert np.array_equal(np.isnan(values), np.isnan(want)), "the overlay's extent differs"
    assert np.allclose(values[~np.isnan(want)], want[~np.isnan(want)], atol=0.05), \
        f"max error {np.nanmax(np.abs(values - want))}"
    assert np.nansum(want > 0) > 50   # the sphere crosses this slice
    want_index = colormap_index(SPHERE_VALUE, 1000, 1000)
    assert want_index == 127
    assert fused["table"][:3] == list(hot(want_index)), fused

    rgba = pg.evaluate(READ, [0, [inside, outside, beyond]])
    colour = hot(want_index)
    assert all(abs(a - b) <= 1 for a, b in zip(rgba[0][:3], colour, strict=True)), (rgba[0], colour)
    for (c, r), got in zip((outside, beyond), rgba[1:], strict=True):
        gray = linear_window(ct_hu(c, r, k), WC, WW)
        assert all(abs(v - gray) <= 1 for v in got[:3]), ((c, r), got, gray)
    # The sphere's edge: pixels well outside its radius show the base.
    check_view(pg, 0, axial_hu(k), [(c, r) for c in (0, 20, 63) for r in (0, 63)], WC, WW)
    dialog.evaluate("(el) => { el.style.visibility = 'hidden'; }")   # the legend is under it
    shot(pg, tmp_path, "fusion-hot.png")
    dialog.evaluate("(el) => { el.style.visibility = ''; }")

    # Live controls: the jet map and half opacity change the same pixel.
    dialog.locator("select[name=colormap]").select_option("jet")
    pg.evaluate(DRAWN, [0])
    jet = pg.evaluate(READ, [0, [inside]])[0]
    assert pg.evaluate("() => window.dicomvault.grid.viewports[0].fusion.colormapName") == "jet"
    assert abs(jet[0] - colour[0]) + abs(jet[1] - colour[1]) + abs(jet[2] - colour[2]) > 60, jet

    # Remove: the base gray again.
    dialog.locator("button[value=remove]").click()
    pg.evaluate(DRAWN, [0])
    assert pg.evaluate("() => window.dicomvault.grid.viewports[0].fusionProvider") is None
    check_view(pg, 0, axial_hu(k), [inside, outside, beyond], WC, WW)


def test_fusion_follows_mpr_reformats(mpr_page, tmp_path: Path) -> None:
    """Fusion resamples onto any image with a geometry: here the coronal reformat through the sphere."""
    pg = mpr_page
    pg.evaluate("() => window.dicomvault.toggleMpr()")
    wait_mpr(pg)
    (cx, cy, cz), _ = SPHERE
    j = round(cy - CT_ORIGIN[1])                   # 26
    kk = round((cz - CT_ORIGIN[2]) / CT_SPACING[2])  # 22
    pg.evaluate(f"() => window.dicomvault.grid.viewports[1].setIndex({j})")
    set_window(pg, 1, WC, WW)
    # The programmatic API; without a window the overlay gets one from its values (a binary
    # sphere has no percentile spread: its full range, 0..1000).
    auto = pg.evaluate("""async ([studyUid, seriesUid]) => {
      const { applyFusion } = await import('/viewer/js/mpr/fusion.js');
      const a = window.dicomvault;
      const layer = await applyFusion(a, a.grid.viewports[1],
        { studyUid, seriesUid, colormap: 'hot', opacity: 1 });
      const w = [layer.center, layer.width];
      layer.set({ center: 1000, width: 1000 });
      return w;
    }""", [STUDY, PT_SERIES])
    assert auto == [500, 1000], auto
    pg.evaluate(DRAWN, [1])
    row = NK - 1 - kk
    col = round(cx - CT_ORIGIN[0])
    got = pg.evaluate(READ, [1, [(col, row), (5, row)]])
    colour = hot(colormap_index(SPHERE_VALUE, 1000, 1000))
    assert all(abs(a - b) <= 1 for a, b in zip(got[0][:3], colour, strict=True)), (got, colour)
    gray = linear_window(ct_hu(5, j, kk), WC, WW)
    assert all(abs(v - gray) <= 1 for v in got[1][:3]), (got, gray)
    shot(pg, tmp_path, "fusion-mpr.png")


def test_modules_parse() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed")
    for name in ("mprview.js", "fusion.js"):
        path = ROOT / "python/dicomvault/web/viewer/js/mpr" / name
        r = subprocess.run([node, "--check", str(path)], capture_output=True, text=True, timeout=60)
        assert r.returncode == 0, r.stderr

