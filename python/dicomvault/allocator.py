"""glibc malloc settings for a long-running server that allocates and frees many 0.1-10 MB
buffers per second (decoded objects on their way out, received data sets on their way in).

With glibc's defaults every such buffer grows and shrinks the heap (brk/mprotect, madvise on
free, mmap above the dynamic threshold), and those calls serialise the threads on the process's
memory map: two threads reading objects natively ran no faster than one (1.0 GB/s). Keeping
64 MiB of padding and trimming only past 256 MiB gave 1.35-1.44 GB/s on the same 2 cores
(measured with bench/dicomweb_compare.py's study and a 2-thread read loop). The memory is
reused, not leaked: the heap just stops shrinking for every object.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging

log = logging.getLogger("dicomvault")

# mallopt parameters (malloc.h)
M_TRIM_THRESHOLD = -1
M_TOP_PAD = -2
M_MMAP_THRESHOLD = -3

SETTINGS = ((M_TOP_PAD, 64 << 20), (M_TRIM_THRESHOLD, 256 << 20), (M_MMAP_THRESHOLD, 32 << 20))


def tune_allocator() -> bool:
    """Applies SETTINGS through glibc's mallopt; False (and nothing changed) on another libc."""
    name = ctypes.util.find_library("c")
    if not name:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False  # musl and others: no mallopt, their own allocator policy applies
    mallopt.argtypes = (ctypes.c_int, ctypes.c_int)
    ok = all(mallopt(param, value) == 1 for param, value in SETTINGS)
    if not ok:
        log.warning("mallopt refused the allocator settings; running with the libc defaults")
    return ok
