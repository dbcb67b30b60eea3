"""Work on a thread pool, results in the input's order, memory bounded by a window."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    func: Callable[[T], R], items: Iterable[T], jobs: int, *, name: str = "labkeep"
) -> Iterator[R]:
    """``map(func, items)`` on *jobs* threads: at most ``4 * jobs`` items taken from
    *items* and not yet yielded (a stream of 10^7 stays flat). An exception from *func*
    is raised where its result would have been yielded; what was queued behind it is
    cancelled, and what is running finishes before the exception leaves."""
    if jobs <= 1:
        yield from map(func, items)
        return
    pool = ThreadPoolExecutor(max_workers=jobs, thread_name_prefix=name)
    window: deque[Future[R]] = deque()
    try:
        for item in items:
            window.append(pool.submit(func, item))
            if len(window) >= 4 * jobs:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
