"""Read-ahead for retrieves: objects read (decoded and hash-verified natively, off the GIL) ahead
of the one being sent, so the read of the next overlaps the send of this one on the other core.
A C-GET of 100 CT slices went from ~140 to ~155 MB/s with it (measured); DIMSE retrieves and
WADO-RS study retrieves share it. Four ahead rather than two: with the native C-GET the decode,
not the send, paces a retrieve (300-slice CT, getscu: ~560-630 -> ~610-730 MB/s over three
interleaved runs each).

One reader per retrieve, loading its objects in order, rather than a shared pool of two taking
them one by one: on 2 cores, two threads reading for one retrieve made three threads busy on two
cores, and their hand-offs cost more than the overlap gained (300-slice CT, getscu, interleaved
runs, bench/retrieve_cpu.py: with a pool of one, server CPU per retrieve 0.265 -> 0.230 s and
wall 0.257 -> 0.216 s; this design 0.230 s against that pool's 0.225 in a later run). The reader
is a task of a pool with a thread for every retrieve that may run at once, not a thread of its
own: a thread started per retrieve cost 8-25% more server CPU (perf: its fresh allocations
zero-filled and faulted in), and a pool of one or two would let a load that waits (a C-MOVE's
objects wait for the destination's answer to choose their context) hold up the other
retrieves."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from queue import SimpleQueue
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")

READ_AHEAD = 4
# Retrieves reading at once before one waits for another to end: the pool starts a thread only
# when none is idle, so a server that retrieves one study at a time keeps reusing one.
READERS = 128  # [dimse] max_associations by default
_readers = ThreadPoolExecutor(max_workers=READERS, thread_name_prefix="dv-read-ahead")


def read_ahead(load: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, Future[R]]]:
    """(item, future of load(item)) in order, at most READ_AHEAD + 1 loads done or running ahead
    of the consumer; loads not started when the consumer stops (a cancel, a client that went
    away) are not run."""
    todo = list(items)
    if not todo:
        return
    futures: list[Future[R]] = [Future() for _ in todo]
    # tokens of room ahead; SimpleQueue, not Semaphore: its wait and wake-up are C, not Python
    room: SimpleQueue[None] = SimpleQueue()
    for _ in range(READ_AHEAD + 1):
        room.put(None)
    stop = threading.Event()

    def reader() -> None:
        for item, fut in zip(todo, futures, strict=True):
            room.get()
            if stop.is_set() or not fut.set_running_or_notify_cancel():
                return
            try:
                fut.set_result(load(item))
            except BaseException as exc:  # noqa: BLE001 - handed to the consumer
                fut.set_exception(exc)

    _readers.submit(reader)
    try:
        for item, fut in zip(todo, futures, strict=True):
            yield item, fut
            room.put(None)
    finally:
        stop.set()
        for fut in futures:
            fut.cancel()  # those not started
        room.put(None)  # a reader waiting for room sees the stop
