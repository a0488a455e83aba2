"""dicomvault.readahead: the order, the bound on loads ahead, errors, stopping early, and one
retrieve's waiting load holding up no other."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest

from dicomvault.readahead import READ_AHEAD, read_ahead


def _results(load: Callable[[int], int], n: int, failing: int) -> list[int]:
    """The results of read_ahead(load, range(n)) in the order they come, checking that item
    `failing` raises its ValueError in its place."""
    got = []
    for i, fut in read_ahead(load, range(n)):
        if i == failing:
            with pytest.raises(ValueError, match=f"item {failing}"):
                fut.result(5)
        else:
            got.append(fut.result(5))
    return got


def test_results_come_in_order_with_errors_in_their_place() -> None:
    def load(i: int) -> int:
        if i == 3:
            raise ValueError("item 3")
        return i * 10

    assert _results(load, 8, 3) == [0, 10, 20, 40, 50, 60, 70]
    assert list(read_ahead(load, [])) == []


def test_loads_stay_a_bounded_distance_ahead_and_stop_with_the_consumer() -> None:
    started: list[int] = []

    def load(i: int) -> int:
        started.append(i)
        return i

    loads = read_ahead(load, range(100))
    first, fut = next(loads)
    assert (first, fut.result(5)) == (0, 0)
    time.sleep(0.2)  # the reader runs ahead as far as it may
    assert len(started) == READ_AHEAD + 1
    for _ in range(3):
        next(loads)[1].result(5)
    time.sleep(0.2)
    assert len(started) == READ_AHEAD + 4
    loads.close()
    time.sleep(0.2)
    assert len(started) <= READ_AHEAD + 5  # nothing loads after the consumer stopped


def test_a_waiting_load_holds_up_no_other_read_ahead() -> None:
    """A C-MOVE's first objects wait for the destination's answer: another retrieve reads on."""
    answered = threading.Event()
    waiting = read_ahead(lambda i: answered.wait(10) and i, range(3))
    _, blocked = next(waiting)
    other = [fut.result(5) for _, fut in read_ahead(lambda i: i + 1, range(50))]
    assert other == list(range(1, 51)) and not blocked.done()
    answered.set()
    assert blocked.result(5) == 0 and [f.result(5) for _, f in waiting] == [1, 2]


def test_a_consumed_result_is_not_held() -> None:
    """Decoded objects return their buffers to a pool when released: the read-ahead must not keep
    the results of a whole study alive until the retrieve ends."""
    import gc
    import weakref

    class Loaded:
        pass

    refs: list[weakref.ref[Loaded]] = []

    def load(i: int) -> Loaded:
        obj = Loaded()
        refs.append(weakref.ref(obj))
        return obj

    loads = read_ahead(load, range(40))
    for _ in range(20):
        _, fut = next(loads)
        fut.result(5)
        del fut
    gc.collect()
    alive = sum(r() is not None for r in refs)
    assert alive <= READ_AHEAD + 2, alive
    loads.close()


def test_reader_threads_are_reused_and_survive_a_failing_task() -> None:
    import logging

    from dicomvault import readahead

    def readers() -> set[threading.Thread]:
        time.sleep(0.1)  # a reader that finished counts itself idle
        return {t for t in threading.enumerate() if t.name == "dv-read-ahead"}

    assert [f.result(5) for _, f in read_ahead(lambda i: i, range(10))] == list(range(10))
    before = readers()
    for _ in range(5):  # one after the other (each reader done and idle first): no new thread
        assert [f.result(5) for _, f in read_ahead(lambda i: i, range(10))] == list(range(10))
        assert readers() == before
    assert before and all(t.daemon for t in before)

    def fail() -> None:
        raise RuntimeError("reader bug")

    logging.getLogger("dicomvault.readahead").disabled = True
    try:
        readahead._readers.submit(fail)
        time.sleep(0.1)  # run and failed
        assert [f.result(5) for _, f in read_ahead(lambda i: i * 2, range(5))] == [0, 2, 4, 6, 8]
    finally:
        logging.getLogger("dicomvault.readahead").disabled = False
    assert readers() == before  # the thread that ran the failing task is still there, idle


def test_a_decode_bound_load_gets_a_second_reader_and_results_stay_in_order() -> None:
    """A load that calls decode_bound() (a cold object) widens its read-ahead to
    DECODE_BOUND_READERS readers running loads at the same time; the consumer still gets every
    result in order, errors in their place. Without the call, one reader: never two at once."""
    from dicomvault.readahead import DECODE_BOUND_READERS, decode_bound

    def run(bound: bool) -> tuple[list[int], int, set[str]]:
        lock = threading.Lock()
        running, most, threads = [0], [0], set()

        def load(i: int) -> int:
            if bound:
                decode_bound()
            with lock:
                running[0] += 1
                most[0] = max(most[0], running[0])
                threads.add(threading.current_thread().name + str(threading.get_ident()))
            time.sleep(0.01 + 0.01 * (i % 3))  # uneven: later loads finish before earlier ones
            with lock:
                running[0] -= 1
            if i == 7:
                raise ValueError("item 7")
            return i * 10

        return _results(load, 30, 7), most[0], threads

    expected = [i * 10 for i in range(30) if i != 7]
    got, most, threads = run(bound=True)
    assert got == expected
    assert most == DECODE_BOUND_READERS == 2 and len(threads) == 2
    got, most, threads = run(bound=False)
    assert got == expected and most == 1 and len(threads) == 1


def test_decode_bound_outside_a_read_ahead_and_after_one_is_a_no_op() -> None:
    """The flag is per reader thread and cleared when its read-ahead ends: a reader thread
    reused by a warm retrieve after a cold one reads alone again."""
    from dicomvault.readahead import decode_bound

    decode_bound()  # not in a reader: nothing happens
    cold = [f.result(5) for _, f in read_ahead(lambda i: (decode_bound(), i)[1], range(20))]
    assert cold == list(range(20))
    time.sleep(0.1)  # both readers idle again
    lock = threading.Lock()
    running, most = [0], [0]

    def load(i: int) -> int:
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.005)
        with lock:
            running[0] -= 1
        return i

    assert [f.result(5) for _, f in read_ahead(load, range(20))] == list(range(20))
    assert most[0] == 1
