"""Store requests kept in flight while the driver works: a paper-sized `preprocess` publish reads 16M run-cache
parts and uploads 530k shards from one process, and one request at a time (20-50 ms each on S3) would take days."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")


def read_ahead(
    items: Iterable[T], read: Callable[[T], R], ahead: int, budget: float, weight: Callable[[T], float]
) -> Iterator[tuple[T, R]]:
    """`(item, read(item))` in the order of `items`, reads running in threads ahead of the consumer: at most
    `ahead` of them, and none more once what is read but not consumed weighs `budget` (an item's `weight`: its
    bytes) or more. A read's exception is raised when its turn comes."""
    pool = ThreadPoolExecutor(max_workers=ahead, thread_name_prefix="vlkd-read-ahead")
    source = iter(items)
    pending: deque[tuple[T, Future[R], float]] = deque()
    held = 0.0

    def fill() -> None:
        nonlocal held
        while len(pending) < ahead and (not pending or held < budget):
            item = next(source, _END)
            if item is _END:
                return
            pending.append((item, pool.submit(read, item), weight(item)))
            held += pending[-1][2]

    try:
        fill()
        while pending:
            item, future, weighs = pending.popleft()
            result = future.result()
            held -= weighs
            fill()
            yield item, result
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_END = object()


class BackgroundCalls:
    """Calls run in `threads` threads, with at most `limit` submitted and not yet done: `submit` waits for the
    oldest beyond that. The first failure is raised by the next `submit` or by `close`."""

    def __init__(self, threads: int, limit: int) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="vlkd-background")
        self._limit = limit
        self._pending: deque[Future[None]] = deque()

    def submit(self, call: Callable[[], None]) -> None:
        while self._pending and (len(self._pending) >= self._limit or self._pending[0].done()):
            self._pending.popleft().result()
        self._pending.append(self._pool.submit(call))

    def close(self) -> None:
        """Every call submitted done (the first failure raised), and the threads ended."""
        try:
            while self._pending:
                self._pending.popleft().result()
        finally:
            self.stop()

    def stop(self) -> None:
        """Wait for the calls running and drop those not started: after a failure, nothing more goes out."""
        self._pool.shutdown(wait=True, cancel_futures=True)
