"""The issue #11 battery runner: its per-case table, exit rule and manifest check, and its pytest plugin
run for real on a small synthetic test file."""

from __future__ import annotations

import json
from pathlib import Path

from tests.hostile.battery import (
    CASES,
    REPO_ROOT,
    BatteryRun,
    ManifestCheck,
    RanTest,
    against_outcomes,
    against_table,
    check_manifests,
    now_table,
    run_pytest,
)


def every_case_passing() -> list[RanTest]:
    return [RanTest(f"tests/test_c{number}.py::test", [number], "passed") for number in CASES]


def table_rows(table: str) -> dict[int, list[str]]:
    """``{case: cells}`` of a markdown table's numbered rows."""
    rows = {}
    for line in table.splitlines():
        cells = [cell.strip() for cell in line.strip("|").split("|")]
        if line.startswith("| ") and cells[0].isdigit():
            rows[int(cells[0])] = cells
    return rows


def test_every_case_passing_is_a_pass() -> None:
    table, ok = now_table(BatteryRun(every_case_passing(), {}, ManifestCheck(checked=4), 0))
    rows = table_rows(table)
    assert ok and sorted(rows) == list(CASES)
    assert rows[11] == ["11", CASES[11], "1", "1", "0", "pass"]
    assert "Stage manifests checked: 4, every one balances" in table


def test_a_failure_a_case_without_test_and_a_skipped_case_fail_the_battery() -> None:
    tests = [test for test in every_case_passing() if test.cases != [18]]
    tests[2] = RanTest("tests/test_c3.py::test", [3], "failed", "call: AssertionError: 5 pairs use it")
    tests[4] = RanTest("tests/test_c5.py::test", [5], "skipped", "needs real data")
    tests.append(RanTest("tests/test_both.py::test", [3, 4], "passed"))
    table, ok = now_table(BatteryRun(tests, {}, ManifestCheck(), 1))
    rows = table_rows(table)
    assert not ok
    assert rows[3][2:] == ["2", "1", "1", "FAIL"] and rows[4][2:] == ["2", "2", "0", "pass"]
    assert rows[5][-1] == "FAIL (all skipped)" and rows[18][2:] == ["0", "0", "0", "FAIL (no test)"]
    assert "- tests/test_c3.py::test: failed: call: AssertionError: 5 pairs use it" in table


def test_an_unbalanced_manifest_fails_the_battery(tmp_path: Path) -> None:
    def manifest(name: str, rows_in: int, kept: int, rejected: int, rejects_rows: int | None = None) -> None:
        outputs = {"main": {"path": "x", "rows": kept}}
        if rejects_rows is not None:
            outputs["rejects"] = {"path": "y", "rows": rejects_rows}
        data = {"manifest_version": 1, "stage": name, "rows_in": rows_in, "rows_kept": kept}
        (tmp_path / name).mkdir()
        (tmp_path / name / "k.json").write_text(
            json.dumps({**data, "rows_rejected": rejected, "outputs": outputs})
        )

    manifest("ingest", 10, 7, 3, 3)
    manifest("dedup", 10, 8, 1)
    manifest("pairs", 5, 4, 1, 2)
    (tmp_path / "other.json").write_text(json.dumps({"rows_in": 3}))  # not a stage manifest
    (tmp_path / "broken.json").write_text("{")
    checked = check_manifests(tmp_path)
    assert checked.checked == 3
    assert checked.unbalanced == [
        f"{tmp_path / 'dedup' / 'k.json'}: rows_in 10 != rows_kept 8 + rows_rejected 1",
        f"{tmp_path / 'pairs' / 'k.json'}: rows_rejected 1 but its rejects table holds 2 rows",
    ]
    table, ok = now_table(BatteryRun(every_case_passing(), {}, checked, 0))
    assert not ok and "Stage manifests checked: 3, 2 do NOT balance" in table
    assert f"- unbalanced: {tmp_path / 'dedup' / 'k.json'}: rows_in 10" in table


def test_against_a_revision_every_case_needs_a_failing_test() -> None:
    current = [
        RanTest("tests/a.py::test_new_reader", [1], "collected"),
        RanTest("tests/a.py::test_other", [1], "collected"),
        RanTest("tests/b.py::test_flag", [2], "collected"),
    ]
    old = BatteryRun(
        [RanTest("tests/b.py::test_flag", [2], "passed")],
        {"tests/a.py": "ImportError: cannot import name 'OUTSIDE_ROOT'"},
        ManifestCheck(),
        1,
    )
    there = against_outcomes(current, old)
    assert [(test.outcome, test.message) for test in there] == [
        ("error", "ImportError: cannot import name 'OUTSIDE_ROOT'"),
        ("error", "ImportError: cannot import name 'OUTSIDE_ROOT'"),
        ("passed", ""),
    ]
    table, ok = against_table("abc123", there, old.manifests)
    rows = table_rows(table)
    assert not ok and rows[1][2:] == ["2", "2", "0", "fails on abc123"]
    assert rows[2][-1] == "NOT SHOWN: no test fails on abc123" and rows[3][-1].startswith("NOT SHOWN")
    assert (
        "| `tests/a.py::test_new_reader` | 1 | error | ImportError: cannot import name 'OUTSIDE_ROOT' |"
        in table
    )


SYNTHETIC = """
import json
import pytest


@pytest.mark.hostile_case(1)
def test_passes(tmp_path):
    (tmp_path / "k.json").write_text(json.dumps(
        {"manifest_version": 1, "rows_in": 3, "rows_kept": 1, "rows_rejected": 1, "outputs": {}}
    ))


@pytest.mark.hostile_case(1, 2)
def test_fails():
    assert 1 + 1 == 3, "arithmetic"


@pytest.mark.hostile_case(2)
def test_skips():
    pytest.skip("not here")


def test_not_a_case():
    pass
"""


def test_the_plugin_records_cases_outcomes_and_manifests(tmp_path: Path) -> None:
    (tmp_path / "test_synthetic.py").write_text(SYNTHETIC)
    run = run_pytest(tmp_path, ["test_synthetic.py"], tmp_path / "work", pythonpath=REPO_ROOT)
    assert run.pytest_status == 1 and run.collection_errors == {}
    outcomes = {test.nodeid.split("::")[1]: (test.cases, test.outcome) for test in run.tests}
    assert outcomes == {
        "test_passes": ([1], "passed"),
        "test_fails": ([1, 2], "failed"),
        "test_skips": ([2], "skipped"),
    }
    failed = next(test for test in run.tests if test.outcome == "failed")
    assert failed.message.startswith("call: AssertionError: arithmetic")
    assert run.manifests.checked == 1 and run.manifests.unbalanced[0].endswith(
        "k.json: rows_in 3 != rows_kept 1 + rows_rejected 1"
    )
