"""Case 12: ``python -m flows.report <flow>`` shows a top-level run by default, never another run's
subflow, and ``--run <id or name>`` shows the run asked for.

Built as it happens: a flow is run on its own, then runs again as the subflow of a parent flow (as
build-data runs inside retrain-reward-model)."""

from __future__ import annotations

import pytest
from prefect import flow
from prefect.artifacts import create_table_artifact

from flows import report as run_report

pytestmark = [pytest.mark.hostile_case(12), pytest.mark.usefixtures("prefect_harness")]


@flow(name="report-child")
def child(marker: int) -> None:
    create_table_artifact(key="report-child-stages", table=[{"stage": "ingest", "rows_out": marker}])


@flow(name="report-parent")
def parent() -> None:
    child(2222)


def test_default_is_the_latest_top_level_run_and_run_picks_one(capsys: pytest.CaptureFixture) -> None:
    top = child(1111, return_state=True).state_details.flow_run_id
    parent()  # its child(2222) is the most recently started run of report-child
    text = run_report.report("report-child").text
    assert f"({top})" in text.splitlines()[0] and "1111" in text and "2222" not in text
    from prefect import get_client

    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(sort=run_report.FlowRunSort.START_TIME_DESC, limit=20)
    nested = next(run for run in runs if run.parent_task_run_id is not None and run.name)
    assert run_report.main(["report-child", "--run", str(nested.id)]) == 0
    out = capsys.readouterr().out
    assert "2222" in out and "1111" not in out
    assert run_report.main(["report-child", "--run", nested.name]) == 0
    assert "2222" in capsys.readouterr().out
    assert run_report.main(["report-child", "--run", "no-such-run"]) == 1
    assert "no run 'no-such-run' of 'report-child'" in capsys.readouterr().err
