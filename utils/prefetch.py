"""Read ahead: produce the next item of an iterator in a background thread while the caller works on this one.

Used to decode and resize the next view's mask while the rasterizer votes the current view (native ops and
image decoders release the GIL, so the two overlap on two cores). Same items, same order; an exception raised
by the iterator is raised by the consumer at the same item.
"""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from typing import Iterable, Iterator, TypeVar

T = TypeVar("T")
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
