"""Print what the latest run of a flow produced, from the Prefect server: its state and its artifacts.

``python -m flows.report build-alignment-data`` prints the latest run of that flow: its state, the stage
table (rows in / out / rejected, cached or computed, seconds), the output paths and any other artifact
the run published (a trained model's folder and metrics, a retraining decision, the evaluation table).
A run that did not complete shows its state message and its last error log lines instead, so that a
``--watch`` that only says ``Failed`` can be followed by this for the reason. ``make demo`` calls it
after its run, with ``--run <id>`` naming the run it started. Any flow name works (``train-reward-model``,
``retrain-reward-model``, ...). Without ``--run`` the latest top-level run is shown, never a subflow run.
"""

from __future__ import annotations

import json
import logging
import sys
import uuid
from dataclasses import dataclass
from typing import Any

from prefect import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    FlowFilter,
    FlowFilterName,
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterName,
    FlowRunFilterParentTaskRunId,
    FlowRunFilterStartTime,
    LogFilter,
    LogFilterFlowRunId,
    LogFilterLevel,
)
from prefect.client.schemas.objects import Artifact, FlowRun
from prefect.client.schemas.sorting import ArtifactSort, FlowRunSort, LogSort
from prefect.settings import PREFECT_API_URL

#: Markdown lines longer than this (embedded images) are shortened in the terminal.
MAX_LINE = 400
#: How many of a failed run's last error (or warning) log messages are shown.
ERROR_LINES = 8
#: The artifact types shown (Prefect also stores "result" records of failed runs: not for people).
SHOWN_TYPES = {"table", "markdown", "link"}


class ReportError(RuntimeError):
    """Nothing to report: no server configured, or the flow has no run on it."""


@dataclass(frozen=True)
class RunReport:
    text: str
    completed: bool


def format_table(rows: list[dict[str, Any]]) -> str:
    """Rows of dicts as aligned text columns (the columns of the first row)."""
    if not rows:
        return "(empty table)"
    columns = list(rows[0])
    cells = [{column: str(row.get(column, "")) for column in columns} for row in rows]
    widths = {column: max(len(column), *(len(cell[column]) for cell in cells)) for column in columns}
    lines = ["  ".join(column.ljust(widths[column]) for column in columns)]
    lines += ["  ".join(cell[column].ljust(widths[column]) for column in columns) for cell in cells]
    return "\n".join(line.rstrip() for line in lines)


def _shorten(markdown: str) -> str:
    return "\n".join(
        line if len(line) <= MAX_LINE else f"{line[:80]}… [{len(line) - 80:,} more characters]"
        for line in markdown.splitlines()
    )


def format_artifact(artifact: Artifact) -> str:
    """One artifact as terminal text: a table aligned, markdown as it is (long lines shortened)."""
    title = f"-- {artifact.key or artifact.type}"
    if artifact.type == "table":
        rows = artifact.data if isinstance(artifact.data, list) else json.loads(artifact.data or "[]")
        return f"{title}\n{format_table(rows)}"
    return f"{title}\n{_shorten(str(artifact.data or ''))}"


def latest_run(client: Any, flow_name: str, run: str | None = None) -> FlowRun:
    """The run ``run`` (a flow run id or name) of ``flow_name``, else its most recently started
    top-level run (a subflow run, e.g. the build-data run inside a retraining run, is not one)."""
    if run is not None:
        try:
            chosen = FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(run)]))
        except ValueError:
            chosen = FlowRunFilter(name=FlowRunFilterName(any_=[run]))
    else:
        chosen = FlowRunFilter(
            start_time=FlowRunFilterStartTime(is_null_=False),
            parent_task_run_id=FlowRunFilterParentTaskRunId(is_null_=True),
        )
    runs = client.read_flow_runs(
        flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])),
        flow_run_filter=chosen,
        sort=FlowRunSort.START_TIME_DESC,
        limit=1,
    )
    if not runs:
        which = f"run {run!r} of {flow_name!r}" if run is not None else f"run of {flow_name!r}"
        raise ReportError(f"no {which} on the Prefect server {client.api_url}: has it run?")
    return runs[0]


def _summary_lines(message: str) -> list[str]:
    """A log message in at most two lines: a traceback becomes its first line and its exception line."""
    lines = [line for line in message.strip().splitlines() if line.strip()]
    return lines if len(lines) <= 2 else [lines[0], lines[-1]]


def _error_lines(client: Any, run: FlowRun) -> list[str]:
    """The run's last warning and error log messages, oldest first, each line once."""
    logs = client.read_logs(
        log_filter=LogFilter(
            flow_run_id=LogFilterFlowRunId(any_=[run.id]), level=LogFilterLevel(ge_=logging.WARNING)
        ),
        sort=LogSort.TIMESTAMP_DESC,
        limit=ERROR_LINES,
    )
    shown: dict[str, None] = {}
    for log in reversed(logs):
        shown |= dict.fromkeys(f"  {line}" for line in _summary_lines(log.message))
    return list(shown)


def report(flow_name: str, run_id: str | None = None) -> RunReport:
    """A run of ``flow_name`` (``run_id``: its id or name; default the latest top-level run): state,
    artifacts, and for an unfinished or failed run its state message and last error log lines."""
    if not PREFECT_API_URL.value():
        raise ReportError(
            "PREFECT_API_URL is not set, so there is no server to ask; for make demo's server: "
            "export PREFECT_HOME=$PWD/.prefect PREFECT_API_URL=http://127.0.0.1:${PREFECT_PORT:-4200}/api"
        )
    with get_client(sync_client=True) as client:
        run = latest_run(client, flow_name, run_id)
        artifacts = client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])),
            sort=ArtifactSort.ID_DESC,
        )
        state = run.state
        completed = state is not None and state.is_completed()
        lines = [f"{flow_name}: run {run.name} ({run.id}), {state.name if state else 'no state'}"]
        if not completed:
            message = [f"  {state.message}"] if state is not None and state.message else []
            lines += list(dict.fromkeys([*message, *_error_lines(client, run)]))
            lines.append(f"  whole log: prefect flow-run logs {run.id}")
    shown = [artifact for artifact in artifacts if artifact.type in SHOWN_TYPES]
    ordered = sorted(shown, key=lambda artifact: artifact.created or 0)
    sections = ["\n".join(lines), *(format_artifact(artifact) for artifact in ordered)]
    return RunReport("\n\n".join(sections), completed)


def main(argv: list[str] | None = None) -> int:
    """Print the report (``<flow> [--run <id or name>]``); exit status 0 when the reported run
    completed, 1 otherwise."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m flows.report", description=__doc__.splitlines()[0])
    parser.add_argument("flow", nargs="?", default="build-alignment-data", help="the flow's name")
    parser.add_argument("--run", help="a flow run id or name (default: the latest top-level run)")
    arguments = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        result = report(arguments.flow, arguments.run)
    except ReportError as error:
        print(error, file=sys.stderr)
        return 1
    print(result.text)
    return 0 if result.completed else 1


if __name__ == "__main__":
    raise SystemExit(main())
