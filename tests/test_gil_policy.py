"""The extension's GIL policy (rust/src/gil.rs): native work on large buffers lets other Python
threads run while it goes on."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from dicomvault import _native


def longest_stall(call: Callable[[], object]) -> tuple[float, float]:
    """(longest time a pure-Python thread made no progress while `call` ran, call's duration)."""
    stop = threading.Event()
    stamps: list[float] = []

    def spin() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            if n % 200 == 0:
                stamps.append(time.perf_counter())

    t = threading.Thread(target=spin)
    t.start()
    time.sleep(0.02)
    t0 = time.perf_counter()
    call()
    t1 = time.perf_counter()
    stop.set()
    t.join()
    inside = [t0, *(s for s in stamps if t0 <= s <= t1), t1]
    return max(b - a for a, b in zip(inside, inside[1:], strict=False)), t1 - t0


def held_for_comparison(data: bytes) -> None:
    data.count(b"\x01")  # a C call that keeps the GIL for its whole length


def test_hashing_a_large_buffer_lets_other_threads_run() -> None:
    data = bytes(256 << 20)
    held, held_for = longest_stall(lambda: held_for_comparison(data))
    # The probe itself: a call that keeps the GIL stalls the other thread for most of its length.
    assert held > 0.5 * held_for, (held, held_for)
    stall, took = longest_stall(lambda: _native.blake3(data))
    assert stall < 0.5 * took, f"other threads stalled {stall * 1e3:.0f} of {took * 1e3:.0f} ms: GIL held?"
