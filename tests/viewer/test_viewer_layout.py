"""Layout and time in the real browser: a series dragged onto a viewport, scrolling synchronised by
slice position between series of different spacing, cine on a multi-frame object, and an enhanced
multi-frame CT whose per-frame positions order its frames."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import numpy as np
import pydicom
import pytest

from .conftest import synthetic_ct


def stow(base: str, paths: list[Path]) -> None:
    boundary = uuid.uuid4().hex
    head = b"--" + boundary.encode() + b"\r\nContent-Type: application/dicom\r\n\r\n"
    body = b"".join(head + p.read_bytes() + b"\r\n" for p in paths) + b"--" + boundary.encode() + b"--\r\n"
    r = httpx.post(f"{base}/dicom-web/studies", content=body, timeout=30, headers={
        "Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert r.status_code == 200, r.text


@pytest.fixture(scope="module")
def coarse(viewer_data, viewer_site, tmp_path_factory) -> dict[str, object]:  # noqa: ANN001
    """A second series in the 20-slice stack's study and frame of reference, 5 mm apart where the
    stack is 2.5 mm: slice j at z = -50 + 5 j."""
    st = viewer_data.stack
    ref = pydicom.dcmread(viewer_data.files["stack"], stop_before_pixels=True)
    out = tmp_path_factory.mktemp("coarse")
    series = pydicom.uid.generate_uid()
    paths = []
    for j in range(10):
        p = out / f"coarse{j}.dcm"
        synthetic_ct(p, np.full((48, 48), 1000 + 7 * j, np.uint16), study=st.study, series=series,
                     patient="Stack^Twenty", patient_id="STACK20", study_description="Twenty slices",
                     series_description="coarse 5 mm", position=(-12.0, -12.0, -50.0 + 5.0 * j),
                     instance_number=j + 1, spacing=(0.5, 0.5),
                     frame_of_reference=str(ref.FrameOfReferenceUID))
        paths.append(p)
    stow(viewer_site.url, paths)
    return {"series": series, "z": [-50.0 + 5.0 * j for j in range(10)]}


def test_drop_a_series_on_a_viewport_and_sync_scrolling_by_position(viewer, viewer_data, coarse) -> None:
    st = viewer_data.stack
    viewer.open_study(st.study, series=st.series)
    viewer.page.select_option("select.layout", "1x2")
    viewer.page.wait_for_function("() => window.dicomvault.grid.viewports.length === 2")
    # HTML drag and drop of the coarse series' thumbnail onto the second viewport
    viewer.page.drag_and_drop(f'.series[data-series="{coarse["series"]}"]', '.vp[data-vp="1"]')
    state = viewer.wait_image(vp=1, series=coarse["series"])
    assert state["series"] == coarse["series"]
    viewer.call("app.activate(vp)", vp=0)
    viewer.page.click("button.sync")
    for k in (0, 5, 9, 13, 19):
        viewer.call(f"vp.setIndex({k})", vp=0)
        a = viewer.wait_image(vp=0, index=k)
        z = a["position"][2]
        assert z == pytest.approx(st.z0 + st.dz * k)
        # the other series follows to the slice nearest in space, not the same index
        want = int(np.argmin([abs(c - z) for c in coarse["z"]]))
        b = viewer.wait_image(vp=1, index=want)
        assert abs(b["position"][2] - z) <= 2.5 + 1e-6, (k, b["position"], z)
    viewer.shot("layout-sync-1x2")
    # sync off: the second viewport stays where it is
    viewer.page.click("button.sync")
    before = viewer.state(vp=1)["index"]
    viewer.call("vp.setIndex(2)", vp=0)
    viewer.wait_image(vp=0, index=2)
    assert viewer.state(vp=1)["index"] == before


def test_cine_plays_a_multiframe_object_at_the_set_rate(viewer, viewer_data) -> None:
    viewer.open_study(viewer_data.study["mr_multiframe"])
    n = viewer.call("vp.series.images.length")
    assert n == 10
    viewer.page.fill("input.cine-fps", "20")
    viewer.page.click("button.cine")
    seen = viewer.page.evaluate("""() => new Promise((res) => {
      const vp = window.dicomvault.grid.viewports[0]; const seen = []; const t0 = performance.now();
      const off = vp.on((what) => { if (what === 'image') seen.push([performance.now() - t0, vp.index]); });
      setTimeout(() => { off(); res(seen); }, 1500); })""")
    viewer.page.click("button.cine")  # stop
    assert viewer.call("vp.cine") is None
    indexes = [i for _, i in seen]
    # about 20 frames a second for 1.5 s, in order, wrapping after the last frame
    assert 18 <= len(indexes) <= 34, seen
    assert all(b == (a + 1) % n for a, b in zip(indexes, indexes[1:], strict=False)), indexes
    stopped = viewer.state()["index"]
    viewer.page.wait_for_timeout(300)
    assert viewer.state()["index"] == stopped


def test_enhanced_multiframe_ct_frames_in_position_order(viewer, viewer_site, tmp_path: Path) -> None:
    """An enhanced CT (one object, per-frame functional groups): each frame is an image with the
    position of its Plane Position Sequence, sorted along the normal, and its own rescale."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    n, rows, cols = 6, 32, 32
    zs = [10.0, -5.0, 0.0, 5.0, -10.0, 15.0]  # frames deliberately not in position order
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.2.1"  # Enhanced CT
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.FrameOfReferenceUID = generate_uid()
    ds.PatientName, ds.PatientID, ds.Modality, ds.StudyDate = "Enhanced^CT", "ECT1", "CT", "20240101"
    ds.InstanceNumber, ds.SeriesNumber = 1, 1
    ds.Rows, ds.Columns, ds.NumberOfFrames = rows, cols, n
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    pm = Dataset()
    pm.PixelSpacing, pm.SliceThickness = [0.8, 0.8], 5.0
    po = Dataset()
    po.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    shared.PixelMeasuresSequence, shared.PlaneOrientationSequence = Sequence([pm]), Sequence([po])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    frames = []
    for f in range(n):
        g = Dataset()
        pp = Dataset()
        pp.ImagePositionPatient = [0.0, 0.0, zs[f]]
        tr = Dataset()
        tr.RescaleIntercept, tr.RescaleSlope, tr.RescaleType = -1024 + f, 1, "HU"
        g.PlanePositionSequence, g.PixelValueTransformationSequence = Sequence([pp]), Sequence([tr])
        frames.append(g)
    ds.PerFrameFunctionalGroupsSequence = Sequence(frames)
    stored = np.stack([np.full((rows, cols), 1000 + 100 * f, np.uint16) for f in range(n)])
    ds.PixelData = stored.tobytes()
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path, enforce_file_format=True)
    stow(viewer_site.url, [path])

    viewer.open_study(str(ds.StudyInstanceUID))
    images = viewer.call(
        "vp.series.images.map((im) => [im.frame, im.position[2], im.intercept, im.pixelSpacing[0]])")
    assert [z for _, z, _, _ in images] == sorted(zs)
    for frame, z, intercept, spacing in images:
        assert zs[frame - 1] == z and intercept == -1024 + frame - 1 and spacing == pytest.approx(0.8)
    # the frame on screen and its value through its own rescale
    for k in (0, 3, 5):
        viewer.call(f"vp.setIndex({k})")
        st = viewer.wait_image(index=k)
        f = st["frame"] - 1
        assert viewer.call("vp.valueAt(5, 5).value") == pytest.approx(1000 + 100 * f - 1024 + f)
