"""utils.prefetch: same items in the same order, errors at the same item, the next item made while this one is used."""
from __future__ import annotations

import threading

import pytest

from utils.prefetch import prefetch


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
