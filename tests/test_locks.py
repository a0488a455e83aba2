"""The engine's readers-writer lock (locks.py): stores share it, a delete holds it alone, a waiting
delete keeps new stores out, and a store that fails lets go."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest

from dicomvault.locks import ReadWriteLock


def _holding(cm: Callable[[], object], release: threading.Event) -> tuple[threading.Thread, threading.Event]:
    """A thread that enters `cm()` and stays inside until `release`; the event says it got in."""
    inside = threading.Event()

    def run() -> None:
        with cm():  # type: ignore[attr-defined]
            inside.set()
            release.wait(10)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, inside


def test_stores_share_it_and_a_delete_waits_for_them() -> None:
    lock = ReadWriteLock()
    release = threading.Event()
    a, a_in = _holding(lock.shared, release)
    b, b_in = _holding(lock.shared, release)
    assert a_in.wait(5) and b_in.wait(5)  # both inside at once
    d, d_in = _holding(lock.exclusive, threading.Event())
    assert not d_in.wait(0.2)
    release.set()
    a.join(5)
    b.join(5)
    assert d_in.wait(5)


def test_a_waiting_delete_keeps_new_stores_out() -> None:
    lock = ReadWriteLock()
    release_store, release_delete = threading.Event(), threading.Event()
    s, s_in = _holding(lock.shared, release_store)
    assert s_in.wait(5)
    d, d_in = _holding(lock.exclusive, release_delete)
    late, late_in = None, None
    for _ in range(100):  # until the delete is waiting
        if lock._writers_waiting:  # noqa: SLF001
            late, late_in = _holding(lock.shared, threading.Event())
            break
        threading.Event().wait(0.01)
    assert late_in is not None and not late_in.wait(0.2)
    release_store.set()
    assert d_in.wait(5) and not late_in.wait(0.1)
    release_delete.set()
    assert late_in.wait(5)


def test_a_failing_store_lets_go() -> None:
    lock = ReadWriteLock()
    for _ in range(2):
        with pytest.raises(RuntimeError), lock.shared():
            raise RuntimeError("store failed")
    d, d_in = _holding(lock.exclusive, threading.Event())
    assert d_in.wait(5)
