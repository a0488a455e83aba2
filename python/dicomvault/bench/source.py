"""Feeds the ingest phase with synthetic objects without letting generation dominate it.

Two modes. `pregenerated`: a --size run that fits in memory is generated completely before the
clock starts (generation costs the measurement nothing). `run_ahead`: a producer thread builds
batches into a bounded queue ahead of the consumers (duration runs, large sizes); its busy time
and the consumers' time spent waiting on it are reported, so a generator-bound run is visible.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator

from .workloads import StudyInfo, SynthObject, Workload

BATCH_OBJECTS = 8
BATCH_BYTES = 16 << 20  # one store_buffers call: big enough to share fsyncs, small for latency


def _batches(objects: Iterator[SynthObject], budget: int | None) -> Iterator[list[SynthObject]]:
    batch: list[SynthObject] = []
    size = total = 0
    for obj in objects:
        if budget is not None and total >= budget:
            break
        if batch and (len(batch) >= BATCH_OBJECTS or size + len(obj.data) > BATCH_BYTES):
            yield batch
            batch, size = [], 0
        batch.append(obj)
        size += len(obj.data)
        total += len(obj.data)
    if batch:
        yield batch


class ObjectSource:
    def __init__(self, workload: Workload, budget_bytes: int | None, pregenerate: bool) -> None:
        self.catalog: list[StudyInfo] = []
        self.mode = "pregenerated" if pregenerate else "run_ahead"
        self.generated_bytes = 0
        self.generated_objects = 0
        self.busy_seconds = 0.0
        self.wait_seconds = 0.0
        self._lock = threading.Lock()
        self._it = _batches(workload.objects(self.catalog), budget_bytes)
        self._stop = threading.Event()
        self._list: list[list[SynthObject]] = []
        self._queue: queue.Queue[list[SynthObject] | None] = queue.Queue(maxsize=8)
        self._thread: threading.Thread | None = None
        if pregenerate:
            for batch in self._timed(self._it):
                self._list.append(batch)
            self._list.reverse()  # pop() from the end = generation order

    def _timed(self, it: Iterator[list[SynthObject]]) -> Iterator[list[SynthObject]]:
        while True:
            t = time.perf_counter()
            batch = next(it, None)
            self.busy_seconds += time.perf_counter() - t
            if batch is None:
                return
            self.generated_objects += len(batch)
            self.generated_bytes += sum(len(o.data) for o in batch)
            yield batch

    def start(self) -> None:
        if self.mode == "run_ahead":
            self._thread = threading.Thread(target=self._produce, name="bench-generator", daemon=True)
            self._thread.start()

    def _produce(self) -> None:
        for batch in self._timed(self._it):
            while not self._stop.is_set():
                try:
                    self._queue.put(batch, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if self._stop.is_set():
                return
        self._queue.put(None)

    def get(self) -> list[SynthObject] | None:
        """The next batch, or None when the budget is spent."""
        if self.mode == "pregenerated":
            with self._lock:
                return self._list.pop() if self._list else None
        t = time.perf_counter()
        batch = self._queue.get()
        with self._lock:
            self.wait_seconds += time.perf_counter() - t
        if batch is None:
            self._queue.put(None)  # let the other consumers see the end too
        return batch

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            while self._thread.is_alive():
                try:  # unblock a producer waiting on a full queue
                    self._queue.get_nowait()
                except queue.Empty:
                    time.sleep(0.01)
            self._thread.join()
