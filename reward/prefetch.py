"""Prepare the next batch while the current one runs: a one-worker pipeline for hot loops.

``prefetched(prepare, items)`` yields ``prepare(item)`` for each item, in order, while a background
thread already prepares the next ``depth`` items. In the scorer the preparation is CPU work that releases
the GIL for most of its time (image decoding and resizing, tokenization, tensor conversion), so it runs
beside the model's forward instead of between forwards. An exception in ``prepare`` is raised where its
result would have been yielded; leaving the loop early cancels what was not started.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")
U = TypeVar("U")


def prefetched(prepare: Callable[[T], U], items: Iterable[T], *, depth: int = 1) -> Iterator[U]:
    """``prepare(item)`` for every item, in order, with up to ``depth`` items prepared ahead."""
    if depth < 0:
        raise ValueError(f"depth must be >= 0, got {depth}")
    if depth == 0:
        yield from map(prepare, items)
        return
    source = iter(items)
    pending: deque[Future[U]] = deque()
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="prefetch") as pool:
        try:
            for item in source:
                pending.append(pool.submit(prepare, item))
                if len(pending) > depth:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:
                future.cancel()
