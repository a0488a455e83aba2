# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False
"""Pixel kernels for the viewer and rendered WADO: rescale and window/level to 8 bit.

Every loop runs without the GIL so several renders proceed in parallel. The window function is the
DICOM linear one (PS3.3 C.11.2.1.2.1), so images look the same as in any conformant viewer.
"""

cimport cython
from libc.math cimport floor

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
