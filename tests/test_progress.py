"""Stage progress in the log: ProgressLog's pacing, forward_logs' same-thread forwarding, and a
stage's ``tasks.*`` records reaching the Prefect task run's log."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import polars as pl
import pytest
from prefect import flow

from tasks.cache import MAIN, Stage, StageOutput, StageResult, run_stage
from tasks.prefect_stage import forward_logs, stage_task
from tasks.progress import ProgressLog


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_progress_logs_every_interval_and_at_the_end(caplog: pytest.LogCaptureFixture) -> None:
    clock = Clock()
    progress = ProgressLog(logging.getLogger("tasks.test"), "embed images", 1000, interval=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="tasks.test"):
        for _ in range(9):  # 900 items in 9 s: under the interval, nothing logged
            clock.now += 1
            progress.advance(100)
        assert caplog.messages == []
        clock.now += 1  # 10 s: the last 100 complete the work
        progress.advance(100)
    assert caplog.messages == ["embed images: 1,000 / 1,000 (100%), 100 / s"]
    caplog.clear()
    progress = ProgressLog(logging.getLogger("tasks.test"), "x", 2500, interval=10, clock=clock)
    with caplog.at_level(logging.INFO, logger="tasks.test"):
        clock.now += 12
        progress.advance(600)
    assert caplog.messages == ["x: 600 / 2,500 (24%), 50 / s"]


def test_forward_logs_sends_this_threads_records_once_and_passes_the_others_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    received: list[str] = []

    class Target:
        def log(self, level: int, message: str) -> None:
            received.append(message)

    source = logging.getLogger("tasks.forward_test")
    with caplog.at_level(logging.INFO):  # a handler on the root logger, as Prefect's console is
        with forward_logs("tasks", Target()):  # type: ignore[arg-type]
            source.info("mine")
            source.debug("too low")
            other = threading.Thread(target=lambda: source.warning("another thread's"))
            other.start()
            other.join()
        source.warning("after")
    assert received == ["mine"]
    assert caplog.messages == ["another thread's", "after"]  # "mine" is not printed a second time
    tasks = logging.getLogger("tasks")
    assert tasks.propagate and not any(type(h).__name__ == "_ThreadRouter" for h in tasks.handlers)


def test_forwarding_in_two_threads_at_once_keeps_each_threads_records() -> None:
    received: dict[str, list[str]] = {"a": [], "b": []}
    inside = threading.Barrier(2)

    class Target:
        def __init__(self, name: str) -> None:
            self.name = name

        def log(self, level: int, message: str) -> None:
            received[self.name].append(message)

    def stage(name: str) -> None:
        with forward_logs("tasks", Target(name)):  # type: ignore[arg-type]
            inside.wait()
            logging.getLogger(f"tasks.{name}").info(f"{name} progress")
            inside.wait()

    threads = [threading.Thread(target=stage, args=(name,)) for name in "ab"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert received == {"a": ["a progress"], "b": ["b progress"]}
    assert logging.getLogger("tasks").propagate


LOUD = Stage("loud_probe", 1, ())


def loud_stage(root: str) -> StageResult:
    """A stage that reports progress through the standard logging module, as embed does."""

    def compute() -> StageOutput:
        logging.getLogger("tasks.loud_probe").info("loud_probe: 3 / 3 (100%%), %d / s", 7)
        return StageOutput(tables={MAIN: pl.DataFrame({"a": [1, 2, 3]})}, rows_in=3, rows_kept=3)

    return run_stage(LOUD, params={}, inputs={}, compute=compute, root=root)


loud_task = stage_task(loud_stage, name="loud-probe")


@pytest.mark.usefixtures("prefect_harness")
def test_a_stages_progress_reaches_the_task_run_log(tmp_path: Path) -> None:
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler

    @flow(name="progress-probe")
    def probe(root: str) -> StageResult:
        return loud_task(root)

    task_runs = logging.getLogger("prefect.task_runs")
    level = task_runs.level
    task_runs.setLevel(logging.INFO)  # the test session logs WARNING+ only (tests/conftest.py)
    try:
        state = probe(str(tmp_path), return_state=True)
    finally:
        task_runs.setLevel(level)
    APILogHandler().flush()
    with get_client(sync_client=True) as client:
        logs = client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[state.state_details.flow_run_id]))
        )
    progress = [log for log in logs if log.message == "loud_probe: 3 / 3 (100%), 7 / s"]
    assert len(progress) == 1 and progress[0].task_run_id is not None  # in the stage's task run log
