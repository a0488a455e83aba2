"""Rendered and thumbnail images (PS3.18 8.3.5, 10.4.1.1.3): one frame to an 8-bit JPEG or PNG.

Pipeline (PS3.3 C.11 order): decode the frame, Modality LUT (rescale or LUT Sequence), VOI (the
requested window, else the object's first window, else its VOI LUT, else min/max), MONOCHROME1
inversion; colour: palette lookup, YBR to RGB, 16-bit to 8-bit; then downsampling into the viewport,
keeping the aspect ratio, and encoding with Pillow. Per-pixel work runs in the Cython kernels with
the GIL released, so renders in the route thread pool proceed in parallel.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.multival import MultiValue
from pydicom.pixels import apply_color_lut

from ... import kernels
from ...errors import NotAcceptableError, RequestError
from ...transfer import syntaxes
from .pixels import FrameSource

MEDIA_TYPES = ("image/jpeg", "image/png")
DEFAULT_QUALITY = 90
THUMBNAIL_SIZE = 128
WINDOW_FUNCTIONS = ("LINEAR", "LINEAR_EXACT", "SIGMOID")

Window = tuple[float, float, str]


def render(
    transfer_syntax: str,
    dataset: bytes,
    frame: int | None = None,
    *,
    media_type: str = "image/jpeg",
    window: Window | None = None,
    viewport: tuple[int, int] | None = None,
    quality: int | None = None,
    key: bytes | None = None,
) -> bytes:
    """Frame `frame` (1-based; None = the first) as an image of `media_type`.

    window = (center, width, "LINEAR"|"SIGMOID") overrides the object's VOI; viewport = (vw, vh)
    is the box (columns, rows) the image is scaled into keeping its aspect ratio; quality 1..100
    applies to JPEG. key = the blob hash, so the frame layout is parsed once per object.
    """
    media_type = _check_media_type(media_type)
    if quality is not None and not 1 <= quality <= 100:
        raise RequestError(f"quality must be 1..100, got {quality}")
    if window is not None:
        window = _check_window(window)
    if viewport is not None and (len(viewport) != 2 or min(viewport) < 1):
        raise RequestError(f"viewport must be two positive sizes, got {viewport!r}")
    src = FrameSource.from_dataset(transfer_syntax, dataset, key=key)
    image = render_array(src, 1 if frame is None else frame, window=window)
    if viewport is not None:
        image = fit_viewport(image, viewport)
    return encode(image, media_type, quality)


def thumbnail(
    transfer_syntax: str,
    dataset: bytes,
    *,
    media_type: str = "image/jpeg",
    viewport: tuple[int, int] | None = None,
    quality: int | None = None,
    key: bytes | None = None,
) -> bytes:
    """A small rendering of the object (its middle frame when multi-frame), default 128 px box."""
    src = FrameSource.from_dataset(transfer_syntax, dataset, key=key)
    middle = (src.number_of_frames + 1) // 2
    box = viewport or (THUMBNAIL_SIZE, THUMBNAIL_SIZE)
    # A thumbnail never enlarges: an image smaller than the box keeps its size.
    box = (min(box[0], src.columns), min(box[1], src.rows))
    return render(
        transfer_syntax, dataset, middle, media_type=media_type, viewport=box, quality=quality, key=key
    )


# -- parameters ------------------------------------------------------------------------------------
def _fields(text: str, form: str, convert: Any, what: str) -> list[Any]:
    """The comma-separated fields of a query parameter of the given form ("vw,vh"), the numeric
    ones converted; RequestError naming the form otherwise."""
    parts = [p.strip() for p in text.split(",")]
    names = form.split(",")
    if len(parts) != len(names):
        raise RequestError(f"{what} must be {form}; got {text!r}")
    try:
        return [convert(p) if n != "function" else p for p, n in zip(parts, names, strict=True)]
    except ValueError as exc:
        raise RequestError(f"{what} fields must be numbers; got {text!r}") from exc


def parse_window(text: str) -> Window:
    """The `window` query parameter (PS3.18 8.3.5.1.4): "center,width,function"."""
    center, width, function = _fields(text, "center,width,function", float, "window")
    return _check_window((center, width, function))


def parse_viewport(text: str) -> tuple[int, int]:
    """The `viewport` query parameter (PS3.18 8.3.5.1.3): "vw,vh" (a source rectangle after them
    is not supported and refused, rather than silently ignored)."""
    vw, vh = _fields(text, "vw,vh", int, "viewport")
    if vw < 1 or vh < 1:
        raise RequestError(f"viewport sizes must be positive; got {text!r}")
    return vw, vh


def parse_quality(text: str) -> int:
    """The `quality` query parameter (PS3.18 8.3.5.1.2): 1..100."""
    try:
        quality = int(text)
    except ValueError as exc:
        raise RequestError(f"quality must be an integer 1..100; got {text!r}") from exc
    if not 1 <= quality <= 100:
        raise RequestError(f"quality must be 1..100, got {quality}")
    return quality


def _check_media_type(media_type: str) -> str:
    mt = media_type.split(";")[0].strip().lower()
    if mt not in MEDIA_TYPES:
        raise NotAcceptableError(f"rendered media type {media_type!r} is not one of {', '.join(MEDIA_TYPES)}")
    return mt


def _check_window(window: Window) -> Window:
    try:
        center, width, function = window
        center, width = float(center), float(width)
    except (TypeError, ValueError) as exc:
        raise RequestError(f"window must be center,width,function; got {window!r}") from exc
    function = str(function).upper()
    if function not in WINDOW_FUNCTIONS:
        raise RequestError(f"window function must be one of {', '.join(WINDOW_FUNCTIONS)}, got {function!r}")
    if not (np.isfinite(center) and np.isfinite(width)) or width <= 0 or (function == "LINEAR" and width < 1):
        raise RequestError(f"window width {width} is not valid for {function}")
    return center, width, function


# -- pipeline --------------------------------------------------------------------------------------
def render_array(src: FrameSource, n: int, *, window: Window | None = None) -> np.ndarray:
    """Frame n as an 8-bit greyscale (rows, cols) or RGB (rows, cols, 3) array."""
    arr, photometric = src.decode(n)
    header = src.header
    if photometric == "PALETTE COLOR":
        return _palette(arr, header, little_endian=_little(src))
    if arr.ndim == 3:
        return _colour(arr, photometric, src.layout.bits_stored)
    grey = _greyscale(arr, header, window, little_endian=_little(src))
    if photometric == "MONOCHROME1":
        grey = kernels.invert_u8(grey)
    return grey


def _little(src: FrameSource) -> bool:
    return syntaxes.lookup(src.transfer_syntax).little_endian


def _first(value: Any) -> float | None:
    if value is None or value == "":
        return None
    if isinstance(value, list | tuple | MultiValue):
        value = value[0] if len(value) else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _ints(value: Any, little_endian: bool, signed_first: bool = False) -> list[int]:
    """A LUT Descriptor that may still be raw bytes (its VR, US or SS, is ambiguous); the first
    mapped value (second number) is signed when the pixels are (PS3.3 C.11.1.1)."""
    if isinstance(value, bytes | bytearray):
        out = np.frombuffer(value, dtype="<u2" if little_endian else ">u2").astype(int).tolist()
        if signed_first and len(out) > 1 and out[1] >= 0x8000:
            out[1] -= 0x10000
        return out
    if isinstance(value, int):
        return [value]
    return [int(v) for v in value]


def _lut(item: Dataset, data_keyword: str, descriptor: list[int], little_endian: bool) -> np.ndarray:
    """LUT Data as uint16 entries (PS3.3 C.11.1.1.1: 0 entries in the descriptor means 65536)."""
    count = descriptor[0] or 65536
    raw = item.get(data_keyword)
    if raw is None:
        raise NotAcceptableError(f"{data_keyword} missing: the object cannot be rendered")
    if isinstance(raw, bytes | bytearray):
        if descriptor[2] == 8 and len(raw) == count:
            data = np.frombuffer(raw, dtype=np.uint8).astype(np.uint16)
        else:
            data = np.frombuffer(raw, dtype="<u2" if little_endian else ">u2")
    else:
        data = np.asarray(list(raw) if not isinstance(raw, int) else [raw], dtype=np.uint16)
    return data[:count]


def _rescale(header: Dataset) -> tuple[float, float]:
    slope = _first(header.get("RescaleSlope"))
    intercept = _first(header.get("RescaleIntercept"))
    return (1.0 if slope is None or slope == 0 else slope), (0.0 if intercept is None else intercept)


def _greyscale(arr: np.ndarray, header: Dataset, window: Window | None, *, little_endian: bool) -> np.ndarray:
    values: np.ndarray = arr
    signed = bool(header.get("PixelRepresentation", 0))
    slope, intercept = _rescale(header)
    mlut_seq = header.get("ModalityLUTSequence")
    if mlut_seq:
        item = mlut_seq[0]
        desc = _ints(item.LUTDescriptor, little_endian, signed)
        values = kernels.lut_apply(arr, _lut(item, "LUTData", desc, little_endian), desc[1])
        slope, intercept = 1.0, 0.0
    if window is None:
        center = _first(header.get("WindowCenter"))
        width = _first(header.get("WindowWidth"))
        if center is not None and width is not None and width > 0:
            function = str(header.get("VOILUTFunction", "LINEAR") or "LINEAR").strip().upper()
            window = (
                center,
                max(width, 1.0) if function == "LINEAR" else width,
                function if function in WINDOW_FUNCTIONS else "LINEAR",
            )
    if window is None:
        voi_seq = header.get("VOILUTSequence")
        if voi_seq:
            item = voi_seq[0]
            desc = _ints(item.LUTDescriptor, little_endian, signed)
            lut = _lut(item, "LUTData", desc, little_endian)
            # Scale by the LUT's declared output range (PS3.3 C.11.2.1.1), not its actual values.
            top = float((1 << desc[2]) - 1) if desc[2] else float(lut.max())
            return kernels.lut_to_u8(values, lut, desc[1], (0.0, top), slope, intercept)
        lo, hi = kernels.minmax(values)
        lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
        # Maps lo to 0 and hi to 255 through the LINEAR function.
        window = ((lo + hi) / 2 + 0.5, hi - lo + 1, "LINEAR")
    center, width, function = window
    if function == "SIGMOID":
        return kernels.window_sigmoid_to_u8(values, center, width, slope, intercept)
    if function == "LINEAR_EXACT":
        # LINEAR_EXACT (c, w) is LINEAR (c + 0.5, w + 1): same end points, same slope.
        center, width = center + 0.5, width + 1
    return kernels.window_to_u8(values, center, width, slope, intercept)


def _palette(arr: np.ndarray, header: Dataset, *, little_endian: bool) -> np.ndarray:
    if "SegmentedRedPaletteColorLookupTableData" in header or arr.ndim != 2:
        # Segmented palettes are rare; pydicom expands them (and the lookup is one numpy take).
        rgb = apply_color_lut(arr, header)
        return (rgb >> 8).astype(np.uint8) if rgb.dtype != np.uint8 else rgb
    luts = []
    desc: list[int] = []
    for colour in ("Red", "Green", "Blue"):
        desc = _ints(header[f"{colour}PaletteColorLookupTableDescriptor"].value, little_endian)
        luts.append(_lut(header, f"{colour}PaletteColorLookupTableData", desc, little_endian))
    return kernels.palette_to_rgb(arr, *luts, first_mapped=desc[1], entry_bits=desc[2] or 16)


def _colour(arr: np.ndarray, photometric: str, bits_stored: int) -> np.ndarray:
    if arr.dtype != np.uint8:
        # Linear scaling of the stored range to 8 bits, through the window kernel.
        full = float(1 << bits_stored)
        arr = kernels.window_to_u8(arr, full / 2, full)
    if photometric in ("YBR_FULL", "YBR_FULL_422"):
        return kernels.ybr_full_to_rgb(arr)
    if photometric not in ("RGB", "YBR_RCT", "YBR_ICT"):
        raise NotAcceptableError(f"photometric interpretation {photometric} cannot be rendered")
    return np.ascontiguousarray(arr[..., :3], dtype=np.uint8)


# -- geometry and encoding -------------------------------------------------------------------------
def fit_size(rows: int, cols: int, viewport: tuple[int, int]) -> tuple[int, int]:
    """(rows, cols) of the largest image with this aspect ratio inside viewport = (vw, vh)."""
    vw, vh = viewport
    scale = min(vw / cols, vh / rows)
    return max(1, round(rows * scale)), max(1, round(cols * scale))


def fit_viewport(image: np.ndarray, viewport: tuple[int, int]) -> np.ndarray:
    rows, cols = image.shape[:2]
    orows, ocols = fit_size(rows, cols, viewport)
    if (orows, ocols) == (rows, cols):
        return image
    if orows <= rows and ocols <= cols:
        if image.ndim == 2:
            return kernels.downsample_u8(image, orows, ocols)
        return kernels.downsample_rgb_u8(image, orows, ocols)
    # Upscaling (a viewport larger than the image) interpolates; Pillow's C resize does it.
    mode = "L" if image.ndim == 2 else "RGB"
    return np.asarray(Image.fromarray(image, mode).resize((ocols, orows), Image.Resampling.BILINEAR))


def encode(image: np.ndarray, media_type: str, quality: int | None = None) -> bytes:
    """An 8-bit greyscale or RGB array as JPEG or PNG bytes."""
    mode = "L" if image.ndim == 2 else "RGB"
    pil = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8), mode)
    out = io.BytesIO()
    if media_type == "image/jpeg":
        pil.save(out, format="JPEG", quality=quality or DEFAULT_QUALITY)
    else:
        # Level 1: PNG for the viewer is about latency; the deflate level barely changes size here.
        pil.save(out, format="PNG", compress_level=1)
    return out.getvalue()
