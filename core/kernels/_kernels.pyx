# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Pixel kernels for the viewer and rendered WADO: rescale and window/level to 8 bit.

Every loop runs without the GIL so several renders proceed in parallel. The window function is the
DICOM linear one (PS3.3 C.11.2.1.2.1), so images look the same as in any conformant viewer.
"""

cimport cython
from libc.math cimport exp, floor

ctypedef fused pixel_t:
    unsigned char
    signed char
    unsigned short
    short
    unsigned int
    int
    float
    double


def rescale(const pixel_t[::1] src, float[::1] out, double slope, double intercept):
    """out[i] = src[i] * slope + intercept (Modality LUT, PS3.3 C.11.1)."""
    cdef Py_ssize_t i, n = src.shape[0]
    if out.shape[0] != n:
        raise ValueError(f"output has {out.shape[0]} elements, input {n}")
    with nogil:
        for i in range(n):
            out[i] = <float>(src[i] * slope + intercept)


def window_to_u8(const pixel_t[::1] src, unsigned char[::1] out, double slope, double intercept,
                 double center, double width):
    """Rescale, then the DICOM LINEAR VOI function, to 0..255 in one pass.

    PS3.3 C.11.2.1.2.1: with c = center, w = width (w >= 1),
    x <= c - 0.5 - (w-1)/2 -> 0; x > c - 0.5 + (w-1)/2 -> 255;
    else ((x - (c - 0.5)) / (w - 1) + 0.5) * 255.
    """
    cdef Py_ssize_t i, n = src.shape[0]
    cdef double x, lo, hi, scale, y
    if out.shape[0] != n:
        raise ValueError(f"output has {out.shape[0]} elements, input {n}")
    if width < 1:
        raise ValueError(f"window width must be >= 1, got {width}")
    lo = center - 0.5 - (width - 1) / 2
    hi = center - 0.5 + (width - 1) / 2
    scale = 255.0 / (width - 1) if width > 1 else 0.0
    with nogil:
        for i in range(n):
            x = src[i] * slope + intercept
            if x <= lo:
                out[i] = 0
            elif x > hi:
                out[i] = 255
            else:
                y = ((x - (center - 0.5)) / (width - 1) + 0.5) * 255.0 if width > 1 else 255.0
                out[i] = <unsigned char>floor(y + 0.5) if y < 254.5 else 255


def minmax(const pixel_t[::1] src):
    """(min, max) of the samples: the default window when the object has none."""
    cdef Py_ssize_t i, n = src.shape[0]
    cdef double lo, hi, v
    if n == 0:
        raise ValueError("empty pixel array")
    lo = hi = src[0]
    with nogil:
        for i in range(1, n):
            v = src[i]
            if v < lo:
                lo = v
            elif v > hi:
                hi = v
    return lo, hi


def downsample_u8(const unsigned char[:, ::1] src, unsigned char[:, ::1] out):
    """Box-filter an 8-bit image down to out's shape (thumbnails): each output pixel is the mean of
    the source pixels whose centres fall in it."""
    cdef Py_ssize_t rows = src.shape[0], cols = src.shape[1]
    cdef Py_ssize_t orows = out.shape[0], ocols = out.shape[1]
    cdef Py_ssize_t r, c, y0, y1, x0, x1, y, x
    cdef unsigned long acc, cnt
    if orows < 1 or ocols < 1 or orows > rows or ocols > cols:
        raise ValueError(f"cannot downsample {rows}x{cols} to {orows}x{ocols}")
    with nogil:
        for r in range(orows):
            y0 = r * rows // orows
            y1 = (r + 1) * rows // orows
            for c in range(ocols):
                x0 = c * cols // ocols
                x1 = (c + 1) * cols // ocols
                acc = 0
                cnt = 0
                for y in range(y0, y1):
                    for x in range(x0, x1):
                        acc += src[y, x]
                        cnt += 1
                out[r, c] = <unsigned char>((acc + cnt // 2) // cnt)


def window_sigmoid_to_u8(const pixel_t[::1] src, unsigned char[::1] out, double slope, double intercept,
                         double center, double width):
    """Rescale, then the DICOM SIGMOID VOI function, to 0..255 in one pass.

    PS3.3 C.11.2.1.3.1: y = 255 / (1 + exp(-4 (x - c) / w)), w > 0.
    """
    cdef Py_ssize_t i, n = src.shape[0]
    cdef double x, y
    if out.shape[0] != n:
        raise ValueError(f"output has {out.shape[0]} elements, input {n}")
    if width <= 0:
        raise ValueError(f"sigmoid window width must be > 0, got {width}")
    with nogil:
        for i in range(n):
            x = src[i] * slope + intercept
            y = 255.0 / (1.0 + exp(-4.0 * (x - center) / width))
            out[i] = <unsigned char>floor(y + 0.5) if y < 254.5 else 255


cdef inline Py_ssize_t _lut_index(double v, Py_ssize_t m) noexcept nogil:
    """The LUT entry of a value already shifted by the first mapped value: clamped to 0..m-1."""
    cdef double x = floor(v)
    if x <= 0:
        return 0
    if x >= m - 1:
        return m - 1
    return <Py_ssize_t>x


def lut_apply(const pixel_t[::1] src, float[::1] out, const unsigned short[::1] lut, double first_mapped,
              double slope, double intercept):
    """out[i] = lut[clamp(src[i] * slope + intercept - first_mapped)] (PS3.3 C.11.1 / C.11.2.1.1:
    inputs below the first mapped value take the first entry, above the range the last)."""
    cdef Py_ssize_t i, n = src.shape[0], m = lut.shape[0]
    cdef Py_ssize_t k
    if out.shape[0] != n:
        raise ValueError(f"output has {out.shape[0]} elements, input {n}")
    if m == 0:
        raise ValueError("empty LUT")
    with nogil:
        for i in range(n):
            k = _lut_index(src[i] * slope + intercept - first_mapped, m)
            out[i] = lut[k]


def lut_to_u8(const pixel_t[::1] src, unsigned char[::1] out, const unsigned short[::1] lut,
              double first_mapped, double slope, double intercept, double lo, double hi):
    """A VOI LUT (PS3.3 C.11.2.1.1) then its output range lo..hi scaled to 0..255, in one pass."""
    cdef Py_ssize_t i, n = src.shape[0], m = lut.shape[0]
    cdef double y, scale
    cdef Py_ssize_t k
    if out.shape[0] != n:
        raise ValueError(f"output has {out.shape[0]} elements, input {n}")
    if m == 0:
        raise ValueError("empty LUT")
    if hi <= lo:
        raise ValueError(f"LUT output range {lo}..{hi} is empty")
    scale = 255.0 / (hi - lo)
    with nogil:
        for i in range(n):
            k = _lut_index(src[i] * slope + intercept - first_mapped, m)
            y = (lut[k] - lo) * scale
            if y <= 0:
                out[i] = 0
            elif y >= 254.5:
                out[i] = 255
            else:
                out[i] = <unsigned char>floor(y + 0.5)


def palette_to_rgb(const pixel_t[::1] src, unsigned char[:, ::1] out, const unsigned short[::1] red,
                   const unsigned short[::1] green, const unsigned short[::1] blue, double first_mapped,
                   int shift):
    """PALETTE COLOR (PS3.3 C.7.6.3.1.5): each index through the three LUTs, each entry >> shift to
    8 bits (shift 8 for 16-bit LUT entries, 0 for 8-bit ones). Out-of-range indices clamp."""
    cdef Py_ssize_t i, n = src.shape[0], m = red.shape[0]
    cdef double x
    cdef Py_ssize_t k
    if out.shape[0] != n or out.shape[1] != 3:
        raise ValueError(f"output must be ({n}, 3), got ({out.shape[0]}, {out.shape[1]})")
    if m == 0 or green.shape[0] != m or blue.shape[0] != m:
        raise ValueError("palette LUTs must be non-empty and of one length")
    if shift < 0 or shift > 8:
        raise ValueError(f"shift must be 0..8, got {shift}")
    with nogil:
        for i in range(n):
            x = src[i] - first_mapped
            if x <= 0:
                k = 0
            elif x >= m - 1:
                k = m - 1
            else:
                k = <Py_ssize_t>x
            out[i, 0] = <unsigned char>(red[k] >> shift)
            out[i, 1] = <unsigned char>(green[k] >> shift)
            out[i, 2] = <unsigned char>(blue[k] >> shift)


cdef inline unsigned char _clip_u8(double v) noexcept nogil:
    if v <= 0:
        return 0
    if v >= 255:
        return 255
    return <unsigned char>floor(v + 0.5)


def ybr_full_to_rgb(const unsigned char[:, ::1] src, unsigned char[:, ::1] out):
    """YBR_FULL (and decoded YBR_FULL_422) to RGB, PS3.3 C.7.6.3.1.2 (ITU-R BT.601 full range)."""
    cdef Py_ssize_t i, n = src.shape[0]
    cdef double y, cb, cr
    if src.shape[1] != 3 or out.shape[0] != n or out.shape[1] != 3:
        raise ValueError("ybr_full_to_rgb takes and gives (n, 3) arrays of one length")
    with nogil:
        for i in range(n):
            y = src[i, 0]
            cb = src[i, 1] - 128.0
            cr = src[i, 2] - 128.0
            out[i, 0] = _clip_u8(y + 1.402 * cr)
            out[i, 1] = _clip_u8(y - 0.344136 * cb - 0.714136 * cr)
            out[i, 2] = _clip_u8(y + 1.772 * cb)


def invert_u8(unsigned char[::1] buf):
    """255 - v in place (MONOCHROME1: minimum value is white)."""
    cdef Py_ssize_t i, n = buf.shape[0]
    with nogil:
        for i in range(n):
            buf[i] = 255 - buf[i]


def downsample_rgb_u8(const unsigned char[:, :, ::1] src, unsigned char[:, :, ::1] out):
    """downsample_u8 for interleaved colour (rows, cols, channels)."""
    cdef Py_ssize_t rows = src.shape[0], cols = src.shape[1], ch = src.shape[2]
    cdef Py_ssize_t orows = out.shape[0], ocols = out.shape[1]
    cdef Py_ssize_t r, c, y0, y1, x0, x1, y, x, k
    cdef unsigned long acc, cnt
    if orows < 1 or ocols < 1 or orows > rows or ocols > cols or out.shape[2] != ch:
        raise ValueError(f"cannot downsample {rows}x{cols}x{ch} to {orows}x{ocols}x{out.shape[2]}")
    with nogil:
        for r in range(orows):
            y0 = r * rows // orows
            y1 = (r + 1) * rows // orows
            for c in range(ocols):
                x0 = c * cols // ocols
                x1 = (c + 1) * cols // ocols
                cnt = (y1 - y0) * (x1 - x0)
                for k in range(ch):
                    acc = 0
                    for y in range(y0, y1):
                        for x in range(x0, x1):
                            acc += src[y, x, k]
                    out[r, c, k] = <unsigned char>((acc + cnt // 2) // cnt)
