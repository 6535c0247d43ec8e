"""Stage-cache benchmark: the full build-alignment-data flow run twice on the same inputs; the second
run finds every stage cached. Reported: the cached rerun as a fraction of the first run, with
Prefect's start-up (a temporary API server) measured apart and excluded from both.

Also reported, to explain the rerun's cost: the same cached stages called as plain functions (input
fingerprints through the digest memo + manifest lookups, no Prefect), and a flow of as many no-op
Prefect tasks (Prefect's own per-run and per-task bookkeeping).

    python -m benchmarks.cache_rerun --corpus /tmp/bench/irdb --runs 3
    python -m benchmarks.cache_rerun --smoke
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks.common import (
    add_work_and_out,
    command_line,
    machine_facts,
    markdown_table,
    measure,
    smoke_corpus,
    write_json,
)

#: Stages of build-alignment-data (demo-corpus task aside).
FLOW_STAGES = 8


def _isolate_prefect(home: Path) -> None:
    """A private Prefect home and no server URL: the run starts its own temporary API."""
    os.environ["PREFECT_HOME"] = str(home)
    os.environ.pop("PREFECT_API_URL", None)
    os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _timed(function: Callable[[], Any]) -> float:
    started = time.perf_counter()
    function()
    return time.perf_counter() - started


def noop_flow_seconds(tasks: int) -> float:
    """Wall time of a flow of ``tasks`` no-op tasks (Prefect's own overhead, server already up)."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE

    @task(cache_policy=NO_CACHE, persist_result=False)
    def noop(index: int) -> int:
        return index

    @flow(name="noop-overhead")
    def noop_flow() -> None:
        for index in range(tasks):
            noop(index)

    return _timed(noop_flow)


def plain_cached_stages_seconds(flow_kwargs: dict[str, Any]) -> float:
    """The cached stages called as plain functions in flow order (no Prefect)."""
    from tasks.assemble import assemble_pairs
    from tasks.dedup import dedup
    from tasks.embed import ClipSpec, embed
    from tasks.ingest import ingest_benchmark, ingest_ratings
    from tasks.negatives import negatives
    from tasks.pairs import pairs
    from tasks.ratings import ratings

    root = flow_kwargs["artifacts_dir"]

    def chain() -> None:
        ingested = ingest_ratings(flow_kwargs["imagereward_path"], split="train", root=root)
        bench = ingest_benchmark(
            flow_kwargs["benchmark_path"], subsets=flow_kwargs["benchmark_subsets"], root=root
        )
        deduped = dedup(ingested.path, bench.path, root=root)
        scored = ratings(deduped.path, perspective="alignment", root=root)
        paired = pairs(scored.path, root=root)
        embedded = embed(scored.path, clip=ClipSpec(), root=root)
        mined = negatives(scored.path, embedded.path, embedded.paths["text"], root=root)
        result = assemble_pairs(
            [paired.path, mined.path], image_rejects=[embedded.paths["rejects"]], root=root
        )
        computed = [
            stage.stage
            for stage in (ingested, bench, deduped, scored, paired, embedded, mined, result)
            if not stage.cached
        ]
        if computed:
            raise RuntimeError(f"plain rerun: stages not found in the flow's cache: {computed}")

    return _timed(chain)


def benchmark(imagerewarddb: Path, mjbench: Path, *, runs: int, work: Path) -> dict[str, Any]:
    """Start a temporary Prefect API (timed: the start-up reported apart), then :func:`measure_reruns`."""
    from prefect.testing.utilities import prefect_test_harness

    started = time.perf_counter()
    with prefect_test_harness(server_startup_timeout=120):
        startup = time.perf_counter() - started
        report = measure_reruns(imagerewarddb, mjbench, runs=runs, work=work)
    return {**report, "prefect_startup_seconds": startup}


def measure_reruns(imagerewarddb: Path, mjbench: Path, *, runs: int, work: Path) -> dict[str, Any]:
    """``runs`` times: a fresh artifact root, the flow once (computing), then again (cached). Needs a
    Prefect API (a server, or a test harness)."""
    from flows.build_alignment_data import build_alignment_data

    first_flow_overhead = noop_flow_seconds(1)  # first flow run of the process (client set-up)
    rows = []
    for index in range(runs):
        kwargs = {
            "imagereward_path": str(imagerewarddb),
            "benchmark_path": str(mjbench),
            "benchmark_subsets": ["alignment"],
            "artifacts_dir": tempfile.mkdtemp(prefix=f"cache{index}-", dir=work),
        }
        first_outputs, first = measure(lambda kwargs=kwargs: build_alignment_data(**kwargs))
        rerun_outputs, rerun = measure(lambda kwargs=kwargs: build_alignment_data(**kwargs))
        plain = plain_cached_stages_seconds(kwargs)
        noop = noop_flow_seconds(FLOW_STAGES + 1)
        rows.append(
            {
                "run": index,
                "first_seconds": first.seconds,
                "cached_seconds": rerun.seconds,
                "fraction": rerun.seconds / first.seconds,
                "same_outputs": first_outputs == rerun_outputs,
                "plain_cached_stages_seconds": plain,
                "noop_flow_seconds": noop,
                "load": first.load_1min,
            }
        )
        print(markdown_table(rows[-1:], list(rows[-1])), flush=True)
    numeric = [key for key, value in rows[0].items() if key != "run" and not isinstance(value, bool)]
    median = {key: statistics.median(row[key] for row in rows) for key in numeric}
    return {
        "machine": machine_facts(),
        "inputs": {"imagerewarddb": str(imagerewarddb), "mjbench": str(mjbench)},
        "first_flow_client_overhead_seconds": first_flow_overhead,
        "runs": rows,
        "median": median,
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--corpus", type=Path, help="a rendered demo corpus (imagerewarddb/, mjbench/)")
    source.add_argument("--smoke", action="store_true", help="a 30-prompt corpus, one run (tests)")
    parser.add_argument("--runs", type=int, default=3)
    add_work_and_out(parser)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    _isolate_prefect(Path(tempfile.mkdtemp(prefix="prefect-home-", dir=args.work)))
    if args.smoke:
        corpus = smoke_corpus(args.work)
        imagerewarddb, mjbench, runs = corpus.imagerewarddb, corpus.mjbench, 1
    else:
        imagerewarddb, mjbench, runs = args.corpus / "imagerewarddb", args.corpus / "mjbench", args.runs
    report = benchmark(imagerewarddb, mjbench, runs=runs, work=args.work)
    report["command"] = command_line("benchmarks.cache_rerun", argv)
    print({key: round(value, 4) for key, value in report["median"].items()})
    print("prefect start-up (excluded):", round(report["prefect_startup_seconds"], 2), "s")
    if args.out:
        write_json(args.out, report)
    return report


if __name__ == "__main__":
    main()
