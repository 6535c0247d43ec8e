"""Thin Prefect wrappers around the plain stage functions.

The stage cache (Parquet + manifest, see :mod:`tasks.cache`) is the only cache: Prefect's own result
caching is switched off for these tasks, and they pass paths, never DataFrames.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import wraps
from typing import ParamSpec

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from tasks.cache import StageResult

P = ParamSpec("P")


class _ThreadRouter(logging.Handler):
    """Installed on a logger while stages forward it (propagation off meanwhile): a record logged in a
    forwarding stage's thread goes to that stage's run log (INFO and up) and nowhere else, so the worker's
    console does not print it twice; a record of any other thread goes on to the parent loggers as it
    would have without the router."""

    def __init__(self, source: logging.Logger) -> None:
        super().__init__()
        self.source = source
        self.saved = (source.level, source.propagate)
        self.targets: dict[int, logging.Logger | logging.LoggerAdapter] = {}

    def emit(self, record: logging.LogRecord) -> None:
        target = self.targets.get(record.thread or 0)
        if target is not None:
            if record.levelno >= logging.INFO:
                target.log(record.levelno, record.getMessage())
        elif self.source.parent is not None:
            self.source.parent.handle(record)


_routers: dict[str, _ThreadRouter] = {}
_routers_lock = threading.Lock()


@contextmanager
def forward_logs(name: str, target: logging.Logger | logging.LoggerAdapter) -> Iterator[None]:
    """Send the INFO+ records that logger ``name`` (e.g. training or embedding progress) gets from this
    thread to ``target`` while inside. Per thread, so that stages running side by side in threads each
    get their own progress; records of other threads are handled as usual."""
    source, thread = logging.getLogger(name), threading.get_ident()
    with _routers_lock:
        router = _routers.get(name)
        if router is None:
            router = _routers[name] = _ThreadRouter(source)
            source.addHandler(router)
            source.propagate = False
            if source.getEffectiveLevel() > logging.INFO:
                source.setLevel(logging.INFO)
        previous = router.targets.get(thread)
        router.targets[thread] = target
    try:
        yield
    finally:
        with _routers_lock:
            if previous is None:
                del router.targets[thread]
            else:
                router.targets[thread] = previous
            if not router.targets:
                source.removeHandler(router)
                source.setLevel(router.saved[0])
                source.propagate = router.saved[1]
                del _routers[name]


def log_stage(result: StageResult) -> None:
    """Say in the run log whether the stage was cached or computed, with its row counts."""
    logger = get_run_logger()
    if result.cached:
        logger.info("%s: cached, not recomputed (key %s) -> %s", result.stage, result.key, result.path)
    else:
        logger.info(
            "%s: computed in %.2f s: %d rows in, %d kept, %d rejected -> %s",
            result.stage,
            result.seconds,
            result.rows_in,
            result.rows_kept,
            result.rows_rejected,
            result.path,
        )


def stage_task(function: Callable[P, StageResult], *, name: str):
    """A Prefect task named ``name`` that runs the stage ``function`` (its ``tasks.*`` log records go to
    the task run's log) and logs its outcome."""

    @wraps(function)
    def run(*args: P.args, **kwargs: P.kwargs) -> StageResult:
        with forward_logs("tasks", get_run_logger()):
            result = function(*args, **kwargs)
        log_stage(result)
        return result

    return task(name=name, cache_policy=NO_CACHE, persist_result=False)(run)
