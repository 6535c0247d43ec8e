"""Print what the latest run of a build-data flow produced, from its Prefect artifacts.

``python -m flows.report build-alignment-data`` prints the stage table (rows in / out / rejected,
cached or computed, seconds) and the output Parquet paths. ``make demo`` calls it after the run.
"""

from __future__ import annotations

import json
import sys

from prefect.artifacts import Artifact


def _format_table(rows: list[dict]) -> str:
    columns = list(rows[0])
    widths = {column: max(len(column), *(len(str(row[column])) for row in rows)) for column in columns}
    lines = ["  ".join(column.ljust(widths[column]) for column in columns)]
    lines += ["  ".join(str(row[column]).ljust(widths[column]) for column in columns) for row in rows]
    return "\n".join(lines)


def report(flow_name: str) -> str:
    """The latest stage table and outputs of ``flow_name`` as text."""
    stages = Artifact.get(f"{flow_name}-stages")
    outputs = Artifact.get(f"{flow_name}-outputs")
    if stages is None or outputs is None:
        raise SystemExit(f"no artifacts for {flow_name} yet: has it run against this Prefect server?")
    table = stages.data if isinstance(stages.data, list) else json.loads(stages.data)
    return f"{_format_table(table)}\n\n{outputs.data}"


def main() -> None:
    print(report(sys.argv[1] if len(sys.argv) > 1 else "build-alignment-data"))


if __name__ == "__main__":
    main()
