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
wall 0.257 -> 0.216 s; this design 0.230 s against that pool's 0.225 in a later run). A pool of
one or two would also let a load that waits (a C-MOVE's objects wait for the destination's
answer to choose their context) hold up the other retrieves: each has its own reader thread.

Except where one core of decode is the limit: an object read from an object-store tier in the
dense cold codec (~300 MB/s per core, against ~1,600 for the hot one) calls `decode_bound()`
from its load, and that retrieve gets a second reader, both taking its objects in order (the
consumer still gets them in order). Measured: see bench/RESULTS.md, "Cold retrieve on two readers"."""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future
from queue import SimpleQueue
from typing import TypeVar

log = logging.getLogger(__name__)

T = TypeVar("T")
R = TypeVar("R")

READ_AHEAD = 4
# Readers of a retrieve whose loads are decode-bound (2 cores measured; more untested).
DECODE_BOUND_READERS = 2

# The running reader's `widen` (a thread-local: reader threads serve one retrieve after another).
_current = threading.local()


def decode_bound() -> None:
    """Called by a load that decodes more than one core keeps up with: the read-ahead running
    it (if any) adds readers, up to DECODE_BOUND_READERS. Cheap to call for every object."""
    widen = getattr(_current, "widen", None)
    if widen is not None:
        widen()


class _Readers:
    """Threads that run the readers, each kept for a later retrieve once its reader is done, one
    more started when none is idle. Daemon threads: a reader whose consumer never closed its
    read-ahead waits for ever, and must not hold up the interpreter's exit."""

    def __init__(self) -> None:
        self._tasks: SimpleQueue[Callable[[], None]] = SimpleQueue()
        self._lock = threading.Lock()
        self._idle = 0

    def submit(self, task: Callable[[], None]) -> None:
        with self._lock:
            spawn = self._idle == 0
            if not spawn:
                self._idle -= 1  # that thread takes this task (or another, as long as one per task)
        self._tasks.put(task)
        if spawn:
            threading.Thread(target=self._run, name="dv-read-ahead", daemon=True).start()

    def _run(self) -> None:
        while True:
            task = self._tasks.get()
            try:
                task()
            except Exception:  # noqa: BLE001 - the thread stays: submit counted on it being idle
                log.exception("read-ahead reader failed")
            del task
            with self._lock:
                self._idle += 1


_readers = _Readers()


def _fulfil(fut: Future[R], work: Callable[[], R]) -> None:
    """Runs `work` into `fut` unless it was cancelled; what it raises is handed to the consumer."""
    if fut.set_running_or_notify_cancel():
        try:
            fut.set_result(work())
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer
            fut.set_exception(exc)


def in_background(work: Callable[[], R]) -> Future[R]:
    """`work()` on a reader thread (one kept from an earlier retrieve if one is idle): its
    future. For a single step the caller wants done while it waits on something else."""
    fut: Future[R] = Future()
    _readers.submit(lambda: _fulfil(fut, work))
    return fut


def read_ahead(load: Callable[[T], R], items: Iterable[T]) -> Iterator[tuple[T, Future[R]]]:
    """(item, future of load(item)) in order, at most READ_AHEAD + 1 loads done or running ahead
    of the consumer; loads not started when the consumer stops (a cancel, a client that went
    away) are not run. Only the consumer holds a result once it is loaded: decoded objects go
    back to their buffer pool (rust/src/decoded.rs) as soon as they are sent."""
    todo = iter(items)
    # (item, future) to load, in order; None: stop (each reader puts it back for the others).
    # SimpleQueue: its wait and wake-up are C.
    jobs: SimpleQueue[tuple[T, Future[R]] | None] = SimpleQueue()
    pending: deque[tuple[T, Future[R]]] = deque()
    readers = [1]
    lock = threading.Lock()

    def widen() -> None:
        if readers[0] >= DECODE_BOUND_READERS:  # read without the lock: the usual case, every object
            return
        with lock:
            more = readers[0] < DECODE_BOUND_READERS
            readers[0] += more
        if more:
            _readers.submit(reader)

    def reader() -> None:
        _current.widen = widen
        try:
            while (job := jobs.get()) is not None:
                item, fut = job
                del job
                _fulfil(fut, lambda: load(item))  # noqa: B023 - called before item changes
                del item, fut
            jobs.put(None)
        finally:
            _current.widen = None

    started = False
    try:
        while True:
            while len(pending) <= READ_AHEAD:
                try:
                    pair: tuple[T, Future[R]] = (next(todo), Future())
                except StopIteration:
                    break
                pending.append(pair)
                jobs.put(pair)
                del pair
            if not pending:
                return
            if not started:
                _readers.submit(reader)
                started = True
            yield pending.popleft()
    finally:
        for _, fut in pending:
            fut.cancel()  # those not started
        pending.clear()
        jobs.put(None)
