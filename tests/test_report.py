"""flows.report: what the latest run of a flow produced, read back from the Prefect server."""

from __future__ import annotations

import pytest
from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.logging.handlers import APILogHandler

from flows import report as run_report

pytestmark = pytest.mark.usefixtures("prefect_harness")


@flow(name="report-probe")
def probe(rows_out: int) -> None:
    create_table_artifact(
        key="report-probe-stages",
        table=[{"stage": "ingest", "rows_out": rows_out}, {"stage": "dedup_long_name", "rows_out": 1}],
    )
    create_markdown_artifact(key="report-probe-outputs", markdown=f"# outputs\n\nimage: {'A' * 1000}\nend")


@flow(name="report-probe-failing")
def failing_probe() -> None:
    get_run_logger().error("stage dedup: threshold 2.0 is outside [0, 1]")
    raise ValueError("bad parameter: threshold")


def test_the_latest_run_with_its_tables_and_markdown() -> None:
    probe(111)
    probe(222)
    result = run_report.report("report-probe")
    assert result.completed
    text = result.text
    assert text.splitlines()[0].startswith("report-probe: run ") and text.splitlines()[0].endswith(
        "Completed"
    )
    assert "stage            rows_out\ningest           222\ndedup_long_name  1" in text  # aligned columns
    assert "111" not in text  # only the latest run's artifacts
    assert f"image: {'A' * 73}… [927 more characters]\nend" in text  # an embedded image is shortened
    assert run_report.main(["report-probe"]) == 0


def test_a_failed_run_shows_its_error_and_how_to_see_the_whole_log(capsys: pytest.CaptureFixture) -> None:
    state = failing_probe(return_state=True)
    APILogHandler().flush()
    result = run_report.report("report-probe-failing")
    assert not result.completed
    assert "Failed" in result.text.splitlines()[0]
    assert "ValueError: bad parameter: threshold" in result.text
    assert "stage dedup: threshold 2.0 is outside [0, 1]" in result.text
    assert f"prefect flow-run logs {state.state_details.flow_run_id}" in result.text
    assert "Traceback" not in result.text  # a traceback is shown as its first and its exception line
    assert "-- None" not in result.text  # Prefect's result records (no key, no type) are not shown
    assert run_report.main(["report-probe-failing"]) == 1
    assert "bad parameter: threshold" in capsys.readouterr().out


def test_a_flow_that_never_ran_is_a_clear_error(capsys: pytest.CaptureFixture) -> None:
    assert run_report.main(["never-ran"]) == 1
    assert "no run of 'never-ran' on the Prefect server" in capsys.readouterr().err


def test_without_a_server_address_it_says_how_to_set_one(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: None}):
        with pytest.raises(run_report.ReportError, match="PREFECT_API_URL is not set"):
            run_report.report("report-probe")


def test_format_table_aligns_every_column() -> None:
    rows = [{"a": 1, "bb": "x"}, {"a": 100, "bb": "yyyy"}]
    assert run_report.format_table(rows) == "a    bb\n1    x\n100  yyyy"
    assert run_report.format_table([]) == "(empty table)"
