"""Read ahead: produce the next item of an iterator in a background thread while the caller works on this one.

Used to decode and resize the next view's mask while the rasterizer votes the current view (native ops and
image decoders release the GIL, so the two overlap on two cores). Same items, same order; an exception raised
by the iterator is raised by the consumer at the same item.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")
_END = object()


def prefetch(items: Iterable[T]) -> Iterator[T]:
    """Yield the items of ``items``, computing item i+1 in one worker thread while item i is consumed.

    The source iterator only ever runs in the worker, one step at a time; when the consumer stops early the
    step in flight finishes and the source is closed (generators run their ``finally``)."""
    it = iter(items)
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch")
    try:
        ahead = pool.submit(next, it, _END)
        while True:
            item = ahead.result()
            if item is _END:
                return
            ahead = pool.submit(next, it, _END)
            yield item
    finally:
        pool.shutdown(wait=True)
        close = getattr(it, "close", None)
        if close is not None:
            close()


def prefetch_map(fn: Callable[[T], R], items: Iterable[T], workers: int = 2) -> Iterator[R]:
    """Yield ``fn(item)`` for each item, in order, computed ``workers`` items ahead in a thread pool.

    For per-view work that is single-threaded but releases the GIL for most of its time (superpixels, PNG
    decoding): on two cores two views are prepared at once while the caller votes. At most ``workers`` + 1
    results are held; an exception of ``fn`` is raised by the consumer at its item; when the consumer stops
    early, the calls not yet started are cancelled and the running ones finish."""
    it = iter(items)
    pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="prefetch")
    pending: deque = deque()
    try:
        for x in it:
            pending.append(pool.submit(fn, x))
            if len(pending) > workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()
        pool.shutdown(wait=True)
