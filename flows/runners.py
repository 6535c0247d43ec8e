"""Where the build-data flows run their stages: the flow's own threads, or a Dask cluster.

Prefect fixes a flow's task runner when the flow is decorated, so the choice is not the flow's task
runner but a flow parameter: ``task_runner="thread"`` (the default) runs stages as today, in the flow
run's process (independent ones, such as the shards of a stage, in its thread pool);
``task_runner="dask"`` enters a ``prefect_dask.DaskTaskRunner`` for the flow run and submits every
stage to it, on the scheduler at ``dask_address`` or on a temporary local cluster. The stages are the
same Prefect tasks either way, so a deployment switches with a parameter::

    prefect deployment run build-alignment-data/demo -p task_runner=dask -p dask_address=tcp://host:8786

Stages only exchange paths under the artifact root, so every Dask worker must see that root at the
same path as the flow run (a shared file system; see docs/OPERATIONS.md). ``prefect-dask`` is the
optional ``dask`` extra.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Literal, get_args

from prefect import Task
from prefect.futures import PrefectFuture
from prefect.task_runners import TaskRunner
from prefect.utilities.callables import get_call_parameters

from tasks.cache import StageResult
from tasks.prefect_stage import log_stage

TaskRunnerName = Literal["thread", "dask"]
TASK_RUNNERS: tuple[str, ...] = get_args(TaskRunnerName)
#: How to install the optional Dask support (the ``dask`` extra holds ``prefect-dask``).
DASK_EXTRA_HINT = "pip install 'llava-reward-pipeline[dask]'"


class MissingExtraError(ImportError):
    """An optional extra that the chosen option needs is not installed."""


@dataclass(frozen=True)
class StageRunner:
    """Runs stage tasks in the flow run (``runner`` None: calls, and ``.submit()`` to the flow's own
    thread pool) or on an explicit, started task runner (every stage submitted to it)."""

    runner: TaskRunner | None = None

    def submit(self, task: Task, /, *args: Any, **kwargs: Any) -> PrefectFuture:
        """Start ``task`` without waiting: a parallel runner runs submitted tasks concurrently."""
        if self.runner is None:
            return task.submit(*args, **kwargs)
        return self.runner.submit(task, parameters=get_call_parameters(task.fn, args, kwargs))

    def run(self, task: Task, /, *args: Any, **kwargs: Any) -> Any:
        """Run ``task`` and return its result."""
        if self.runner is None:
            return task(*args, **kwargs)
        return self.submit(task, *args, **kwargs).result()


def dask_task_runner(address: str | None) -> TaskRunner:
    """A ``DaskTaskRunner`` on the scheduler at ``address`` (None: a temporary local cluster, one
    worker process per core, for the flow run)."""
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as error:
        raise MissingExtraError(
            f"task_runner='dask' needs prefect-dask, the optional 'dask' extra: {DASK_EXTRA_HINT} ({error})"
        ) from error
    return DaskTaskRunner(address=address) if address else DaskTaskRunner()


@contextmanager
def stage_runner(
    task_runner: TaskRunnerName = "thread", dask_address: str | None = None
) -> Iterator[StageRunner]:
    """The :class:`StageRunner` a flow's ``task_runner`` / ``dask_address`` parameters choose; a Dask
    runner is started on entry and shut down (a temporary cluster with it) on exit."""
    if task_runner not in TASK_RUNNERS:
        raise ValueError(f"unknown task_runner {task_runner!r}; choose one of {list(TASK_RUNNERS)}")
    if task_runner == "thread":
        if dask_address:
            raise ValueError("dask_address is only used with task_runner='dask'")
        yield StageRunner()
        return
    with dask_task_runner(dask_address) as runner:
        yield StageRunner(runner)


def run_sharded(
    runner: StageRunner,
    name: str,
    *,
    shards: int,
    finished: Callable[[], StageResult | None],
    shard_task: Task,
    merge_task: Task,
    **parameters: Any,
) -> dict[str, StageResult]:
    """Stage ``name`` over ``shards`` shards: its finished output when one exists (``finished``),
    else every shard task submitted at once and the merge task once they are all done. Both tasks
    take ``parameters``; shards also ``shard`` and ``shards``, the merge ``shard_results``.

    Returns the shards' results (``"<name> shard i/N"``) and then the merged one (``name``)."""
    done = finished()
    if done is not None:
        log_stage(done)
        return {name: done}
    futures = [
        runner.submit(
            shard_task.with_options(task_run_name=f"{name}-shard-{index + 1}-of-{shards}"),
            shard=index,
            shards=shards,
            **parameters,
        )
        for index in range(shards)
    ]
    parts = [future.result() for future in futures]
    merged = runner.run(merge_task, shard_results=parts, **parameters)
    return {**{f"{name} shard {index + 1}/{shards}": part for index, part in enumerate(parts)}, name: merged}


__all__ = [
    "DASK_EXTRA_HINT",
    "MissingExtraError",
    "StageRunner",
    "TASK_RUNNERS",
    "TaskRunnerName",
    "dask_task_runner",
    "run_sharded",
    "stage_runner",
]
