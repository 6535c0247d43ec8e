"""The pytest side of the issue #11 battery (``python -m tests.hostile.battery``).

Loaded with ``-p tests.hostile.battery_plugin --battery-json=PATH``: it records, for every collected
test marked ``hostile_case(*numbers)``, its case numbers and its outcome (``passed``, ``failed``,
``skipped``), plus every collection error, and writes them as JSON to ``PATH`` when the session ends.
It also registers the marker, so that it works on a tree whose pytest configuration predates it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

MARKER = "hostile_case"
MARKER_HELP = (
    f"{MARKER}(*numbers): the test covers these numbered cases of issue #11 (the hostile-input battery)"
)


def first_line(text: str) -> str:
    """The first non-empty line of an error report: what a table has room for."""
    return next((line.strip() for line in text.splitlines() if line.strip()), "")


def crash_message(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The exception line pytest reports for a failure (``E   ...`` lines), else the report's first line."""
    crash = getattr(report.longrepr, "reprcrash", None)
    if crash is not None:
        return first_line(crash.message)
    lines = [line[1:].strip() for line in report.longreprtext.splitlines() if line.startswith("E ")]
    return lines[-1] if lines else first_line(report.longreprtext)


class Recorder:
    """Collects the marked tests and their outcomes; writes them to ``path`` at the end."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tests: dict[str, dict[str, Any]] = {}
        self.collection_errors: dict[str, str] = {}

    def pytest_collectreport(self, report: pytest.CollectReport) -> None:
        if report.failed:
            self.collection_errors[report.nodeid] = crash_message(report)

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        for item in session.items:
            cases = sorted({number for mark in item.iter_markers(MARKER) for number in mark.args})
            if cases:
                self.tests[item.nodeid] = {"cases": cases, "outcome": "not run", "message": ""}

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        test = self.tests.get(report.nodeid)
        if test is None or test["outcome"] == "failed":
            return
        if report.failed:
            test["outcome"], test["message"] = "failed", f"{report.when}: {crash_message(report)}"
        elif report.skipped:
            test["outcome"], test["message"] = "skipped", crash_message(report)
        elif report.when == "call":
            test["outcome"] = "passed"

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        data = {"tests": self.tests, "collection_errors": self.collection_errors}
        self.path.write_text(json.dumps(data, indent=1))


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--battery-json", default=None, help="write the hostile_case tests' outcomes here")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER_HELP)
    path = config.getoption("--battery-json")
    if path:
        config.pluginmanager.register(Recorder(Path(path)), "hostile-battery-recorder")
