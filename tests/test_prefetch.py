"""utils.prefetch: same items in the same order, errors at the same item, the next item made while this one is used."""
from __future__ import annotations

import threading

import pytest

from utils.prefetch import prefetch, prefetch_map


def test_same_items_same_order():
    assert list(prefetch(iter(range(100)))) == list(range(100))
    assert list(prefetch([])) == []


def test_error_raised_at_the_same_item():
    def gen():
        yield 1
        yield 2
        raise ValueError("bad mask")

    got = []
    with pytest.raises(ValueError, match="bad mask"):
        for x in prefetch(gen()):
            got.append(x)
    assert got == [1, 2]


def test_next_item_is_prepared_in_another_thread_while_the_current_is_consumed():
    produced = []
    ready = threading.Event()
    main = threading.get_ident()

    def gen():
        for i in range(3):
            produced.append((i, threading.get_ident()))
            if i == 1:
                ready.set()
            yield i

    for x in prefetch(gen()):
        if x == 0:  # while item 0 is being used, item 1 gets made
            assert ready.wait(5.0)
    assert [i for i, _ in produced] == [0, 1, 2]
    assert all(tid != main for _, tid in produced)


def test_early_stop_closes_the_source():
    closed = []

    def gen():
        try:
            for i in range(10):
                yield i
        finally:
            closed.append(True)

    it = prefetch(gen())
    assert next(it) == 0
    it.close()
    assert closed == [True]


# ----- prefetch_map: ordered, several items at once --------------------------------------------------------
def test_map_same_results_same_order():
    import time

    def slow_square(i):  # later items finish first: the order must still be the items'
        time.sleep(0.002 * (10 - i % 10))
        return i * i

    assert list(prefetch_map(slow_square, range(30), workers=3)) == [i * i for i in range(30)]
    assert list(prefetch_map(slow_square, [], workers=2)) == []


def test_map_runs_two_items_at_once():
    both = threading.Barrier(2, timeout=5.0)   # broken (an error) unless two calls wait on it together

    def fn(i):
        if i < 2:
            both.wait()
        return i

    assert list(prefetch_map(fn, range(4), workers=2)) == [0, 1, 2, 3]


def test_map_error_raised_at_the_same_item():
    def fn(i):
        if i == 3:
            raise ValueError("bad mask 3")
        return i

    got = []
    with pytest.raises(ValueError, match="bad mask 3"):
        for x in prefetch_map(fn, range(10), workers=2):
            got.append(x)
    assert got == [0, 1, 2]


def test_map_early_stop_starts_no_more_calls():
    called = []

    def fn(i):
        called.append(i)
        return i

    for x in prefetch_map(fn, range(100), workers=2):
        if x == 1:
            break
    assert max(called) <= 1 + 2, called   # at most `workers` + 1 ahead of the consumer
