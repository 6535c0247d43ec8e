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


@contextmanager
def forward_logs(name: str, target: logging.Logger | logging.LoggerAdapter) -> Iterator[None]:
    """Send INFO+ records of logger ``name`` (e.g. training or embedding progress) to ``target`` while
    inside: only those logged in this thread, so that stages running side by side in threads each get
    their own progress, not each other's."""
    thread = threading.get_ident()

    class Forward(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.thread == thread:
                target.log(record.levelno, record.getMessage())

    source = logging.getLogger(name)
    handler, level = Forward(logging.INFO), source.level
    source.addHandler(handler)
    if source.getEffectiveLevel() > logging.INFO:
        source.setLevel(logging.INFO)
    try:
        yield
    finally:
        source.removeHandler(handler)
        source.setLevel(level)


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
