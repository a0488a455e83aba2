"""A readers-writer lock: many concurrent stores, one exclusive delete.

Why: a store that finds its blob already present must not race a delete that drops the last
reference to that blob, or the index would point at bytes that are gone.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager


class ReadWriteLock:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0
        self._shared = _Shared(self)

    def shared(self) -> _Shared:
        """`with lock.shared():` many holders at once, none while an exclusive holder or waiter is
        there. One context manager object for every use (it keeps no state of its own): every
        store takes this lock, and a generator-based one cost a generator and its wrapper each."""
        return self._shared

    def _acquire_shared(self) -> None:
        with self._cond:
            # Writers first: a stream of stores must not starve a delete forever.
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1

    def _release_shared(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


class _Shared:
    __slots__ = ("_lock",)

    def __init__(self, lock: ReadWriteLock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        self._lock._acquire_shared()  # noqa: SLF001 - the lock's own helper

    def __exit__(self, *exc: object) -> None:
        self._lock._release_shared()  # noqa: SLF001
