"""The issue #11 battery: run every test marked ``hostile_case`` and tabulate the outcome per case.

    python -m tests.hostile.battery [--out FILE] [--against REV] [--keep]

Runs the marked tests through pytest in a subprocess (:mod:`tests.hostile.battery_plugin` records each
test's cases and outcome), prints a markdown table (case, title, tests, passed, failed, outcome) and
checks that every stage manifest the tests wrote under pytest's base temporary folder balances
(``rows_in = rows_kept + rows_rejected``, and the rejects table holds ``rows_rejected`` rows). The exit
status is 1 when a test fails, a case has no test that ran, or a manifest does not balance.

``--against REV`` runs the same tests on an older commit instead: a temporary ``git worktree`` at REV
with this tree's ``tests/`` folder laid over it (removed afterwards), run with this interpreter and
``PYTHONPATH`` pointing at the old tree. The table then says, per case, which tests fail there; the
exit status is 1 when a case has no test failing on REV (its fix would not be proven by a test).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
PLUGIN = "tests.hostile.battery_plugin"

#: Issue #11's numbered cases, by their short titles.
CASES: dict[int, str] = {
    1: "Paths stay inside their dataset",
    2: "A model folder never turns on remote code",
    3: "No rejected image in a training pair",
    4: "Bad text cannot poison the cache",
    5: "Empty is not success",
    6: "Parameters are checked before any stage runs",
    7: "Read-only, fully cached artifacts need no write access",
    8: "An empty or blank --prompt is refused",
    9: "Oversized zip members are refused",
    10: "One bad image does not abort a scoring batch",
    11: "A crashed or failed retrain leaves a ledger row",
    12: "flows.report shows the run just started",
    13: "Every evaluation row names what produced it",
    14: "Every metric carries n and a 95% interval; no ordinary 0.0 for n/a",
    15: "Stage table has benchmark and scorer columns",
    16: "Missing benchmark images found when read",
    17: "Plots: labels, splits, scatter, histogram; notes for what ran",
    18: "README pointers; registry folder error says what to run",
}


@dataclass
class RanTest:
    """One marked test: the cases it covers, its outcome and the first line of its error."""

    nodeid: str
    cases: list[int]
    outcome: str
    message: str = ""


@dataclass
class ManifestCheck:
    """The stage manifests found under a folder: how many, and those that do not balance."""

    checked: int = 0
    unbalanced: list[str] = field(default_factory=list)


@dataclass
class BatteryRun:
    """What one run of the battery gave."""

    tests: list[RanTest]
    collection_errors: dict[str, str]
    manifests: ManifestCheck
    pytest_status: int


def outcomes_from_json(data: Mapping[str, Any]) -> tuple[list[RanTest], dict[str, str]]:
    """The plugin's JSON (``tests``, ``collection_errors``) as outcomes."""
    tests = [
        RanTest(nodeid, list(test["cases"]), test["outcome"], test["message"])
        for nodeid, test in data["tests"].items()
    ]
    return tests, dict(data["collection_errors"])


def manifest_imbalance(manifest: Mapping[str, Any]) -> str | None:
    """Why a stage manifest does not balance (None: it does)."""
    rows_in, kept, rejected = manifest["rows_in"], manifest["rows_kept"], manifest["rows_rejected"]
    if rows_in != kept + rejected:
        return f"rows_in {rows_in} != rows_kept {kept} + rows_rejected {rejected}"
    rejects = manifest.get("outputs", {}).get("rejects")
    if rejects is not None and rejects.get("rows") != rejected:
        return f"rows_rejected {rejected} but its rejects table holds {rejects.get('rows')} rows"
    return None


def stage_manifests(root: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """Every stage-cache manifest (a JSON object with a manifest version and row counts) under root."""
    for path in sorted(root.rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError):
            continue
        if isinstance(data, dict) and {"manifest_version", "rows_in", "rows_kept", "rows_rejected"} <= set(
            data
        ):
            yield path, data


def check_manifests(root: Path) -> ManifestCheck:
    """Check that every stage manifest under ``root`` balances."""
    result = ManifestCheck()
    for path, manifest in stage_manifests(root):
        result.checked += 1
        reason = manifest_imbalance(manifest)
        if reason is not None:
            result.unbalanced.append(f"{path}: {reason}")
    return result


def pytest_command(
    paths: list[str], json_path: Path, basetemp: Path, *, collect_only: bool = False
) -> list[str]:
    command = [sys.executable, "-m", "pytest", "-p", PLUGIN, f"--battery-json={json_path}"]
    command += [f"--basetemp={basetemp}", "-p", "no:cacheprovider", "-q", "-m", "hostile_case"]
    command += ["--continue-on-collection-errors"]
    return command + (["--collect-only"] if collect_only else []) + paths


def run_pytest(
    tree: Path, paths: list[str], work: Path, *, pythonpath: Path | None = None, collect_only: bool = False
) -> BatteryRun:
    """Run the marked tests of ``paths`` with ``tree`` as the working folder (and, by default, as the
    first entry of ``PYTHONPATH``); temporaries go under ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    json_path, basetemp = work / "outcomes.json", work / "basetemp"
    env = {**os.environ, "PYTHONPATH": str(pythonpath or tree)}
    command = pytest_command(paths, json_path, basetemp, collect_only=collect_only)
    status = subprocess.run(command, cwd=tree, env=env).returncode
    if not json_path.is_file():
        raise RuntimeError(f"pytest ended ({status}) without writing {json_path}: see its output above")
    tests, errors = outcomes_from_json(json.loads(json_path.read_text()))
    manifests = check_manifests(basetemp) if basetemp.is_dir() else ManifestCheck()
    return BatteryRun(tests, errors, manifests, status)


# --------------------------------------------------------------------------------------------
# Tables


def by_case(tests: list[RanTest]) -> dict[int, list[RanTest]]:
    cases: dict[int, list[RanTest]] = {number: [] for number in CASES}
    for test in tests:
        for number in test.cases:
            cases.setdefault(number, []).append(test)
    return cases


def case_outcome(tests: list[RanTest]) -> str:
    """``pass`` when the case has tests, none failed and at least one passed; else ``FAIL (why)``."""
    if not tests:
        return "FAIL (no test)"
    if any(test.outcome != "passed" and test.outcome != "skipped" for test in tests):
        return "FAIL"
    return "pass" if any(test.outcome == "passed" for test in tests) else "FAIL (all skipped)"


def count(tests: list[RanTest], outcome: str) -> int:
    return sum(test.outcome == outcome for test in tests)


def now_table(run: BatteryRun) -> tuple[str, bool]:
    """The battery's markdown table and whether it passed (every case passes, manifests balance)."""
    lines = ["| case | title | tests | passed | failed | outcome |", "|---:|---|---:|---:|---:|---|"]
    ok = not run.collection_errors and not run.manifests.unbalanced
    for number, tests in sorted(by_case(run.tests).items()):
        outcome = case_outcome(tests) if number in CASES else "FAIL (not a case of issue #11)"
        ok &= outcome == "pass"
        failed = len(tests) - count(tests, "passed") - count(tests, "skipped")
        title = CASES.get(number, "?")
        lines.append(
            f"| {number} | {title} | {len(tests)} | {count(tests, 'passed')} | {failed} | {outcome} |"
        )
    lines += ["", manifest_footer(run.manifests)]
    lines += [
        f"- collection error in {nodeid}: {message}" for nodeid, message in run.collection_errors.items()
    ]
    lines += [
        f"- {test.nodeid}: {test.outcome}: {test.message}"
        for test in run.tests
        if test.outcome not in ("passed", "skipped")
    ]
    return "\n".join(lines), ok


def manifest_footer(manifests: ManifestCheck) -> str:
    if not manifests.unbalanced:
        return (
            f"Stage manifests checked: {manifests.checked}, every one balances (rows in = kept + rejected)."
        )
    listed = "".join(f"\n- unbalanced: {line}" for line in manifests.unbalanced)
    return (
        f"Stage manifests checked: {manifests.checked}, {len(manifests.unbalanced)} do NOT balance:{listed}"
    )


def against_outcomes(expected: list[RanTest], run: BatteryRun) -> list[RanTest]:
    """The tests of the current tree (``expected``) with their outcome on the old tree: a test that
    did not run there takes its module's collection error (``error``) or ``not collected``."""
    ran = {test.nodeid: test for test in run.tests}
    results = []
    for test in expected:
        if test.nodeid in ran:
            results.append(
                RanTest(test.nodeid, test.cases, ran[test.nodeid].outcome, ran[test.nodeid].message)
            )
            continue
        module = test.nodeid.split("::")[0]
        error = run.collection_errors.get(module)
        results.append(RanTest(test.nodeid, test.cases, "error" if error else "not collected", error or ""))
    return results


def against_table(rev: str, tests: list[RanTest], manifests: ManifestCheck) -> tuple[str, bool]:
    """Per case: how many of its tests fail on ``rev``, and each test's outcome there with its reason.
    Passes when every case has at least one test that does not pass on ``rev``."""
    lines = [
        f"| case | title | tests | fail on {rev} | pass on {rev} | outcome |",
        "|---:|---|---:|---:|---:|---|",
    ]
    ok = True
    cases = by_case(tests)
    for number, covered in sorted(cases.items()):
        failing = [test for test in covered if test.outcome in ("failed", "error", "not collected")]
        outcome = f"fails on {rev}" if failing else f"NOT SHOWN: no test fails on {rev}"
        ok &= bool(failing)
        cells = [
            number,
            CASES.get(number, "?"),
            len(covered),
            len(failing),
            count(covered, "passed"),
            outcome,
        ]
        lines.append("| " + " | ".join(map(str, cells)) + " |")
    lines += ["", manifest_footer(manifests), "", f"Each test on {rev}:", ""]
    lines += ["| test | cases | outcome | reason |", "|---|---|---|---|"]
    for test in tests:
        reason = test.message.replace("|", "\\|")[:300]
        lines.append(f"| `{test.nodeid}` | {', '.join(map(str, test.cases))} | {test.outcome} | {reason} |")
    return "\n".join(lines), ok


# --------------------------------------------------------------------------------------------
# Running


def overlay_tests(tree: Path) -> None:
    """Replace ``tree``'s tests/ folder by this tree's (without bytecode caches)."""
    shutil.rmtree(tree / "tests", ignore_errors=True)
    shutil.copytree(REPO_ROOT / "tests", tree / "tests", ignore=shutil.ignore_patterns("__pycache__"))


def run_against(rev: str, work: Path) -> tuple[str, bool]:
    """The against-table of ``rev``: collect the marked tests here, run them on a worktree at ``rev``."""
    current = run_pytest(REPO_ROOT, ["tests"], work / "collect", collect_only=True)
    if current.collection_errors:
        raise RuntimeError(f"the current tests do not collect: {current.collection_errors}")
    tree = work / "tree"
    subprocess.run(["git", "worktree", "add", "--detach", str(tree), rev], cwd=REPO_ROOT, check=True)
    try:
        overlay_tests(tree)
        files = sorted({test.nodeid.split("::")[0] for test in current.tests})
        old = run_pytest(tree, files, work / "run")
        return against_table(rev, against_outcomes(current.tests, old), old.manifests)
    finally:
        subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=REPO_ROOT, check=False)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.hostile.battery", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--against", metavar="REV", help="run the tests on commit REV instead (what fails there)"
    )
    parser.add_argument("--out", type=Path, help="also write the table to this markdown file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder (pytest's basetemp)")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="hostile-battery-"))
    try:
        if args.against:
            table, ok = run_against(args.against, work)
        else:
            table, ok = now_table(run_pytest(REPO_ROOT, ["tests"], work))
    finally:
        if args.keep:
            print(f"kept {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    print(table)
    if args.out:
        args.out.write_text(table + "\n")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
