"""How each stage's cost grows with the dataset: a table of seconds and peak memory per stage at several
sizes (reports written by :mod:`benchmarks.data_pipeline`), with the exponent b of seconds ~ size^b
fitted by least squares on log-log (1 = linear, 2 = quadratic). Size = train images ingested.

    python -m benchmarks.growth s8k.json s24k.json s80k.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import markdown_table


def exponent(sizes: list[float], seconds: list[float]) -> float:
    """The slope of log(seconds) against log(size) (NaN with fewer than two positive points)."""
    points = [(s, t) for s, t in zip(sizes, seconds, strict=True) if s > 0 and t > 0]
    if len(points) < 2:
        return float("nan")
    x, y = np.log([p[0] for p in points]), np.log([p[1] for p in points])
    return float(np.polyfit(x, y, 1)[0])


def growth_rows(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per stage: seconds at each size, the fitted exponent, and peak memory at the largest."""
    sizes = [report["counts"]["train_images"] for report in reports]
    stages = [row["stage"] for row in reports[-1]["stages"]]
    rows = []
    for stage in stages:
        seconds = [next((r["seconds"] for r in rep["stages"] if r["stage"] == stage), 0.0) for rep in reports]
        row: dict[str, Any] = {"stage": stage}
        row.update({f"{size:,} images (s)": value for size, value in zip(sizes, seconds, strict=True)})
        row["exponent"] = exponent(sizes, seconds)
        row["peak_rss_mib (largest)"] = next(
            r["peak_rss_mib"] for r in reports[-1]["stages"] if r["stage"] == stage
        )
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("reports", nargs="+", type=Path, help="data_pipeline JSON reports, smallest first")
    args = parser.parse_args(argv)
    reports = [json.loads(path.read_text()) for path in args.reports]
    rows = growth_rows(reports)
    print(markdown_table(rows, list(rows[0])))
    return rows


if __name__ == "__main__":
    main()
