"""Render image specs to encoded bytes, in order, optionally across worker processes.

Each spec carries its own seed, so the bytes do not depend on which process renders it: one worker
and several give identical corpora.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Iterator, Sequence

from .render import ImageSpec, render_bytes

#: Below this many images a pool costs more (process start-up) than it saves.
MIN_PARALLEL_IMAGES = 2000


def render_stream(
    specs: Sequence[ImageSpec], workers: int = 2, *, min_parallel: int = MIN_PARALLEL_IMAGES
) -> Iterator[bytes]:
    """Encoded bytes of ``specs`` in order. Worker processes are started with ``spawn`` (safe next
    to threads, e.g. polars' pool) and only for at least ``min_parallel`` images."""
    if workers <= 1 or len(specs) < max(1, min_parallel):
        for spec in specs:
            yield render_bytes(spec)
        return
    chunksize = max(16, min(256, len(specs) // (workers * 16)))
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        yield from pool.imap(render_bytes, specs, chunksize=chunksize)


def take(stream: Iterator[bytes], n: int) -> list[bytes]:
    """The next ``n`` items of ``stream``; an error if it ends early."""
    items = [data for _, data in zip(range(n), stream, strict=False)]
    if len(items) != n:
        raise RuntimeError(f"render stream ended after {len(items)} of {n} images")
    return items
