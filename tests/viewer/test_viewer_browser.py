"""The viewer in a real browser (headless Chromium, Playwright): pixels read back from the canvas
compared with values computed here from the DICOM files, interaction by real mouse and keyboard
events, measurements on a phantom of known geometry, the study list, and markup in file values.
Fixtures and the viewer driver: conftest.py."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_modality_lut, apply_voi_lut, pixel_array


def window8(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """The DICOM linear window (PS3.3 C.11.2.1.2.1) to 0..255 unquantised, as lut.js linearWindow."""
    c, w = center - 0.5, width - 1
    y = ((values - c) / w + 0.5) * 255
    return np.where(values <= c - w / 2, 0.0, np.where(values > c + w / 2, 255.0, y))


def expected_gray(
    path: Path,
    points: list[tuple[int, int]],
    center: float,
    width: float,
    frame: int = 0,
    invert: bool = False,
) -> np.ndarray:
    """The 8-bit grey the viewer must show at image pixels `points` (col, row) of `frame`:
    modality LUT, linear window, MONOCHROME1 (xor `invert`) inverted, floor(g*255 + 0.5)."""
    ds = pydicom.dcmread(path)
    arr = ds.pixel_array
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        arr = arr[frame]
    values = apply_modality_lut(arr, ds).astype(np.float64)
    v = np.array([values[r, c] for c, r in points])
    y = window8(v, center, width)
    if (ds.PhotometricInterpretation == "MONOCHROME1") != invert:
        y = 255 - y
    return np.floor(y + 0.5)


def assert_gray(
    shown: list[list[int]], expected: np.ndarray, points: list[tuple[int, int]], tol: int = 1
) -> None:
    got = np.array(shown, dtype=np.float64)
    assert (got[:, 0] == got[:, 1]).all() and (got[:, 1] == got[:, 2]).all(), f"not grey: {shown}"
    diff = np.abs(got[:, 0] - expected)
    bad = [
        (p, int(g), int(e)) for p, g, e in zip(points, got[:, 0], expected, strict=True) if abs(g - e) > tol
    ]
    assert diff.max() <= tol, (
        f"{len(bad)} of {len(points)} pixels differ by more than {tol}: (pixel, shown, expected) {bad[:8]}"
    )


def assert_rgb(
    shown: list[list[int]], expected: np.ndarray, points: list[tuple[int, int]], tol: int = 2
) -> None:
    got = np.array(shown, dtype=np.float64)[:, :3]
    diff = np.abs(got - expected).max(axis=1)
    bad = [
        (p, g.tolist(), e.tolist()) for p, g, e, d in zip(points, got, expected, diff, strict=True) if d > tol
    ]
    assert diff.max() <= tol, f"{len(bad)} of {len(points)} pixels differ by more than {tol}: {bad[:8]}"


def colourful(rgb: np.ndarray, rect: list[float], n: int = 8, spacing: int = 12) -> list[tuple[int, int]]:
    """Up to n well-separated pixels of an RGB frame with the most chroma inside rect (on screen),
    away from its edges: where a wrong colour conversion shows."""
    x0, y0, x1, y1 = (
        int(math.ceil(rect[0])) + 3,
        int(math.ceil(rect[1])) + 3,
        int(rect[2]) - 3,
        int(rect[3]) - 3,
    )
    sub = rgb[y0:y1, x0:x1].astype(np.int32)
    chroma = sub.max(axis=2) - sub.min(axis=2)
    out: list[tuple[int, int]] = []
    for flat in np.argsort(chroma, axis=None)[::-1][:20000]:
        r, c = divmod(int(flat), chroma.shape[1])
        if chroma[r, c] < 40:
            break
        if all(abs(c + x0 - a) >= spacing or abs(r + y0 - b) >= spacing for a, b in out):
            out.append((c + x0, r + y0))
            if len(out) == n:
                break
    return out


def check_gray(viewer, path: Path, *, vp: int = 0, frame: int = 0, n: int = 5) -> list[tuple[int, int]]:
    st = viewer.state(vp)
    points = viewer.grid(n, vp)
    assert_gray(
        viewer.read(points, vp),
        expected_gray(path, points, st["center"], st["width"], frame, st["invert"]),
        points,
    )
    return points


# --- study list ----------------------------------------------------------------------------------------

STUDY_ROWS = """() => [...document.querySelectorAll("table.studies tbody tr.study")].map((tr) =>
  ({ study: tr.dataset.study, cells: [...tr.cells].map((td) => td.textContent) }))"""


def wait_rows(page, predicate_js: str) -> list[dict]:
    try:
        page.wait_for_function(f"() => {{ const rows = ({STUDY_ROWS})(); return ({predicate_js})(rows); }}")
    except Exception as exc:
        raise AssertionError(
            f"study list rows never satisfied {predicate_js}: {page.evaluate(STUDY_ROWS)}"
        ) from exc
    return page.evaluate(STUDY_ROWS)


def test_study_list_fuzzy_name_search_opens_study_and_prior(viewer, viewer_data) -> None:
    page = viewer.page
    viewer.goto("#/studies")
    everything = wait_rows(page, "(rows) => rows.length > 0")
    assert len(everything) == len(set(viewer_data.study.values()))
    # Fuzzy PN matching: every query word must start a word of the name ("compr" starts
    # "CompressedSamples"), case-insensitively.
    want = {
        uid
        for k, uid in viewer_data.study.items()
        if str(pydicom.dcmread(viewer_data.files[k], stop_before_pixels=True).PatientName)
        .upper()
        .startswith("COMPRESSEDSAMPLES")
    }
    assert len(want) >= 4  # CT1, its prior, RG1, US1
    page.fill("form.search input[name=name]", "compr")
    rows = wait_rows(page, f"(rows) => rows.length === {len(want)}")
    assert {r["study"] for r in rows} == want
    assert all(r["cells"][0].startswith("CompressedSamples, ") for r in rows), rows
    # Two words, any order, each a prefix of some name word: "ct1 compr" is CT_small and its prior.
    page.fill("form.search input[name=name]", "ct1 compr")
    ct_patient = {viewer_data.study["ct_small"], viewer_data.prior_study}
    rows = wait_rows(page, "(rows) => rows.length === 2")
    assert {r["study"] for r in rows} == ct_patient
    viewer.shot("study_list_search")
    # The row's "Priors" button lists the patient's studies by PatientID.
    page.click("form.search >> text=Clear")
    wait_rows(page, f"(rows) => rows.length === {len(everything)}")
    page.click(f"tr.study[data-study='{viewer_data.study['ct_small']}'] button.priors")
    rows = wait_rows(page, "(rows) => rows.length === 2")
    assert {r["study"] for r in rows} == ct_patient
    assert page.input_value("form.search input[name=pid]") == "1CT1"

    # Click the row: the viewer opens the study with its first image on screen.
    page.click(f"tr.study[data-study='{viewer_data.study['ct_small']}']")
    st = viewer.wait_image()
    assert st["study"] == viewer_data.study["ct_small"]
    assert page.evaluate("location.hash") == f"#/study/{viewer_data.study['ct_small']}"
    viewer.call("vp.oneToOne()")
    viewer.settle()
    check_gray(viewer, viewer_data.files["ct_small"])

    # Priors: the other study of the same PatientID, opened beside it.
    page.wait_for_function("() => !document.querySelector('select.priors').disabled")
    options = page.evaluate(
        "() => [...document.querySelectorAll('select.priors option')].map((o) => o.value)"
    )
    assert options == ["", viewer_data.prior_study]
    page.select_option("select.priors", viewer_data.prior_study)
    st1 = viewer.wait_image(vp=1, series=viewer_data.series["ct_small_prior"])
    assert st1["study"] == viewer_data.prior_study
    assert page.evaluate("() => window.dicomvault.grid.viewports.length") == 2
    viewer.call("vp.oneToOne()", vp=1)
    viewer.settle(1)
    # The prior is a copy of the same pixels: the same values on screen.
    check_gray(viewer, viewer_data.files["ct_small_prior"], vp=1)


# --- pixels -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["ct_small", "ct_j2k", "mr", "mr_multiframe"])
def test_grayscale_pixels_match_the_file(viewer, viewer_data, key: str) -> None:
    """CT (native, and J2K lossless decoded by the server), MR with two file windows, multi-frame
    MR: at 1:1 and 2x, with the window the viewer opened with, the second file window, another frame."""
    path = viewer_data.files[key]
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    st = viewer.open_study(viewer_data.study[key])
    assert st["renderer"] == "webgl2"
    if "WindowCenter" in ds:
        wc = ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter
        ww = ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth
        assert (st["center"], st["width"]) == (float(wc), float(ww)), "opens with the file's first window"
    for zoom in ("vp.oneToOne()", "vp.setZoom(2)"):
        viewer.call(zoom)
        viewer.settle()
        check_gray(viewer, path, frame=st["frame"] - 1)
    if "WindowCenter" in ds and ds["WindowCenter"].VM > 1:
        viewer.call("vp.fileWindow(1)")
        st = viewer.settle()
        assert (st["center"], st["width"]) == (float(ds.WindowCenter[1]), float(ds.WindowWidth[1]))
        check_gray(viewer, path)
    if st["n"] > 1:
        k = st["n"] // 2 + 1
        viewer.call(f"vp.setIndex({k})")
        st = viewer.wait_image(index=k)
        check_gray(viewer, path, frame=st["frame"] - 1)
    viewer.shot(f"grayscale_{key}")


def test_lut_images_match_the_files(viewer, viewer_data) -> None:
    """A Modality LUT Sequence (the shader's LUT texture path) under a linear window, and a VOI LUT
    Sequence chosen from the window menu ("File VOI LUT")."""
    path = viewer_data.files["modality_lut"]
    viewer.open_study(viewer_data.study["modality_lut"])
    viewer.call("vp.setZoom(2)")
    viewer.settle()
    check_gray(viewer, path)  # apply_modality_lut uses the LUT
    viewer.call("vp.setWindow(300, 1200)")
    viewer.settle()
    check_gray(viewer, path)
    # The status bar's pixel probe gives the modality value: the LUT's, not the stored value.
    values = apply_modality_lut(pydicom.dcmread(path).pixel_array, pydicom.dcmread(path))
    for c, r in viewer.grid(3):
        viewer.page.mouse.move(*viewer.to_client((c + 0.5, r + 0.5)))
        text = f"x {c} y {r}  value {int(values[r, c])} "
        viewer.page.wait_for_function(
            "(t) => document.querySelector('footer .probe').textContent === t", arg=text
        )
    viewer.shot("modality_lut")

    path = viewer_data.files["voi_lut"]
    viewer.open_study(viewer_data.study["voi_lut"])
    viewer.page.select_option("select.presets", "voilut")
    assert viewer.call("vp.state.useVoiLut") is True
    viewer.call("vp.oneToOne()")
    viewer.settle()
    ds = pydicom.dcmread(path)
    bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
    out = apply_voi_lut(ds.pixel_array, ds, prefer_lut=True).astype(np.float64)
    points = viewer.grid(7)
    want = np.floor(np.array([out[r, c] for c, r in points]) / (2**bits - 1) * 255 + 0.5)
    assert_gray(viewer.read(points), want, points)
    viewer.shot("voi_lut")


def test_monochrome1_is_inverted(viewer, viewer_data) -> None:
    path = viewer_data.files["cr_mono1"]
    st = viewer.open_study(viewer_data.study["cr_mono1"])
    assert st["photometric"] == "MONOCHROME1" and (st["columns"], st["rows"]) == (1841, 1955)
    assert (st["center"], st["width"]) == (15000.0, 30000.0)
    viewer.call("vp.oneToOne()")
    st = viewer.settle()
    assert not st["invert"]
    points = check_gray(viewer, path)  # expected_gray: 255 - window(value) for MONOCHROME1
    # Bright bone: of two points the one with the higher value is the darker on screen.
    arr = pydicom.dcmread(path).pixel_array
    vals = [int(arr[r, c]) for c, r in points]
    shown = [rgba[0] for rgba in viewer.read(points)]
    lo, hi = int(np.argmin(vals)), int(np.argmax(vals))
    assert shown[lo] > shown[hi], (vals[lo], shown[lo], vals[hi], shown[hi])
    viewer.shot("monochrome1")
    # The user's Invert on a MONOCHROME1 image shows the plain window.
    viewer.page.keyboard.press("i")
    st = viewer.settle()
    assert st["invert"]
    check_gray(viewer, path)


def test_colour_pixels_match_the_files(viewer, viewer_data) -> None:
    """Native RGB, J2K colour (decoded by the server), PALETTE COLOR, and frames of a
    120-frame YBR_FULL_422 JPEG baseline ultrasound."""
    from pydicom.pixels import apply_color_lut

    for key in ("sc_rgb", "us_rgb", "palette"):
        path = viewer_data.files[key]
        st = viewer.open_study(viewer_data.study[key], series=viewer_data.series[key])
        assert st["samples"] == 3
        viewer.call("vp.oneToOne()")
        viewer.settle()
        ds = pydicom.dcmread(path)
        if key == "palette":
            rgb = apply_color_lut(ds.pixel_array, ds)
            if rgb.dtype.itemsize > 1:
                rgb = rgb >> 8
        else:
            rgb = ds.pixel_array  # pydicom converts YBR to RGB by default
        points = viewer.grid(5) + colourful(rgb, viewer.visible())
        assert len(points) > 25, "the image has colour to check"
        expected = np.array([rgb[r, c, :3] for c, r in points], dtype=np.float64)
        assert_rgb(viewer.read(points), expected, points, tol=2 if key != "sc_rgb" else 0)
        viewer.shot(f"colour_{key}")

    path = viewer_data.files["us_multiframe"]
    st = viewer.open_study(viewer_data.study["us_multiframe"], series=viewer_data.series["us_multiframe"])
    assert st["n"] == 120 and st["samples"] == 3
    viewer.call("vp.oneToOne()")
    viewer.settle()
    for k in (0, 37, 119):
        viewer.call(f"vp.setIndex({k})")
        st = viewer.wait_image(index=k)
        assert st["frame"] == k + 1
        frame = pixel_array(path, index=k)  # frame k alone, YBR converted to RGB by pydicom
        points = viewer.grid(5) + colourful(frame, viewer.visible())
        assert len(points) > 25, "the frame has colour to check"
        expected = np.array([frame[r, c] for c, r in points], dtype=np.float64)
        assert_rgb(viewer.read(points), expected, points, tol=2)
    viewer.shot("colour_us_multiframe")


def test_canvas_renderer_shows_the_same_pixels(viewer, make_viewer, viewer_data) -> None:
    """`?renderer=canvas` (the Canvas 2D fallback) shows the CT as WebGL does, and as the file says."""
    path, study = viewer_data.files["ct_j2k"], viewer_data.study["ct_j2k"]
    st = viewer.open_study(study)
    assert st["renderer"] == "webgl2"
    viewer.call("vp.oneToOne()")
    viewer.settle()
    points = viewer.grid(7)
    gl = viewer.read(points)

    canvas = make_viewer()
    st = canvas.open_study(study, query="?renderer=canvas")
    assert st["renderer"] == "canvas2d"
    canvas.call("vp.oneToOne()")
    canvas.settle()
    assert canvas.grid(7) == points
    shown = canvas.read(points)
    assert_gray(shown, expected_gray(path, points, st["center"], st["width"]), points)
    diff = np.abs(np.array(shown) - np.array(gl)).max()
    assert diff <= 1, f"Canvas 2D and WebGL differ by {diff}"
    # A window change goes through the JS mapping of the fallback too.
    canvas.call("vp.setWindow(400, 1800)")
    st = canvas.settle()
    assert_gray(canvas.read(points), expected_gray(path, points, 400, 1800), points)


def test_software_webgl_chooses_canvas_2d_by_itself(make_viewer, viewer_data) -> None:
    """With no ?renderer, the viewer uses WebGL2 on a GPU and Canvas 2D where WebGL2 is only a
    software rasterizer (this machine: SwiftShader), which draws the same pixels several times
    faster there; the shader path stays reachable with ?renderer=webgl."""
    auto = make_viewer()
    gpu = auto.page.evaluate("""() => { const gl = document.createElement('canvas').getContext('webgl2');
      const i = gl && gl.getExtension('WEBGL_debug_renderer_info');
      return i ? String(gl.getParameter(i.UNMASKED_RENDERER_WEBGL)) : ''; }""")
    st = auto.open_study(viewer_data.study["ct_j2k"], query="")
    software = any(k in gpu for k in ("SwiftShader", "llvmpipe", "softpipe"))
    assert st["renderer"] == ("canvas2d" if software else "webgl2"), gpu


# --- interaction -----------------------------------------------------------------------------------------


def test_window_level_by_mouse_drag(viewer, viewer_data) -> None:
    path = viewer_data.files["ct_j2k"]
    st = viewer.open_study(viewer_data.study["ct_j2k"])
    viewer.call("vp.oneToOne()")
    st0 = viewer.settle()
    assert viewer.page.evaluate("() => window.dicomvault.tool") == "wl"  # the default tool
    x, y = viewer.to_client((st0["columns"] / 2, st0["rows"] / 2))
    dx, dy = 80, -50
    page = viewer.page
    assert page.evaluate("([x, y]) => document.elementFromPoint(x, y).className", [x, y]) == "vp-overlay"
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x + dx / 2, y + dy / 2, steps=3)
    page.mouse.move(x + dx, y + dy, steps=3)
    page.mouse.up()
    st = viewer.settle()
    # interaction.js: sensitivity max(0.25, width/256) per CSS pixel, up = lower level, right = wider.
    k = max(0.25, st0["width"] / 256)
    assert math.isclose(st["center"], st0["center"] + dy * k, abs_tol=1e-6), (st0, st)
    assert math.isclose(st["width"], st0["width"] + dx * k, abs_tol=1e-6), (st0, st)
    label = page.evaluate("() => document.querySelector('select.presets option').textContent")
    assert label == f"W {round(st['width'])} / L {round(st['center'])}"
    check_gray(viewer, path)
    viewer.shot("window_level_after_drag")
    # A second drag, the other way, from the new window.
    page.mouse.move(x, y)
    page.mouse.down()
    page.mouse.move(x - 120, y + 90, steps=4)
    page.mouse.up()
    st2 = viewer.settle()
    k = max(0.25, st["width"] / 256)
    assert math.isclose(st2["center"], st["center"] + 90 * k, abs_tol=1e-6)
    assert math.isclose(st2["width"], max(1, st["width"] - 120 * k), abs_tol=1e-6)
    check_gray(viewer, path)


def test_scrolling_by_wheel_and_keys_follows_position(viewer, viewer_data) -> None:
    stack = viewer_data.stack
    st = viewer.open_study(stack.study)
    assert st["n"] == stack.n and st["index"] == 0
    # Sorted by position along the normal, whatever the InstanceNumbers say.
    order = viewer.call("vp.series.images.map((im) => [im.position[2], im.instanceNumber])")
    assert order == [[stack.z0 + stack.dz * k, stack.instance_numbers[k]] for k in range(stack.n)]
    assert order != sorted(order, key=lambda e: e[1]), "the InstanceNumbers must be shuffled for this test"
    corner = """(async () => {
      const { cornerText } = await import("/viewer/js/viewport/overlay.js");
      return cornerText(vp).bl; })()"""
    page = viewer.page

    def check(k: int) -> None:
        st = viewer.wait_image(index=k)
        assert st["position"][2] == stack.z0 + stack.dz * k
        assert st["instanceNumber"] == stack.instance_numbers[k]
        bl = viewer.call(corner)
        assert bl[0].startswith(f"Im {k + 1}/{stack.n}") and f"#{stack.instance_numbers[k]}" in bl[0], bl
        assert bl[1] == f"Loc {stack.z0 + stack.dz * k:.2f} mm", bl
        assert viewer.call("vp.scroll.value") == str(k)
        # The pixels are those of slice k: 10 k HU everywhere, window 40/400.
        points = viewer.grid(3)
        want = np.floor(window8(np.full(len(points), 10.0 * k), 40, 400) + 0.5)
        assert_gray(viewer.read(points), want, points)

    check(0)
    x, y = viewer.to_client((32, 32))
    page.mouse.move(x, y)
    page.mouse.wheel(0, 100)
    check(1)
    page.mouse.wheel(0, 100)
    check(2)
    page.mouse.wheel(0, -100)
    check(1)
    for _ in range(3):
        page.keyboard.press("ArrowDown")
    check(4)
    page.keyboard.press("ArrowUp")
    check(3)
    page.keyboard.press("End")
    check(stack.n - 1)
    viewer.shot("scroll_last_slice")
    page.mouse.wheel(0, 100)  # past the end: stays
    check(stack.n - 1)
    page.keyboard.press("Home")
    check(0)


# --- measurements ------------------------------------------------------------------------------------------


def drag(viewer, p0: tuple[float, float], p1: tuple[float, float]) -> None:
    page = viewer.page
    a, b = viewer.to_client(p0), viewer.to_client(p1)
    page.mouse.move(*a)
    page.mouse.down()
    page.mouse.move((a[0] + b[0]) / 2, (a[1] + b[1]) / 2, steps=3)
    page.mouse.move(*b, steps=3)
    page.mouse.up()


def test_measurements_on_phantom_and_sr_round_trip(viewer, viewer_data) -> None:
    ph = viewer_data.phantom
    page = viewer.page
    st = viewer.open_study(ph.study)
    assert (st["columns"], st["rows"]) == (ph.columns, ph.rows)
    assert st["scale"] > 1
    sp_row, sp_col = ph.spacing

    # Length: press "l", drag between two image points.
    page.keyboard.press("l")
    assert page.evaluate("() => window.dicomvault.tool") == "length"
    p0, p1 = (60.0, 80.0), (140.0, 140.0)
    drag(viewer, p0, p1)
    page.wait_for_function("() => window.dicomvault.measure.items.length === 1")
    m = page.evaluate("() => window.dicomvault.measure.items.at(-1)")
    want = math.hypot((p1[0] - p0[0]) * sp_col, (p1[1] - p0[1]) * sp_row)  # 50 mm
    (length,) = m["values"]
    assert length["name"] == "length" and length["unit"] == "mm"
    assert abs(length["value"] - want) <= 0.01 * want, (length, want)

    # Ellipse ROI inside the disc: the toolbar button, then a drag of its bounding box.
    page.click("button[data-tool=ellipse]")
    cx, cy = ph.center
    a_px, b_px = 15.0, 8.0
    drag(viewer, (cx - a_px, cy - b_px), (cx + a_px, cy + b_px))
    page.wait_for_function("() => window.dicomvault.measure.items.length === 2")
    m = page.evaluate("() => window.dicomvault.measure.items.at(-1)")
    assert m["kind"] == "ellipse"
    values = {v["name"]: v for v in m["values"]}
    assert abs(values["mean"]["value"] - ph.disc_hu) <= 0.5 and values["mean"]["unit"] == "HU", values
    assert values["sd"]["value"] <= 1e-6, values
    assert values["min"]["value"] == values["max"]["value"] == ph.disc_hu
    area = math.pi * (a_px * sp_col) * (b_px * sp_row)
    assert values["area"]["unit"] == "mm2" and abs(values["area"]["value"] - area) <= 0.02 * area, (
        values,
        area,
    )

    # A ROI across the edge of the disc: its mean is between the two values.
    page.keyboard.press("o")
    drag(viewer, (cx + ph.radius_px - 5, cy - 5), (cx + ph.radius_px + 5, cy + 5))
    page.wait_for_function("() => window.dicomvault.measure.items.length === 3")
    rect = {
        v["name"]: v["value"] for v in page.evaluate("() => window.dicomvault.measure.items.at(-1).values")
    }
    assert (
        ph.background_hu < rect["mean"] < ph.disc_hu
        and rect["min"] == ph.background_hu
        and rect["max"] == ph.disc_hu
    )
    assert page.evaluate("() => document.querySelectorAll('.measure-list .measurement').length") == 3
    viewer.shot("phantom_measurements")
    made = page.evaluate(
        "() => window.dicomvault.measure.items.map((m) => ({kind: m.kind, values: m.values}))"
    )

    # Save as SR with the side panel's button.
    page.click("text=Save as report (SR)")
    page.wait_for_function("() => window.dicomvault.measure.items.every((m) => m.saved)")

    # Reload: the measurements come back from the SR in the study.
    page.reload()
    viewer.wait_image()
    page.wait_for_function("() => window.dicomvault.measure.items.length === 3")
    back = page.evaluate(
        "() => window.dicomvault.measure.items.map((m) => ({kind: m.kind, values: m.values, saved: m.saved}))"
    )
    assert all(b["saved"] for b in back)
    assert sorted(b["kind"] for b in back) == sorted(m["kind"] for m in made)
    for kind in ("length", "ellipse", "rectangle"):
        before = {v["name"]: v["value"] for v in next(m for m in made if m["kind"] == kind)["values"]}
        after = {v["name"]: v["value"] for v in next(b for b in back if b["kind"] == kind)["values"]}
        for name, value in before.items():
            assert math.isclose(after[name], value, rel_tol=1e-4, abs_tol=1e-4), (kind, name, value, after)
    page.wait_for_function("() => document.querySelectorAll('.measure-list .measurement').length === 3")
    viewer.shot("phantom_measurements_from_sr")


# --- markup in values --------------------------------------------------------------------------------------

NO_INJECTED = """() => ({
  xss: window.__xss === undefined ? "undefined" : window.__xss,
  scripts: [...document.querySelectorAll("script")].filter((s) => s.textContent.includes("__xss")).length,
  imgs: document.querySelectorAll("img[src='x'], img[onerror]").length,
  bold: [...document.querySelectorAll("b")].filter((b) => b.textContent === "bold").length,
})"""
CLEAN = {"xss": "undefined", "scripts": 0, "imgs": 0, "bold": 0}


def person_name(pn: str) -> str:
    """dicomjson.js personName of a stored PN: its Alphabetic group as "Family, Given Middle"."""
    family, given, middle, prefix, suffix = ([*pn.split("=")[0].split("^"), "", "", "", ""])[:5]
    rest = " ".join(x for x in (prefix, given, middle, suffix) if x)
    return f"{family}, {rest}" if family and rest else family or rest


def test_markup_in_file_values_is_shown_as_text(viewer, viewer_data) -> None:
    page = viewer.page
    viewer.goto("#/studies")
    page.fill("form.search input[name=pid]", "XSS1")
    rows = wait_rows(page, "(rows) => rows.length === 1")
    assert rows[0]["study"] == viewer_data.xss_study
    name = person_name(viewer_data.xss_name)
    assert name == "<script>window.__xss"
    assert rows[0]["cells"][0] == name
    assert rows[0]["cells"][4] == viewer_data.xss_description
    page.wait_for_timeout(300)  # an <img onerror> would have fired by now
    assert page.evaluate(NO_INJECTED) == CLEAN
    viewer.shot("xss_study_list")

    page.click(f"tr.study[data-study='{viewer_data.xss_study}']")
    viewer.wait_image()
    series_text = page.evaluate(
        "() => [...document.querySelectorAll('.seriespanel .series span')].map((s) => s.textContent)"
    )
    assert series_text == [viewer_data.xss_series_description]
    page.click("div.tabs >> text=Metadata")
    page.wait_for_function("() => document.querySelector('.metadata table') !== null")
    cells = page.evaluate("() => [...document.querySelectorAll('.metadata td')].map((td) => td.textContent)")
    for text in (name, viewer_data.xss_description, viewer_data.xss_series_description):
        assert text in cells, (text, [c for c in cells if "<" in c])
    page.wait_for_timeout(300)
    assert page.evaluate(NO_INJECTED) == CLEAN
    viewer.shot("xss_metadata")
